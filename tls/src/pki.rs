//! A small certificate authority: one CA, and server and client certificates signed
//! by it, with Meridian's identity convention (CN = identity, O = role, OU = region).
//!
//! For local stacks, tests and small deployments; a deployment with its own PKI
//! issues certificates with the same subject fields instead.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::TlsError;

fn issue_err(e: rcgen::Error) -> TlsError {
    TlsError::Issue(e.to_string())
}

/// A PEM certificate and its PEM private key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key` (the key mode 0600) and
    /// returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
            what: "certificate directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, &self.cert_pem, 0o644)?;
        write_file(&key, &self.key_pem, 0o600)?;
        Ok((cert, key))
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Read {
        what: "output",
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// A certificate authority able to sign.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<(Ca, Issued), TlsError> {
        let key = KeyPair::generate().map_err(issue_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(issue_err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(issue_err)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let ca = Ca {
            issuer: Issuer::new(params, key),
            cert_pem: issued.cert_pem.clone(),
        };
        Ok((ca, issued))
    }

    /// Loads a CA from its PEM certificate and key files.
    pub fn load(cert: &Path, key: &Path) -> Result<Ca, TlsError> {
        let cert_pem = crate::read_pem("CA certificate", cert, "CERTIFICATE")?;
        let key_pem = crate::read_pem("CA key", key, "PRIVATE KEY")?;
        let key = KeyPair::from_pem(&key_pem).map_err(issue_err)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(issue_err)?;
        Ok(Ca { issuer, cert_pem })
    }

    /// Signs a certificate for `subject`.
    pub fn issue(&self, subject: &Subject) -> Result<Issued, TlsError> {
        let key = KeyPair::generate().map_err(issue_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(issue_err)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, subject.name.as_str());
        if let Some(role) = &subject.role {
            params.distinguished_name.push(DnType::OrganizationName, role.as_str());
        }
        if let Some(region) = &subject.region {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, region.as_str());
        }
        for dns in &subject.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.clone().try_into().map_err(issue_err)?));
        }
        for ip in &subject.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = Vec::new();
        if subject.server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if subject.client {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if let Some((from, to)) = subject.validity_days {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now + time::Duration::days(from);
            params.not_after = now + time::Duration::days(to);
        }
        let cert = params.signed_by(&key, &self.issuer).map_err(issue_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What a certificate says about its holder.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    /// CN: the identity (a replica, prober or agent id, or a person).
    pub name: String,
    /// O: the role or kind (`viewer`, `operator`, `admin`, `prober`, `agent`,
    /// `control-plane`).
    pub role: Option<String>,
    /// OU: a prober's region.
    pub region: Option<String>,
    /// DNS subject alternative names (servers).
    pub dns_names: Vec<String>,
    /// IP subject alternative names (servers).
    pub ips: Vec<IpAddr>,
    /// For TLS servers.
    pub server: bool,
    /// For TLS clients.
    pub client: bool,
    /// Validity as days from now (`(-1, 365)`: from yesterday for a year; a past
    /// window makes an expired certificate); `None`: rcgen's default (long).
    pub validity_days: Option<(i64, i64)>,
}
