//! The holder's client: one deposit's `kmh_` token, which opens exactly that key — its status,
//! its lifetime, a fresh code, revocation and the live event stream.

use std::collections::VecDeque;

use futures::stream::{self, BoxStream, Stream, StreamExt};
use keymaster_core::handoff::{b64url, Bytes32};
use keymaster_core::wire::{Event, KeyStatus, PatchKeyRequest, RecodeResponse, SasReveal};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};

use crate::http::{checked, send_empty, send_json, Conn};
use crate::sse::{SseMessage, SseParser};
use crate::Error;

/// Follows and manages one deposited key.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), keymaster_client::Error> {
/// use futures::StreamExt;
/// use keymaster_client::HolderClient;
///
/// let holder = HolderClient::new("http://127.0.0.1:8080", "the-key-id", "kmh_…")?;
/// println!("status: {}", holder.status().await?.status);
/// let mut events = Box::pin(holder.events(None));
/// while let Some(event) = events.next().await {
///     let event = event?;
///     if event.event_type == "key.retrieved" {
///         let by = event.data.service.map(|s| s.name).unwrap_or_default();
///         println!("retrieved by {by}");
///         break;
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HolderClient {
    conn: Conn,
    key_id: String,
}

impl HolderClient {
    /// A client for key `key_id` at the key master at `base_url`, with its holder token.
    pub fn new(base_url: &str, key_id: &str, holder_token: &str) -> Result<Self, Error> {
        Ok(HolderClient {
            conn: Conn::new(base_url, holder_token)?,
            key_id: key_id.to_owned(),
        })
    }

    /// Like [`HolderClient::new`], sharing the caller's `reqwest::Client` pool.
    pub fn with_http_client(
        base_url: &str,
        key_id: &str,
        holder_token: &str,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        Ok(HolderClient {
            conn: Conn::with_http(base_url, holder_token, http)?,
            key_id: key_id.to_owned(),
        })
    }

    /// The id of the key this client follows.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn request(&self, method: Method, tail: &[&str]) -> Result<RequestBuilder, Error> {
        let mut segments = vec!["v1", "keys", self.key_id.as_str()];
        segments.extend_from_slice(tail);
        self.conn.request(method, &segments)
    }

    /// `GET /v1/keys/{id}`: status, counters and history.
    pub async fn status(&self) -> Result<KeyStatus, Error> {
        send_json(self.request(Method::GET, &[])?).await
    }

    /// `PATCH /v1/keys/{id}`: shortens or extends a live key's life.
    pub async fn patch(&self, request: &PatchKeyRequest) -> Result<KeyStatus, Error> {
        send_json(self.request(Method::PATCH, &[])?.json(request)).await
    }

    /// `DELETE /v1/keys/{id}`: the key is gone at once.
    pub async fn revoke(&self) -> Result<(), Error> {
        send_empty(self.request(Method::DELETE, &[])?).await
    }

    /// `POST /v1/keys/{id}/code`: a fresh code for the same key; the old one dies at once.
    pub async fn recode(&self) -> Result<RecodeResponse, Error> {
        send_json(self.request(Method::POST, &["code"])?).await
    }

    /// `POST /v1/keys/{id}/sas`: reveals the device's SAS nonce `nd` (the one whose
    /// commitment went with the deposit) for the retrieval a `sas.requested` event named.
    /// Before the service asked, the answer is `409 sas_not_requested`.
    pub async fn reveal_sas(&self, retrieval_id: &str, nd: &Bytes32) -> Result<(), Error> {
        let body = SasReveal {
            retrieval_id: retrieval_id.to_owned(),
            nonce: b64url(nd),
        };
        send_empty(self.request(Method::POST, &["sas"])?.json(&body)).await
    }

    /// `GET /v1/keys/{id}/events`: the key's events as they happen, resuming after
    /// `last_event_id` when given. The stream ends when the server closes it (after the key is
    /// gone and its last event was sent); it does not reconnect by itself — pass the last
    /// event's id to a new call to resume. A refused request is the stream's first and only item.
    pub fn events(
        &self,
        last_event_id: Option<&str>,
    ) -> impl Stream<Item = Result<Event, Error>> + Send + 'static {
        let request = self
            .conn
            .request_untimed(Method::GET, &["v1", "keys", &self.key_id, "events"])
            .map(|request| {
                let request = request.header(ACCEPT, "text/event-stream");
                match last_event_id {
                    Some(id) => request.header("Last-Event-ID", id),
                    None => request,
                }
            });
        stream::unfold(EventsState::Connect(request), next_event)
    }
}

/// Where the event stream is.
enum EventsState {
    /// Not connected yet.
    Connect(Result<RequestBuilder, Error>),
    /// Reading the body; `queue` holds messages parsed but not yet handed out.
    Reading {
        body: BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>,
        parser: SseParser,
        queue: VecDeque<SseMessage>,
    },
    /// Ended, by the server or by an error.
    Done,
}

async fn next_event(mut state: EventsState) -> Option<(Result<Event, Error>, EventsState)> {
    loop {
        state = match state {
            EventsState::Done => return None,
            EventsState::Connect(request) => match connect(request).await {
                Ok(body) => EventsState::Reading {
                    body,
                    parser: SseParser::default(),
                    queue: VecDeque::new(),
                },
                Err(err) => return Some((Err(err), EventsState::Done)),
            },
            EventsState::Reading {
                mut body,
                mut parser,
                mut queue,
            } => {
                if let Some(message) = queue.pop_front() {
                    let event = serde_json::from_str::<Event>(&message.data).map_err(|err| {
                        Error::Decode(format!("unreadable event from the key master: {err}"))
                    });
                    return Some((
                        event,
                        EventsState::Reading {
                            body,
                            parser,
                            queue,
                        },
                    ));
                }
                match body.next().await {
                    None => EventsState::Done,
                    Some(Err(err)) => return Some((Err(Error::Transport(err)), EventsState::Done)),
                    Some(Ok(chunk)) => {
                        queue.extend(parser.push(&chunk));
                        EventsState::Reading {
                            body,
                            parser,
                            queue,
                        }
                    }
                }
            }
        }
    }
}

async fn connect(
    request: Result<RequestBuilder, Error>,
) -> Result<BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>, Error> {
    let response = checked(request?.send().await?).await?;
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("text/event-stream") {
        return Err(Error::Decode(format!(
            "the key master answered the event stream with {content_type:?}, not text/event-stream"
        )));
    }
    Ok(response.bytes_stream().boxed())
}
