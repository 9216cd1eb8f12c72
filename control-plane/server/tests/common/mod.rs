//! One in-process replica for the server's integration tests: loopback ports bound
//! at run time, an in-memory store, real gRPC.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_control_plane::config::ControlPlaneConfig;
use meridian_store::embedded::EmbeddedStore;
use meridian_store::Store;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct Replica {
    /// `http://…` (plaintext on loopback) or `https://…` with `[tls]`.
    pub endpoint: String,
    pub admin_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds loopback ports, writes them into `cfg`, validates it and runs the replica
/// on a fresh in-memory store.
pub async fn start(cfg: ControlPlaneConfig) -> Replica {
    start_on(cfg, Arc::new(EmbeddedStore::in_memory())).await
}

/// [`start`] on a given store (replicas sharing one).
pub async fn start_on(mut cfg: ControlPlaneConfig, store: Arc<dyn Store>) -> Replica {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    cfg.grpc_addr = grpc_addr;
    cfg.admin_addr = admin_addr;
    let validated = cfg.validate("test").unwrap();
    let scheme = if validated.server_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoint = format!("{scheme}://{grpc_addr}");
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        meridian_control_plane::run_with_store(validated, store, grpc, admin, s)
            .await
            .unwrap();
    });
    Replica {
        endpoint,
        admin_addr,
        shutdown,
        task,
    }
}

impl Replica {
    /// A plaintext channel to the replica (connects lazily).
    pub fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .connect_lazy()
    }

    /// Shuts the replica down and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}
