//! A deposit load for the fail-over test: several clients depositing in a loop, alternating
//! between the servers, and every answer written down — acknowledged (the code and key id),
//! refused (the status and whether the body was a problem+json with its error code), or unknown
//! (no answer: a dropped connection or a timeout, after which the deposit may or may not have
//! been made). Plain HTTP rather than the SDK, so that the content type of each refusal is seen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keymaster_core::key::{generate, GenerateAlgorithm};
use serde_json::{json, Value};

/// How long a client waits for one answer before it counts the request as unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of one request.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// `201`: the deposit was made and this is its code.
    Acked { code: String, id: String },
    /// A `2xx` that is not a deposit (a `/readyz` that answered `200`).
    Ok,
    /// An error status.
    Refused(Refusal),
    /// No answer.
    Unknown(String),
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub status: u16,
    /// The problem's `code` when the body was `application/problem+json` with one.
    pub problem: Option<String>,
}

/// One request's answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub at: Instant,
    /// Index of the server asked.
    pub server: usize,
    /// `deposit` or `readyz`.
    pub what: &'static str,
    pub outcome: Outcome,
}

/// Clients depositing until stopped.
pub struct Load {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    app_key: Arc<String>,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` clients depositing through `bases` with `app_key`.
    pub fn start(bases: Vec<String>, app_key: String, clients: usize) -> Load {
        let mut load = Load {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap(),
            bases: Arc::new(bases),
            app_key: Arc::new(app_key),
            stop: Arc::default(),
            answers: Arc::default(),
            clients: Vec::new(),
        };
        for client in 0..clients {
            let (http, bases, app_key, stop, answers) = (
                load.http.clone(),
                load.bases.clone(),
                load.app_key.clone(),
                load.stop.clone(),
                load.answers.clone(),
            );
            load.clients.push(tokio::spawn(async move {
                let mut n = client;
                while !stop.load(Ordering::SeqCst) {
                    let server = n % bases.len();
                    n += 1;
                    let outcome = deposit(&http, &bases[server], &app_key).await;
                    let acked = matches!(outcome, Outcome::Acked { .. });
                    answers.lock().unwrap().push(Answer {
                        at: Instant::now(),
                        server,
                        what: "deposit",
                        outcome,
                    });
                    if !acked {
                        // Refusals can come fast; do not spin on them.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        load
    }

    /// Deposits acknowledged so far.
    pub fn acked(&self) -> usize {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Acked { .. }))
            .count()
    }

    /// Whether `server` refused a `what` (`deposit`, `readyz`) since `since`.
    pub fn refused_since(&self, server: usize, what: &str, since: Instant) -> bool {
        self.answers.lock().unwrap().iter().any(|a| {
            a.server == server
                && a.what == what
                && a.at >= since
                && matches!(a.outcome, Outcome::Refused(_))
        })
    }

    /// Waits until `server` answers `/readyz` with `200` and then acknowledges a deposit (both
    /// written down with the load's answers), asking every 100 ms; `None` after `limit`.
    pub fn until_serving(
        &self,
        server: usize,
        limit: Duration,
    ) -> tokio::task::JoinHandle<Option<Instant>> {
        let (http, bases, app_key, answers) = (
            self.http.clone(),
            self.bases.clone(),
            self.app_key.clone(),
            self.answers.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            while started.elapsed() < limit {
                let base = &bases[server];
                let ready = readyz(&http, base).await;
                let is_ready = matches!(ready, Outcome::Ok);
                let note = |what, outcome| {
                    answers.lock().unwrap().push(Answer {
                        at: Instant::now(),
                        server,
                        what,
                        outcome,
                    })
                };
                note("readyz", ready);
                if is_ready {
                    let outcome = deposit(&http, base, &app_key).await;
                    let acked = matches!(outcome, Outcome::Acked { .. });
                    note("deposit", outcome);
                    if acked {
                        return Some(Instant::now());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        })
    }

    /// Stops the clients and returns every answer, in the order they came.
    pub async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.unwrap();
        }
        let mut answers = self.answers.lock().unwrap().clone();
        answers.sort_by_key(|a| a.at);
        answers
    }
}

/// One deposit of a fresh Ed25519 public key.
async fn deposit(http: &reqwest::Client, base: &str, app_key: &str) -> Outcome {
    let (key, _) = generate(GenerateAlgorithm::Ed25519, &mut rand::rngs::OsRng).unwrap();
    let body = json!({"public_key": key.to_openssh().unwrap(), "label": "fail-over"});
    let sent = http
        .post(format!("{base}/v1/keys"))
        .bearer_auth(app_key)
        .json(&body);
    match send(sent).await {
        Ok(reply) if reply.status == 201 => {
            match (reply.body["code"].as_str(), reply.body["id"].as_str()) {
                (Some(code), Some(id)) => Outcome::Acked {
                    code: code.to_owned(),
                    id: id.to_owned(),
                },
                _ => Outcome::Unknown(format!("a 201 without a code: {}", reply.body)),
            }
        }
        reply => outcome(reply),
    }
}

/// `GET /readyz`.
async fn readyz(http: &reqwest::Client, base: &str) -> Outcome {
    outcome(send(http.get(format!("{base}/readyz"))).await)
}

fn outcome(reply: Result<Reply, String>) -> Outcome {
    match reply {
        Ok(reply) if (200..300).contains(&reply.status) => Outcome::Ok,
        Ok(reply) => Outcome::Refused(reply.refusal()),
        Err(e) => Outcome::Unknown(e),
    }
}

/// An answer as it came.
pub struct Reply {
    pub status: u16,
    /// Whether the content type was `application/problem+json`.
    pub problem_json: bool,
    /// The body as JSON (`null` when it was not JSON).
    pub body: Value,
}

impl Reply {
    pub fn refusal(&self) -> Refusal {
        Refusal {
            status: self.status,
            problem: self
                .problem_json
                .then(|| self.body["code"].as_str().map(str::to_owned))
                .flatten(),
        }
    }
}

/// Sends `sent` and reads its answer; `Err` when none came (connection, timeout).
pub async fn send(sent: reqwest::RequestBuilder) -> Result<Reply, String> {
    let response = sent.send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let problem_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    let bytes = response.bytes().await.map_err(|e| format!("{e:?}"))?;
    Ok(Reply {
        status,
        problem_json,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}
