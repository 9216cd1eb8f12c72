//! Where meridianctl's endpoints and credentials come from: flags, then environment
//! variables (clap reads both), then a context file, then built-in defaults.
//!
//! A context file is TOML:
//!
//! ```toml
//! endpoint = ["https://127.0.0.1:7400"]
//! ca = "/path/ca.pem"
//! cert = "/path/alice.pem"
//! key = "/path/alice.key"
//! # token_file = "/path/token"
//! ```
//!
//! Relative paths are relative to the file's directory. `scripts/run-local.sh`
//! writes one for the local stack.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::Cli;
use crate::error::CtlError;

/// The endpoint used when nothing names one.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7400";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    endpoint: Vec<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

/// The settings a command connects with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub endpoints: Vec<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

impl Context {
    /// Flags and environment first, then the context file (`--context`,
    /// MERIDIAN_CONTEXT, or ~/.config/meridian/context.toml when it exists).
    pub fn resolve(cli: &Cli) -> Result<Context, CtlError> {
        let file = match &cli.context {
            Some(path) => Some(load(path)?),
            None => match default_path().filter(|p| p.exists()) {
                Some(path) => Some(load(&path)?),
                None => None,
            },
        }
        .unwrap_or_default();
        let endpoints = if !cli.endpoint.is_empty() {
            cli.endpoint.clone()
        } else if !file.endpoint.is_empty() {
            file.endpoint
        } else {
            vec![DEFAULT_ENDPOINT.to_string()]
        };
        // Certificate and key go together: a flag pair replaces the file's pair.
        let (cert, key) = if cli.cert.is_some() || cli.key.is_some() {
            (cli.cert.clone(), cli.key.clone())
        } else {
            (file.cert, file.key)
        };
        Ok(Context {
            endpoints,
            ca: cli.ca.clone().or(file.ca),
            cert,
            key,
            token_file: file.token_file,
        })
    }
}

fn default_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".config/meridian/context.toml"))
}

fn load(path: &Path) -> Result<File, CtlError> {
    let text = std::fs::read_to_string(path).map_err(|source| CtlError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut file: File = toml::from_str(&text).map_err(|e| CtlError::Context {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut file.ca, &mut file.cert, &mut file.key, &mut file.token_file]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["meridianctl"];
        all.extend_from_slice(args);
        all.push("status");
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn flags_win_over_the_file_and_file_paths_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctx.toml");
        std::fs::write(
            &path,
            "endpoint = [\"https://127.0.0.1:9\"]\nca = \"ca.pem\"\ncert = \"me.pem\"\nkey = \"me.key\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let from_file = Context::resolve(&cli(&["--context", p])).unwrap();
        assert_eq!(from_file.endpoints, vec!["https://127.0.0.1:9".to_string()]);
        assert_eq!(from_file.ca, Some(dir.path().join("ca.pem")));
        assert_eq!(from_file.cert, Some(dir.path().join("me.pem")));
        let flags = Context::resolve(&cli(&[
            "--context",
            p,
            "-e",
            "https://10.0.0.1:7400",
            "--cert",
            "/x.pem",
            "--key",
            "/x.key",
        ]))
        .unwrap();
        assert_eq!(flags.endpoints, vec!["https://10.0.0.1:7400".to_string()]);
        assert_eq!(flags.cert, Some(PathBuf::from("/x.pem")));
        assert_eq!(
            flags.ca,
            Some(dir.path().join("ca.pem")),
            "unset flags fall back to the file"
        );
    }

    #[test]
    fn a_bad_context_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctx.toml");
        std::fs::write(&path, "endpoints = []\n").unwrap();
        let err = Context::resolve(&cli(&["--context", path.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ctx.toml") && err.contains("endpoints"), "{err}");
    }
}
