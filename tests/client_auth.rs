//! The client library against servers with an `auth_token`: a connection, its reconnections, pipelines,
//! pools and a `Cluster` all send the token first; a wrong or missing token is `Error::Auth`.

mod common;

use bankcache::auth::AuthToken;
use bankcache::Config;
use bankcache_client::{Client, Cluster, Error, Node, Pool, Reply};
use common::in_process::InProcess;

const TOKEN: &str = "client-s3cret";

fn locked() -> InProcess {
    InProcess::start_with(Config {
        listen: "127.0.0.1:0".into(),
        http_listen: None,
        auth_token: Some(AuthToken::new(TOKEN.into())),
        ..Config::default()
    })
}

#[test]
fn a_client_with_the_token_works_and_reconnects_authenticated() {
    // A short idle timeout, so that the server closes the client's connection under it.
    let server = InProcess::start_with(Config {
        listen: "127.0.0.1:0".into(),
        http_listen: None,
        auth_token: Some(AuthToken::new(TOKEN.into())),
        idle_timeout: 0.2,
        ..Config::default()
    });
    let mut client = Client::builder().auth_token(TOKEN).connect(server.addr).unwrap();
    client.put("b", "k", &41, None).unwrap();
    assert_eq!(client.incr("b", "k", 1.0).unwrap(), 42.0);
    let replies = client.pipeline().put("b", "p", &1, None).get("b", "p").get("b", "nope").run().unwrap();
    assert_eq!(
        replies,
        [Reply::Value(serde_json::json!({})), Reply::Value(serde_json::json!(1)), Reply::Missing]
    );
    let closed_idle =
        |client: &mut Client| client.stats().unwrap()["connections_closed_idle"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut other = Client::builder().auth_token(TOKEN).connect(server.addr).unwrap();
    while closed_idle(&mut other) < 1 {
        assert!(std::time::Instant::now() < deadline, "the server never closed the idle connections");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The server closed the client's connection: the next call opens a new one, which authenticates too.
    assert_eq!(client.get::<f64>("b", "k").unwrap(), Some(42.0));
    assert_eq!(client.stats().unwrap()["auth_failures"], 0);
}

#[test]
fn a_wrong_or_missing_token_is_an_auth_error() {
    let server = locked();
    match Client::builder().auth_token("wrong").connect(server.addr) {
        Err(Error::Auth(message)) => assert_eq!(message, "Invalid token"),
        other => panic!("{other:?}"),
    }
    let mut client = Client::connect(server.addr).unwrap();
    match client.put("b", "k", &1, None) {
        Err(e @ Error::Auth(_)) => assert!(!e.is_retryable(), "{e}"),
        other => panic!("{other:?}"),
    }
    // Client::auth authenticates the connection it has, and is remembered for the next ones.
    client.auth(TOKEN).unwrap();
    client.put("b", "k", &1, None).unwrap();
    assert!(matches!(client.auth("wrong"), Err(Error::Auth(_))));
    assert!(matches!(client.get::<i32>("b", "k"), Err(Error::Auth(_))), "a wrong token locks it again");
    // The builder's Debug never shows a token.
    let builder = Client::builder().auth_token(TOKEN);
    assert!(!format!("{builder:?}").contains(TOKEN));
}

#[test]
fn a_pool_authenticates_each_of_its_connections() {
    let server = locked();
    let pool = Pool::with_options(Client::builder().auth_token(TOKEN), server.addr, 4).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || pool.get()?.put("b", &format!("k{t}"), &t, None))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(pool.get().unwrap().bank_keys("b").unwrap().len(), 8);
    assert!(!format!("{pool:?}").contains(TOKEN));
}

#[test]
fn a_cluster_sends_the_token_to_every_server() {
    let (a, b) = (locked(), locked());
    let cluster = Cluster::builder()
        .node(Node::new(a.addr.to_string()))
        .node(Node::new(b.addr.to_string()))
        .auth_token(TOKEN)
        .build()
        .unwrap();
    for i in 0..40 {
        cluster.put("b", &format!("k{i}"), &i, None).unwrap();
    }
    for i in 0..40 {
        assert_eq!(cluster.get::<i32>("b", &format!("k{i}")).unwrap(), Some(i));
    }
    let stats = cluster.stats().unwrap();
    assert_eq!(stats.len(), 2);
    for (_, s) in &stats {
        assert!(s["keys"].as_u64().unwrap() > 0, "both servers hold keys: {s:?}");
    }
    let without = Cluster::new([a.addr.to_string()]).unwrap();
    assert!(matches!(without.ping(), Err(Error::Auth(_))));
}

/// A client with a token talks to a server without one as before: `auth` is answered ok.
#[test]
fn a_token_is_harmless_to_a_server_without_one() {
    let server = InProcess::start();
    let mut client = Client::builder().auth_token(TOKEN).connect(server.addr).unwrap();
    client.ping().unwrap();
}
