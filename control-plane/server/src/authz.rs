//! Authorization: one table of RPC → who may call it, and one layer in front of every
//! gRPC service that enforces it.
//!
//! Roles nest for people: a viewer reads (queries), an operator also drains,
//! undrains and drives changes, an admin also applies topology, restores plans,
//! resumes steering and lifts freezes. Probers and edge agents have their own
//! identities and may call only their own service. The standard health service and
//! reflection are open (load balancers and `grpcurl list` need them).
//!
//! Decision: the table is data ([`RPC_ACCESS`]) keyed by the gRPC path, checked by a
//! tower layer before any handler runs, and a test walks the proto's descriptor so an
//! RPC added without a rule fails the build's tests; an RPC missing from the table is
//! refused at run time, never allowed. Rejected: checks inside each handler, where one
//! forgotten line opens an RPC.
//!
//! Credentials are bearer tokens (`authorization: Bearer …`, configured per
//! operator with a role, per agent, and per prober with its region) or mTLS client
//! certificates, whose subject names the identity (CN), the role or kind (O:
//! `viewer`, `operator`, `admin`, `prober`, `agent`, `replica`) and a prober's
//! region (OU): the CA that signs them decides who may do what, as in Kubernetes.
//! A token, when present, wins over the certificate. The resolved [`Principal`] is
//! put on the request's extensions, so handlers know who calls without re-reading
//! credentials. A replica forwarding a mutation to the leader authenticates as
//! itself (O = `replica`) and names the caller and role it forwards for; only a
//! replica may do that. `mode = "off"` keeps every RPC open, with a loud warning.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use meridian_core::Identity;
use serde::{Deserialize, Serialize};

/// An operator's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("`{other}` is not a role (viewer, operator, admin)")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// Who may call an RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, authenticated or not.
    Open,
    /// An operator with at least this role.
    AtLeast(Role),
    /// A prober (for its own region; the probe API checks the region).
    Prober,
    /// An edge agent.
    Agent,
}

/// Every RPC the control plane serves and who may call it. An RPC not listed here is
/// refused.
pub const RPC_ACCESS: &[(&str, Access)] = &[
    // Queries.
    ("/meridian.v1.QueryService/GetStatus", Access::AtLeast(Role::Viewer)),
    ("/meridian.v1.QueryService/GetPlan", Access::AtLeast(Role::Viewer)),
    ("/meridian.v1.QueryService/GetHealth", Access::AtLeast(Role::Viewer)),
    ("/meridian.v1.QueryService/ExplainPop", Access::AtLeast(Role::Viewer)),
    ("/meridian.v1.QueryService/ListChanges", Access::AtLeast(Role::Viewer)),
    ("/meridian.v1.QueryService/GetChange", Access::AtLeast(Role::Viewer)),
    ("/meridian.v1.QueryService/ListEvents", Access::AtLeast(Role::Viewer)),
    ("/meridian.v1.QueryService/GetSlo", Access::AtLeast(Role::Viewer)),
    ("/meridian.v1.QueryService/WhatIf", Access::AtLeast(Role::Viewer)),
    ("/meridian.v1.QueryService/ListAgents", Access::AtLeast(Role::Viewer)),
    // Operator actions: drains and staged changes.
    ("/meridian.v1.OperatorService/Drain", Access::AtLeast(Role::Operator)),
    ("/meridian.v1.OperatorService/Undrain", Access::AtLeast(Role::Operator)),
    (
        "/meridian.v1.OperatorService/SetCapacity",
        Access::AtLeast(Role::Operator),
    ),
    (
        "/meridian.v1.OperatorService/PauseChange",
        Access::AtLeast(Role::Operator),
    ),
    (
        "/meridian.v1.OperatorService/ResumeChange",
        Access::AtLeast(Role::Operator),
    ),
    (
        "/meridian.v1.OperatorService/RollbackChange",
        Access::AtLeast(Role::Operator),
    ),
    (
        "/meridian.v1.OperatorService/RevertChange",
        Access::AtLeast(Role::Operator),
    ),
    (
        "/meridian.v1.OperatorService/ApproveChange",
        Access::AtLeast(Role::Operator),
    ),
    // Stopping the line is for operators; lifting it, for admins.
    ("/meridian.v1.OperatorService/Freeze", Access::AtLeast(Role::Operator)),
    ("/meridian.v1.OperatorService/Unfreeze", Access::AtLeast(Role::Admin)),
    // What changes the edge for everyone: admins.
    (
        "/meridian.v1.OperatorService/ApplyTopology",
        Access::AtLeast(Role::Admin),
    ),
    ("/meridian.v1.OperatorService/RestorePlan", Access::AtLeast(Role::Admin)),
    (
        "/meridian.v1.OperatorService/ResumeSteering",
        Access::AtLeast(Role::Admin),
    ),
    // The fleet.
    ("/meridian.v1.ProbeService/WatchAssignments", Access::Prober),
    ("/meridian.v1.ProbeService/ReportResults", Access::Prober),
    ("/meridian.v1.PlanService/WatchPlan", Access::Agent),
    // Infrastructure.
    ("/grpc.health.v1.Health/Check", Access::Open),
    ("/grpc.health.v1.Health/Watch", Access::Open),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Open,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Open,
    ),
];

/// Who a credential belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Operator {
        identity: Identity,
        role: Role,
    },
    Prober {
        identity: Identity,
        region: String,
    },
    Agent {
        identity: Identity,
    },
    /// Another control-plane replica (it may forward operators' calls).
    Replica {
        identity: Identity,
    },
}

/// Metadata a forwarding replica sets: the role of the caller it forwards for (the
/// caller's identity travels in `x-meridian-identity`). Honoured only from a
/// [`Principal::Replica`].
pub const FORWARDED_ROLE: &str = "x-meridian-forwarded-role";

impl Principal {
    pub fn identity(&self) -> &Identity {
        match self {
            Principal::Operator { identity, .. }
            | Principal::Prober { identity, .. }
            | Principal::Agent { identity }
            | Principal::Replica { identity } => identity,
        }
    }

    /// The role an operator acts with (`None` for the fleet and replicas).
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::Operator { role, .. } => Some(*role),
            _ => None,
        }
    }

    /// Who an mTLS client certificate says its holder is: CN the identity, O the
    /// role or kind, OU a prober's region.
    pub fn from_certificate(peer: &meridian_tls::PeerIdentity) -> Result<Principal, String> {
        let identity = Identity::new(peer.name.clone()).map_err(|e| format!("certificate CN: {e}"))?;
        let kind = peer
            .organization
            .as_deref()
            .ok_or("the certificate's subject has no organization (O) naming a role or kind")?;
        match kind {
            "prober" => {
                let region = peer
                    .unit
                    .clone()
                    .ok_or("a prober certificate names its region in the organizational unit (OU)")?;
                meridian_core::ids::validate_id("region", &region).map_err(|e| format!("certificate OU: {e}"))?;
                Ok(Principal::Prober { identity, region })
            }
            "agent" => Ok(Principal::Agent { identity }),
            "replica" => Ok(Principal::Replica { identity }),
            role => role
                .parse::<Role>()
                .map(|role| Principal::Operator { identity, role })
                .map_err(|_| {
                    format!("the certificate's organization (O) `{role}` is not a role or kind (viewer, operator, admin, prober, agent, replica)")
                }),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Operator { identity, role } => write!(f, "{identity} (role {role})"),
            Principal::Prober { identity, region } => write!(f, "prober {identity} (region {region})"),
            Principal::Agent { identity } => write!(f, "agent {identity}"),
            Principal::Replica { identity } => write!(f, "replica {identity}"),
        }
    }
}

/// Why a call was refused; each maps to its gRPC status and says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{rpc} needs a credential: a client certificate from the cluster's CA (meridianctl --cert/--key), or `authorization: Bearer <token>` (meridianctl --token or MERIDIAN_TOKEN)")]
    Unauthenticated { rpc: String },
    #[error("the credential presented for {rpc} is not known to this control plane")]
    UnknownCredential { rpc: String },
    #[error("the client certificate presented for {rpc} cannot be used: {reason}")]
    BadCertificate { rpc: String, reason: String },
    #[error("{who} may not call {rpc}: it needs {needs}")]
    PermissionDenied { rpc: String, who: String, needs: String },
    #[error("{rpc} has no access rule, so it is refused (a new RPC needs a line in authz::RPC_ACCESS)")]
    NoRule { rpc: String },
}

impl Denied {
    pub fn status(&self) -> tonic::Status {
        match self {
            Denied::Unauthenticated { .. } | Denied::UnknownCredential { .. } | Denied::BadCertificate { .. } => {
                tonic::Status::unauthenticated(self.to_string())
            }
            Denied::PermissionDenied { .. } | Denied::NoRule { .. } => {
                tonic::Status::permission_denied(self.to_string())
            }
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Denied::Unauthenticated { .. } => "unauthenticated",
            Denied::UnknownCredential { .. } => "unknown_credential",
            Denied::BadCertificate { .. } => "bad_certificate",
            Denied::PermissionDenied { .. } => "permission_denied",
            Denied::NoRule { .. } => "no_rule",
        }
    }
}

/// The access rule of an RPC path.
pub fn access(rpc: &str) -> Option<Access> {
    RPC_ACCESS.iter().find(|(path, _)| *path == rpc).map(|(_, a)| *a)
}

/// Whether `principal` (`None`: no credential presented) may call `rpc`.
pub fn decide(rpc: &str, principal: Option<&Principal>) -> Result<(), Denied> {
    let Some(rule) = access(rpc) else {
        return Err(Denied::NoRule { rpc: rpc.to_string() });
    };
    if rule == Access::Open {
        return Ok(());
    }
    let Some(principal) = principal else {
        return Err(Denied::Unauthenticated { rpc: rpc.to_string() });
    };
    let allowed = match (rule, principal) {
        (Access::AtLeast(needed), Principal::Operator { role, .. }) => *role >= needed,
        (Access::Prober, Principal::Prober { .. }) | (Access::Agent, Principal::Agent { .. }) => true,
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let who = principal.to_string();
    let needs = match rule {
        Access::AtLeast(role) => format!("role {role} or higher"),
        Access::Prober => "a prober credential".into(),
        Access::Agent => "an agent credential".into(),
        Access::Open => "nothing".into(),
    };
    Err(Denied::PermissionDenied {
        rpc: rpc.to_string(),
        who,
        needs,
    })
}

/// Enforcing or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every RPC open (the behaviour before authorization existed); warned about at
    /// start-up. For throwaway local experiments only.
    Off,
    /// Every RPC checked against [`RPC_ACCESS`] (the default).
    #[default]
    Enforce,
}

/// The admin port's check: a viewer credential (or better) — a bearer token from
/// `credentials`, else an mTLS client certificate with an operator role — on every
/// request; 401 without one, 403 for the fleet's identities.
pub fn admin_check(credentials: Arc<Credentials>) -> Arc<meridian_daemon::admin::AdminCheck> {
    Arc::new(move |authorization: Option<&str>, certificate: Option<&[u8]>| {
        let principal = match credentials.lookup(authorization) {
            Ok(Some(p)) => Some(p.clone()),
            Ok(None) => certificate.and_then(|der| {
                meridian_tls::peer_identity(der)
                    .ok()
                    .and_then(|peer| Principal::from_certificate(&peer).ok())
            }),
            Err(UnknownCredential) => {
                return Err((401, "the bearer token is not known to this control plane".to_string()))
            }
        };
        match principal {
            Some(Principal::Operator { .. }) => Ok(()),
            Some(other) => Err((403, format!("{other} may not read the admin port: it needs role viewer or higher"))),
            None => Err((
                401,
                "the admin port needs a viewer credential: a client certificate from the cluster's CA (O = viewer or higher) or `Authorization: Bearer <token>`".to_string(),
            )),
        }
    })
}

/// The identity of the bootstrap admin credential.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";

/// The bootstrap admin token at `path`: read when the file exists, else created
/// (random, mode 0600). A control plane that enforces roles with no operator
/// credential and no client CA configured would otherwise admit nobody.
pub fn bootstrap_admin_token(path: &std::path::Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().len() >= MIN_TOKEN_LEN => return Ok(text.trim().to_string()),
        Ok(_) => {
            return Err(format!(
                "{} holds no usable token; delete it to have a new one written",
                path.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(token)
}

/// The `[auth]` section of the control plane's configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `off` (every RPC open, warned about) or `enforce`.
    pub mode: AuthMode,
    /// People and tools: an identity, a role and a bearer token.
    pub operators: Vec<OperatorCredential>,
    /// Edge agents (DNS, Anycast): an identity and a bearer token.
    pub agents: Vec<AgentCredential>,
}

/// One operator credential.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorCredential {
    pub id: String,
    pub role: Role,
    /// The bearer token, inline.
    pub token: Option<String>,
    /// Or a file holding it (trailing whitespace ignored; keep it mode 0600).
    pub token_file: Option<std::path::PathBuf>,
}

/// One edge agent credential.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCredential {
    pub id: String,
    pub token: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
}

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Reads `token` or `token_file` (exactly one); the error names the field.
pub fn read_token(
    token: &Option<String>,
    token_file: &Option<std::path::PathBuf>,
) -> Result<String, (&'static str, String)> {
    let token = match (token, token_file) {
        (Some(t), None) => t.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| ("token_file", format!("cannot read {}: {e}", path.display())))?
            .trim()
            .to_string(),
        _ => return Err(("token", "set exactly one of `token` and `token_file`".into())),
    };
    if token.len() < MIN_TOKEN_LEN {
        return Err(("token", format!("must be at least {MIN_TOKEN_LEN} characters")));
    }
    Ok(token)
}

impl AuthSettings {
    /// The credentials table: operators and agents from this section, probers from
    /// the `[[probers]]` tokens. Errors name the field (`auth.operators[1].token`).
    pub fn credentials<'a>(
        &self,
        probers: impl IntoIterator<Item = (&'a String, &'a crate::config::ProberIdentity)>,
    ) -> Result<Credentials, (String, String)> {
        let mut credentials = Credentials::default();
        for (i, op) in self.operators.iter().enumerate() {
            let at = |field: &str| format!("auth.operators[{i}].{field}");
            let identity = Identity::new(op.id.clone()).map_err(|e| (at("id"), e.to_string()))?;
            let token = read_token(&op.token, &op.token_file).map_err(|(f, m)| (at(f), m))?;
            credentials
                .insert(
                    token,
                    Principal::Operator {
                        identity,
                        role: op.role,
                    },
                )
                .map_err(|m| (at("token"), m))?;
        }
        for (i, a) in self.agents.iter().enumerate() {
            let at = |field: &str| format!("auth.agents[{i}].{field}");
            let identity = Identity::new(a.id.clone()).map_err(|e| (at("id"), e.to_string()))?;
            let token = read_token(&a.token, &a.token_file).map_err(|(f, m)| (at(f), m))?;
            credentials
                .insert(token, Principal::Agent { identity })
                .map_err(|m| (at("token"), m))?;
        }
        for (token, p) in probers {
            let identity = Identity::new(p.id.clone()).map_err(|e| ("probers.id".to_string(), e.to_string()))?;
            credentials
                .insert(
                    token.clone(),
                    Principal::Prober {
                        identity,
                        region: p.region.clone(),
                    },
                )
                .map_err(|m| ("probers.token".to_string(), m))?;
        }
        Ok(credentials)
    }
}

/// An `authorization` header that is not a known bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCredential;

/// Bearer token → principal.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    by_token: HashMap<String, Principal>,
}

impl Credentials {
    /// Adds a credential; a token already given to someone is refused (and the
    /// first holder keeps it).
    pub fn insert(&mut self, token: String, principal: Principal) -> Result<(), String> {
        if self.by_token.contains_key(&token) {
            return Err("the same token is given to two identities".into());
        }
        self.by_token.insert(token, principal);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    /// The principal behind an `authorization` header value: `Ok(None)` when there
    /// is no header, an error when it is not a known bearer token.
    pub fn lookup(&self, header: Option<&str>) -> Result<Option<&Principal>, UnknownCredential> {
        let Some(value) = header else { return Ok(None) };
        let token = value.strip_prefix("Bearer ").ok_or(UnknownCredential)?;
        self.by_token.get(token.trim()).map(Some).ok_or(UnknownCredential)
    }
}

/// The tower layer that puts [`decide`] in front of every service.
#[derive(Clone, Debug)]
pub struct AuthzLayer {
    mode: AuthMode,
    credentials: Arc<Credentials>,
    /// Where refusals are recorded (who, RPC, why), when set.
    audit: Option<Arc<crate::events::EventLog>>,
}

impl AuthzLayer {
    pub fn new(mode: AuthMode, credentials: Arc<Credentials>) -> Self {
        Self {
            mode,
            credentials,
            audit: None,
        }
    }

    /// Records every refusal in `log` (it never blocks: the log queues).
    pub fn with_audit(mut self, log: Arc<crate::events::EventLog>) -> Self {
        self.audit = Some(log);
        self
    }

    fn record_refusal(&self, rpc: &str, who: Option<&Principal>, denied: &Denied) {
        let Some(log) = &self.audit else { return };
        let identity = who.map(|p| p.identity().clone()).unwrap_or_else(Identity::anonymous);
        log.record(meridian_engine::Event {
            at_unix_ms: crate::convert::now_ms(),
            actor: meridian_core::Actor::Operator(identity),
            role: who.and_then(Principal::role).map(|r| r.to_string()),
            kind: meridian_engine::EventKind::Refused {
                rpc: rpc.to_string(),
                target: None,
                reason: denied.to_string(),
            },
        });
    }

    /// Who presents this request: the bearer token's holder, else the client
    /// certificate's; a replica forwarding for an operator stands for that operator.
    /// With `mode = "off"`, a credential that does not resolve is ignored.
    pub fn resolve(&self, rpc: &str, presented: &Presented<'_>) -> Result<Option<Principal>, Denied> {
        let off = self.mode == AuthMode::Off;
        let principal = match self.credentials.lookup(presented.authorization) {
            Ok(Some(p)) => Some(p.clone()),
            Err(UnknownCredential) if off => None,
            Err(UnknownCredential) => {
                // A rule-less RPC is refused as such, even with a bad credential.
                if access(rpc).is_none() {
                    return Err(Denied::NoRule { rpc: rpc.to_string() });
                }
                return Err(Denied::UnknownCredential { rpc: rpc.to_string() });
            }
            Ok(None) => match presented.certificate {
                None => None,
                Some(der) => {
                    let parsed = meridian_tls::peer_identity(der)
                        .map_err(|e| e.to_string())
                        .and_then(|peer| Principal::from_certificate(&peer));
                    match parsed {
                        Ok(p) => Some(p),
                        Err(_) if off => None,
                        Err(reason) => {
                            return Err(Denied::BadCertificate {
                                rpc: rpc.to_string(),
                                reason,
                            })
                        }
                    }
                }
            },
        };
        match (principal, presented.forwarded) {
            (Some(Principal::Replica { identity: replica }), Some((caller, role))) => {
                let role = role.parse::<Role>().map_err(|reason| Denied::BadCertificate {
                    rpc: rpc.to_string(),
                    reason: format!("replica {replica} forwarded an invalid role: {reason}"),
                })?;
                let identity = Identity::new(caller).map_err(|e| Denied::BadCertificate {
                    rpc: rpc.to_string(),
                    reason: format!("replica {replica} forwarded an invalid identity: {e}"),
                })?;
                Ok(Some(Principal::Operator { identity, role }))
            }
            (p, _) => Ok(p),
        }
    }

    /// The decision for one request: who it is (`Ok(None)`: nobody, allowed because
    /// the RPC is open or authorization is off) or why it is refused, with whoever
    /// was resolved (for the audit record).
    pub fn authorize(
        &self,
        rpc: &str,
        presented: &Presented<'_>,
    ) -> Result<Option<Principal>, (Denied, Option<Principal>)> {
        let principal = self.resolve(rpc, presented).map_err(|denied| (denied, None))?;
        if self.mode == AuthMode::Enforce {
            if let Err(denied) = decide(rpc, principal.as_ref()) {
                return Err((denied, principal));
            }
        }
        Ok(principal)
    }

    /// The decision for a request with only an `authorization` header.
    pub fn check(&self, rpc: &str, authorization: Option<&str>) -> Result<(), Denied> {
        self.authorize(
            rpc,
            &Presented {
                authorization,
                ..Presented::default()
            },
        )
        .map(|_| ())
        .map_err(|(denied, _)| denied)
    }
}

/// The credentials one request presents.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presented<'a> {
    /// The `authorization` header.
    pub authorization: Option<&'a str>,
    /// The verified mTLS client certificate (DER), if any.
    pub certificate: Option<&'a [u8]>,
    /// `(identity, role)` a forwarding replica names.
    pub forwarded: Option<(&'a str, &'a str)>,
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authz<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authz {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`AuthzLayer`]'s service.
#[derive(Clone, Debug)]
pub struct Authz<S> {
    inner: S,
    layer: AuthzLayer,
}

impl<S, B> tower::Service<http::Request<B>> for Authz<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, futures::future::Ready<Result<http::Response<tonic::body::Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let certificate = meridian_tls::peer_certificate(req.extensions());
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let forwarded = match (header(crate::grpc::IDENTITY), header(FORWARDED_ROLE)) {
            (Some(identity), Some(role)) => Some((identity, role)),
            _ => None,
        };
        let presented = Presented {
            authorization: header(http::header::AUTHORIZATION.as_str()),
            certificate: certificate.as_deref(),
            forwarded,
        };
        // Resolve once; the same principal is decided on, audited and handed on.
        let rpc = req.uri().path();
        match self.layer.authorize(rpc, &presented) {
            Ok(principal) => {
                if let Some(p) = principal {
                    req.extensions_mut().insert(p);
                }
                futures::future::Either::Left(self.inner.call(req))
            }
            Err((denied, who)) => {
                metrics::counter!("meridian_control_plane_rpc_denied_total", "reason" => denied.reason()).increment(1);
                self.layer.record_refusal(req.uri().path(), who.as_ref(), &denied);
                tracing::warn!(
                    rpc = req.uri().path(),
                    reason = denied.reason(),
                    "RPC refused: {denied}"
                );
                futures::future::Either::Right(futures::future::ready(Ok(denied.status().into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests;
