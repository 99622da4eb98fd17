//! `bankcache_client::Cluster`: the consistent-hash ring's distribution and stability, routing and failover
//! against three in-process servers, and agreement with a real nginx running `docs/nginx.conf`
//! (`hash $uri consistent`). nginx is a dependency of this test: it fails, never skips, when nginx
//! is missing.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bankcache_client::{Cluster, Node};
use common::in_process::InProcess;
use common::nginx::{http, Nginx};

const NAMES: [&str; 3] = ["127.0.0.1:1234", "127.0.0.1:1235", "127.0.0.1:1236"];

fn owners(cluster: &Cluster, keys: &[String]) -> Vec<String> {
    keys.iter().map(|k| cluster.node_for("b", k).to_owned()).collect()
}

/// 30 000 keys spread over three servers as the ring's shares say, and the shares are close to even.
///
/// nginx's ring (160 points per server) is not guaranteed to be within 10% of even: with docs/nginx.conf's
/// names, 127.0.0.1:1236 owns 29.8% of the hash space (10.7% under a third), in nginx as here (the
/// agreement test below checks the ring is nginx's). So the bound checked for those names is 12%; for the
/// default JSON ports' names (127.0.0.1:10001-10003) the spread is within 4%, and 10% is checked.
#[test]
fn keys_spread_evenly() {
    for (names, bound) in [(NAMES, 0.12), (["127.0.0.1:10001", "127.0.0.1:10002", "127.0.0.1:10003"], 0.10)] {
        let cluster = Cluster::new(names).unwrap();
        assert_eq!(cluster.node_names(), names);
        let shares: HashMap<&str, f64> = cluster.shares().into_iter().collect();
        assert!((shares.values().sum::<f64>() - 1.0).abs() < 1e-9, "{shares:?}");
        for bank in ["b", "files"] {
            let mut count: HashMap<&str, usize> = HashMap::new();
            for i in 0..30_000 {
                *count.entry(cluster.node_for(bank, &format!("key-{i}"))).or_default() += 1;
            }
            for name in names {
                let got = count[name] as f64 / 30_000.0;
                assert!(
                    (got - shares[name]).abs() < 0.015,
                    "bank {bank}: {name} owns {got:.3}, share {shares:?}"
                );
                assert!(
                    (got * 3.0 - 1.0).abs() <= bound,
                    "bank {bank}: {name} owns {got:.3} of the keys: {count:?}"
                );
            }
        }
    }
    let cluster = Cluster::new(NAMES).unwrap();
    assert_eq!(cluster.routing_key("files", "a/b"), "/a/b");
    assert_eq!(cluster.routing_key("users", "ann"), "/bank/users/entry/ann");
    assert_eq!(cluster.node_for("files", "x"), cluster.node_for_http_key("x"));
    assert_eq!(cluster.node_for_uri("/x"), cluster.node_for_http_key("x"));
}

/// Removing a server moves only its keys (its share, close to a third); the others stay where they were.
#[test]
fn removing_a_server_moves_only_its_keys() {
    let keys: Vec<String> = (0..30_000).map(|i| format!("key-{i}")).collect();
    let full = Cluster::new(NAMES).unwrap();
    let shares: HashMap<&str, f64> = full.shares().into_iter().collect();
    let three = owners(&full, &keys);
    for removed in NAMES {
        let rest: Vec<&str> = NAMES.iter().copied().filter(|n| *n != removed).collect();
        let two = owners(&Cluster::new(rest).unwrap(), &keys);
        let mut moved = 0;
        for (before, after) in three.iter().zip(&two) {
            if before == removed {
                moved += 1;
                assert_ne!(after, removed);
            } else {
                assert_eq!(before, after, "a key of a server that stayed moved");
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((share - shares[removed]).abs() < 0.015, "removing {removed} moved {share:.3}: {shares:?}");
        assert!((0.28..0.39).contains(&share), "removing {removed} moved {share:.3} of the keys");
    }
    // The order the servers are given in does not matter.
    let reversed: Vec<&str> = NAMES.iter().rev().copied().collect();
    assert_eq!(owners(&Cluster::new(reversed).unwrap(), &keys), three);
}

/// A server of weight 2 gets about half the keys of three.
#[test]
fn weights() {
    let cluster = Cluster::weighted([(NAMES[0], 2), (NAMES[1], 1), (NAMES[2], 1)]).unwrap();
    let n = (0..30_000).filter(|i| cluster.node_for("b", &format!("key-{i}")) == NAMES[0]).count();
    assert!((13_500..=16_500).contains(&n), "weight 2 of 4 owns {n} of 30000");
}

/// Against three live servers: each key lives on its ring owner only; fan-out ops see every server; a
/// stopped server's keys go to the next server on the ring while the others' stay put, and once it is back
/// (on the same port) and its down time has passed, it owns its keys again.
#[test]
fn routing_and_failover_with_live_servers() {
    let mut servers: Vec<Option<InProcess>> =
        (0..3).map(|_| Some(InProcess::start_on("127.0.0.1:0", false))).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.as_ref().unwrap().addr.to_string()).collect();
    let cluster = Cluster::builder()
        .node(Node::new(addrs[0].clone()))
        .node(Node::new(addrs[1].clone()))
        .node(Node::new(addrs[2].clone()))
        .retry_after(Duration::from_millis(300))
        .pool_size(2)
        .client_options(bankcache_client::Client::builder().connect_timeout(Duration::from_secs(1)))
        .build()
        .unwrap();
    cluster.ping().unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        cluster.put("users", k, &i, None).unwrap();
    }
    cluster.put_bytes("files", "logo", b"\x89PNG", None).unwrap();
    for (i, k) in keys.iter().enumerate() {
        let owner = cluster.node_for("users", k);
        for name in &addrs {
            let held = cluster.pool(name).unwrap().get().unwrap().get::<usize>("users", k).unwrap();
            assert_eq!(held.is_some(), name == owner, "{k} on {name}; owner {owner}");
        }
        assert_eq!(cluster.get::<usize>("users", k).unwrap(), Some(i));
    }
    assert_eq!(cluster.get_bytes("files", "logo").unwrap().unwrap(), b"\x89PNG");
    let mut all = cluster.bank_keys("users").unwrap();
    all.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(cluster.bank_list().unwrap().len(), 2);
    assert_eq!(cluster.stats().unwrap().len(), 3);
    assert_eq!(cluster.incr("users", "k1", 1.0).unwrap(), 2.0);
    assert!(cluster.touch("users", "k1").unwrap());
    assert_eq!(cluster.getouch::<f64>("users", "k1").unwrap(), Some(2.0));
    assert!(cluster.delete("users", "k1").unwrap());
    assert!(!cluster.delete("users", "k1").unwrap());

    // Stop the third server.
    let stopped = addrs[2].clone();
    drop(servers[2].take());
    let mut moved = 0;
    for (i, k) in keys.iter().enumerate().skip(2) {
        if cluster.node_for("users", k) == stopped {
            moved += 1;
            // A miss on the next server of the ring, which takes the key's writes.
            assert_eq!(cluster.get::<usize>("users", k).unwrap(), None, "{k}");
            cluster.put("users", k, &(i + 1000), None).unwrap();
            assert_eq!(cluster.get::<usize>("users", k).unwrap(), Some(i + 1000));
        } else {
            assert_eq!(cluster.get::<usize>("users", k).unwrap(), Some(i), "{k} did not move");
        }
    }
    assert!(moved > 50, "{moved}");
    // Fan-out ops skip the server that is down.
    assert_eq!(cluster.stats().unwrap().len(), 2);
    // k2..k299 all live (moved ones rewritten), k0 only if its server is still up, k1 was deleted.
    let k0_alive = usize::from(cluster.node_for("users", "k0") != stopped);
    assert_eq!(cluster.bank_keys("users").unwrap().len(), 298 + k0_alive);

    // Back on the same port: after the down time, the server owns its keys again (empty: memory only).
    servers[2] = Some(InProcess::start_on(&stopped, false));
    std::thread::sleep(Duration::from_millis(400));
    for k in keys.iter().skip(2) {
        if cluster.node_for("users", k) == stopped {
            assert_eq!(cluster.get::<usize>("users", k).unwrap(), None, "{k} is read from its owner again");
        }
    }
    cluster.ping().unwrap();
}

/// The cluster's ring is nginx's: 300 keys PUT through nginx land on the server the cluster names for them
/// (nginx's `X-Upstream`), and the cluster reads each back from there; REST URIs of another bank agree too.
#[test]
fn agrees_with_nginx() {
    let servers: Vec<InProcess> = (0..3).map(|_| InProcess::start_on("127.0.0.1:0", true)).collect();
    let backends: Vec<SocketAddr> = servers.iter().map(|s| s.http.expect("an HTTP port")).collect();
    let nginx = Nginx::start(&backends);
    // Each node: its JSON port to talk to, named on the ring by its HTTP address as nginx's config has it.
    let cluster = servers
        .iter()
        .fold(Cluster::builder(), |b, s| {
            b.node(Node::new(s.addr.to_string()).name(s.http.unwrap().to_string()))
        })
        .build()
        .unwrap();

    let mut per_server: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let key = format!("file-{i}");
        let (status, headers, body) =
            http(nginx.addr, "PUT", &format!("/{key}"), format!("value {i}").as_bytes());
        assert_eq!((status, body.as_slice()), (200, &b"ok"[..]), "PUT /{key} through nginx");
        let upstream = &headers["x-upstream"];
        assert_eq!(cluster.node_for_http_key(&key), upstream, "nginx sent /{key} to {upstream}");
        *per_server.entry(upstream.clone()).or_default() += 1;
        assert_eq!(cluster.get_bytes("files", &key).unwrap(), Some(format!("value {i}").into_bytes()));
    }
    assert_eq!(per_server.len(), 3, "{per_server:?}");

    // Keys written percent-encoded, with slashes (doubled too) and a query: nginx hashes the decoded path,
    // as the cluster does with the key itself, and the query never moves a key.
    for i in 0..60 {
        let key = format!("dir//sub/f {i} é?");
        let encoded = format!("dir//sub/f%20{i}%20%C3%A9%3F");
        let (status, headers, _) = http(nginx.addr, "PUT", &format!("/{encoded}?lifetime=600"), b"v");
        assert_eq!(status, 200, "PUT /{encoded} through nginx");
        assert_eq!(cluster.node_for_http_key(&key), headers["x-upstream"], "nginx sent /{encoded} elsewhere");
        assert_eq!(cluster.get_bytes("files", &key).unwrap(), Some(b"v".to_vec()), "{key}");
    }

    // Another bank: the cluster writes, nginx routes the REST URI to the same server, which has the entry.
    for i in 0..100 {
        let key = format!("user-{i}");
        cluster.put("users", &key, &i, None).unwrap();
        let (status, headers, body) = http(nginx.addr, "GET", &format!("/bank/users/entry/{key}"), b"");
        assert_eq!(status, 200, "GET /bank/users/entry/{key}: {}", String::from_utf8_lossy(&body));
        assert_eq!(cluster.node_for("users", &key), headers["x-upstream"]);
        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply["data"], i);
    }
}

/// Bank-wide ops answer for the whole cluster: `bank_keys` lists a key once even when a failover left it on
/// two servers, and `bank_reset` reaches every server, one marked down too. A server that cannot be reached
/// makes the reset an error naming it (the others are reset all the same), since it would serve the bank's
/// old entries once back; after it is back, a second reset empties it too.
#[test]
fn bank_wide_ops_cover_every_server() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = |listen: &str, dir: &tempfile::TempDir| bankcache::config::Config {
        listen: listen.into(),
        data_dir: Some(dir.path().to_path_buf()),
        http_listen: None,
        ..bankcache::config::Config::default()
    };
    let mut servers: Vec<Option<InProcess>> =
        dirs.iter().map(|d| Some(InProcess::start_with(config("127.0.0.1:0", d)))).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.as_ref().unwrap().addr.to_string()).collect();
    let cluster = Cluster::builder()
        .node(Node::new(addrs[0].clone()))
        .node(Node::new(addrs[1].clone()))
        .node(Node::new(addrs[2].clone()))
        .retry_after(Duration::from_secs(60))
        .client_options(bankcache_client::Client::builder().connect_timeout(Duration::from_secs(1)))
        .build()
        .unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    for k in &keys {
        cluster.put("users", k, &1, None).unwrap();
    }
    // A key also on a server that does not own it, as a failover leaves it.
    let owner = cluster.node_for("users", "k0").to_owned();
    let other = addrs.iter().find(|a| **a != owner).unwrap();
    cluster.pool(other).unwrap().get().unwrap().put("users", "k0", &2, None).unwrap();
    let mut listed = cluster.bank_keys("users").unwrap();
    listed.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(listed, expected, "each key once");

    // The third server stops: the reset cannot reach it, says so, and resets the others.
    let stopped = addrs[2].clone();
    assert!(keys.iter().any(|k| cluster.node_for("users", k) == stopped));
    drop(servers[2].take());
    let err = cluster.bank_reset("users").expect_err("a reset that missed a server is an error");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&stopped), "the error names the server: {err}");
    for name in &addrs[..2] {
        assert_eq!(
            cluster.pool(name).unwrap().get().unwrap().bank_keys("users").unwrap(),
            Vec::<String>::new()
        );
    }

    // Back, with its entries on disk, and still marked down (retry_after is a minute): the reset reaches it.
    servers[2] = Some(InProcess::start_with(config(&stopped, &dirs[2])));
    let back = cluster.pool(&stopped).unwrap().get().unwrap().bank_keys("users").unwrap();
    assert!(!back.is_empty(), "the restarted server kept its entries");
    cluster.bank_reset("users").unwrap();
    for name in &addrs {
        assert_eq!(
            cluster.pool(name).unwrap().get().unwrap().bank_keys("users").unwrap(),
            Vec::<String>::new()
        );
    }
}
