//! The start of every Meridian daemon, written once: the `main()` around an async
//! body (runtime, error print, exit code) and the steps between a validated config
//! and `run` (`--check-config`, logs, the shutdown signal, binding a listener whose
//! failure names the config key).
//!
//! A daemon's `main.rs` is then: parse flags, load and validate its config, call
//! [`start`], bind, call its `run`:
//!
//! ```ignore
//! fn main() -> ExitCode {
//!     bootstrap::run_main("meridian-prober", real_main(Args::parse()))
//! }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{shutdown, telemetry, CommonArgs};

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot print the configuration")]
    Render(#[source] toml::ser::Error),
    #[error("{0}")]
    Logging(String),
    #[error("{0}")]
    Metrics(String),
    #[error("cannot bind the {what} `{key}` {addr}")]
    Bind {
        what: &'static str,
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `body` on a multi-threaded tokio runtime and turns its result into the
/// process exit code; an error is printed once, as `<name>: error: <chain>`.
pub fn run_main<F, E>(name: &str, body: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints an anyhow error with its whole chain.
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// After the config validated: with `--check-config`, prints `<origin>: ok` and the
/// effective configuration and returns `None` (the daemon exits 0); otherwise installs
/// the log subscriber and the metrics recorder and returns the token SIGTERM/SIGINT
/// cancels. Must run inside
/// the runtime.
pub fn start(
    common: &CommonArgs,
    origin: &str,
    effective: &impl serde::Serialize,
) -> Result<Option<CancellationToken>, BootstrapError> {
    if common.check_config {
        println!("{}", check_config_report(origin, effective)?);
        return Ok(None);
    }
    telemetry::init(common.log_format, &common.log).map_err(BootstrapError::Logging)?;
    // The metrics recorder before any task: what is recorded before it exists is lost.
    crate::admin::metrics_handle().map_err(BootstrapError::Metrics)?;
    Ok(Some(shutdown::on_signal()))
}

/// What `--check-config` prints.
pub fn check_config_report(origin: &str, effective: &impl serde::Serialize) -> Result<String, BootstrapError> {
    let text = toml::to_string_pretty(effective).map_err(BootstrapError::Render)?;
    Ok(format!("{origin}: ok\n{text}"))
}

/// Binds a TCP listener; the error names the listener and its config key.
pub async fn bind(addr: SocketAddr, what: &'static str, key: &'static str) -> Result<TcpListener, BootstrapError> {
    TcpListener::bind(addr).await.map_err(|source| BootstrapError::Bind {
        what,
        key,
        addr,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Sample {
        region: String,
    }

    #[test]
    fn run_main_maps_the_result_to_the_exit_code() {
        assert_eq!(run_main("t", async { Ok::<(), String>(()) }), ExitCode::SUCCESS);
        assert_eq!(run_main("t", async { Err::<(), _>("boom") }), ExitCode::FAILURE);
        // The body runs inside the runtime: tokio calls work.
        let ran_in_runtime = run_main("t", async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            Ok::<(), String>(())
        });
        assert_eq!(ran_in_runtime, ExitCode::SUCCESS);
    }

    #[test]
    fn check_config_prints_the_origin_and_the_effective_config() {
        let text = check_config_report("file d.toml", &Sample { region: "eu".into() }).unwrap();
        assert_eq!(text, "file d.toml: ok\nregion = \"eu\"\n");
    }

    #[tokio::test]
    async fn a_bind_error_names_the_key_and_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr, "admin listener", "admin_addr").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot bind the admin listener `admin_addr` {addr}")),
            "{text}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the io error stays the source"
        );
    }
}
