//! The end-to-end test harness: starts real components (etcd members, Meridian
//! daemons) on ports picked at run time, each cleaned up on drop, in the style of
//! quilkin's `crates/test`. A missing tool is a loud failure that says how to install
//! it, never a silent skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod bgp;
pub mod dns;
pub mod etcd;
pub mod meridian;
pub mod pki;
pub mod targets;
pub mod util;
