//! Reaching the control plane: the endpoint list is tried in order and the first
//! replica that accepts a connection answers every RPC of the command.
//!
//! Any replica can answer: queries are served locally and mutations are forwarded to
//! the leader by the replica itself, so the CLI never needs to find the leader.

use std::time::Duration;

use meridian_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::CtlError;

/// A connection to the first replica that answered.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The endpoint as given on the command line; named in errors and in `status`.
    pub endpoint: String,
    channel: Channel,
    identity: Identify,
}

/// The metadata key the control plane reads the caller's identity from.
pub const IDENTITY_HEADER: &str = "x-meridian-identity";

/// Adds the caller's claimed identity (operator calls) and bearer token (every call)
/// to requests, so the control plane records who drained, restored or applied and
/// can check the caller's role.
#[derive(Debug, Clone, Default)]
pub struct Identify {
    identity: Option<MetadataValue<Ascii>>,
    authorization: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for Identify {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.identity {
            req.metadata_mut().insert(IDENTITY_HEADER, v.clone());
        }
        if let Some(v) = &self.authorization {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Who the operator is, when `--as` does not say: `$USER@hostname`, with anything
/// but printable ASCII (spaces included) replaced by `_`.
pub fn default_identity() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let raw = if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    };
    raw.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(128)
        .collect()
}

impl Connected {
    /// A `QueryService` client on this connection (with the bearer token, if any).
    pub fn query(&self) -> pb::query_service_client::QueryServiceClient<InterceptedService<Channel, Identify>> {
        let bearer = Identify {
            identity: None,
            authorization: self.identity.authorization.clone(),
        };
        pb::query_service_client::QueryServiceClient::with_interceptor(self.channel.clone(), bearer)
    }

    /// An `OperatorService` client on this connection; every call carries the
    /// caller's identity.
    pub fn operator(
        &self,
    ) -> pb::operator_service_client::OperatorServiceClient<InterceptedService<Channel, Identify>> {
        pb::operator_service_client::OperatorServiceClient::with_interceptor(
            self.channel.clone(),
            self.identity.clone(),
        )
    }

    /// Sends `identity` with operator calls. An identity that cannot be a header
    /// value is an error here rather than a surprise at the server.
    pub fn with_identity(mut self, identity: &str) -> Result<Self, CtlError> {
        let value = MetadataValue::try_from(identity).map_err(|_| CtlError::Identity {
            identity: identity.to_string(),
        })?;
        self.identity.identity = Some(value);
        Ok(self)
    }

    /// Sends `token` as `authorization: Bearer <token>` with every call.
    pub fn with_token(mut self, token: &str) -> Result<Self, CtlError> {
        let value = MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| CtlError::Identity {
            identity: "the token (from --token, MERIDIAN_TOKEN or --token-file)".to_string(),
        })?;
        self.identity.authorization = Some(value);
        Ok(self)
    }

    /// The error for `rpc` answered by this replica with `status`.
    pub fn rpc_error(&self, rpc: &'static str, status: tonic::Status) -> CtlError {
        CtlError::rpc(rpc, &self.endpoint, status)
    }
}

/// Connects to the first of `endpoints` that answers, each attempt bounded by
/// `timeout` (which also bounds every later call). When none answers, the error
/// lists every endpoint with its own failure, in the order tried.
pub async fn connect(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<Connected, CtlError> {
    let mut attempts = Vec::new();
    for ep in endpoints {
        if let Err(e) = Endpoint::from_shared(ep.clone()) {
            attempts.push(format!("{ep}: invalid endpoint URL: {e}"));
            continue;
        }
        let endpoint = match meridian_tls::endpoint(ep, tls) {
            Ok(e) => e.connect_timeout(timeout).timeout(timeout),
            Err(e) => {
                attempts.push(format!("{ep}: {e}"));
                continue;
            }
        };
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(Connected {
                    endpoint: ep.clone(),
                    channel,
                    identity: Identify::default(),
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
        let err = connect(&endpoints, Duration::from_secs(2), None).await.unwrap_err();
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
        let connected = connect(&[dead, live.clone()], Duration::from_secs(2), None)
            .await
            .unwrap();
        assert_eq!(connected.endpoint, live);
    }

    #[test]
    fn the_default_identity_is_a_valid_header_value() {
        let id = default_identity();
        assert!(!id.is_empty() && id.len() <= 128, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_graphic()), "{id}");
        assert!(MetadataValue::<Ascii>::try_from(id.as_str()).is_ok());
    }

    #[test]
    fn the_interceptor_adds_the_identity_header() {
        use tonic::service::Interceptor;
        let mut with = Identify {
            identity: Some(MetadataValue::try_from("alice@ops").unwrap()),
            authorization: Some(MetadataValue::try_from("Bearer t0k3n-0123456789abcdef").unwrap()),
        };
        let req = with.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get(IDENTITY_HEADER).unwrap(), "alice@ops");
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer t0k3n-0123456789abcdef"
        );
        let req = Identify::default().call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get(IDENTITY_HEADER).is_none());
        assert!(req.metadata().get("authorization").is_none());
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
