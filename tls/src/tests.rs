use super::*;
use crate::pki::{Ca, Subject};

fn subject(name: &str, role: &str) -> Subject {
    Subject {
        name: name.into(),
        role: Some(role.into()),
        client: true,
        ..Subject::default()
    }
}

#[test]
fn an_issued_client_certificate_carries_name_role_and_region() {
    let (ca, _) = Ca::generate("test CA").unwrap();
    let mut s = subject("prober-eu-1", "prober");
    s.region = Some("eu-west".into());
    let issued = ca.issue(&s).unwrap();
    let der = pem_to_der(&issued.cert_pem);
    let id = peer_identity(&der).unwrap();
    assert_eq!(id.name, "prober-eu-1");
    assert_eq!(id.organization.as_deref(), Some("prober"));
    assert_eq!(id.unit.as_deref(), Some("eu-west"));

    let alice = peer_identity(&pem_to_der(&ca.issue(&subject("alice", "operator")).unwrap().cert_pem)).unwrap();
    assert_eq!(alice.unit, None);
    assert_eq!(alice.organization.as_deref(), Some("operator"));
}

#[test]
fn garbage_is_not_a_peer_certificate() {
    assert!(matches!(
        peer_identity(b"not a certificate"),
        Err(TlsError::BadPeerCertificate(_))
    ));
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_decode(&body)
}

// A tiny base64 decoder for the test (no extra dependency).
fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = T.iter().position(|t| *t == c).unwrap() as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn settings_that_do_not_fit_together_name_the_field() {
    let half = ServerTls {
        cert: Some("c.pem".into()),
        ..ServerTls::default()
    };
    assert!(half.check("tls").unwrap_err().to_string().contains("tls.key"));
    let need_ca = ServerTls {
        cert: Some("c.pem".into()),
        key: Some("k.pem".into()),
        require_client_cert: true,
        ..ServerTls::default()
    };
    assert!(need_ca.check("tls").unwrap_err().to_string().contains("tls.client_ca"));
    let client = ClientTls {
        cert: Some("c.pem".into()),
        key: Some("k.pem".into()),
        ..ClientTls::default()
    };
    assert!(client.check("tls").unwrap_err().to_string().contains("tls.ca"));
    assert!(ClientTls::default().load().unwrap().is_none());
    assert!(!ServerTls::default().enabled());
    assert!(rustls_server_config(&ServerTls::default(), &[b"h2"]).is_err());
}

#[test]
fn files_that_are_missing_or_not_pem_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ClientTls {
        ca: Some(dir.path().join("nope.pem")),
        ..ClientTls::default()
    };
    let err = missing.load().unwrap_err().to_string();
    assert!(err.contains("nope.pem") && err.contains("CA"), "{err}");
    let wrong = dir.path().join("key-as-ca.pem");
    let (_, issued) = Ca::generate("x").unwrap();
    std::fs::write(&wrong, &issued.key_pem).unwrap();
    let err = ClientTls {
        ca: Some(wrong),
        ..ClientTls::default()
    }
    .load()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("key-as-ca.pem") && err.contains("no PEM CERTIFICATE"),
        "{err}"
    );
}

#[test]
fn written_files_load_and_the_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_files) = Ca::generate("x").unwrap();
    let (ca_cert, ca_key) = ca_files.write(dir.path(), "ca").unwrap();
    let server = ca
        .issue(&Subject {
            name: "cp".into(),
            ips: vec!["127.0.0.1".parse().unwrap()],
            dns_names: vec!["localhost".into()],
            server: true,
            ..Subject::default()
        })
        .unwrap();
    let (cert, key) = server.write(dir.path(), "server").unwrap();
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let tls = ServerTls {
        cert: Some(cert),
        key: Some(key),
        client_ca: Some(ca_cert.clone()),
        require_client_cert: false,
    };
    assert!(rustls_server_config(&tls, &[b"h2"]).is_ok());
    // A CA loaded back from its files signs certificates that name it as issuer.
    let again = Ca::load(&ca_cert, &ca_key).unwrap();
    let issued = again.issue(&subject("bob", "viewer")).unwrap();
    assert_eq!(peer_identity(&pem_to_der(&issued.cert_pem)).unwrap().name, "bob");
}

#[test]
fn endpoints_match_scheme_and_tls() {
    let tls = ClientTlsConfig::new();
    assert!(endpoint("https://127.0.0.1:1", Some(&tls)).is_ok());
    assert!(endpoint("http://127.0.0.1:1", None).is_ok());
    let err = endpoint("https://127.0.0.1:1", None).unwrap_err().to_string();
    assert!(err.contains("no CA"), "{err}");
    let err = endpoint("http://10.0.0.1:1", Some(&tls)).unwrap_err().to_string();
    assert!(err.contains("use https://"), "{err}");
}

#[test]
fn loopback_urls() {
    assert!(is_loopback_url("http://127.0.0.1:7400"));
    assert!(is_loopback_url("https://localhost:7400"));
    assert!(is_loopback_url("http://[::1]:7400"));
    assert!(!is_loopback_url("http://10.1.2.3:7400"));
    assert!(!is_loopback_url("https://cp.example.com:7400"));
}
