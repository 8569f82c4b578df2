//! A loopback webhook receiver for the process tests, on plain tokio: it notes the `webhook-id`
//! of every request, and either answers `204` or, while told to hang, holds the request open
//! without answering (as a receiver that accepts and never answers does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The receiver.
pub struct Sink {
    pub url: String,
    hang: Arc<AtomicBool>,
    /// `webhook-id`s of every request received.
    received: Arc<Mutex<Vec<String>>>,
    /// `webhook-id`s of the requests answered `204`.
    answered: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    pub async fn start(hang: bool) -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let sink = Sink {
            url,
            hang: Arc::new(AtomicBool::new(hang)),
            received: Arc::default(),
            answered: Arc::default(),
        };
        let (hang, received, answered) = (
            sink.hang.clone(),
            sink.received.clone(),
            sink.answered.clone(),
        );
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (hang, received, answered) = (hang.clone(), received.clone(), answered.clone());
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    loop {
                        let (mut id, mut length) = (String::new(), 0usize);
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                match name.trim().to_ascii_lowercase().as_str() {
                                    "webhook-id" => id = value.trim().to_owned(),
                                    "content-length" => length = value.trim().parse().unwrap_or(0),
                                    _ => {}
                                }
                            }
                        }
                        let mut body = vec![0u8; length];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        received.lock().unwrap().push(id.clone());
                        if hang.load(Ordering::SeqCst) {
                            // Hold the connection until the sender goes away.
                            let mut rest = Vec::new();
                            let _ = r.read_to_end(&mut rest).await;
                            return;
                        }
                        answered.lock().unwrap().push(id);
                        if w.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        sink
    }

    /// From now on, answer every request.
    pub fn answer(&self) {
        self.hang.store(false, Ordering::SeqCst);
    }

    /// How many requests arrived (answered or not).
    pub fn received(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The distinct ids answered `204`.
    pub fn answered_ids(&self) -> std::collections::HashSet<String> {
        self.answered.lock().unwrap().iter().cloned().collect()
    }
}
