//! Scale-out as CacheFS proposed: three bankcache instances, each with its own data directory, behind a real
//! nginx running `docs/nginx.conf` (`hash $request_uri consistent`); and the file's TLS-termination example.
//! nginx is a dependency of these tests: they fail, never skip, when nginx is missing (`.ci/run` installs it).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// The TLS example at the end of `docs/nginx.conf`, uncommented as it is written (only its port and
/// certificate paths changed): curl over HTTPS stores and reads a key through nginx, which speaks plaintext
/// HTTP to bankcache. Needs `openssl` and `curl` (the test fails, never skips, without them).
#[test]
fn nginx_terminates_tls_in_front_of_bankcache() {
    let server = TestServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("bankcache.pem"), dir.path().join("bankcache.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("this test needs the openssl command");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    // nginx's workers drop privileges: let them read the pair.
    for path in [dir.path(), &cert, &key] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let tls_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nginx = Nginx::start_with(&[server.http_addr(); 3], |conf| {
        let block = uncomment_block(&conf, "    # server {", "    # }");
        block
            .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{tls_port} ssl;"))
            .replace("/etc/ssl/certs/bankcache.pem", cert.to_str().unwrap())
            .replace("/etc/ssl/private/bankcache.key", key.to_str().unwrap())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen for TLS on {tls_port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://localhost:{tls_port}/secret-key");
    let resolve = format!("localhost:{tls_port}:127.0.0.1");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", cert.to_str().unwrap(), "--resolve", &resolve])
            .args(args)
            .output()
            .expect("this test needs curl");
        assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&["-X", "PUT", "--data-binary", "over tls", &url]), "ok");
    assert_eq!(curl(&[&url]), "over tls");
    // bankcache itself got it as plain HTTP.
    let (status, _, body) = http(server.http_addr(), "GET", "/secret-key", b"");
    assert_eq!((status, body.as_slice()), (200, &b"over tls"[..]));
    drop(nginx);
}

/// `conf` with the commented-out block from the line `first` to the line `last` uncommented (one `# ` taken
/// off each of its lines).
fn uncomment_block(conf: &str, first: &str, last: &str) -> String {
    let mut inside = false;
    let mut found = false;
    let lines: Vec<String> = conf
        .lines()
        .map(|line| {
            inside |= line == first;
            let out = match line.find('#') {
                Some(at) if inside => {
                    let rest = &line[at + 1..];
                    format!("{}{}", &line[..at], rest.strip_prefix(' ').unwrap_or(rest))
                }
                _ => line.to_owned(),
            };
            if inside && line == last {
                (inside, found) = (false, true);
            }
            out
        })
        .collect();
    assert!(found, "docs/nginx.conf no longer has the commented block `{first}` … `{last}`");
    lines.join("\n")
}
