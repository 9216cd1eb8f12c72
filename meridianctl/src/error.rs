//! The one error type of the CLI: every way a command can fail before it has
//! something to print.

use std::path::PathBuf;

/// Why a command could not produce its output. `main` prints it with its source
/// chain and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No endpoint of the list answered; one line per endpoint, in the order tried.
    #[error("no control-plane replica reachable:\n  {}", attempts.join("\n  "))]
    NoReplica { attempts: Vec<String> },
    /// The replica answered the RPC with an error status.
    #[error("{rpc} on {endpoint} failed: {code}: {message}")]
    Rpc {
        rpc: &'static str,
        endpoint: String,
        code: tonic::Code,
        message: String,
    },
    /// The replica answered OK but left out the part the command shows.
    #[error("{rpc} on {endpoint} answered without a {what}")]
    Incomplete {
        rpc: &'static str,
        endpoint: String,
        what: &'static str,
    },
    /// A file named on the command line could not be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--as` (or MERIDIAN_IDENTITY) cannot be sent as a header value.
    #[error("identity `{identity}` (from --as or MERIDIAN_IDENTITY) must be printable ASCII")]
    Identity { identity: String },
    /// TLS or credentials could not be set up (a file, a setting, a scheme).
    #[error("{0}")]
    Tls(String),
    /// The context file is not valid.
    #[error("context file {}: {message}", path.display())]
    Context { path: PathBuf, message: String },
    /// The command line is well-formed but its values are not (e.g. a `--steps`
    /// ladder that does not go down to 0); the message says what to write instead.
    #[error("{0}")]
    Invalid(String),
    /// Writing a `--watch` frame to stdout failed (other than the reader going away).
    #[error("cannot write to stdout")]
    Write(#[source] std::io::Error),
    /// A view could not be encoded as JSON (not expected: views are plain data).
    #[error("cannot encode the JSON output")]
    Json(#[from] serde_json::Error),
}

impl CtlError {
    /// The error for an RPC that `endpoint` answered with `status`.
    pub fn rpc(rpc: &'static str, endpoint: &str, status: tonic::Status) -> Self {
        let mut message = status.message().to_string();
        // Plaintext HTTP/2 against a TLS listener fails as a protocol error.
        if status.code() == tonic::Code::Internal
            && message.contains("h2 protocol error")
            && !meridian_tls::is_https(endpoint)
        {
            message.push_str(" (the control plane may require TLS: use an https:// endpoint and --ca)");
        }
        CtlError::Rpc {
            rpc,
            endpoint: endpoint.to_string(),
            code: status.code(),
            message,
        }
    }
}
