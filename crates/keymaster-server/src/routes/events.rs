//! `GET /v1/keys/{id}/events`: the holder's live event stream (`text/event-stream`).
//!
//! It reads the stored events (the outbox table), so it works whichever replica the holder is
//! connected to: it reads the events after the last one sent whenever the store says events
//! were committed (`Store::commits`: this process's commits, and on PostgreSQL the other
//! replicas' through `LISTEN/NOTIFY`), and every [`FALLBACK`] in case a notification was lost.
//! Every stream wakes at every commit, nearly always another key's: such a wake reads only the
//! key's new events (one query), and looks whether the key is gone only when there are some,
//! or once every [`FALLBACK`] (a key can end without an event: its record's retention ends, or
//! a SAS reveal window closes). A full read (two or three queries) at every wake multiplies
//! each commit by the open streams: with ~35 open during 100 retrievals/s on two PostgreSQL
//! replicas, that put the p95 from a retrieval's answer to its event at 119 ms
//! (`bench/delivery`, docs/performance.md).
//! It resumes after `Last-Event-ID`, and ends once the key is gone and its last event has been
//! sent, or when the server stops.
//!
//! A stream takes no request slot; it holds a place of its own instead (`capacity`): one of
//! the server's `max_event_streams`, taken before the holder is authenticated, and one of its
//! key's four. Both are held by the stream's body and given back when it ends or the client
//! goes away.
//!
//! A key deposited with a SAS commitment keeps its stream open after it is gone while a
//! retrieval of it waits for the device's reveal (at most `store::handoff::REVEAL_WINDOW`
//! after the retrieval), so that `sas.requested` reaches the device.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};

use crate::auth::Holder;
use crate::capacity::{KeyStreamSlot, StreamSlot};
use crate::crypto::token_hash;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest wait for events without a notification.
const FALLBACK: Duration = Duration::from_secs(1);
/// Shortest time between two reads of one stream: under a stream of commits (most of them other
/// keys'), a stream reads at most this often.
const MIN_GAP: Duration = Duration::from_millis(10);

/// A place among the server's event streams. As an extractor placed before [`Holder`], it is
/// taken before the token is looked up, so that stream requests, which take no request slot,
/// are bounded from their first database query on.
pub struct ServerStreamSlot(StreamSlot);

impl FromRequestParts<AppState> for ServerStreamSlot {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.capacity.try_stream().map(ServerStreamSlot)
    }
}

#[utoipa::path(
    get, path = "/v1/keys/{id}/events", tag = "holder",
    params(
        ("id" = String, Path, description = "Key id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    security(("holder_token" = [])),
    responses(
        (status = 200, description = "The key's events as server-sent events; data is the event JSON", content_type = "text/event-stream", body = String),
        (status = 401, description = "unauthorized", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: the key has 4 streams open, or the server its max_event_streams; see Retry-After", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
    )
)]
/// Follows the key's events as they happen.
pub async fn events(
    State(state): State<AppState>,
    ServerStreamSlot(server_slot): ServerStreamSlot,
    Holder(rec): Holder,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    if rec.id != id {
        return Err(ApiError::NotFound);
    }
    let slot = state.capacity.try_key_stream(server_slot, &rec.id)?;
    let token_hash = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').map(|(_, t)| token_hash(t.trim())))
        .ok_or(ApiError::Unauthorized)?;
    let after = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(last) => state.store.event_seq(&id, last).await?.unwrap_or(0),
        None => 0,
    };

    // The stream ends when the server starts to stop, so that a stop is not held up by it.
    let mut stopping = state.shutdown.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };

    struct Cursor {
        state: AppState,
        /// Changes at every commit of events; subscribed before the first read, so that no
        /// commit after that read goes unnoticed.
        commits: tokio::sync::watch::Receiver<u64>,
        last_read: tokio::time::Instant,
        /// When the stream last looked whether the key is gone.
        last_full: tokio::time::Instant,
        key_id: String,
        token_hash: Vec<u8>,
        after: i64,
        first: bool,
        done: bool,
        /// Given back when the stream ends (the cursor is dropped) or is dropped.
        _slot: KeyStreamSlot,
    }
    let cursor = Cursor {
        commits: state.store.commits(),
        last_read: tokio::time::Instant::now(),
        last_full: tokio::time::Instant::now(),
        state,
        key_id: id,
        token_hash,
        after,
        first: true,
        done: false,
        _slot: slot,
    };
    let s = stream::unfold(cursor, |mut c| async move {
        loop {
            if c.done {
                return None;
            }
            if !c.first {
                let woken = tokio::time::timeout(FALLBACK, c.commits.changed()).await;
                if matches!(woken, Ok(Err(_))) {
                    // No notifier any more (the store is going away): poll.
                    tokio::time::sleep(FALLBACK).await;
                }
                tokio::time::sleep_until(c.last_read + MIN_GAP).await;
                c.last_read = tokio::time::Instant::now();
                // A commit, most likely of another key's events: nothing to do unless this key
                // has new events (read again below, after looking whether the key is gone).
                if matches!(woken, Ok(Ok(()))) && c.last_read < c.last_full + FALLBACK {
                    match c.state.store.key_events(&c.key_id, c.after).await {
                        Ok(b) if b.is_empty() => continue,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "event stream: store error; ending stream");
                            return None;
                        }
                    }
                }
            }
            c.first = false;
            c.last_read = tokio::time::Instant::now();
            c.last_full = c.last_read;
            // Whether the key was gone *before* reading events: then what we read is the last.
            let gone = match c
                .state
                .store
                .key_by_holder(Some(&c.key_id), &c.token_hash)
                .await
            {
                Ok(Some(r)) if !r.state.is_live() => {
                    match c
                        .state
                        .store
                        .awaiting_reveal(&c.key_id, jiff::Timestamp::now())
                        .await
                    {
                        Ok(waiting) => !waiting,
                        Err(e) => {
                            tracing::warn!(error = %e, "event stream: store error; ending stream");
                            return None;
                        }
                    }
                }
                Ok(Some(_)) => false,
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: store error; ending stream");
                    return None;
                }
            };
            let batch = match c.state.store.key_events(&c.key_id, c.after).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: store error; ending stream");
                    return None;
                }
            };
            if gone && batch.len() < 1000 {
                c.done = true;
            }
            if batch.is_empty() {
                continue;
            }
            if let Some(last) = batch.last() {
                c.after = last.seq;
            }
            let items: Vec<Result<SseEvent, Infallible>> = batch
                .into_iter()
                .map(|e| {
                    let data = serde_json::to_string(&e.event).unwrap_or_default();
                    Ok(SseEvent::default()
                        .id(e.event.id.clone())
                        .event(e.event.event_type.clone())
                        .data(data))
                })
                .collect();
            return Some((stream::iter(items), c));
        }
    })
    .flatten()
    .take_until(stopped);
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
