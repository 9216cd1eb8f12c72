//! Config loading: source → parse → validate. Every error names the file and, where
//! the TOML parser knows it, the line and key with what was expected.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML parser's message already shows the line, the key and what was
    /// expected (for example "unknown field `foo`, expected one of ...").
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {origin}: `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// A validation error for `key`, found in the config from `origin` (a file path or
    /// "flags and defaults").
    pub fn invalid(origin: &str, key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Loads `T` from `path` (a TOML file), or `T::default()` when no path is given.
pub fn load<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    match path {
        None => Ok(T::default()),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse(path, &text)
        }
    }
}

/// Parses TOML text that came from `path`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Describes where a config came from, for error messages.
pub fn origin(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("file {}", p.display()),
        None => "(flags and defaults)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        port: u16,
        #[serde(default)]
        #[allow(dead_code)]
        nested: Nested,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        #[allow(dead_code)]
        name: Option<String>,
    }

    #[test]
    fn unknown_keys_are_rejected_with_file_and_key() {
        let err = parse::<Sample>(Path::new("/etc/m.toml"), "port = 1\n[nested]\nnmae = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/m.toml"), "{err}");
        assert!(err.contains("nmae"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_expectation() {
        let err = parse::<Sample>(Path::new("m.toml"), "port = \"eighty\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.toml") && err.contains("port"), "{err}");
        let err = parse::<Sample>(Path::new("m.toml"), "port = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/meridian.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/meridian.toml"), "{err}");
    }
}
