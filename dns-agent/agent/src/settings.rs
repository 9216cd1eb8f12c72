//! Settings every edge agent (DNS, Anycast) validates alike: its control-plane
//! endpoints and credentials, and where its state lives by default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::follower::Credentials;

/// A setting that is wrong: its key (a path such as `control_plane[1]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

fn wrong(key: impl Into<String>, message: impl Into<String>) -> SettingError {
    SettingError {
        key: key.into(),
        message: message.into(),
    }
}

/// Checks the control-plane endpoints (at least one, each an http(s) URL), loads
/// the TLS files and the token file, and refuses a combination that would send a
/// token in plaintext beyond loopback ([`meridian_tls::check_endpoint`]).
pub fn control_plane_credentials(
    control_plane: &[String],
    tls: &meridian_tls::ClientTls,
    token_file: Option<&Path>,
) -> Result<Credentials, SettingError> {
    if control_plane.is_empty() {
        return Err(wrong(
            "control_plane",
            "at least one control-plane endpoint is required",
        ));
    }
    for (i, ep) in control_plane.iter().enumerate() {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return Err(wrong(
                format!("control_plane[{i}]"),
                format!("`{ep}` must be a URL such as http://127.0.0.1:7400"),
            ));
        }
    }
    let tls = tls.load().map_err(|e| match e {
        meridian_tls::TlsError::Setting { field, message } => wrong(field, message),
        other => wrong("tls", other.to_string()),
    })?;
    let token = match token_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| wrong("token_file", format!("cannot read {}: {e}", path.display())))?;
            Some(text.trim().to_string())
        }
    };
    for (i, ep) in control_plane.iter().enumerate() {
        meridian_tls::check_endpoint(ep, tls.as_ref(), token.is_some())
            .map_err(|e| wrong(format!("control_plane[{i}]"), e.to_string()))?;
    }
    Ok(Credentials { token, tls })
}

/// Where an agent keeps its state when `state_dir` is not set: systemd's
/// `$STATE_DIRECTORY` (its first entry), `$XDG_STATE_HOME/meridian`,
/// `$HOME/.local/state/meridian` or `./meridian-state`, followed by
/// `<kind>-<agent_id>` (e.g. `dns-agent-dns-fra1`) so agents sharing a host or a user
/// do not share a cache. `env` reads an environment variable (empty counts as unset).
pub fn default_state_dir(kind: &str, agent_id: &str, env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let base = if let Some(dirs) = var("STATE_DIRECTORY") {
        let first = dirs.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        PathBuf::from(first)
    } else if let Some(xdg) = var("XDG_STATE_HOME") {
        PathBuf::from(xdg).join("meridian")
    } else if let Some(home) = var("HOME") {
        PathBuf::from(home).join(".local/state/meridian")
    } else {
        PathBuf::from("meridian-state")
    };
    base.join(format!("{kind}-{agent_id}"))
}
