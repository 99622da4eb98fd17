//! `bankcache_client::Pool` from many threads, and reconnection: after a server restart on the same port,
//! and after a reply that was cut short.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use bankcache_client::{Client, Error, Pool};
use common::in_process::InProcess;

/// Eight threads share a pool of four connections: every op lands, and no more than four are opened.
#[test]
fn pool_from_eight_threads() {
    let server = InProcess::start();
    let pool = Pool::new(server.addr, 4).unwrap();
    assert_eq!(pool.size(), 4);
    pool.get().unwrap().put("p", "counter", &0, None).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    let mut c = pool.get().unwrap();
                    c.incr("p", "counter", 1.0).unwrap();
                    c.put("p", &format!("t{t}-{i}"), &(t * 1000 + i), None).unwrap();
                    assert_eq!(c.get::<usize>("p", &format!("t{t}-{i}")).unwrap(), Some(t * 1000 + i));
                    drop(c);
                    let n = pool.with(|c| c.pipeline().get("p", &format!("t{t}-{i}")).run()).unwrap();
                    assert_eq!(n.len(), 1);
                    assert!(pool.open_count() <= 4);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(pool.get().unwrap().get::<f64>("p", "counter").unwrap(), Some(2000.0));
    assert_eq!(pool.get().unwrap().bank_keys("p").unwrap().len(), 2001);
    assert!(pool.open_count() <= 4 && pool.open_count() >= 1);
    assert_eq!(pool.idle_count(), pool.open_count(), "every connection came back");
    let stats = pool.get().unwrap().stats().unwrap();
    assert!(stats["connections_total"].as_u64().unwrap() <= 4, "{stats:?}");
}

/// With every connection handed out, `get` waits until one comes back.
#[test]
fn pool_blocks_when_all_are_busy() {
    let server = InProcess::start();
    let pool = Pool::new(server.addr, 1).unwrap();
    let held = pool.get().unwrap();
    match pool.get_timeout(Duration::from_millis(100)) {
        Err(e @ Error::Connect(_)) => assert!(e.is_retryable()),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            pool.get().unwrap().ping().unwrap();
            started.elapsed()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    drop(held);
    assert!(waiter.join().unwrap() >= Duration::from_millis(150), "the waiter waited for the connection");
    assert_eq!(pool.open_count(), 1);
}

/// The server stops and a new one starts on the same port: a client and a pool carry on with their next
/// call. While it is down, calls fail with a retryable error, and the pool drops the broken connections.
#[test]
fn reconnect_after_server_restart_on_the_same_port() {
    let first = InProcess::start();
    let addr = first.addr;
    let mut client = Client::connect(addr).unwrap();
    client.put("r", "k", &1, None).unwrap();
    let pool = Pool::new(addr, 2).unwrap();
    {
        let (mut a, mut b) = (pool.get().unwrap(), pool.get().unwrap());
        a.ping().unwrap();
        b.ping().unwrap();
    }
    assert_eq!(pool.idle_count(), 2);

    drop(first);
    // Down: a retryable error, and the connection is gone.
    let err = client.ping().unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(!client.is_connected());
    {
        let mut c = pool.get().unwrap();
        assert!(c.ping().unwrap_err().is_retryable());
    }
    assert_eq!(pool.open_count(), 1, "the broken connection was dropped");

    let _second = InProcess::start_on(&addr.to_string(), false);
    // The memory-only server starts empty; the next call just works.
    assert_eq!(client.get::<i32>("r", "k").unwrap(), None);
    client.put("r", "k", &2, None).unwrap();
    assert_eq!(client.get::<i32>("r", "k").unwrap(), Some(2));
    for _ in 0..4 {
        let (mut a, mut b) = (pool.get().unwrap(), pool.get().unwrap());
        assert_eq!(a.get::<i32>("r", "k").unwrap(), Some(2));
        assert_eq!(b.get::<i32>("r", "k").unwrap(), Some(2));
    }
}

/// The server restarts between two calls of a connected client (no call while it is down): the first call
/// after the restart does not fail on the stale connection.
#[test]
fn stale_connection_is_replaced_before_sending() {
    let first = InProcess::start();
    let addr = first.addr;
    let mut client = Client::connect(addr).unwrap();
    client.put("r", "k", &1, None).unwrap();
    let pool = Pool::new(addr, 1).unwrap();
    pool.get().unwrap().ping().unwrap();
    drop(first);
    let _second = InProcess::start_on(&addr.to_string(), false);
    assert_eq!(client.incr("r", "k", 1.0).unwrap_err().server_message(), Some("Key k doesn't exist"));
    pool.get().unwrap().ping().unwrap();
}

/// A fake server that answers the first connection's request with half a reply and then stalls, and the
/// second properly: the client times out, drops the half-read connection, and the next call works on a
/// new one (it is not confused by the rest of the old reply).
#[test]
fn half_read_reply_drops_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (first, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(first.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        (&first).write_all(br#"{"status": "ok", "da"#).unwrap();
        let (second, _) = listener.accept().unwrap();
        // Now finish the first reply, too late: nobody must read it.
        let _ = (&first).write_all(b"ta\": \"stale\"}\n");
        let mut reader = BufReader::new(second.try_clone().unwrap());
        for _ in 0..2 {
            line.clear();
            reader.read_line(&mut line).unwrap();
            (&second).write_all(b"{\"status\": \"ok\", \"data\": \"fresh\"}\n").unwrap();
        }
        // A third request on this connection gets a reply line cut short by a close.
        line.clear();
        reader.read_line(&mut line).unwrap();
        (&second).write_all(br#"{"status": "ok""#).unwrap();
    });
    let mut c = Client::builder().read_timeout(Duration::from_millis(300)).connect(addr).unwrap();
    match c.get::<String>("b", "k") {
        Err(e @ Error::Io(_)) => assert!(e.is_retryable()),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(!c.is_connected());
    assert_eq!(c.get::<String>("b", "k").unwrap().as_deref(), Some("fresh"));
    assert_eq!(c.get::<String>("b", "k").unwrap().as_deref(), Some("fresh"));
    match c.get::<String>("b", "k") {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("expected an EOF, got {other:?}"),
    }
    assert!(!c.is_connected());
    fake.join().unwrap();
}

/// A reply that is not the protocol is a protocol error, and the connection is not reused.
#[test]
fn garbage_reply_is_a_protocol_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        for reply in [&b"HTTP/1.1 400 Bad Request\r\n"[..], b"{\"status\": \"maybe\"}\n"] {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            (&s).write_all(reply).unwrap();
        }
    });
    let mut c = Client::connect(addr).unwrap();
    assert!(matches!(c.ping(), Err(Error::Protocol(_))));
    assert!(!c.is_connected());
    match c.ping() {
        Err(e @ Error::Protocol(_)) => assert!(!e.is_retryable() && e.to_string().contains("maybe")),
        other => panic!("{other:?}"),
    }
    fake.join().unwrap();
}
