//! Slow and greedy clients: header read timeout (slow-loris and idle connections), request
//! head size, request timeout (slow body), the cap on open connections and the bound on
//! requests handled at once.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection or `limit` passes; returns what was read and
/// whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_loris_is_disconnected_after_the_header_timeout() {
    let app = spawn_app_with(|s| s.header_read_timeout = Duration::from_secs(2)).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    let (mut rd, mut wr) = stream.split();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut closed = false;
    // One byte a second: each byte arrives well within any per-read timeout, but the whole
    // head never does.
    'outer: for byte in head.iter() {
        if wr.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(until, rd.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break 'outer;
                }
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
    }
    let took = started.elapsed();
    assert!(closed, "the slow client was not disconnected");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "disconnected after {took:?}, header_read_timeout is 2 s"
    );
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));

    // The server is still serving others.
    let ok = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|s| s.header_read_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "an idle connection is held open");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_100_kib_request_head_is_refused() {
    let app = spawn_app().await;
    let big = "a".repeat(100 * 1024);
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-big", big)
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), 431, "a 100 KiB head was accepted"),
        // Closing the connection is a refusal as well.
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }

    // Many small headers adding up past the limit: the same.
    let mut req = app.http.get(format!("{}/healthz", app.base));
    for i in 0..50 {
        req = req.header(format!("x-h{i}"), "b".repeat(2000));
    }
    match req.send().await {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }

    // An ordinary head still works.
    let ok = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-small", "b".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// Sends the head of a deposit whose body never comes; returns the stream.
async fn start_stalled_deposit(app: &TestApp, app_key: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr(app)).await.unwrap();
    let head = format!(
        "POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {app_key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"label\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn a_request_whose_body_stalls_gets_503_problem_json_after_the_timeout() {
    let app = spawn_app_with(|s| s.request_timeout = Duration::from_millis(800)).await;
    let (_, _, app_key) = app.device().await;
    let started = Instant::now();
    let mut stream = start_stalled_deposit(&app, &app_key).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("no answer to a stalled request")
        .unwrap();
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(
        answer.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains("\"code\":\"unavailable\""), "{answer}");
    assert!(took >= Duration::from_millis(700), "{took:?}");

    // The description says so, for every operation.
    let doc: serde_json::Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].get("503").is_some(),
                "{method} {path} does not document 503"
            );
        }
    }
}

#[tokio::test]
async fn requests_beyond_the_concurrency_bound_wait_for_a_slot() {
    let app = spawn_app_with(|s| {
        s.max_concurrent_requests = 1;
        s.request_timeout = Duration::from_millis(1500);
    })
    .await;
    let (_, _, app_key) = app.device().await;
    // Holds the only slot until its own timeout (1.5 s).
    let mut stalled = start_stalled_deposit(&app, &app_key).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "answered after {waited:?} although the only slot was taken"
    );
    assert!(resp.status() == 200 || resp.status() == 503);
    let (answer, _) = read_until_closed(&mut stalled, Duration::from_millis(300)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"));
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = spawn_app_with(|s| {
        s.max_connections = 2;
        // At most half of the connections may be event streams.
        s.max_event_streams = 1;
    })
    .await;
    let first = TcpStream::connect(addr(&app)).await.unwrap();
    let _second = TcpStream::connect(addr(&app)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let http = reqwest::Client::new();
    let url = format!("{}/healthz", app.base);
    // Timed from before the spawn: a busy machine may start the task late.
    let started = Instant::now();
    let third = tokio::spawn(async move {
        let status = http.get(url).send().await.map(|r| r.status().as_u16());
        (status, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third connection was served");
    drop(first);
    let (status, took) = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the waiting client is served once a slot frees")
        .unwrap();
    assert_eq!(status.unwrap(), 200);
    assert!(took >= Duration::from_millis(500));
}
