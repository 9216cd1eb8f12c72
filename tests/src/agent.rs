//! A scripted plan agent: subscribes with `WatchPlan` to the first replica that
//! answers (failing over in order), records every plan version it receives, and
//! ACKs it — or NACKs it with a reason, to test rejection handling.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::v1 as pb;
use tokio::task::JoinHandle;

/// One plan as the agent received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub version: u64,
    /// The replica endpoint it came from.
    pub from: String,
    pub plan: pb::SteeringPlan,
}

pub struct TestAgent {
    pub id: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl TestAgent {
    /// Subscribes to `endpoints` (tried in order); NACKs every plan when `nack` is set.
    pub fn start(id: &str, endpoints: Vec<String>, nack: Option<&str>) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let rec = received.clone();
        let agent_id = id.to_string();
        let nack = nack.map(|s| s.to_string());
        let task = tokio::spawn(async move {
            let mut applied = 0u64;
            loop {
                for ep in &endpoints {
                    let tls = ep.starts_with("https://").then(|| {
                        let pki = crate::pki::pki();
                        pki.client_tls(&pki.agent(&agent_id))
                    });
                    let Ok(channel) = meridian_tls::endpoint(ep, tls.as_ref()).unwrap().connect().await else {
                        continue;
                    };
                    let mut client = pb::plan_service_client::PlanServiceClient::new(channel);
                    let (tx, rx) = tokio::sync::mpsc::channel(16);
                    let hello = pb::AgentHello {
                        agent_id: agent_id.clone(),
                        kind: pb::AgentKind::Dns as i32,
                        applied_version: applied,
                    };
                    let _ = tx
                        .send(pb::AgentMessage {
                            msg: Some(pb::agent_message::Msg::Hello(hello)),
                        })
                        .await;
                    let Ok(resp) = client.watch_plan(tokio_stream::wrappers::ReceiverStream::new(rx)).await else {
                        continue;
                    };
                    let mut stream = resp.into_inner();
                    while let Ok(Some(update)) = stream.message().await {
                        let Some(plan) = update.plan else { continue };
                        let version = plan.version;
                        rec.lock().unwrap().push(Received {
                            version,
                            from: ep.clone(),
                            plan,
                        });
                        let msg = match &nack {
                            Some(reason) => pb::agent_message::Msg::Nack(pb::PlanNack {
                                version,
                                reason: reason.clone(),
                            }),
                            None => {
                                applied = version;
                                pb::agent_message::Msg::Ack(pb::PlanAck { version })
                            }
                        };
                        if tx.send(pb::AgentMessage { msg: Some(msg) }).await.is_err() {
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        TestAgent {
            id: id.to_string(),
            received,
            task,
        }
    }

    pub fn versions(&self) -> Vec<u64> {
        self.received.lock().unwrap().iter().map(|r| r.version).collect()
    }

    pub fn latest(&self) -> Option<Received> {
        self.received.lock().unwrap().last().cloned()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
