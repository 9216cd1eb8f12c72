//! Reaching the control plane: the endpoint list is tried in order and the first
//! replica that accepts a connection answers every RPC of the command.
//!
//! Any replica can answer: queries are served locally and mutations are forwarded to
//! the leader by the replica itself, so the CLI never needs to find the leader.

use std::time::Duration;

use meridian_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

use crate::error::CtlError;

/// A connection to the first replica that answered.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The endpoint as given on the command line; named in errors and in `status`.
    pub endpoint: String,
    channel: Channel,
}

impl Connected {
    /// A `QueryService` client on this connection.
    pub fn query(&self) -> pb::query_service_client::QueryServiceClient<Channel> {
        pb::query_service_client::QueryServiceClient::new(self.channel.clone())
    }

    /// An `OperatorService` client on this connection.
    pub fn operator(&self) -> pb::operator_service_client::OperatorServiceClient<Channel> {
        pb::operator_service_client::OperatorServiceClient::new(self.channel.clone())
    }

    /// The error for `rpc` answered by this replica with `status`.
    pub fn rpc_error(&self, rpc: &'static str, status: tonic::Status) -> CtlError {
        CtlError::rpc(rpc, &self.endpoint, status)
    }
}

/// Connects to the first of `endpoints` that answers, each attempt bounded by
/// `timeout` (which also bounds every later call). When none answers, the error
/// lists every endpoint with its own failure, in the order tried.
pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Connected, CtlError> {
    let mut attempts = Vec::new();
    for ep in endpoints {
        let endpoint = match Endpoint::from_shared(ep.clone()) {
            Ok(e) => e.connect_timeout(timeout).timeout(timeout),
            Err(e) => {
                attempts.push(format!("{ep}: invalid endpoint URL: {e}"));
                continue;
            }
        };
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(Connected {
                    endpoint: ep.clone(),
                    channel,
                })
            }
            Err(e) => attempts.push(format!("{ep}: {e}")),
        }
    }
    Err(CtlError::NoReplica { attempts })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local port with nothing listening: bind, note the port, close.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn lists_every_endpoint_in_order_when_none_answers() {
        let dead = format!("http://127.0.0.1:{}", closed_port());
        let endpoints = vec!["not a url".to_string(), dead.clone()];
        let err = connect(&endpoints, Duration::from_secs(2)).await.unwrap_err();
        match &err {
            CtlError::NoReplica { attempts } => {
                assert_eq!(attempts.len(), 2, "{attempts:?}");
                assert!(
                    attempts[0].starts_with("not a url: invalid endpoint URL"),
                    "{attempts:?}"
                );
                assert!(attempts[1].starts_with(&format!("{dead}: ")), "{attempts:?}");
            }
            other => panic!("expected NoReplica, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with("no control-plane replica reachable:\n  not a url"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn skips_a_dead_endpoint_and_uses_the_next() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = format!("http://{}", listener.local_addr().unwrap());
        // Accepting is the kernel's job (the backlog); connecting needs no gRPC server.
        let dead = format!("http://127.0.0.1:{}", closed_port());
        let connected = connect(&[dead, live.clone()], Duration::from_secs(2)).await.unwrap();
        assert_eq!(connected.endpoint, live);
    }

    #[test]
    fn rpc_errors_name_the_rpc_endpoint_code_and_message() {
        let err = CtlError::rpc("GetPlan", "http://x:1", tonic::Status::not_found("no plan yet"));
        assert_eq!(
            err.to_string(),
            format!("GetPlan on http://x:1 failed: {}: no plan yet", tonic::Code::NotFound)
        );
    }
}
