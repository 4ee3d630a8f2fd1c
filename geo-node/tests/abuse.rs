//! A primary that holds under abuse, on a real server over loopback: a thousand half-open
//! connections do not keep a signed request out, heads that never finish and idle keep-alive
//! connections are closed on time, the connection cap holds, and one access key cannot take
//! more than its share of requests in flight.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use geo_node::auth::{Credentials, KeyRing, RequestData};
use geo_node::metrics::ConnectionEnd;
use geo_node::server::{NodeState, PrimaryService, ServeOptions, ServerHandle};

/// The fixture's primary served again with `options`, accepting its key and `extra` keys;
/// `state` may set the per-key limit.
fn serve(
    p: &Primary,
    extra: &[Credentials],
    state: impl FnOnce(NodeState) -> NodeState,
    options: ServeOptions,
) -> ServerHandle {
    let keys = KeyRing::with(std::iter::once(p.creds.clone()).chain(extra.iter().cloned()));
    let s = NodeState::new("abused", keys).with_primary(PrimaryService::direct(
        p.db.clone(),
        p.store.clone(),
        Some(p.verifier.clone()),
    ));
    ServerHandle::start_with("127.0.0.1:0", Arc::new(state(s)), options).unwrap()
}

/// A connection that sent half a request head and nothing more.
fn half_open(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /api/geo/status HTTP/1.1\r\nHost: x\r\nAuthoriz")
        .unwrap();
    s
}

/// Sends a signed `GET path` (bound to `data`) with `creds` on `s`.
fn send_signed(s: &mut TcpStream, path: &str, data: &RequestData, creds: &Credentials) {
    let auth = creds.authorization(data, Utc::now().timestamp());
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    )
    .unwrap();
}

/// Reads one response with a `Content-Length` body: (status, head, body).
fn read_response(r: &mut impl BufRead) -> (u16, String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed in the head");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("a Content-Length");
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (code, head, body)
}

/// A signed status request on a new connection: its status and how long it took.
fn signed_status(addr: &str, creds: &Credentials) -> (u16, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let path = "/api/geo/status";
    send_signed(&mut s, path, &RequestData::get(path), creds);
    let (code, _, _) = read_response(&mut BufReader::new(s));
    (code, started.elapsed())
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_thousand_half_open_connections_do_not_keep_a_signed_request_out() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Primary::direct(tmp.path());
    create_doc(&p.db, p.store.as_ref(), "a/1", b"one");
    p.verify_all();
    // The defaults: a cap of 1024 and a 10 s header-read timeout, which none of them reach.
    let server = serve(&p, &[], |s| s, ServeOptions::new());
    let addr = server.addr().to_string();
    let idle: Vec<TcpStream> = (0..1000).map(|_| half_open(&addr)).collect();
    wait_for("1,000 connections open", Duration::from_secs(20), || {
        server.open_connections() == 1000
    });
    let (code, took) = signed_status(&addr, &p.creds);
    eprintln!("signed request beside 1,000 half-open connections: {took:?}");
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(idle);

    // With a cap below the flood, the connections serving nothing give way to the signed one.
    let capped = serve(&p, &[], |s| s, ServeOptions::new().max_connections(100));
    let addr = capped.addr().to_string();
    let mut idle: Vec<TcpStream> = (0..1000).map(|_| half_open(&addr)).collect();
    wait_for("the cap reached", Duration::from_secs(20), || {
        capped
            .state()
            .metrics()
            .connections_closed(ConnectionEnd::Evicted)
            >= 900
    });
    assert!(capped.open_connections() <= 100);
    let (code, took) = signed_status(&addr, &p.creds);
    eprintln!("signed request at a cap of 100 under 1,000 half-open connections: {took:?}");
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The oldest of them were closed by the server.
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)));
    assert!(capped.open_connections() <= 100);
}

#[test]
fn heads_that_never_finish_and_idle_connections_are_closed_on_time() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Primary::direct(tmp.path());
    let options = ServeOptions::new()
        .header_read_timeout(Duration::from_millis(300))
        .idle_timeout(Duration::from_millis(1500));
    let server = serve(&p, &[], |s| s, options);
    let addr = server.addr().to_string();

    // Half a head, or nothing at all: closed after the header-read timeout.
    let started = Instant::now();
    let mut half: Vec<TcpStream> = (0..50).map(|_| half_open(&addr)).collect();
    half.extend((0..10).map(|_| TcpStream::connect(&addr).unwrap()));
    for s in &mut half {
        assert!(closed_within(s, Duration::from_secs(3)));
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    wait_for("every slot released", Duration::from_secs(2), || {
        server.open_connections() == 0
    });
    let m = server.state().metrics();
    assert_eq!(m.connections_closed(ConnectionEnd::HeaderTimeout), 60);

    // A head trickled in slower than the timeout is closed too, whatever it sends.
    let mut slow = TcpStream::connect(&addr).unwrap();
    for b in b"GET /api/geo/status HTTP/1.1\r\n" {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(closed_within(&mut slow, Duration::from_secs(2)));

    // A keep-alive connection: a second request after a pause shorter than the idle timeout
    // (and longer than the header-read timeout) is served on it; after the idle timeout it is
    // closed.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let path = "/api/geo/status";
    send_signed(&mut s, path, &RequestData::get(path), &p.creds);
    assert_eq!(read_response(&mut r).0, 200);
    std::thread::sleep(Duration::from_millis(700));
    send_signed(&mut s, path, &RequestData::get(path), &p.creds);
    assert_eq!(
        read_response(&mut r).0,
        200,
        "kept alive past the head timeout"
    );
    let idle_from = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(1400), "closed after {idle:?}");
    assert_eq!(m.connections_closed(ConnectionEnd::IdleTimeout), 1);
}

/// Starts a download of a large blob and reads only its head: the request stays in flight
/// (its body cannot be sent) until the connection is dropped.
fn stalled_download(addr: &str, id: i64, creds: &Credentials) -> (TcpStream, u16) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send_signed(
        &mut s,
        &format!("/api/geo/retrieve/doc/{id}"),
        &RequestData::blob("doc", id),
        creds,
    );
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in the head");
        head.push(b[0]);
    }
    let code = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (s, code)
}

/// A blob too large to sit in the socket buffers: its download stalls when nobody reads.
fn big_doc(p: &Primary) -> i64 {
    create_doc(&p.db, p.store.as_ref(), "big/1", &data(7, 48 << 20)).id
}

#[test]
fn the_connection_cap_holds_when_every_connection_is_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Primary::direct(tmp.path());
    let big = big_doc(&p);
    let server = serve(
        &p,
        &[],
        |s| s.with_max_requests_per_key(100),
        ServeOptions::new().max_connections(8),
    );
    let addr = server.addr().to_string();
    let busy: Vec<TcpStream> = (0..8)
        .map(|_| {
            let (s, code) = stalled_download(&addr, big, &p.creds);
            assert_eq!(code, 200);
            s
        })
        .collect();
    assert_eq!(server.open_connections(), 8);
    // Every connection is serving: a ninth, and a flood of half-open ones, are closed at once
    // and never counted beyond the cap.
    let mut ninth = half_open(&addr);
    assert!(closed_within(&mut ninth, Duration::from_secs(2)));
    let flood: Vec<TcpStream> = (0..100).map(|_| half_open(&addr)).collect();
    let m = server.state().metrics();
    wait_for("the flood refused", Duration::from_secs(5), || {
        m.connections_closed(ConnectionEnd::Refused) >= 101
    });
    assert_eq!(server.open_connections(), 8);
    assert_eq!(m.connections_closed(ConnectionEnd::Evicted), 0);
    drop(flood);
    // When downloads end, their places come free.
    drop(busy);
    wait_for("the slots released", Duration::from_secs(5), || {
        server.open_connections() == 0
    });
    assert_eq!(signed_status(&addr, &p.creds).0, 200);
}

#[test]
fn one_access_key_gets_429_beyond_its_requests_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Primary::direct(tmp.path());
    let big = big_doc(&p);
    let other = Credentials::generate();
    let server = serve(
        &p,
        std::slice::from_ref(&other),
        |s| s.with_max_requests_per_key(2),
        ServeOptions::new(),
    );
    let addr = server.addr().to_string();
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let (s, code) = stalled_download(&addr, big, &p.creds);
            assert_eq!(code, 200);
            s
        })
        .collect();

    // The third request of the same key: 429, the usual JSON body, Retry-After.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let path = "/api/geo/status";
    send_signed(&mut s, path, &RequestData::get(path), &p.creds);
    let (code, head, body) = read_response(&mut BufReader::new(s));
    assert_eq!(code, 429, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["geo_code"], "TOO_MANY_REQUESTS", "{body}");
    assert_eq!(server.state().metrics().key_limited_count(), 1);
    assert_eq!(server.state().metrics().requests("status", 429), 1);

    // Another key is not limited by the first one's requests.
    assert_eq!(signed_status(&addr, &other).0, 200);
    // A bad token is still a 401, not a 429: the limit counts authenticated keys only.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send_signed(&mut s, path, &RequestData::get("/api/geo/other"), &p.creds);
    assert_eq!(read_response(&mut BufReader::new(s)).0, 401);

    // Once a download ends, the key may send again.
    drop(stalled);
    wait_for("the key's places released", Duration::from_secs(5), || {
        signed_status(&addr, &p.creds).0 == 200
    });
}
