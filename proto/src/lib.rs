//! The Meridian gRPC API (`meridian.v1`), generated from `meridian/v1/meridian.proto`,
//! and the one conversion of the domain types both ends of the wire share.
//!
//! This crate is the one place wire types exist. Domain crates never derive prost
//! traits or depend on this crate; the gRPC adapters convert to and from domain types
//! and validate on the way in. We generate at build time with `tonic-prost-build`
//! rather than checking generated code in, so the proto stays the single source of
//! truth.
//!
//! Decision: a domain type used by more than one daemon (the probe outcome, sent by
//! the prober and read by the control plane) converts in [`probe`], next to its wire
//! type, instead of once per adapter; this crate may therefore depend on the pure
//! `meridian-core`, never the other way round.

/// `meridian.v1`: messages, clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("meridian.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("meridian_v1_descriptor");
}

pub mod probe;

pub use prost_types;
