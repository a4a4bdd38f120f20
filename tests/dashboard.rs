//! The web dashboard of `troupe serve --http`, in a real browser: Debian's `chromium`,
//! headless, driven over WebDriver (`chromedriver`) by fantoccini. Three loopback agents and
//! a serve probing them; each test saves a screenshot under
//! `target/dashboard-screenshots/`.
//!
//! Without chromium and chromedriver (`scripts/test` installs them) the browser tests fail,
//! naming what is missing.

use crate::support::{bin, repo_root, unique_loopback, wait_for, Agent, Daemon};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const WATCHERS: &str = r#"
[watcher.worker]
cmd = "sh"
args = ["-c", "while :; do sleep 1; done"]
numprocesses = 2
graceful_timeout = 1

[watcher.ticker]
cmd = "sh"
args = ["-c", "while :; do sleep 1; done"]
graceful_timeout = 1
"#;

/// Fails `test` when chromium or chromedriver is missing: a browser test that cannot run is a
/// failure, never a pass.
fn require_browser(test: &str) {
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "{test}: {CHROMIUM} or {CHROMEDRIVER} is missing: install them (apt-get install -y \
         chromium chromium-driver), as scripts/test does as root"
    );
}

/// A free TCP port on `address`.
pub(crate) fn free_port(address: &str) -> u16 {
    std::net::TcpListener::bind((address, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `troupe serve` on a fresh loopback address with its dashboard, probing `probe`.
struct Serve {
    /// Stopped (and its log printed on a failure) when the test ends.
    _daemon: Daemon,
    http: String,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(probe: &[&str], key_file: Option<&Path>) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let address = unique_loopback();
        let http = format!("{address}:{}", free_port(&address));
        let mut command = crate::support::isolated(Command::new(bin("troupe")), dir.path());
        command
            .args(["serve", "--bind", &address, "--no-mdns", "--http", &http])
            .args(["--log-level", "info", "--state-dir"])
            .arg(dir.path().join("state"));
        for address in probe {
            command.args(["--probe", address]);
        }
        if let Some(key) = key_file {
            command.arg("--key-file").arg(key);
        }
        let daemon = Daemon::spawn("troupe serve", command, &dir.path().join("serve.log"));
        let serve = Serve {
            _daemon: daemon,
            http,
            _dir: dir,
        };
        wait_for("the dashboard to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(&serve.http).is_ok()
        });
        serve
    }

    fn url(&self) -> String {
        format!("http://{}/", self.http)
    }
}

/// A status and a body from one HTTP/1.1 request.
pub(crate) fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the dashboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(&format!("{header}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// chromedriver and a headless chromium session; both killed on drop (chromedriver runs in
/// a process group of its own, which its browser shares).
struct Browser {
    client: Option<Client>,
    driver: Child,
    name: String,
}

impl Browser {
    async fn open(name: &str) -> Browser {
        let port = free_port("127.0.0.1");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        wait_for("chromedriver to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                // As root in a container: no sandbox; no GPU, no shared-memory dir to fill.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-background-networking",
                         "--window-size=1400,1700"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session through chromedriver");
        Browser {
            client: Some(client),
            driver,
            name: name.to_string(),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open")
    }

    /// Evaluates a JavaScript expression in the page.
    async fn eval(&self, expression: &str) -> Value {
        self.client()
            .execute(&format!("return {expression};"), vec![])
            .await
            .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
    }

    /// Waits until `expression` is true in the page, without reloading it.
    async fn wait_for(&self, what: &str, timeout: Duration, expression: &str) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.eval(expression).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.screenshot("timeout").await;
        let text = self.eval("document.body.innerText").await;
        panic!("timed out after {timeout:?} waiting for {what}; the page reads:\n{text}");
    }

    /// Clicks the element `css` (found again if the page re-drew it meanwhile).
    async fn click(&self, css: &str) {
        let mut last = None;
        for _ in 0..20 {
            match self.client().find(Locator::Css(css)).await {
                Ok(element) => match element.click().await {
                    Ok(()) => return,
                    Err(e) => last = Some(e.to_string()),
                },
                Err(e) => last = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot click {css}: {last:?}");
    }

    /// Saves `target/dashboard-screenshots/<test>-<step>.png`.
    async fn screenshot(&self, step: &str) -> PathBuf {
        let png = self.client().screenshot().await.expect("a screenshot");
        let dir = repo_root().join("target/dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{step}.png", self.name));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// Three agents (`n1`, `n2`, `n3`) and a serve with its dashboard probing them.
fn cluster() -> (Vec<Agent>, Serve) {
    let agents: Vec<Agent> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| Agent::start_named(name, &unique_loopback(), WATCHERS, ""))
        .collect();
    let probe: Vec<&str> = agents.iter().map(|a| a.address.as_str()).collect();
    let serve = Serve::start(&probe, None);
    (agents, serve)
}

const ALIVE_ROWS: &str =
    "document.querySelectorAll('#members tbody tr[data-state=\"alive\"]').length";

fn cell(node: &str, watcher: &str) -> String {
    format!(
        "document.querySelector('#matrix td[data-node=\"{node}\"][data-watcher=\"{watcher}\"]')"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_the_nodes_and_stop_on_one_cell_stops_exactly_that() {
    require_browser("dashboard stop");
    let (agents, serve) = cluster();
    let browser = Browser::open("stop").await;
    browser.client().goto(&serve.url()).await.unwrap();
    browser
        .wait_for(
            "three alive nodes",
            Duration::from_secs(20),
            &format!("{ALIVE_ROWS} === 3"),
        )
        .await;
    for node in ["n1", "n2", "n3"] {
        let active = format!(
            "{c} && {c}.dataset.status === 'active'",
            c = cell(node, "worker")
        );
        browser
            .wait_for(
                &format!("{node}'s worker active"),
                Duration::from_secs(10),
                &active,
            )
            .await;
    }
    browser.screenshot("listed").await;

    browser
        .click("#matrix td[data-node='n2'][data-watcher='worker'] button[data-action='stop']")
        .await;
    browser
        .wait_for(
            "the action's result",
            Duration::from_secs(20),
            "document.querySelector('#result .summary[data-ok=\"true\"]') !== null",
        )
        .await;
    let status = |agent: &Agent, watcher: &str| {
        agent.call("status", json!({"name": watcher}))["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(status(&agents[1], "worker"), "stopped", "n2's worker");
    assert_eq!(status(&agents[1], "ticker"), "active", "n2's other watcher");
    assert_eq!(status(&agents[0], "worker"), "active", "n1's worker");
    assert_eq!(status(&agents[2], "worker"), "active", "n3's worker");
    let stopped = format!("{c}.dataset.status === 'stopped'", c = cell("n2", "worker"));
    browser
        .wait_for(
            "the matrix to show n2's worker stopped",
            Duration::from_secs(10),
            &stopped,
        )
        .await;
    let table = browser
        .eval("document.querySelector('#result pre').innerText")
        .await;
    assert!(
        table
            .as_str()
            .is_some_and(|t| t.contains("n2") && !t.contains("n1")),
        "the per-node result names n2 only: {table}"
    );
    browser.screenshot("stopped").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_cannot_start_shows_why_in_its_cell() {
    require_browser("dashboard stop reason");
    let watchers =
        format!("{WATCHERS}\n[watcher.missing]\ncmd = \"/nonexistent/troupe-test-program\"\n");
    let agent = Agent::start_named("n1", &unique_loopback(), &watchers, "");
    let serve = Serve::start(&[agent.address.as_str()], None);
    let browser = Browser::open("reason").await;
    browser.client().goto(&serve.url()).await.unwrap();
    let reason = format!(
        "{c} && {c}.dataset.status === 'stopped' && {c}.querySelector('.reason') !== null",
        c = cell("n1", "missing")
    );
    browser
        .wait_for(
            "the stopped cell with its reason",
            Duration::from_secs(20),
            &reason,
        )
        .await;
    let text = browser
        .eval(&format!(
            "{}.querySelector('.reason').innerText",
            cell("n1", "missing")
        ))
        .await;
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains("/nonexistent/troupe-test-program") && text.contains("No such file"),
        "{text}"
    );
    browser.screenshot("shown").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_appears_on_the_open_page() {
    require_browser("dashboard crash");
    let (agents, serve) = cluster();
    let browser = Browser::open("crash").await;
    browser.client().goto(&serve.url()).await.unwrap();
    browser
        .wait_for(
            "three alive nodes",
            Duration::from_secs(20),
            &format!("{ALIVE_ROWS} === 3"),
        )
        .await;
    // The page is open and following; a process dies behind its back.
    let pid = agents[0].running_pids("worker", 2)[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let crash = format!(
        "[...document.querySelectorAll('#events tbody tr[data-kind=\"crash\"][data-node=\"n1\"]')]\
         .some(r => r.innerText.includes('pid {pid}') && r.innerText.includes('signal 9'))"
    );
    browser
        .wait_for(
            "the crash in the event list",
            Duration::from_secs(15),
            &crash,
        )
        .await;
    browser
        .wait_for(
            "the respawn after it",
            Duration::from_secs(15),
            "document.querySelector('#events tbody tr[data-kind=\"respawn\"][data-node=\"n1\"]') !== null",
        )
        .await;
    browser.screenshot("crash").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_shown_down_with_its_last_values() {
    require_browser("dashboard down");
    let (mut agents, serve) = cluster();
    let browser = Browser::open("down").await;
    browser.client().goto(&serve.url()).await.unwrap();
    browser
        .wait_for(
            "three alive nodes",
            Duration::from_secs(20),
            &format!("{ALIVE_ROWS} === 3"),
        )
        .await;
    let listed = format!(
        "{c} && {c}.dataset.processes === '2'",
        c = cell("n3", "worker")
    );
    browser
        .wait_for(
            "n3's worker with 2 processes",
            Duration::from_secs(10),
            &listed,
        )
        .await;
    agents[2].kill();
    browser
        .wait_for(
            "n3 marked down",
            Duration::from_secs(20),
            "document.querySelector('#members tbody tr[data-node=\"n3\"]')?.dataset.state === 'down'",
        )
        .await;
    // Still on the page, with the last values it had, and no button acting on it.
    let kept = format!(
        "{c}.dataset.processes === '2' && {c}.classList.contains('stale') && \
         {c}.querySelector('button[data-action=\"stop\"]').disabled",
        c = cell("n3", "worker")
    );
    assert_eq!(browser.eval(&kept).await, json!(true));
    assert_eq!(browser.eval(ALIVE_ROWS).await, json!(2));
    browser
        .wait_for(
            "the down event",
            Duration::from_secs(5),
            "document.querySelector('#events tbody tr[data-kind=\"down\"][data-node=\"n3\"]') !== null",
        )
        .await;
    browser.screenshot("down").await;
    browser.close().await;
}

/// A keyed agent: spawned without waiting (a keyless client gets no answer from it).
pub(crate) fn keyed_agent(name: &str, key: &Path) -> (Daemon, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let address = unique_loopback();
    let config = dir.path().join("troupe-agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nname = \"{name}\"\nbind = \"{address}\"\nstate_dir = \"{}\"\nmdns = false\n\
             key_file = \"{}\"\n{WATCHERS}",
            dir.path().join("state").display(),
            key.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(bin("troupe-agent"));
    command.arg("--config").arg(&config);
    let daemon = Daemon::spawn(name, command, &dir.path().join("agent.log"));
    (daemon, address, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_the_api_needs_the_token_that_dashboard_url_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    let made = crate::support::troupe(dir.path(), &["keygen", "--out", &key.display().to_string()]);
    assert!(made.code == Some(0), "{made:?}");
    let agents: Vec<_> = ["k1", "k2", "k3"]
        .iter()
        .map(|name| keyed_agent(name, &key))
        .collect();
    let probe: Vec<&str> = agents
        .iter()
        .map(|(_, address, _)| address.as_str())
        .collect();
    let serve = Serve::start(&probe, Some(&key));
    let printed = crate::support::troupe(
        dir.path(),
        &[
            "dashboard-url",
            "--http",
            &serve.http,
            "--key-file",
            &key.display().to_string(),
        ],
    );
    assert!(printed.code == Some(0), "{printed:?}");
    let url = printed.stdout.trim().to_string();
    let token = url
        .split_once("#token=")
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| panic!("no token in {url:?}"));
    assert_eq!(token.len(), 64, "{url}");
    assert!(url.starts_with(&format!("http://{}/", serve.http)), "{url}");

    let (status, body) = http(&serve.http, "GET", "/api/members", &[], "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("troupe dashboard-url"), "{body}");
    let wrong = format!("Authorization: Bearer {}", "0".repeat(64));
    assert_eq!(
        http(&serve.http, "GET", "/api/members", &[&wrong], "").0,
        401
    );
    assert_eq!(http(&serve.http, "GET", "/api/events", &[], "").0, 401);
    let action = r#"{"action": "stop", "node": "*", "watcher": "*"}"#;
    let json_body = "Content-Type: application/json";
    assert_eq!(
        http(&serve.http, "POST", "/api/action", &[json_body], action).0,
        401
    );
    let bearer = format!("Authorization: Bearer {token}");
    wait_for("three keyed members alive", Duration::from_secs(20), || {
        let (status, body) = http(&serve.http, "GET", "/api/members", &[&bearer], "");
        assert_eq!(status, 200, "{body}");
        let members: Value = serde_json::from_str(&body).unwrap();
        members["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|n| n["state"] == "alive").count() == 3)
    });
    // A reset is refused by the server until it is confirmed, whatever a page does.
    let reset = r#"{"action": "reset", "node": "k1", "watcher": "worker"}"#;
    let (status, body) = http(
        &serve.http,
        "POST",
        "/api/action",
        &[&bearer, json_body],
        reset,
    );
    assert_eq!(status, 428, "{body}");
    assert!(body.contains("confirm"), "{body}");

    require_browser("dashboard token");
    // The printed URL opens the page, which then follows the live stream on the cookie.
    let browser = Browser::open("token").await;
    browser.client().goto(&url).await.unwrap();
    browser
        .wait_for(
            "three alive nodes",
            Duration::from_secs(20),
            &format!("{ALIVE_ROWS} === 3"),
        )
        .await;
    let address_bar = browser.client().current_url().await.unwrap();
    assert!(
        !address_bar.as_str().contains("token"),
        "the token left the address bar: {address_bar}"
    );
    browser.screenshot("keyed").await;
    // Without the token the page says what to do.
    let other = Browser::open("no-token").await;
    other.client().goto(&serve.url()).await.unwrap();
    other
        .wait_for(
            "the banner asking for the token",
            Duration::from_secs(10),
            "document.querySelector('#banner').innerText.includes('troupe dashboard-url')",
        )
        .await;
    other.screenshot("refused").await;
    other.close().await;
    browser.close().await;
}

#[test]
fn a_keyless_dashboard_beyond_loopback_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let address = unique_loopback();
    let run = crate::support::troupe(
        dir.path(),
        &[
            "serve",
            "--bind",
            &address,
            "--no-mdns",
            "--http",
            "0.0.0.0:0",
            "--state-dir",
            &dir.path().join("state").display().to_string(),
        ],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("loopback only") && run.stderr.contains("troupe keygen"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_view_follows_a_line_printed_after_the_page_opened() {
    require_browser("dashboard logs");
    let scratch = tempfile::tempdir().expect("tempdir");
    let say = scratch.path().join("say");
    // Prints whatever the test writes to `say`, once.
    let echoer = format!(
        "[watcher.echoer]\ncmd = \"sh\"\nargs = [\"-c\", \"while :; do if [ -f {f} ]; then cat {f}; \
         rm -f {f}; fi; sleep 0.2; done\"]\ngraceful_timeout = 1\n",
        f = say.display()
    );
    let mut agents = vec![Agent::start_named(
        "n1",
        &unique_loopback(),
        &format!("{WATCHERS}\n{echoer}"),
        "",
    )];
    for name in ["n2", "n3"] {
        agents.push(Agent::start_named(name, &unique_loopback(), WATCHERS, ""));
    }
    let probe: Vec<&str> = agents.iter().map(|a| a.address.as_str()).collect();
    let serve = Serve::start(&probe, None);
    let browser = Browser::open("logs").await;
    browser.client().goto(&serve.url()).await.unwrap();
    browser
        .wait_for(
            "three alive nodes",
            Duration::from_secs(20),
            &format!("{ALIVE_ROWS} === 3"),
        )
        .await;
    browser
        .wait_for(
            "echoer among the log view's watchers",
            Duration::from_secs(10),
            "[...document.querySelectorAll('#log-watcher option')].some(o => o.value === 'echoer')",
        )
        .await;
    browser
        .eval("(document.querySelector('#log-watcher').value = 'echoer', document.querySelector('#log-node').value = 'n1', true)")
        .await;
    browser.click("#log-follow").await;
    browser.click("#log-show").await;
    browser
        .wait_for(
            "the follow stream to open",
            Duration::from_secs(10),
            "document.querySelector('#log-status').dataset.following === 'true'",
        )
        .await;
    let marker = format!("printed after the page opened {}", std::process::id());
    let shown = format!("document.querySelector('#log-lines-box').innerText.includes('{marker}')");
    // The agent publishes once it has seen the subscription: say it until the page shows it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.eval(&shown).await != json!(true) {
        assert!(Instant::now() < deadline, "the line never reached the page");
        if !say.exists() {
            std::fs::write(&say, format!("{marker}\n")).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The text filter hides what does not match, and the tail reads it back from the ring.
    browser
        .client()
        .find(Locator::Css("#log-filter"))
        .await
        .unwrap()
        .send_keys("nothing like it")
        .await
        .unwrap();
    assert_eq!(browser.eval(&shown).await, json!(false));
    browser.eval("(document.querySelector('#log-filter').value = '', document.querySelector('#log-filter').dispatchEvent(new Event('input')), true)").await;
    browser.click("#log-follow").await;
    browser.click("#log-show").await;
    browser
        .wait_for("the tail to hold the line", Duration::from_secs(10), &shown)
        .await;
    browser.screenshot("logs").await;
    browser.close().await;
}
