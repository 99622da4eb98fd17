//! Sharding across servers with nginx's consistent hash.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::{Client, ClientBuilder, Error, Pool, Result};

/// Points on the ring per unit of weight, as nginx (and Cache::Memcached::Fast, ketama) use.
const POINTS_PER_WEIGHT: u32 = 160;

/// One server of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct Node {
    addr: String,
    name: Option<String>,
    weight: u32,
}

impl Node {
    /// The server at `addr` (its JSON port, `host:port`), weight 1, named by `addr` on the ring.
    pub fn new(addr: impl Into<String>) -> Node {
        Node { addr: addr.into(), name: None, weight: 1 }
    }

    /// The name that places the server on the ring, as nginx would write it in `server <name>;`.
    ///
    /// To agree with an nginx in front of the servers' HTTP ports, name each node by its HTTP address
    /// exactly as nginx's config spells it (e.g. `127.0.0.1:1234`), while `addr` stays its JSON port.
    pub fn name(mut self, name: impl Into<String>) -> Node {
        self.name = Some(name.into());
        self
    }

    /// The server's weight (at least 1): it gets `160 * weight` points on the ring, as in nginx.
    pub fn weight(mut self, weight: u32) -> Node {
        self.weight = weight.max(1);
        self
    }
}

/// Options for a [`Cluster`]; from [`Cluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: Vec<Node>,
    http_bank: String,
    retry_after: Duration,
    pool_size: usize,
    options: ClientBuilder,
}

impl ClusterBuilder {
    /// Adds a server.
    pub fn node(mut self, node: Node) -> Self {
        self.nodes.push(node);
        self
    }

    /// The servers' `http_bank` (default `files`): its keys are routed by the URI `/<key>`, as nginx does.
    pub fn http_bank(mut self, bank: impl Into<String>) -> Self {
        self.http_bank = bank.into();
        self
    }

    /// How long a server that failed is skipped before it is tried again (default 5 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Connections per server (default 8); see [`Pool`].
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Connection options (timeouts, `TCP_NODELAY`, the token) for every server. Replaces those given
    /// before, a token from [`ClusterBuilder::auth_token`] included: call that after this.
    pub fn client_options(mut self, options: ClientBuilder) -> Self {
        self.options = options;
        self
    }

    /// The servers' `auth_token` (one for all of them, as behind one nginx): every connection to any
    /// server sends it first; see [`ClientBuilder::auth_token`].
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.options = self.options.auth_token(token);
        self
    }

    /// Resolves the servers' addresses and builds the ring; connects on demand. At least one node is
    /// required, and names must be distinct.
    pub fn build(self) -> Result<Cluster> {
        if self.nodes.is_empty() {
            return Err(Error::Connect(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cluster needs a node",
            )));
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for node in self.nodes {
            let name = node.name.unwrap_or_else(|| node.addr.clone());
            if nodes.iter().any(|n: &ClusterNode| n.name == name) {
                return Err(Error::Connect(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("two cluster nodes are named {name:?}"),
                )));
            }
            let pool = Pool::with_options(self.options.clone(), node.addr.as_str(), self.pool_size)?;
            nodes.push(ClusterNode { name, weight: node.weight, pool, down_until: Mutex::new(None) });
        }
        let ring = Ring::new(nodes.iter().map(|n| (n.name.as_str(), n.weight)));
        Ok(Cluster {
            inner: Arc::new(Inner { nodes, ring, http_bank: self.http_bank, retry_after: self.retry_after }),
        })
    }
}

/// Keys sharded over several servers by a consistent hash ring, the same ring as nginx's
/// `hash $uri consistent` (see [`Cluster::node_for`]); a cheap `Clone + Send + Sync` handle with a
/// [`Pool`] per server.
///
/// **Routing.** Each `(bank, key)` maps to a URI: `/<key>` for the HTTP bank (`files` unless
/// [`ClusterBuilder::http_bank`] says otherwise; the URI nginx sees for the HTTP file API, so a key written
/// through nginx is read from the same server here, as long as the key needs no percent-encoding in a URI)
/// and `/bank/<bank>/entry/<key>` for any other bank (the REST API's URI for the entry). The URI's CRC-32
/// picks the first point on the ring at or after it. Adding or removing a server moves only the keys
/// whose points it gains or loses, about `1/N` of them.
///
/// **Failures.** A server that cannot be reached is marked down for [`ClusterBuilder::retry_after`] and
/// skipped meanwhile: its keys go to the next server on the ring (as nginx's `proxy_next_upstream` does),
/// the request being retried there when it had not been sent. A server whose connection fails mid-request
/// is marked down too, but that request fails with [`Error::Io`] (it may have run). When every server is
/// marked down, they are tried anyway.
///
/// ```no_run
/// use bankcache_client::{Cluster, Node};
///
/// let cluster = Cluster::builder()
///     .node(Node::new("127.0.0.1:10001").name("127.0.0.1:1234"))
///     .node(Node::new("127.0.0.1:10002").name("127.0.0.1:1235"))
///     .node(Node::new("127.0.0.1:10003").name("127.0.0.1:1236").weight(2))
///     .build()?;
/// cluster.put("users", "ann", &41, None)?;
/// assert_eq!(cluster.get::<u32>("users", "ann")?, Some(41));
/// // The server nginx (with these `server` lines) sends `GET /logo.png` to:
/// println!("{}", cluster.node_for_http_key("logo.png"));
/// # Ok::<(), bankcache_client::Error>(())
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Vec<ClusterNode>,
    ring: Ring,
    http_bank: String,
    retry_after: Duration,
}

struct ClusterNode {
    name: String,
    weight: u32,
    pool: Pool,
    down_until: Mutex<Option<Instant>>,
}

impl ClusterNode {
    fn is_down(&self, now: Instant) -> bool {
        self.down_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|until| until > now)
    }

    fn mark(&self, down_until: Option<Instant>) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = down_until;
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = Instant::now();
        let mut list = f.debug_list();
        for node in &self.inner.nodes {
            list.entry(&format_args!(
                "{} (weight {}, {:?}{})",
                node.name,
                node.weight,
                node.pool,
                if node.is_down(now) { ", down" } else { "" }
            ));
        }
        list.finish()
    }
}

impl Cluster {
    /// Servers at `addrs` (JSON ports), weight 1 each, named on the ring by their addresses.
    pub fn new<A: Into<String>>(addrs: impl IntoIterator<Item = A>) -> Result<Cluster> {
        addrs.into_iter().fold(Cluster::builder(), |b, addr| b.node(Node::new(addr))).build()
    }

    /// Servers with weights: `(addr, weight)`.
    pub fn weighted<A: Into<String>>(nodes: impl IntoIterator<Item = (A, u32)>) -> Result<Cluster> {
        nodes.into_iter().fold(Cluster::builder(), |b, (addr, w)| b.node(Node::new(addr).weight(w))).build()
    }

    /// A cluster with options: node names for nginx, the HTTP bank, down time, pool size.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            nodes: Vec::new(),
            http_bank: "files".into(),
            retry_after: Duration::from_secs(5),
            pool_size: 8,
            options: ClientBuilder::default(),
        }
    }

    /// The servers' names, in the order given.
    pub fn node_names(&self) -> Vec<&str> {
        self.inner.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// The URI that routes `(bank, key)`: `/<key>` in the HTTP bank, `/bank/<bank>/entry/<key>` otherwise.
    pub fn routing_key(&self, bank: &str, key: &str) -> String {
        if bank == self.inner.http_bank {
            format!("/{key}")
        } else {
            format!("/bank/{bank}/entry/{key}")
        }
    }

    /// The name of the server that owns `(bank, key)` on the ring (whether or not it is up).
    pub fn node_for(&self, bank: &str, key: &str) -> &str {
        self.node_for_uri(&self.routing_key(bank, key))
    }

    /// The name of the server that owns `key` of the HTTP file API: the one nginx's
    /// `hash $uri consistent` over the same `server` names sends `/<key>` to.
    pub fn node_for_http_key(&self, key: &str) -> &str {
        self.node_for_uri(&format!("/{key}"))
    }

    /// The name of the server that owns a request path on the ring: the path as nginx's `$uri` has it
    /// (percent-decoded, without the query).
    pub fn node_for_uri(&self, uri: &str) -> &str {
        let ring = &self.inner.ring;
        &self.inner.nodes[ring.points[ring.find(crc32fast::hash(uri.as_bytes()))].node].name
    }

    /// Each server's share of the hash space (the fraction of keys it owns on average), by name.
    ///
    /// With nginx's 160 points per unit of weight the shares are only roughly even: for three servers of
    /// weight 1, the largest deviation from 1/3 is under 10% for about three sets of names in four (7% for
    /// the median set, 15% at the 95th percentile).
    pub fn shares(&self) -> Vec<(&str, f64)> {
        let points = &self.inner.ring.points;
        let mut arcs = vec![0u64; self.inner.nodes.len()];
        for (i, point) in points.iter().enumerate() {
            // A point serves the hashes after the previous point, up to and including its own.
            let prev = if i == 0 { points[points.len() - 1].hash } else { points[i - 1].hash };
            arcs[point.node] += u64::from(point.hash.wrapping_sub(prev));
        }
        if points.len() == 1 {
            arcs[points[0].node] = 1 << 32;
        }
        self.inner
            .nodes
            .iter()
            .zip(arcs)
            .map(|(n, arc)| (n.name.as_str(), arc as f64 / 4_294_967_296.0))
            .collect()
    }

    /// A connection to a server by name (to inspect one shard).
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.inner.nodes.iter().find(|n| n.name == name).map(|n| &n.pool)
    }

    /// Runs `f` on a connection to the server that owns `(bank, key)`, or the next one up on the ring.
    pub fn with_key<R>(
        &self,
        bank: &str,
        key: &str,
        mut f: impl FnMut(&mut Client) -> Result<R>,
    ) -> Result<R> {
        let inner = &*self.inner;
        let start = inner.ring.find(crc32fast::hash(self.routing_key(bank, key).as_bytes()));
        let mut order = Vec::with_capacity(inner.nodes.len());
        for i in 0..inner.ring.points.len() {
            let node = inner.ring.points[(start + i) % inner.ring.points.len()].node;
            if !order.contains(&node) {
                order.push(node);
                if order.len() == inner.nodes.len() {
                    break;
                }
            }
        }
        let now = Instant::now();
        let up: Vec<usize> = order.iter().copied().filter(|&n| !inner.nodes[n].is_down(now)).collect();
        let candidates = if up.is_empty() { order } else { up };
        let mut last = None;
        for n in candidates {
            let node = &inner.nodes[n];
            match node.pool.get().and_then(|mut client| f(&mut client)) {
                Err(e @ Error::Connect(_)) => {
                    node.mark(Some(Instant::now() + inner.retry_after));
                    last = Some(e);
                }
                Err(e @ Error::Io(_)) => {
                    node.mark(Some(Instant::now() + inner.retry_after));
                    return Err(e);
                }
                answered => {
                    node.mark(None);
                    return answered;
                }
            }
        }
        Err(last.expect("a cluster has a node"))
    }

    /// Runs `f` on every server that is not marked down, in the order given; the first error stops it.
    fn each<R>(&self, mut f: impl FnMut(&mut Client) -> Result<R>) -> Result<Vec<R>> {
        let now = Instant::now();
        let mut results = Vec::new();
        for node in self.inner.nodes.iter().filter(|n| !n.is_down(now)) {
            match node.pool.get().and_then(|mut client| f(&mut client)) {
                Err(e @ (Error::Connect(_) | Error::Io(_))) => {
                    node.mark(Some(Instant::now() + self.inner.retry_after));
                    return Err(naming(&node.name, e));
                }
                Err(e) => return Err(naming(&node.name, e)),
                Ok(r) => results.push(r),
            }
        }
        Ok(results)
    }

    /// [`Client::put`] on the key's server.
    pub fn put<T: Serialize + ?Sized>(
        &self,
        bank: &str,
        key: &str,
        value: &T,
        lifetime: Option<f64>,
    ) -> Result<()> {
        self.with_key(bank, key, |c| c.put(bank, key, value, lifetime))
    }

    /// [`Client::put_bytes`] on the key's server.
    pub fn put_bytes(&self, bank: &str, key: &str, bytes: &[u8], lifetime: Option<f64>) -> Result<()> {
        self.with_key(bank, key, |c| c.put_bytes(bank, key, bytes, lifetime))
    }

    /// [`Client::get`] on the key's server.
    pub fn get<T: DeserializeOwned>(&self, bank: &str, key: &str) -> Result<Option<T>> {
        self.with_key(bank, key, |c| c.get(bank, key))
    }

    /// [`Client::get_bytes`] on the key's server.
    pub fn get_bytes(&self, bank: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.with_key(bank, key, |c| c.get_bytes(bank, key))
    }

    /// [`Client::getouch`] on the key's server.
    pub fn getouch<T: DeserializeOwned>(&self, bank: &str, key: &str) -> Result<Option<T>> {
        self.with_key(bank, key, |c| c.getouch(bank, key))
    }

    /// [`Client::delete`] on the key's server.
    pub fn delete(&self, bank: &str, key: &str) -> Result<bool> {
        self.with_key(bank, key, |c| c.delete(bank, key))
    }

    /// [`Client::touch`] on the key's server.
    pub fn touch(&self, bank: &str, key: &str) -> Result<bool> {
        self.with_key(bank, key, |c| c.touch(bank, key))
    }

    /// [`Client::incr`] on the key's server.
    pub fn incr(&self, bank: &str, key: &str, delta: f64) -> Result<f64> {
        self.with_key(bank, key, |c| c.incr(bank, key, delta))
    }

    /// The bank's keys on every server that is up, server after server, each key once: after a failover a
    /// key can be on two servers (the one that stood in, and its owner once back). The keys of a server that
    /// is down are not listed, as its keys are not read.
    pub fn bank_keys(&self, bank: &str) -> Result<Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        let keys = self.each(|c| c.bank_keys(bank))?.into_iter().flatten();
        Ok(keys.filter(|key| seen.insert(key.clone())).collect())
    }

    /// The banks of every server that is up, each once, in order of first appearance.
    pub fn bank_list(&self) -> Result<Vec<String>> {
        let mut banks: Vec<String> = Vec::new();
        for bank in self.each(|c| c.bank_list())?.into_iter().flatten() {
            if !banks.contains(&bank) {
                banks.push(bank);
            }
        }
        Ok(banks)
    }

    /// Empties the bank on every server, those marked down too: a server that missed the reset would serve
    /// the bank's old entries once back. Every server is tried; if one cannot be reached, the others are
    /// reset all the same and the error names the one that was not (calling again is safe).
    pub fn bank_reset(&self, bank: &str) -> Result<()> {
        let mut failed = None;
        for node in &self.inner.nodes {
            match node.pool.get().and_then(|mut client| client.bank_reset(bank)) {
                Ok(()) => node.mark(None),
                Err(e) => {
                    if e.is_retryable() {
                        node.mark(Some(Instant::now() + self.inner.retry_after));
                    }
                    failed.get_or_insert(naming(&node.name, e));
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Pings every server (those marked down too); a server that answers is no longer marked down.
    pub fn ping(&self) -> Result<()> {
        for node in &self.inner.nodes {
            match node.pool.get().and_then(|mut c| c.ping()) {
                Ok(()) => node.mark(None),
                Err(e) => {
                    if e.is_retryable() {
                        node.mark(Some(Instant::now() + self.inner.retry_after));
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Every up server's counters, by name.
    pub fn stats(&self) -> Result<Vec<(String, serde_json::Map<String, Value>)>> {
        let now = Instant::now();
        let names: Vec<String> =
            self.inner.nodes.iter().filter(|n| !n.is_down(now)).map(|n| n.name.clone()).collect();
        Ok(names.into_iter().zip(self.each(|c| c.stats())?).collect())
    }
}

/// `e` with the server's name in front of its message, for an error of one server among several.
fn naming(node: &str, e: Error) -> Error {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{node}: {e}"));
    match e {
        Error::Connect(e) => Error::Connect(named(e)),
        Error::Io(e) => Error::Io(named(e)),
        Error::Protocol(why) => Error::Protocol(format!("{node}: {why}")),
        // The server's own words stay exactly as sent.
        other => other,
    }
}

/// One point of the ring: its hash and the index of its node.
#[derive(Debug, Clone, Copy)]
struct Point {
    hash: u32,
    node: usize,
}

/// nginx's consistent-hash ring (`ngx_http_upstream_init_chash` in ngx_http_upstream_hash_module.c).
///
/// For each server, nginx splits its name as written in the config into host and port (`unix:` names are
/// all host, and a name not ending in `:<digits>` has no port), and computes
///
/// ```c
/// ngx_crc32_init(base_hash);
/// ngx_crc32_update(&base_hash, host, host_len);
/// ngx_crc32_update(&base_hash, (u_char *) "", 1);
/// ngx_crc32_update(&base_hash, port, port_len);
/// prev_hash.value = 0;
/// for (j = 0; j < weight * 160; j++) {
///     hash = base_hash;
///     ngx_crc32_update(&hash, prev_hash.byte, 4);   /* little-endian */
///     ngx_crc32_final(hash);
///     point = hash; prev_hash.value = hash;
/// }
/// ```
///
/// `base_hash` is the running (non-finalised) CRC state, so each point is simply the standard CRC-32
/// (IEEE) of `host ‖ "\0" ‖ port ‖ prev_hash as 4 little-endian bytes`: a `crc32fast::Hasher` fed host, NUL
/// and port, cloned for each point, gives exactly that, and no CRC of our own is needed (the unit test
/// below checks this against a transcription of nginx's table-driven code). The points are sorted by hash
/// and equal hashes keep one point. A request goes to the first point whose hash is `>=` the CRC-32 of its
/// key (`ngx_crc32_long`), wrapping to the first point.
#[derive(Debug)]
struct Ring {
    points: Vec<Point>,
}

impl Ring {
    fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, u32)>) -> Ring {
        let mut points = Vec::new();
        for (node, (name, weight)) in nodes.into_iter().enumerate() {
            let (host, port) = split_host_port(name);
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(b"\0");
            base.update(port.as_bytes());
            let mut prev = 0u32;
            for _ in 0..weight.max(1) * POINTS_PER_WEIGHT {
                let mut hash = base.clone();
                hash.update(&prev.to_le_bytes());
                prev = hash.finalize();
                points.push(Point { hash: prev, node });
            }
        }
        // nginx sorts with an unstable qsort and then keeps one point per hash; which server wins an exact
        // tie of two 32-bit hashes is therefore not defined by nginx either (a tie is a ~1e-5 event with
        // three servers). A stable sort keeps the first server given.
        points.sort_by_key(|p| p.hash);
        points.dedup_by_key(|p| p.hash);
        Ring { points }
    }

    /// The index of the point that serves `hash`.
    fn find(&self, hash: u32) -> usize {
        self.points.partition_point(|p| p.hash < hash) % self.points.len()
    }
}

/// nginx's split of a server name into host and port.
fn split_host_port(name: &str) -> (&str, &str) {
    if name.len() >= 5 && name[..5].eq_ignore_ascii_case("unix:") {
        return (&name[5..], "");
    }
    let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
    let colon = name.len() - digits;
    if colon > 0 && name.as_bytes()[colon - 1] == b':' {
        (&name[..colon - 1], &name[colon..])
    } else {
        (name, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx's CRC-32 as its source has it (`ngx_crc32.h`): a 256-entry table, `crc = table[(crc ^ byte) &
    /// 0xff] ^ (crc >> 8)`, init and final `^ 0xffffffff`.
    struct NgxCrc32 {
        table: [u32; 256],
    }

    impl NgxCrc32 {
        fn new() -> Self {
            let mut table = [0u32; 256];
            for (i, entry) in table.iter_mut().enumerate() {
                let mut c = i as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                }
                *entry = c;
            }
            NgxCrc32 { table }
        }

        fn update(&self, crc: &mut u32, bytes: &[u8]) {
            for &b in bytes {
                *crc = self.table[((*crc ^ u32::from(b)) & 0xff) as usize] ^ (*crc >> 8);
            }
        }
    }

    #[test]
    fn points_match_nginx_code_transcribed() {
        let ngx = NgxCrc32::new();
        for name in ["127.0.0.1:1234", "localhost:80", "unix:/tmp/sock", "example.com"] {
            let (host, port) = split_host_port(name);
            let mut base = 0xffff_ffffu32; // ngx_crc32_init
            ngx.update(&mut base, host.as_bytes());
            ngx.update(&mut base, b"\0");
            ngx.update(&mut base, port.as_bytes());
            let mut expected = Vec::new();
            let mut prev = 0u32;
            for _ in 0..POINTS_PER_WEIGHT * 2 {
                let mut hash = base;
                ngx.update(&mut hash, &prev.to_le_bytes());
                hash ^= 0xffff_ffff; // ngx_crc32_final
                expected.push(hash);
                prev = hash;
            }
            expected.sort_unstable();
            expected.dedup();
            let ring = Ring::new([(name, 2)]);
            let got: Vec<u32> = ring.points.iter().map(|p| p.hash).collect();
            assert_eq!(got, expected, "{name}");
        }
        // ngx_crc32_long is the plain CRC-32.
        let mut crc = 0xffff_ffffu32;
        ngx.update(&mut crc, b"/file-1");
        assert_eq!(crc ^ 0xffff_ffff, crc32fast::hash(b"/file-1"));
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn host_port_split_as_nginx() {
        assert_eq!(split_host_port("127.0.0.1:1234"), ("127.0.0.1", "1234"));
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", "80"));
        assert_eq!(split_host_port("backend"), ("backend", ""));
        assert_eq!(split_host_port("unix:/run/x.sock"), ("/run/x.sock", ""));
        assert_eq!(split_host_port("UNIX:/a:12"), ("/a:12", ""));
        assert_eq!(split_host_port("host:"), ("host", ""));
    }

    #[test]
    fn lookup_wraps() {
        let ring = Ring::new([("a:1", 1), ("b:2", 1)]);
        let last = ring.points.last().unwrap().hash;
        assert_eq!(ring.find(last), ring.points.len() - 1);
        assert_eq!(ring.find(last.wrapping_add(1)), 0);
        assert_eq!(ring.find(0), 0);
        assert_eq!(ring.points.len(), 320);
    }
}
