//! Scale-out as CacheFS proposed: three bankcache instances, each with its own data directory, behind a real
//! nginx running `docs/nginx.conf` (`hash $request_uri consistent`). nginx is a dependency of this test: it
//! fails, never skips, when nginx is missing (`.ci/run` installs it).

mod common;

use std::net::SocketAddr;

use common::nginx::{http, Nginx};
use common::TestServer;

const KEYS: usize = 300;

/// Every key written through nginx lands on exactly one instance, the one nginx names; reads through nginx
/// find it; keys spread over all three; and with one instance stopped, the others' keys are still served
/// from where they were while only the stopped instance's share (about a third) moves.
#[test]
fn nginx_consistent_hash_spreads_keys_over_instances() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers: Vec<Option<TestServer>> = dirs
        .iter()
        .map(|d| {
            Some(TestServer::start(&["--data-dir", d.path().to_str().unwrap(), "--volume-size", "1048576"]))
        })
        .collect();
    let backends: Vec<SocketAddr> = servers.iter().map(|s| s.as_ref().unwrap().http_addr()).collect();
    let nginx = Nginx::start(&backends);

    let mut owner = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let (status, headers, body) =
            http(nginx.addr, "PUT", &format!("/file-{i}"), format!("value {i}").as_bytes());
        assert_eq!((status, body.as_slice()), (200, &b"ok"[..]), "PUT /file-{i} through nginx");
        let upstream: SocketAddr = headers["x-upstream"].parse().expect("nginx names the instance");
        owner.push(backends.iter().position(|b| *b == upstream).expect("a known instance"));
    }
    let mut per_instance = [0usize; 3];
    for (i, &o) in owner.iter().enumerate() {
        let held: Vec<usize> =
            (0..3).filter(|&b| http(backends[b], "GET", &format!("/file-{i}"), b"").0 == 200).collect();
        assert_eq!(held, [o], "key file-{i} must be on exactly the instance nginx sent it to");
        let (status, _, body) = http(nginx.addr, "GET", &format!("/file-{i}"), b"");
        assert_eq!((status, body), (200, format!("value {i}").into_bytes()));
        per_instance[o] += 1;
    }
    for (b, n) in per_instance.iter().enumerate() {
        assert!(*n > KEYS / 5 && *n < KEYS / 2, "instance {b} holds {n} of {KEYS} keys: {per_instance:?}");
    }

    // Stop the third instance.
    drop(servers[2].take());
    let mut moved = 0;
    for (i, &o) in owner.iter().enumerate() {
        let (status, headers, body) = http(nginx.addr, "GET", &format!("/file-{i}"), b"");
        if o == 2 {
            moved += 1;
            assert_eq!(status, 404, "file-{i} lived on the stopped instance: now a miss elsewhere");
            assert_ne!(headers.get("x-upstream").map(String::as_str), Some(backends[2].to_string().as_str()));
        } else {
            assert_eq!((status, body), (200, format!("value {i}").into_bytes()), "file-{i} still served");
            assert!(headers["x-upstream"].contains(&backends[o].to_string()), "file-{i} did not move");
        }
    }
    let share = moved as f64 / KEYS as f64;
    assert!((0.2..0.5).contains(&share), "{moved} of {KEYS} keys moved");
}

/// Stopping the test's nginx leaves no process behind: its workers go with the master (SIGQUIT, not a
/// SIGKILL that would orphan them).
#[test]
fn stopping_nginx_leaves_no_worker_behind() {
    let server = TestServer::start(&[]);
    let nginx = Nginx::start(&[server.http_addr(), server.http_addr(), server.http_addr()]);
    let (status, _, _) = http(nginx.addr, "GET", "/absent", b"");
    assert_eq!(status, 404);
    let workers = nginx.workers();
    assert!(!workers.is_empty(), "nginx runs no worker process");
    drop(nginx);
    let left: Vec<u32> = workers.into_iter().filter(|&w| common::nginx::alive(w)).collect();
    assert!(left.is_empty(), "nginx workers {left:?} outlived their master");
}
