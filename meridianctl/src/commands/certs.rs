//! `meridianctl certs`: a CA and certificates with Meridian's subject convention
//! (CN = identity, O = role or kind, OU = a prober's region). Offline: no control
//! plane is contacted.

use meridian_tls::pki::{Ca, Subject};
use serde::Serialize;

use crate::cli::CertsCommand;
use crate::error::CtlError;
use crate::output::{render, Format, Report};

/// What was written.
#[derive(Debug, Serialize)]
struct Written {
    subject: String,
    cert: String,
    key: String,
}

fn tls(e: meridian_tls::TlsError) -> CtlError {
    CtlError::Tls(e.to_string())
}

pub fn run(cmd: &CertsCommand, format: Format) -> Result<Report, CtlError> {
    let written = match cmd {
        CertsCommand::Init { dir, name } => {
            let cert = dir.join("ca.pem");
            if cert.exists() {
                return Err(CtlError::Tls(format!(
                    "{} exists: refusing to replace a CA (every certificate it signed would stop working)",
                    cert.display()
                )));
            }
            let (_, files) = Ca::generate(name).map_err(tls)?;
            let (cert, key) = files.write(dir, "ca").map_err(tls)?;
            Written {
                subject: format!("CN={name} (CA)"),
                cert: cert.display().to_string(),
                key: key.display().to_string(),
            }
        }
        CertsCommand::Issue {
            dir,
            name,
            role,
            region,
            dns,
            ip,
            days,
            out,
        } => {
            if role == "prober" && region.is_none() {
                return Err(CtlError::Tls(
                    "a prober certificate needs --region (it may report only for it)".into(),
                ));
            }
            if role != "prober" && region.is_some() {
                return Err(CtlError::Tls("--region is for prober certificates only".into()));
            }
            if *days < 1 {
                return Err(CtlError::Tls(format!("--days must be at least 1, got {days}")));
            }
            let ca = Ca::load(&dir.join("ca.pem"), &dir.join("ca.key")).map_err(tls)?;
            let server = !dns.is_empty() || !ip.is_empty();
            let subject = Subject {
                name: name.clone(),
                role: Some(role.clone()),
                region: region.clone(),
                dns_names: dns.clone(),
                ips: ip.clone(),
                server,
                client: true,
                validity_days: Some((-1, *days)),
            };
            let issued = ca.issue(&subject).map_err(tls)?;
            let (cert, key) = issued.write(out.as_deref().unwrap_or(dir), name).map_err(tls)?;
            let mut what = format!("CN={name}, O={role}");
            if let Some(r) = region {
                what.push_str(&format!(", OU={r}"));
            }
            Written {
                subject: what,
                cert: cert.display().to_string(),
                key: key.display().to_string(),
            }
        }
    };
    Ok(Report::success(render(format, &written, |w| {
        format!(
            "{}\n  certificate: {}\n  key:         {} (mode 0600)\n",
            w.subject, w.cert, w.key
        )
    })?))
}
