//! TLS for every Meridian gRPC server and client.
//!
//! - [`ServerTls`] and [`ClientTls`] are the `[tls]` sections of the daemons'
//!   configurations (and meridianctl's flags): file paths, checked and loaded with
//!   errors that name the file — servers into a rustls configuration
//!   ([`rustls_server_config`]; they accept TLS themselves, to count and audit failed
//!   handshakes), clients into tonic's.
//! - [`PeerIdentity`] is who an mTLS peer certificate says it is: the subject's
//!   common name is the identity, the organization its role (`viewer`, `operator`,
//!   `admin`, `prober`, `agent`) and, for probers, the organizational unit its region.
//!   This is Kubernetes' convention (CN = user, O = group): the CA decides roles, so
//!   issuing a certificate is granting access.
//! - [`pki`] issues a small CA and certificates with that convention (used by
//!   `meridianctl certs`, `scripts/run-local.sh` and the tests).
//!
//! Decision: rustls with ring through tonic's `tls-ring` feature, one tonic in the
//! tree. Rejected: OpenSSL (a C build and a second TLS stack).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

pub mod pki;

/// Why TLS could not be set up; each names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} file {path} holds no PEM {expected} (is it the right file?)")]
    NotPem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{field}: {message}")]
    Setting { field: String, message: String },
    #[error("cannot parse the peer certificate: {0}")]
    BadPeerCertificate(String),
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
}

impl TlsError {
    fn setting(field: &str, message: impl Into<String>) -> Self {
        TlsError::Setting {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

fn read_pem(what: &'static str, path: &Path, expected: &'static str) -> Result<String, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let found = text.contains(&format!("-----BEGIN {expected}"))
        // Keys may be PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY") or PKCS#1.
        || (expected == "PRIVATE KEY" && text.contains(" PRIVATE KEY-----"));
    if !found {
        return Err(TlsError::NotPem {
            what,
            path: path.to_path_buf(),
            expected,
        });
    }
    Ok(text)
}

/// A server's TLS: its certificate and key and, for mutual TLS, the CA that client
/// certificates must chain to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTls {
    /// PEM certificate chain this server presents.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PEM CA bundle client certificates are verified against (mutual TLS). Clients
    /// without a certificate may still connect and present a bearer token, unless
    /// `require_client_cert` is set.
    pub client_ca: Option<PathBuf>,
    /// Refuse connections without a valid client certificate.
    pub require_client_cert: bool,
}

impl ServerTls {
    /// Whether TLS is configured at all.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// Checks that the settings fit together (`prefix` names the section, e.g. `tls`).
    pub fn check(&self, prefix: &str) -> Result<(), TlsError> {
        match (&self.cert, &self.key) {
            (Some(_), Some(_)) | (None, None) => {}
            (Some(_), None) => {
                return Err(TlsError::setting(
                    &format!("{prefix}.key"),
                    "`cert` is set but `key` is not",
                ))
            }
            (None, Some(_)) => {
                return Err(TlsError::setting(
                    &format!("{prefix}.cert"),
                    "`key` is set but `cert` is not",
                ))
            }
        }
        if !self.enabled() && (self.client_ca.is_some() || self.require_client_cert) {
            return Err(TlsError::setting(
                &format!("{prefix}.cert"),
                "client certificates need the server's own `cert` and `key`",
            ));
        }
        if self.require_client_cert && self.client_ca.is_none() {
            return Err(TlsError::setting(
                &format!("{prefix}.client_ca"),
                "`require_client_cert` needs the CA that client certificates chain to",
            ));
        }
        Ok(())
    }
}

/// A client's TLS: the CA that verifies the server and, for mutual TLS, this
/// client's certificate and key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// PEM CA bundle the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (mutual TLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// The name checked in the server's certificate, when it differs from the
    /// endpoint's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Whether any TLS setting is present.
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Checks that the settings fit together (`prefix` names the section).
    pub fn check(&self, prefix: &str) -> Result<(), TlsError> {
        match (&self.cert, &self.key) {
            (Some(_), Some(_)) | (None, None) => {}
            (Some(_), None) => {
                return Err(TlsError::setting(
                    &format!("{prefix}.key"),
                    "`cert` is set but `key` is not",
                ))
            }
            (None, Some(_)) => {
                return Err(TlsError::setting(
                    &format!("{prefix}.cert"),
                    "`key` is set but `cert` is not",
                ))
            }
        }
        if self.enabled() && self.ca.is_none() {
            return Err(TlsError::setting(
                &format!("{prefix}.ca"),
                "TLS needs the CA that the server's certificate chains to",
            ));
        }
        Ok(())
    }

    /// tonic's client configuration; `None` when TLS is not configured.
    pub fn load(&self) -> Result<Option<ClientTlsConfig>, TlsError> {
        self.check("tls")?;
        let Some(ca) = &self.ca else { return Ok(None) };
        let ca = read_pem("CA", ca, "CERTIFICATE")?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let cert = read_pem("certificate", cert, "CERTIFICATE")?;
            let key = read_pem("key", key, "PRIVATE KEY")?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(Some(config))
    }
}

/// Whether an endpoint URL asks for TLS.
pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// Whether an endpoint URL's host is a loopback address or `localhost`.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// An endpoint for `url`, with TLS when the URL is `https://`. `https://` without a
/// TLS configuration, or a TLS configuration with an `http://` URL, is an error
/// that says which to change.
pub fn endpoint(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, TlsError> {
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| TlsError::setting("endpoint", format!("`{url}` is not a valid URL: {e}")))?;
    match (is_https(url), tls) {
        (true, Some(tls)) => ep
            .tls_config(tls.clone())
            .map_err(|e| TlsError::setting("endpoint", format!("cannot use TLS for `{url}`: {e}"))),
        (true, None) => Err(TlsError::setting(
            "endpoint",
            format!("`{url}` is https:// but no CA is configured to verify the server (set the TLS `ca`)"),
        )),
        (false, Some(_)) => Err(TlsError::setting(
            "endpoint",
            format!("TLS is configured but `{url}` is plaintext http://; use https://"),
        )),
        (false, None) => Ok(ep),
    }
}

/// Checks that an endpoint and the client's TLS fit together, and that a bearer
/// token never travels in plaintext beyond loopback.
pub fn check_endpoint(url: &str, tls: Option<&ClientTlsConfig>, sends_token: bool) -> Result<(), TlsError> {
    endpoint(url, tls)?;
    if sends_token && !is_https(url) && !is_loopback_url(url) {
        return Err(TlsError::setting(
            "endpoint",
            format!("refusing to send a bearer token in plaintext to `{url}`: use https:// with the TLS `ca` (or a client certificate instead of the token)"),
        ));
    }
    Ok(())
}

/// Command-line flags for a client's TLS (`--tls-ca`, `--tls-cert`, `--tls-key`,
/// `--tls-server-name`, each with a `MERIDIAN_TLS_*` environment variable), laid
/// over the configuration file's `[tls]`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientTlsFlags {
    /// PEM CA that the control plane's certificate chains to (enables TLS).
    #[arg(long = "tls-ca", env = "MERIDIAN_TLS_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate (mutual TLS).
    #[arg(long = "tls-cert", env = "MERIDIAN_TLS_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", env = "MERIDIAN_TLS_KEY")]
    pub key: Option<PathBuf>,
    /// The name to check in the server's certificate, if not the endpoint's host.
    #[arg(long = "tls-server-name", env = "MERIDIAN_TLS_SERVER_NAME")]
    pub server_name: Option<String>,
}

impl ClientTlsFlags {
    /// Lays the flags over `tls` (flags win, field by field).
    pub fn apply(&self, tls: &mut ClientTls) {
        if let Some(v) = &self.ca {
            tls.ca = Some(v.clone());
        }
        if let Some(v) = &self.cert {
            tls.cert = Some(v.clone());
        }
        if let Some(v) = &self.key {
            tls.key = Some(v.clone());
        }
        if let Some(v) = &self.server_name {
            tls.server_name = Some(v.clone());
        }
    }
}

/// Why a TLS handshake failed, as a short fixed label (for metrics), and whether it
/// was about the client's certificate (worth an audit record) rather than noise.
pub fn handshake_failure(err: &std::io::Error) -> (&'static str, bool) {
    use rustls::{CertificateError, Error};
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return ("io", false);
    };
    match tls {
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            ("expired", true)
        }
        Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            ("not_yet_valid", true)
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => ("unknown_ca", true),
        Error::InvalidCertificate(CertificateError::Revoked) => ("revoked", true),
        Error::InvalidCertificate(_) => ("bad_certificate", true),
        Error::NoCertificatesPresented => ("no_certificate", true),
        _ => ("handshake", false),
    }
}

/// Who an mTLS peer certificate says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name (CN).
    pub name: String,
    /// The subject's organization (O): the role or kind.
    pub organization: Option<String>,
    /// The subject's organizational unit (OU): a prober's region.
    pub unit: Option<String>,
}

/// Reads the identity out of a DER certificate (the leaf of a verified chain).
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string)
        .ok_or_else(|| TlsError::BadPeerCertificate("the subject has no common name (CN)".into()))?;
    let organization = subject
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let unit = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    Ok(PeerIdentity {
        name,
        organization,
        unit,
    })
}

/// The verified peer certificate chain of a request served over TLS (`None` for
/// plaintext, or when the client presented no certificate).
pub fn peer_certificate(extensions: &http::Extensions) -> Option<Vec<u8>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let info = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    certs.first().map(|c| c.as_ref().to_vec())
}

#[cfg(test)]
mod tests;

/// A rustls server configuration from [`ServerTls`]'s files, offering `alpn`
/// (`h2` for gRPC, `http/1.1` for the admin port): client certificates are verified
/// against `client_ca` when presented, and optional unless `require_client_cert`.
/// Servers that accept TLS themselves (rather than inside tonic) can count and
/// explain failed handshakes.
pub fn rustls_server_config(tls: &ServerTls, alpn: &[&[u8]]) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    tls.check("tls")?;
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Err(TlsError::setting("tls.cert", "TLS needs `cert` and `key`"));
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|_| TlsError::NotPem {
            what: "certificate",
            path: cert.clone(),
            expected: "CERTIFICATE",
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::NotPem {
        what: "key",
        path: key.clone(),
        expected: "PRIVATE KEY",
    })?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::setting("tls", e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|_| TlsError::NotPem {
                    what: "client CA",
                    path: ca.clone(),
                    expected: "CERTIFICATE",
                })?;
            for c in cas {
                roots
                    .add(c)
                    .map_err(|e| TlsError::setting("tls.client_ca", e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if tls.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::setting("tls.client_ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::setting("tls.key", format!("the key does not fit the certificate: {e}")))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(std::sync::Arc::new(config))
}
