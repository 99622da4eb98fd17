//! A real nginx running `docs/nginx.conf` in front of test servers, and a one-shot HTTP client.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One HTTP/1.1 exchange on a fresh connection: status, headers (lower-case names) and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, HashMap<String, String>, Vec<u8>) {
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

pub fn nginx_binary() -> String {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("this test needs nginx (Debian: apt-get install nginx); .ci/run installs it");
}

pub struct Nginx {
    child: Child,
    /// Where nginx listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Runs `docs/nginx.conf` with its upstreams pointed at `backends` and its listener on a free port.
    pub fn start(backends: &[SocketAddr]) -> Nginx {
        Nginx::start_with(backends, |conf| conf)
    }

    /// As [`Nginx::start`], with the config edited first (to enable one of its commented-out examples).
    pub fn start_with(backends: &[SocketAddr], edit: impl FnOnce(String) -> String) -> Nginx {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/nginx.conf")).unwrap();
        let doc = edit(doc);
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

/// The processes whose parent is `pid` (nginx's workers, for its master), from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            // `/proc/<pid>/stat`: "pid (comm) state ppid ..."; comm may hold spaces, so parse after the last ')'.
            std::fs::read_to_string(format!("/proc/{child}/stat")).ok().is_some_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

impl Nginx {
    /// nginx's worker processes now.
    pub fn workers(&self) -> Vec<u32> {
        children_of(self.child.id())
    }

    /// Stops nginx the way it is meant to be stopped: SIGQUIT to the master (a graceful stop: the workers
    /// finish and exit, then the master), then waits. SIGKILL to the master alone would orphan its workers.
    /// Returns the workers it had, for a check that none is left.
    pub fn stop(&mut self) -> Vec<u32> {
        let master = self.child.id();
        let workers = children_of(master);
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        unsafe { libc::kill(master as libc::pid_t, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    // Last resort, so that a test never hangs on a stuck nginx; the check below then fails.
                    // SAFETY: as above.
                    unsafe { libc::kill(-(master as libc::pid_t), libc::SIGKILL) };
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // Workers exit before the master does; wait briefly for the kernel to reap them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while workers.iter().any(|&w| alive(w)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        workers
    }
}

/// Whether process `pid` still exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
        stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}
