//! The admin page (`/ui/`) in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver, with the `fantoccini` crate), against the real binary. It adds an entry through the page,
//! finds it by prefix in a bank of 100k keys, edits it and checks what a JSON client then reads, deletes
//! it, shows a bytes value as a hex dump, checks that stored `<script>` and `<img onerror>` values and
//! keys are shown as text and never run, resets a bank after typing its name, goes through the token
//! prompt of a server with an `auth_token`, and saves a screenshot of the dashboard under load to
//! `target/ui-e2e/dashboard.png`.
//!
//! Without `chromium` and `chromium-driver` the test fails, saying which packages to install: it never
//! skips. Every wait polls for a condition with a generous bound, so a slow machine only makes it slower.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bankcache_client::Client;
use common::*;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;

/// How long any one condition may take to come true before the test fails.
const WAIT: Duration = Duration::from_secs(60);
/// Keys in the big bank.
const BIG: usize = 100_000;
const TOKEN: &str = "s3cret-T0ken";

/// A program the test needs, found on `PATH` or at its Debian path.
fn program(name: &str, debian_path: &str, package: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()));
    match on_path.or_else(|| Some(PathBuf::from(debian_path)).filter(|p| p.is_file())) {
        Some(path) => path,
        None => panic!(
            "{name} is not installed (Debian package `{package}`): the admin page's browser test needs \
             Debian's packages `chromium` and `chromium-driver` (apt-get install chromium chromium-driver; \
             scripts/test.sh installs them)"
        ),
    }
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let chromedriver = program("chromedriver", "/usr/bin/chromedriver", "chromium-driver");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {addr} within {WAIT:?}");
            thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url: format!("http://{addr}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with its own profile directory.
async fn browser(driver: &Driver, profile: &Path) -> Browser {
    let chromium = program("chromium", "/usr/bin/chromium", "chromium");
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("no Chromium session through chromedriver at {}: {e}", driver.url))
}

/// Polls `script` (a function body returning a value) until `done` holds for its result; fails after
/// [`WAIT`], saying what it waited for and what it last saw.
async fn until(
    b: &Browser,
    what: &str,
    script: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = b.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        if done(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}; last seen {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the element `id`, once it is shown and equal to `expected`.
async fn text_is(b: &Browser, id: &str, expected: &str) {
    let script = format!("const e = document.getElementById('{id}'); return e && e.offsetParent !== null ? e.textContent : null;");
    until(b, &format!("#{id} shows {expected:?}"), &script, |v| v.as_str() == Some(expected)).await;
}

/// Waits until the element `id` is shown (or hidden, with `shown` false).
async fn shown(b: &Browser, id: &str, shown: bool) {
    let script = format!("const e = document.getElementById('{id}'); return !!e && e.offsetParent !== null;");
    until(b, &format!("#{id} shown: {shown}"), &script, |v| v.as_bool() == Some(shown)).await;
}

async fn click(b: &Browser, id: &str) {
    shown(b, id, true).await;
    b.find(Locator::Id(id)).await.unwrap().click().await.unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

async fn type_into(b: &Browser, id: &str, text: &str) {
    shown(b, id, true).await;
    let e = b.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap_or_else(|e| panic!("type into #{id}: {e}"));
}

/// The keys listed in the open bank.
const KEYS: &str = "return Array.from(document.querySelectorAll('#keys li'), li => li.textContent);";

/// Clicks the listed key `key` (by its text, which may hold anything).
async fn open_key(b: &Browser, key: &str) {
    let wanted = json!(key);
    until(b, &format!("key {key:?} listed"), KEYS, |v| v.as_array().is_some_and(|a| a.contains(&wanted)))
        .await;
    let script = "const li = Array.from(document.querySelectorAll('#keys li')).find(li => li.textContent === arguments[0]); li.click(); return true;";
    b.execute(script, vec![wanted]).await.unwrap();
    until(
        b,
        &format!("entry {key:?} open"),
        "return document.getElementById('entry-key').textContent;",
        |v| v.as_str() == Some(key),
    )
    .await;
}

/// Opens bank `name` from the bank list.
async fn open_bank(b: &Browser, name: &str) {
    click(b, "tab-banks").await;
    if b.execute("return !document.getElementById('bank-view').classList.contains('hidden');", vec![])
        .await
        .unwrap()
        == json!(true)
    {
        click(b, "back").await;
    }
    type_into(b, "open-bank", name).await;
    click(b, "open-bank-go").await;
    text_is(b, "bank-name", name).await;
}

/// Nothing stored ran: no flag was set, the title is the page's.
async fn nothing_ran(b: &Browser) {
    let seen = b.execute("return [typeof window.__xss, document.title];", vec![]).await.unwrap();
    assert_eq!(seen, json!(["undefined", "bankcache"]), "a stored value ran as script");
}

fn json_client(s: &TestServer) -> Client {
    Client::connect(s.addr()).expect("a JSON client connects")
}

/// Loads the big bank through pipelined puts, a thousand a round trip.
fn load_big_bank(s: &TestServer) {
    let mut c = json_client(s);
    for chunk in 0..BIG / 1000 {
        let mut p = c.pipeline();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            p.put("big", &format!("user:{i:06}"), &json!({"n": i}), None);
        }
        let replies = p.run().expect("a pipeline of puts");
        assert!(replies.iter().all(|r| r.is_ok()), "a put of the big bank failed");
    }
}

/// Traffic from two JSON clients until `stop` (or a bounded time), so the dashboard has something to show.
fn traffic(s: &TestServer, stop: Arc<AtomicBool>) -> Vec<thread::JoinHandle<()>> {
    (0..2)
        .map(|t| {
            let mut c = json_client(s);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(300);
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    let mut p = c.pipeline();
                    for i in 0..100 {
                        let key = format!("load:{t}:{}", (round * 100 + i) % 5000);
                        p.put("load", &key, &json!({"round": round}), None);
                        p.get("load", &key);
                        p.get("load", &format!("missing:{i}"));
                        p.get("big", &format!("user:{:06}", (round * 37 + i) % BIG as u64));
                    }
                    p.run().expect("the traffic's pipeline");
                    round += 1;
                }
            })
        })
        .collect()
}

#[test]
fn admin_page_in_chromium() {
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let profile = tempfile::tempdir().unwrap();
        let b = browser(&driver, profile.path()).await;
        let result = tokio::spawn(pages(b.clone())).await;
        let _ = b.close().await;
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    });
}

async fn pages(b: Browser) {
    token_prompt(&b).await;
    browse_and_edit(&b).await;
}

/// A server with an `auth_token`: the page asks for it, refuses a wrong one, and with the right one shows
/// the counters; the token stays out of the URL, in the tab's session storage.
async fn token_prompt(b: &Browser) {
    let s = TestServer::start(&["--auth-token", TOKEN]);
    b.goto(&format!("http://{}/ui/", s.http_addr())).await.unwrap();
    shown(b, "auth", true).await;
    text_is(b, "fig-banks", "-").await;
    type_into(b, "token", "wrong-token").await;
    click(b, "token-ok").await;
    text_is(b, "auth-error", "That token was refused.").await;
    type_into(b, "token", TOKEN).await;
    click(b, "token-ok").await;
    shown(b, "auth", false).await;
    text_is(b, "fig-banks", "0").await;
    let stored = b.execute("return sessionStorage.getItem('bankcache-token');", vec![]).await.unwrap();
    assert_eq!(stored, json!(TOKEN));
    let url = b.current_url().await.unwrap();
    assert!(!url.as_str().contains(TOKEN), "the token is in the URL: {url}");
    // The bank list works with the token too.
    let mut c = Client::builder().auth_token(TOKEN).connect(s.addr()).unwrap();
    c.put("guarded", "k", &json!("v"), None).unwrap();
    open_bank(b, "guarded").await;
    open_key(b, "k").await;
    text_is(b, "value", "v").await;
}

async fn browse_and_edit(b: &Browser) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let s = TestServer::start(&["--data-dir", data, "--volume-size", "8388608", "--volume-count", "6"]);
    load_big_bank(&s);
    let mut c = json_client(&s);
    b.goto(&format!("http://{}/ui/", s.http_addr())).await.unwrap();
    until(
        b,
        "the dashboard shows the big bank",
        "return document.getElementById('fig-keys').textContent;",
        |v| v.as_str() == Some(&BIG.to_string()),
    )
    .await;

    // The bank list shows the big bank with its entries.
    click(b, "tab-banks").await;
    let rows = "return Array.from(document.querySelectorAll('#bank-rows tr'), tr => Array.from(tr.children, td => td.textContent));";
    until(b, "the bank list", rows, |v| v[0][0] == "big" && v[0][1] == json!(BIG.to_string())).await;

    // Add an entry through the page, with a lifetime.
    open_bank(b, "big").await;
    click(b, "add").await;
    type_into(b, "edit-key", "needle:7").await;
    type_into(b, "edit-value", r#"{"found": true}"#).await;
    type_into(b, "edit-lifetime", "3600").await;
    click(b, "edit-save").await;
    text_is(b, "entry-key", "needle:7").await;
    assert_eq!(c.get::<serde_json::Value>("big", "needle:7").unwrap(), Some(json!({"found": true})));

    // Find it by prefix among 100k keys.
    type_into(b, "prefix", "needle:").await;
    click(b, "search").await;
    until(b, "the prefix finds the one key", KEYS, |v| *v == json!(["needle:7"])).await;
    open_key(b, "needle:7").await;
    text_is(b, "value", "{\n  \"found\": true\n}").await;
    text_is(b, "entry-type", "JSON").await;
    // Values put over REST stay in RAM under a disk store (the disk store is their log).
    text_is(b, "entry-tier", "memory").await;
    let left =
        until(b, "lifetime left", "return document.getElementById('entry-lifetime').textContent;", |v| {
            v.as_str().is_some_and(|t| t.ends_with(" s"))
        })
        .await;
    let left: u64 = left.as_str().unwrap().trim_end_matches(" s").parse().unwrap();
    assert!((3500..=3600).contains(&left), "lifetime left {left}");
    let position = b.find(Locator::Id("entry-position")).await.unwrap().text().await.unwrap();
    assert!(position.starts_with("volume "), "{position}");
    let size = b.find(Locator::Id("entry-size")).await.unwrap().text().await.unwrap();
    assert_eq!(size, "15 B", "the stored JSON text");

    // Edit it; a JSON client reads the new value.
    click(b, "edit").await;
    type_into(b, "edit-value", r#"{"found": 2, "list": [1, "two"]}"#).await;
    click(b, "edit-save").await;
    text_is(b, "value", "{\n  \"found\": 2,\n  \"list\": [\n    1,\n    \"two\"\n  ]\n}").await;
    assert_eq!(
        c.get::<serde_json::Value>("big", "needle:7").unwrap(),
        Some(json!({"found": 2, "list": [1, "two"]}))
    );
    save(&b.screenshot().await.unwrap(), "entry.png");

    // Delete it, after the confirmation.
    click(b, "delete").await;
    click(b, "delete-confirm").await;
    shown(b, "entry", false).await;
    until(b, "the key is gone from the list", KEYS, |v| *v == json!([])).await;
    assert_eq!(c.get::<serde_json::Value>("big", "needle:7").unwrap(), None);

    // Bytes are shown as a hex dump.
    c.put_bytes("files", "bin", &[0, 1, 2, 255, b'A'], None).unwrap();
    open_bank(b, "files").await;
    open_key(b, "bin").await;
    text_is(b, "value", &format!("00000000  00 01 02 ff 41{}....A", " ".repeat(35))).await;
    text_is(b, "entry-type", "bytes (hex dump)").await;

    // Stored markup is shown as text and never runs, in values and in keys.
    let script = "<script>window.__xss = 1; document.title = 'pwned';</script>";
    let img = "<img src=x onerror=\"window.__xss = 2; document.title = 'pwned'\">";
    c.put("xss", "script", &json!(script), None).unwrap();
    c.put("xss", "img", &json!(img), None).unwrap();
    c.put("xss", img, &json!({"html": img}), None).unwrap();
    open_bank(b, "xss").await;
    open_key(b, "script").await;
    text_is(b, "value", script).await;
    open_key(b, "img").await;
    text_is(b, "value", img).await;
    open_key(b, img).await;
    text_is(b, "entry-key", img).await;
    let elements =
        "return document.querySelectorAll('#keys img, #value img, #entry img, script:not([src])').length;";
    assert_eq!(b.execute(elements, vec![]).await.unwrap(), json!(0), "stored markup became elements");
    nothing_ran(b).await;

    // Reset the bank: only once its name is typed.
    click(b, "reset").await;
    text_is(b, "reset-name", "xss").await;
    type_into(b, "reset-confirm", "xs").await;
    let disabled = "return document.getElementById('reset-do').disabled;";
    assert_eq!(b.execute(disabled, vec![]).await.unwrap(), json!(true), "reset with the wrong name");
    type_into(b, "reset-confirm", "xss").await;
    until(b, "reset enabled", disabled, |v| *v == json!(false)).await;
    click(b, "reset-do").await;
    until(b, "the bank is empty", KEYS, |v| *v == json!([])).await;
    assert_eq!(c.bank_keys("xss").unwrap(), Vec::<String>::new());
    assert_eq!(c.bank_keys("files").unwrap(), vec!["bin".to_string()], "another bank is left alone");
    nothing_ran(b).await;

    // The dashboard under load.
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&s, Arc::clone(&stop));
    click(b, "tab-dashboard").await;
    let ops = "return Number(document.getElementById('fig-ops').textContent.replace('k', 'e3'));";
    until(b, "ops/s under load", ops, |v| v.as_f64().is_some_and(|n| n > 100.0)).await;
    // A dozen refreshes, so the charts have lines to show.
    let mut last = serde_json::Value::Null;
    for _ in 0..12 {
        let status = "return document.getElementById('status').textContent;";
        let before = last.clone();
        last = until(b, "a refresh", status, |v| {
            *v != before && v.as_str().is_some_and(|t| t.starts_with("updated"))
        })
        .await;
    }
    let png = b.screenshot().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("the traffic thread");
    }
    save(&png, "dashboard.png");
    nothing_ran(b).await;
}

/// Saves a screenshot as a test artifact under `target/ui-e2e/`.
fn save(png: &[u8], name: &str) {
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("ui-e2e");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(name), png).unwrap();
    eprintln!("screenshot: {}", out.join(name).display());
}

/// Without the browser the test fails, naming the Debian packages to install; it never skips.
#[test]
#[should_panic(expected = "apt-get install chromium chromium-driver")]
fn a_missing_browser_fails_the_test() {
    program("chromedriver-not-installed", "/nonexistent/chromedriver", "chromium-driver");
}
