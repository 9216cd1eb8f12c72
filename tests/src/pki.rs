//! The test PKI: one CA per test process, and certificates issued on demand with
//! Meridian's subject convention (CN = identity, O = role or kind, OU = a prober's
//! region). Every control plane the harness starts serves mutual TLS with it, and
//! every client the harness runs (meridianctl as an admin, probers, agents) presents
//! a certificate from it, so the whole suite runs with mTLS on.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use meridian_tls::pki::{Ca, Subject};

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct TestPki {
    dir: PathBuf,
    ca: Mutex<Ca>,
}

/// The process's PKI (created on first use, in the system temp dir).
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("meridian-test-pki-")
            .tempdir()
            .expect("create the test PKI dir")
            .keep();
        let (ca, files) = Ca::generate("Meridian test CA").expect("generate the test CA");
        files.write(&dir, "ca").expect("write the test CA");
        TestPki {
            dir,
            ca: Mutex::new(ca),
        }
    })
}

impl TestPki {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate every component trusts.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn issue(&self, stem: &str, subject: Subject) -> CertFiles {
        let ca = self.ca.lock().expect("test CA lock");
        let cert = self.dir.join(format!("{stem}.pem"));
        let key = self.dir.join(format!("{stem}.key"));
        if !(cert.exists() && key.exists()) {
            ca.issue(&subject)
                .expect("issue a test certificate")
                .write(&self.dir, stem)
                .expect("write a test certificate");
        }
        CertFiles { cert, key }
    }

    /// A control-plane replica's certificate: server (127.0.0.1, localhost) and
    /// client (forwarding to the leader), O = replica.
    pub fn replica(&self, id: &str) -> CertFiles {
        self.issue(
            &format!("replica-{id}"),
            Subject {
                name: id.into(),
                role: Some("replica".into()),
                ips: vec!["127.0.0.1".parse().expect("ip")],
                dns_names: vec!["localhost".into()],
                server: true,
                client: true,
                ..Subject::default()
            },
        )
    }

    /// A person's client certificate with `role` (viewer, operator, admin).
    pub fn operator(&self, name: &str, role: &str) -> CertFiles {
        self.client(&format!("{role}-{name}"), name, role, None)
    }

    /// The admin the harness's meridianctl runs as.
    pub fn admin(&self) -> CertFiles {
        self.operator("harness", "admin")
    }

    /// A prober's certificate for its region.
    pub fn prober(&self, id: &str, region: &str) -> CertFiles {
        self.client(&format!("prober-{id}-{region}"), id, "prober", Some(region))
    }

    /// An edge agent's certificate.
    pub fn agent(&self, id: &str) -> CertFiles {
        self.client(&format!("agent-{id}"), id, "agent", None)
    }

    fn client(&self, stem: &str, name: &str, role: &str, region: Option<&str>) -> CertFiles {
        self.issue(
            stem,
            Subject {
                name: name.into(),
                role: Some(role.into()),
                region: region.map(str::to_string),
                client: true,
                ..Subject::default()
            },
        )
    }

    /// tonic's client TLS for an in-process client presenting `id`.
    pub fn client_tls(&self, id: &CertFiles) -> tonic::transport::ClientTlsConfig {
        meridian_tls::ClientTls {
            ca: Some(self.ca_pem()),
            cert: Some(id.cert.clone()),
            key: Some(id.key.clone()),
            server_name: None,
        }
        .load()
        .expect("load test client TLS")
        .expect("TLS configured")
    }
}
