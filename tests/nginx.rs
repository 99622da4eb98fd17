//! Scale-out as CacheFS proposed: three bankcache instances, each with its own data directory, behind a real
//! nginx running `docs/nginx.conf` (`hash $request_uri consistent`). nginx is a dependency of this test: it
//! fails, never skips, when nginx is missing (`.ci/run` installs it).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;

const KEYS: usize = 300;

/// One HTTP/1.1 exchange on a fresh connection: status, headers (lower-case names) and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, headers, body)
}

fn nginx_binary() -> String {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("this test needs nginx (Debian: apt-get install nginx); .ci/run installs it");
}

struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Runs `docs/nginx.conf` with its upstreams pointed at `backends` and its listener on a free port.
    fn start(backends: &[SocketAddr]) -> Nginx {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/nginx.conf")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut conf = doc
            .replace("listen 127.0.0.1:8080;", &format!("listen 127.0.0.1:{port};"))
            .replace("worker_processes auto;", "worker_processes 1;");
        for (i, backend) in backends.iter().enumerate() {
            let documented = format!("server 127.0.0.1:{} ", 1234 + i);
            assert!(conf.contains(&documented), "docs/nginx.conf no longer has `{documented}`");
            conf = conf.replace(&documented, &format!("server {backend} "));
        }
        let dir = tempfile::tempdir().unwrap();
        // nginx's workers drop privileges: let them use the prefix directory.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let prefix = format!("{}/", dir.path().display());
        let child = Command::new(nginx_binary())
            .args(["-c", conf_path.to_str().unwrap(), "-p", &prefix])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start listening on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, addr, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
