//! The connections keygate holds (`server.*`): slow heads and idle keep-alive connections are
//! closed in time, and a client holding more connections than the cap leaves room for others.
//!
//! Every wait here is for a signal (the server closing a socket, a response) with a generous
//! upper bound; the lower bounds check a connection is not closed before its time.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{Backend, TestServer};

/// The most a loaded two-core machine may take to notice a deadline that has passed.
const LATE: Duration = Duration::from_secs(5);

fn address(server: &TestServer) -> std::net::SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection from `local` (all of 127.0.0.0/8 is loopback on Linux).
pub async fn connect_from(local: &str, server: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads until the server closes `stream` (end of stream or reset), at most `within`; returns
/// what it sent.
pub async fn until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut received = Vec::new();
    let read_all = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all)
        .await
        .expect("the server did not close the connection in time");
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads one response (head and a `Content-Length` body) from a kept-alive connection.
async fn one_response(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(LATE, stream.read(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before answering");
        response.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

async fn with_timeouts(header_read_ms: u64, idle_ms: u64) -> TestServer {
    TestServer::start_with(Backend::Sqlite, |c| {
        c.server.header_read_timeout_ms = header_read_ms;
        c.server.idle_timeout_ms = idle_ms;
    })
    .await
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let server = with_timeouts(300, 5_000).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(address(&server)).await.unwrap();
    let said = until_closed(&mut silent, LATE).await;
    let after = started.elapsed();
    assert_eq!(said, "", "closed without an answer");
    assert!(
        after >= Duration::from_millis(290),
        "closed early, after {after:?}"
    );
    // And the server goes on serving.
    assert_eq!(server.get("/healthz").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_head_sent_a_byte_every_100_ms_is_cut_off() {
    let server = with_timeouts(300, 5_000).await;
    let stream = TcpStream::connect(address(&server)).await.unwrap();
    let (mut reading, mut writing) = stream.into_split();
    // Sixty bytes at ten a second would take six seconds to arrive.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: keygate\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(20)
    );
    assert!(head.len() >= 60);
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in head.as_bytes() {
            if writing.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(LATE, reading.read_to_end(&mut answer)).await;
    let after = started.elapsed();
    assert!(closed.is_ok(), "still open after {after:?}");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        after >= Duration::from_millis(290),
        "closed early, after {after:?}"
    );
    trickle.abort();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lasts_the_idle_timeout_not_the_header_one() {
    let server = with_timeouts(300, 1_500).await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: keygate\r\n\r\n";
    stream.write_all(request).await.unwrap();
    assert!(one_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle for twice the header-read timeout: still open, and the next request is served.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream.write_all(request).await.unwrap();
    assert!(one_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let said = until_closed(&mut stream, LATE).await;
    let after = idle_from.elapsed();
    assert_eq!(said, "");
    // Well past the header-read timeout: it is the idle one that closed it.
    assert!(
        after >= Duration::from_millis(1_200),
        "closed early, after {after:?}"
    );
}

#[tokio::test]
async fn a_slow_head_after_a_kept_alive_request_is_cut_off_too() {
    // Idle may last 5 s, but once the next request's first byte arrives, its head has 300 ms.
    let server = with_timeouts(300, 5_000).await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: keygate\r\n\r\n";
    stream.write_all(request).await.unwrap();
    assert!(one_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    let (mut reading, mut writing) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in request.iter().cycle().take(60) {
            if writing.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(LATE, reading.read_to_end(&mut answer)).await;
    let after = started.elapsed();
    assert!(closed.is_ok(), "still open after {after:?}");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        after < Duration::from_secs(4),
        "the idle timeout closed it, not the head's"
    );
    trickle.abort();
}

#[tokio::test]
async fn a_request_served_slowly_is_not_cut_off_by_the_header_timeout() {
    // A body trickling in after a prompt head is the request being served: it may take longer
    // than the header-read timeout, as long as bytes keep moving.
    let server = with_timeouts(300, 2_000).await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    let body = format!(r#"{{"credential": "{}"}}"#, server.token);
    let head = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.token,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.as_bytes().chunks(body.len().div_ceil(6)) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(chunk).await.unwrap();
    }
    let response = one_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""valid":true"#), "{response}");
}

#[tokio::test]
async fn a_normal_request_is_served_while_one_client_holds_more_than_the_cap() {
    // A cap of 20: one address may hold 5.
    let server = TestServer::start_with(Backend::Sqlite, |c| c.server.max_connections = 20).await;
    let at = address(&server);
    let mut hostile = Vec::new();
    for _ in 0..30 {
        hostile.push(connect_from("127.0.0.2", at).await);
    }
    // Accepted in the order they connected: the first five are held, the rest refused at once,
    // with a 503 problem, without a byte of theirs being read.
    for refused in &mut hostile[5..] {
        let said = until_closed(refused, LATE).await;
        assert!(said.starts_with("HTTP/1.1 503 "), "{said}");
        assert!(said.contains("\r\nretry-after: 1\r\n"), "{said}");
        assert!(said.contains("\r\nx-request-id: req_"), "{said}");
        assert!(said.contains(r#""code":"unavailable""#), "{said}");
    }
    for _ in 0..3 {
        let response = server.whoami(&[("apikey", &server.token)]).await;
        assert_eq!(response.status(), 200);
    }

    // Fifteen more from three other addresses fill the cap: now everyone is refused, quickly.
    let mut others = Vec::new();
    for local in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..5 {
            others.push(connect_from(local, at).await);
        }
    }
    let mut late = connect_from("127.0.0.6", at).await;
    assert!(
        until_closed(&mut late, LATE)
            .await
            .starts_with("HTTP/1.1 503 ")
    );
    // Once they go, the slots are free again.
    drop(others);
    drop(hostile);
    let deadline = Instant::now() + LATE;
    loop {
        let mut fresh = connect_from("127.0.0.6", at).await;
        fresh
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 16];
        let n = fresh.read(&mut buffer).await.unwrap_or(0);
        if buffer[..n].starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connections' slots were not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
