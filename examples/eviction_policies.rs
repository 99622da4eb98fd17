//! Which eviction policy should the memory tier use? A trace-driven comparison of FIFO, exact LRU,
//! CLOCK (the server's own `BankMap`) and S3-FIFO.
//!
//! Method. The cache sits in front of a backing store: every request looks its key up, and a miss puts
//! the key (with a fixed-size value) into the cache, evicting as needed. All four policies are bounded by
//! the same byte capacity, and every value has the same size, so the capacity is a number of entries; the
//! miss ratio is misses / requests over the whole run (cold-start misses included, for every policy alike).
//!
//! - **FIFO**: evicts in insertion order; a hit changes nothing. The baseline.
//! - **LRU**: exact least-recently-used, a hash map from key to a node of a `Vec`-backed doubly linked list;
//!   a hit moves the node to the front.
//! - **CLOCK**: the real [`bankcache::store::BankMap`], driven as the server drives it: `get` sets the
//!   entry's reference bit; after a `put`, while `ram_bytes()` exceeds the capacity,
//!   `evict_step(ram_bytes() - capacity, 4096)` moves the hand (second chance).
//! - **S3-FIFO** (Yang et al., SOSP '23, Algorithm 1): a small FIFO S (10% of the bytes), a main FIFO M
//!   (90%) and a ghost FIFO G of keys only, as many as M holds. Each entry has a 2-bit counter, bumped
//!   (saturating at 3) on a hit. A miss goes to M if its key is in G, else to S. Eviction takes from S
//!   while S holds at least 10%, else from M. S's tail moves to M if its counter is above 1 (counter
//!   cleared; if M is then over its share, M evicts) and otherwise goes to G, which ends the eviction.
//!   M's tail is reinserted with its counter decremented while the counter is non-zero, else evicted.
//!   G forgets in FIFO order.
//!
//! Workloads (1,000,000 distinct keys unless said otherwise; 10 M requests by default):
//! 1. Zipf α = 0.99; 2. Zipf α = 0.8;
//! 3. Zipf α = 0.99 with one-time scans: after every 100,000 Zipf requests, a sequential scan of 50,000 keys
//!    never seen before (so a third of the requests are scan requests, all of them compulsory misses; the
//!    table also gives the miss ratio over the Zipf requests alone, which is what a scan can pollute);
//! 4. a loop over keys 0..N, N = 1.2 × the cache's capacity in entries.
//!
//! Cache sizes are 1% and 10% of the 1,000,000 distinct Zipf keys (10,000 and 100,000 entries). Zipf
//! samples come from the exact CDF (rank r has weight 1/(r+1)^α) by inversion: a guide table of 2^16
//! buckets narrows each binary search to a few entries. The random source is splitmix64 with fixed seeds,
//! and every policy replays the very same trace, so differences are the policies', not the samples'.
//!
//! For scale, each row also gives the misses of an oracle that pins the k = capacity most popular keys
//! (on an independent-reference trace such as Zipf, no policy that cannot see the future does better).
//!
//! Wall times cover replaying the trace only. CLOCK's include the real store's work (hashing key bytes,
//! allocating each entry's key and value, the slab), which the three simulated policies do not do, so
//! compare CLOCK's time with theirs only loosely; the miss ratios are what this experiment is for.
//!
//! Run: `cargo run --release --example eviction_policies [-- REQUESTS]` (REQUESTS defaults to 10,000,000).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bankcache::store::{BankMap, Evict, NewValue, Ttl};
use hashbrown::HashMap;

/// Same allocator as the server, so CLOCK's store does the allocations it does in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct keys of the Zipf workloads.
const KEYS: u32 = 1_000_000;
/// Requests per run unless given on the command line.
const DEFAULT_REQUESTS: usize = 10_000_000;
/// Bytes of every value.
const VALUE_LEN: usize = 64;
/// The value every miss stores.
const VALUE: [u8; VALUE_LEN] = [b'7'; VALUE_LEN];
/// Zipf requests between two scans, and the length of a scan.
const SCAN_EVERY: usize = 100_000;
const SCAN_LEN: usize = 50_000;
/// Cache sizes, as fractions of the Zipf key space.
const SIZES: [f64; 2] = [0.01, 0.10];

// ---------------------------------------------------------------------------------------------------------
// Random numbers and the Zipf distribution.

/// splitmix64 (Steele, Lea and Flood): tiny, fast, and good enough for workload generation.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Zipf over ranks 0..n, sampled by inverting its exact CDF.
struct Zipf {
    /// `cdf[r]` = P(rank ≤ r); the last is exactly 1.
    cdf: Vec<f64>,
    /// `guide[j]` = the first rank whose CDF reaches j / GUIDE: the answer for u in [j/GUIDE, (j+1)/GUIDE)
    /// lies in `guide[j]..=guide[j + 1]`.
    guide: Vec<u32>,
}

impl Zipf {
    const GUIDE: usize = 1 << 16;

    fn new(n: u32, alpha: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for r in 1..=n {
            sum += f64::from(r).powf(-alpha);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        *cdf.last_mut().expect("n > 0") = 1.0;
        let guide = (0..=Self::GUIDE)
            .map(|j| cdf.partition_point(|&c| c < j as f64 / Self::GUIDE as f64) as u32)
            .collect();
        Zipf { cdf, guide }
    }

    /// The first rank whose CDF exceeds a uniform draw.
    fn sample(&self, rng: &mut SplitMix64) -> u32 {
        let u = rng.next_f64();
        let j = (u * Self::GUIDE as f64) as usize;
        let (lo, hi) = (self.guide[j] as usize, self.guide[j + 1] as usize);
        (lo + self.cdf[lo..hi].partition_point(|&c| c <= u)) as u32
    }
}

// ---------------------------------------------------------------------------------------------------------
// Workloads.

#[derive(Clone, Copy)]
enum Workload {
    Zipf(f64),
    ZipfScan(f64),
    Loop,
}

impl Workload {
    fn name(self) -> String {
        match self {
            Workload::Zipf(a) => format!("zipf {a}"),
            Workload::ZipfScan(a) => format!("zipf {a} + scans"),
            Workload::Loop => "loop 1.2x cache".to_string(),
        }
    }
}

/// The keys requested, in order. Keys at or above `scan_from` are one-time scan keys.
struct Trace {
    keys: Vec<u32>,
    scan_from: u32,
}

fn zipf_trace(zipf: &Zipf, requests: usize, seed: u64, scans: bool) -> Trace {
    let mut rng = SplitMix64(seed);
    let mut keys = Vec::with_capacity(requests);
    let mut next_scan_key = KEYS;
    while keys.len() < requests {
        let burst = SCAN_EVERY.min(requests - keys.len());
        keys.extend((0..burst).map(|_| zipf.sample(&mut rng)));
        if scans {
            let len = SCAN_LEN.min(requests - keys.len()) as u32;
            keys.extend(next_scan_key..next_scan_key + len);
            next_scan_key += len;
        }
    }
    Trace { keys, scan_from: KEYS }
}

fn loop_trace(distinct: u32, requests: usize) -> Trace {
    Trace { keys: (0..distinct).cycle().take(requests).collect(), scan_from: u32::MAX }
}

// ---------------------------------------------------------------------------------------------------------
// Policies.

/// A cache of fixed-size values bounded by `capacity` bytes.
trait Policy {
    /// Looks `key` up; on a miss stores it, evicting to stay within the capacity. True on a hit.
    fn access(&mut self, key: u32) -> bool;
}

/// Plain FIFO.
struct Fifo {
    queue: VecDeque<u32>,
    resident: hashbrown::HashSet<u32>,
    bytes: usize,
    capacity: usize,
}

impl Fifo {
    fn new(capacity: usize) -> Self {
        let entries = capacity / VALUE_LEN + 1;
        Fifo {
            queue: VecDeque::with_capacity(entries),
            resident: hashbrown::HashSet::with_capacity(entries),
            bytes: 0,
            capacity,
        }
    }
}

impl Policy for Fifo {
    fn access(&mut self, key: u32) -> bool {
        if self.resident.contains(&key) {
            return true;
        }
        while self.bytes + VALUE_LEN > self.capacity {
            let Some(old) = self.queue.pop_front() else { break };
            self.resident.remove(&old);
            self.bytes -= VALUE_LEN;
        }
        self.queue.push_back(key);
        self.resident.insert(key);
        self.bytes += VALUE_LEN;
        false
    }
}

/// No node: the end of the list.
const NIL: u32 = u32::MAX;

struct LruNode {
    key: u32,
    prev: u32,
    next: u32,
}

/// Exact LRU: key → node index; nodes form a doubly linked list, most recent at `head`.
struct Lru {
    index: HashMap<u32, u32>,
    nodes: Vec<LruNode>,
    head: u32,
    tail: u32,
    bytes: usize,
    capacity: usize,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        let entries = capacity / VALUE_LEN + 1;
        Lru {
            index: HashMap::with_capacity(entries),
            nodes: Vec::with_capacity(entries),
            head: NIL,
            tail: NIL,
            bytes: 0,
            capacity,
        }
    }

    fn unlink(&mut self, i: u32) {
        let LruNode { prev, next, .. } = self.nodes[i as usize];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        self.nodes[i as usize].prev = NIL;
        self.nodes[i as usize].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.nodes[h as usize].prev = i,
        }
        self.head = i;
    }
}

impl Policy for Lru {
    fn access(&mut self, key: u32) -> bool {
        if let Some(&i) = self.index.get(&key) {
            if i != self.head {
                self.unlink(i);
                self.push_front(i);
            }
            return true;
        }
        // Equal sizes: at most one eviction, whose node the new key reuses.
        let mut free = None;
        while self.bytes + VALUE_LEN > self.capacity && self.tail != NIL {
            let victim = self.tail;
            self.unlink(victim);
            self.index.remove(&self.nodes[victim as usize].key);
            self.bytes -= VALUE_LEN;
            free = Some(victim);
        }
        let i = match free {
            Some(i) => {
                self.nodes[i as usize].key = key;
                i
            }
            None => {
                self.nodes.push(LruNode { key, prev: NIL, next: NIL });
                (self.nodes.len() - 1) as u32
            }
        };
        self.push_front(i);
        self.index.insert(key, i);
        self.bytes += VALUE_LEN;
        false
    }
}

/// CLOCK: the server's own bank, memory-only, evicted the way the store evicts.
struct Clock {
    bank: BankMap,
    capacity: usize,
}

impl Clock {
    fn new(capacity: usize) -> Self {
        Clock { bank: BankMap::new(), capacity }
    }
}

impl Policy for Clock {
    fn access(&mut self, key: u32) -> bool {
        let key = key.to_le_bytes();
        if self.bank.get(&key, 0, |_| false, |_| ()).hit().is_some() {
            return true;
        }
        let value = NewValue { value: &VALUE, in_ram: true, location: None, flags: 0 };
        self.bank.put(&key, value, Ttl::Forever, 0);
        while self.bank.ram_bytes() > self.capacity {
            self.bank.evict_step(self.bank.ram_bytes() - self.capacity, 4096, Evict::RamCopies);
        }
        false
    }
}

/// Where an S3-FIFO key is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Small,
    Main,
    /// In the ghost queue, entered as its `stamp`-th ghost (so stale queue entries can be told apart).
    Ghost(u32),
}

#[derive(Clone, Copy)]
struct S3Meta {
    place: Place,
    /// 2-bit access counter, 0..=3.
    freq: u8,
}

/// S3-FIFO (SOSP '23): small FIFO + main FIFO + ghost FIFO of keys.
struct S3Fifo {
    /// Resident keys and ghost keys.
    index: HashMap<u32, S3Meta>,
    small: VecDeque<u32>,
    main: VecDeque<u32>,
    /// Ghost keys with their stamps; an entry whose key has since left the ghost is skipped when popped.
    ghost: VecDeque<(u32, u32)>,
    small_bytes: usize,
    main_bytes: usize,
    /// Bytes S may hold before eviction takes from it (10%), and M's share (the rest).
    small_share: usize,
    main_share: usize,
    capacity: usize,
    /// Ghost keys held, and the most it may hold (as many entries as M's share).
    ghosts: usize,
    ghost_limit: usize,
    next_stamp: u32,
}

impl S3Fifo {
    fn new(capacity: usize) -> Self {
        let small_share = capacity / 10;
        let main_share = capacity - small_share;
        let entries = capacity / VALUE_LEN + 1;
        S3Fifo {
            index: HashMap::with_capacity(entries * 2),
            small: VecDeque::with_capacity(entries),
            main: VecDeque::with_capacity(entries),
            ghost: VecDeque::with_capacity(entries),
            small_bytes: 0,
            main_bytes: 0,
            small_share,
            main_share,
            capacity,
            ghosts: 0,
            ghost_limit: main_share / VALUE_LEN,
            next_stamp: 0,
        }
    }

    fn evict(&mut self) {
        if self.small_bytes >= self.small_share {
            self.evict_small();
        } else {
            self.evict_main();
        }
    }

    /// Pops S's tail until one entry leaves the cache for the ghost; entries read at least twice while in
    /// S move to M instead.
    fn evict_small(&mut self) {
        while let Some(key) = self.small.pop_front() {
            self.small_bytes -= VALUE_LEN;
            let meta = self.index.get_mut(&key).expect("a queued key is indexed");
            if meta.freq > 1 {
                *meta = S3Meta { place: Place::Main, freq: 0 };
                self.main.push_back(key);
                self.main_bytes += VALUE_LEN;
                if self.main_bytes > self.main_share {
                    self.evict_main();
                }
            } else {
                meta.place = Place::Ghost(self.next_stamp);
                self.ghost.push_back((key, self.next_stamp));
                self.next_stamp = self.next_stamp.wrapping_add(1);
                self.ghosts += 1;
                self.trim_ghost();
                return;
            }
        }
    }

    /// Pops M's tail until one entry with a zero counter is evicted; the others go back with one less.
    fn evict_main(&mut self) {
        while let Some(key) = self.main.pop_front() {
            let meta = self.index.get_mut(&key).expect("a queued key is indexed");
            if meta.freq > 0 {
                meta.freq -= 1;
                self.main.push_back(key);
            } else {
                self.index.remove(&key);
                self.main_bytes -= VALUE_LEN;
                return;
            }
        }
    }

    fn trim_ghost(&mut self) {
        while self.ghosts > self.ghost_limit {
            let Some((key, stamp)) = self.ghost.pop_front() else { break };
            if self.index.get(&key).is_some_and(|m| m.place == Place::Ghost(stamp)) {
                self.index.remove(&key);
                self.ghosts -= 1;
            }
        }
    }
}

impl Policy for S3Fifo {
    fn access(&mut self, key: u32) -> bool {
        let ghost_hit = match self.index.get_mut(&key) {
            Some(meta) if meta.place == Place::Small || meta.place == Place::Main => {
                meta.freq = (meta.freq + 1).min(3);
                return true;
            }
            Some(_) => {
                // Leaves the ghost now; its queue entry goes stale.
                self.index.remove(&key);
                self.ghosts -= 1;
                true
            }
            None => false,
        };
        while self.small_bytes + self.main_bytes + VALUE_LEN > self.capacity {
            self.evict();
        }
        let (queue, bytes, place) = if ghost_hit {
            (&mut self.main, &mut self.main_bytes, Place::Main)
        } else {
            (&mut self.small, &mut self.small_bytes, Place::Small)
        };
        queue.push_back(key);
        *bytes += VALUE_LEN;
        self.index.insert(key, S3Meta { place, freq: 0 });
        false
    }
}

// ---------------------------------------------------------------------------------------------------------
// Running and reporting.

const POLICIES: [&str; 4] = ["FIFO", "LRU", "CLOCK", "S3-FIFO"];

fn make_policy(name: &str, capacity: usize) -> Box<dyn Policy> {
    match name {
        "FIFO" => Box::new(Fifo::new(capacity)),
        "LRU" => Box::new(Lru::new(capacity)),
        "CLOCK" => Box::new(Clock::new(capacity)),
        "S3-FIFO" => Box::new(S3Fifo::new(capacity)),
        _ => unreachable!("unknown policy {name}"),
    }
}

/// One policy's run over one trace.
struct Outcome {
    misses: usize,
    /// Misses and requests on keys below `scan_from` (the whole trace when it has no scans).
    zipf_misses: usize,
    zipf_requests: usize,
    elapsed: Duration,
}

fn replay(policy: &mut dyn Policy, trace: &Trace) -> Outcome {
    let started = Instant::now();
    let (mut misses, mut zipf_misses, mut zipf_requests) = (0, 0, 0);
    for &key in &trace.keys {
        let miss = !policy.access(key);
        misses += usize::from(miss);
        if key < trace.scan_from {
            zipf_requests += 1;
            zipf_misses += usize::from(miss);
        }
    }
    Outcome { misses, zipf_misses, zipf_requests, elapsed: started.elapsed() }
}

/// Misses of an oracle that pins keys 0..k (for the Zipf traces, the k most popular keys) and nothing
/// else: it misses on every other key and on the first request of each pinned key. On an IRM trace such as
/// Zipf no policy that does not see the future can do better on average; on the loop, pinning any k keys is
/// what the best policies approach.
fn pinned_top_k(trace: &Trace, k: usize) -> usize {
    let mut seen = vec![false; k];
    let mut misses = 0;
    for &key in &trace.keys {
        match seen.get_mut(key as usize) {
            Some(true) => {}
            Some(first) => {
                *first = true;
                misses += 1;
            }
            None => misses += 1,
        }
    }
    misses
}

struct Row {
    workload: String,
    entries: usize,
    requests: usize,
    scans: bool,
    outcomes: Vec<Outcome>,
    /// Misses of [`pinned_top_k`].
    oracle_misses: usize,
}

fn ratio(misses: usize, requests: usize) -> f64 {
    misses as f64 / requests.max(1) as f64
}

fn print_tables(rows: &[Row]) {
    let header = |first: &str| {
        let mut line = format!("{first:<28} {:>8}", "entries");
        for p in POLICIES {
            line += &format!(" {p:>9}");
        }
        line
    };
    let lru = POLICIES.iter().position(|&p| p == "LRU").expect("LRU is run");

    println!("\nMiss ratio (misses / requests; lower is better), the best policy and its change vs LRU,");
    println!("and top-k*: an oracle pinning the k = capacity most popular keys (see below)");
    println!("{}  {:>16} {:>8}", header("workload"), "best vs LRU", "top-k*");
    for row in rows {
        let ratios: Vec<f64> = row.outcomes.iter().map(|o| ratio(o.misses, row.requests)).collect();
        let oracle = ratio(row.oracle_misses, row.requests);
        print_ratio_line(&row.workload, row.entries, &ratios, lru, oracle);
        if row.scans {
            let zipf: Vec<f64> = row.outcomes.iter().map(|o| ratio(o.zipf_misses, o.zipf_requests)).collect();
            let zipf_requests = row.outcomes[0].zipf_requests;
            // The oracle misses every scan request.
            let oracle = ratio(row.oracle_misses - (row.requests - zipf_requests), zipf_requests);
            print_ratio_line("  (its Zipf requests only)", row.entries, &zipf, lru, oracle);
        }
    }
    println!("* top-k pins keys 0..k and misses all others: on a Zipf trace the k most popular keys, which");
    println!("  no policy that cannot see the future beats on average; on the loop, any k of its keys.");

    println!("\nWall time of each run, seconds (trace replay only; CLOCK runs the real BankMap)");
    println!("{}", header("workload"));
    for row in rows {
        let mut line = format!("{:<28} {:>8}", row.workload, row.entries);
        for o in &row.outcomes {
            line += &format!(" {:>9.2}", o.elapsed.as_secs_f64());
        }
        println!("{line}");
    }
    let total: Duration = rows.iter().flat_map(|r| &r.outcomes).map(|o| o.elapsed).sum();
    let requests: usize = rows.iter().map(|r| r.requests * r.outcomes.len()).sum();
    println!(
        "({} runs, {:.1} s in all, {:.0} ns per request on average)",
        rows.len() * POLICIES.len(),
        total.as_secs_f64(),
        total.as_nanos() as f64 / requests as f64
    );
}

fn print_ratio_line(label: &str, entries: usize, ratios: &[f64], lru: usize, oracle: f64) {
    let mut line = format!("{label:<28} {entries:>8}");
    for r in ratios {
        line += &format!(" {r:>9.4}");
    }
    let (best, &best_ratio) =
        ratios.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).expect("some policies");
    let change = if ratios[lru] > 0.0 { (best_ratio / ratios[lru] - 1.0) * 100.0 } else { 0.0 };
    println!("{line}  {:>8} {change:>+6.1}% {oracle:>8.4}", POLICIES[best]);
}

/// Per-entry eviction metadata of each policy in a tight implementation: what it keeps, bytes per cached
/// entry, and the work a hit does.
const METADATA: [(&str, &str, f64, &str); 5] = [
    ("FIFO", "queue position: 4 B ring index", 4.0, "none"),
    ("LRU", "prev + next: 2 x 8 B pointers", 16.0, "unlink + push front (6 writes)"),
    ("CLOCK", "1 reference bit (0 B in BankMap)", 0.125, "set a bit"),
    ("S3-FIFO", "2-bit counter + S/M bit + 4 B ring idx", 4.375, "bump a 2-bit counter"),
    ("", "+ 0.9 ghosts x (4 B hash + 4 B stamp)", 7.2, ""),
];

fn print_metadata(sizes: &[usize]) {
    println!("\nEviction metadata per cached entry, beyond the hash index, key and value every policy needs");
    let mut head = format!("{:<8} {:<40} {:>7}", "policy", "kept per entry", "B/entry");
    for n in sizes {
        head += &format!(" {:>10}", format!("@{n}"));
    }
    println!("{head}  work on a hit");
    for (policy, what, bytes, hit) in METADATA {
        let mut line = format!("{policy:<8} {what:<40} {bytes:>7.3}");
        for &n in sizes {
            line += &format!(" {:>7.0} KB", bytes * n as f64 / 1000.0);
        }
        println!("{}", format!("{line}  {hit}").trim_end());
    }
    println!("(LRU with 4 B slab indices instead of pointers: 8 B. BankMap keeps CLOCK's bit in a flags");
    println!("byte its slot has anyway, and the slab's slot order is the clock: CLOCK costs it no memory.)");
}

fn main() {
    let requests = match std::env::args().nth(1) {
        None => DEFAULT_REQUESTS,
        Some(arg) => arg.parse().unwrap_or_else(|_| panic!("REQUESTS must be a count, not {arg:?}")),
    };
    let sizes: Vec<usize> = SIZES.iter().map(|f| (f * f64::from(KEYS)).round() as usize).collect();
    println!(
        "Eviction policies: {requests} requests per run{}, {KEYS} distinct Zipf keys, {VALUE_LEN}-byte values,",
        if requests < DEFAULT_REQUESTS { " (REDUCED from 10,000,000)" } else { "" },
    );
    println!(
        "cache sizes {sizes:?} entries (= {:?} bytes of values)",
        sizes.iter().map(|n| n * VALUE_LEN).collect::<Vec<_>>()
    );

    let workloads = [Workload::Zipf(0.99), Workload::Zipf(0.8), Workload::ZipfScan(0.99), Workload::Loop];
    let mut rows = Vec::new();
    let started = Instant::now();
    for (w, &workload) in workloads.iter().enumerate() {
        let seed = 0x5eed_0000 + w as u64;
        let shared = match workload {
            Workload::Zipf(alpha) | Workload::ZipfScan(alpha) => {
                let t = Instant::now();
                let zipf = Zipf::new(KEYS, alpha);
                let trace = zipf_trace(&zipf, requests, seed, matches!(workload, Workload::ZipfScan(_)));
                eprintln!("[{}] trace built in {:.2} s", workload.name(), t.elapsed().as_secs_f64());
                Some(trace)
            }
            Workload::Loop => None,
        };
        for &entries in &sizes {
            let looped;
            let trace = match &shared {
                Some(trace) => trace,
                None => {
                    looped = loop_trace((entries as f64 * 1.2).round() as u32, requests);
                    &looped
                }
            };
            let outcomes: Vec<Outcome> = POLICIES
                .iter()
                .map(|name| {
                    let mut policy = make_policy(name, entries * VALUE_LEN);
                    let outcome = replay(policy.as_mut(), trace);
                    eprintln!(
                        "[{} / {entries}] {name:<8} miss ratio {:.4} in {:.2} s",
                        workload.name(),
                        ratio(outcome.misses, trace.keys.len()),
                        outcome.elapsed.as_secs_f64()
                    );
                    outcome
                })
                .collect();
            rows.push(Row {
                workload: workload.name(),
                entries,
                requests: trace.keys.len(),
                scans: matches!(workload, Workload::ZipfScan(_)),
                outcomes,
                oracle_misses: pinned_top_k(trace, entries),
            });
        }
    }
    print_tables(&rows);
    print_metadata(&sizes);
    println!("\nTotal wall time {:.1} s", started.elapsed().as_secs_f64());
}
