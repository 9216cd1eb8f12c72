//! The Meridian gRPC API (`meridian.v1`), generated from `meridian/v1/meridian.proto`.
//!
//! This crate is the one place wire types exist. Domain crates never derive prost
//! traits; the gRPC adapters convert to and from domain types by hand and validate on
//! the way in. We generate at build time with `tonic-prost-build` rather than
//! checking generated code in, so the proto stays the single source of truth.

#![allow(clippy::all, missing_docs)]

/// `meridian.v1`: messages, clients and servers.
pub mod v1 {
    tonic::include_proto!("meridian.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("meridian_v1_descriptor");
}

pub use prost_types;
