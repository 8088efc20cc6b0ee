//! The dashboard in a real browser: headless Chromium from Debian's
//! packages, driven through chromedriver (WebDriver) against the real
//! `outpost run` (issue #14).
//!
//! Chromium is found at `OUTPOST_CHROMIUM` or the usual names on `PATH`,
//! chromedriver at `OUTPOST_CHROMEDRIVER` or `chromedriver` on `PATH`.
//! Without them the tests say so and pass, so the README's test command
//! works on a machine with nothing installed; `.ci/run` installs both and
//! sets `OUTPOST_REQUIRE_BROWSER=1`, which turns a missing browser into a
//! failure. When a step fails, a screenshot of the page is written under
//! the cargo target directory (`browser-failures/`) and its path printed.

use super::api::{Host, next_of, site, subscribe};
use super::harness::env;
use anyhow::{Context, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn find_program(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` (after saying why) when this
/// machine has no browser and nobody asked for one.
pub(super) fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program(
        "OUTPOST_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = find_program("OUTPOST_CHROMEDRIVER", &["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        (c, d) => {
            let missing = match (c, d) {
                (None, None) => "chromium and chromedriver",
                (None, _) => "chromium",
                _ => "chromedriver",
            };
            assert!(
                std::env::var_os("OUTPOST_REQUIRE_BROWSER").is_none(),
                "OUTPOST_REQUIRE_BROWSER is set but {missing} was not found \
                 (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: {missing} not found (apt-get install chromium chromium-driver)");
            None
        }
    }
}

/// chromedriver on a free loopback port, killed on drop.
pub(super) struct Driver {
    child: Child,
    port: u16,
    /// Browser profiles, one per session, removed with the driver.
    profiles: tempfile::TempDir,
    chromium: PathBuf,
}

impl Driver {
    pub(super) fn start(chromium: PathBuf, driver: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            port,
            profiles: tempfile::tempdir().unwrap(),
            chromium,
        }
    }

    /// A new browser session with an empty profile (no cookies) and the
    /// network log on.
    pub(super) async fn session(&self) -> Client {
        let profile = tempfile::tempdir_in(self.profiles.path()).unwrap().keep();
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": { "performance": "ALL" },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session")
    }

    /// Every URL a page loaded from `origin` asked for (Chrome's
    /// performance log, read through chromedriver's log endpoint; the
    /// browser's own pages, such as the first blank tab, are left out).
    async fn requested_urls(&self, client: &Client, origin: &str) -> anyhow::Result<Vec<String>> {
        let session = client.session_id().await?.context("no session")?;
        let body = Host::client()
            .post(format!(
                "http://127.0.0.1:{}/session/{session}/se/log",
                self.port
            ))
            .header("content-type", "application/json")
            .body(r#"{"type":"performance"}"#)
            .send()
            .await?
            .bytes()
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        let mut urls = Vec::new();
        for entry in answer["value"].as_array().context("log entries")? {
            let message: serde_json::Value =
                serde_json::from_str(entry["message"].as_str().unwrap_or("{}"))?;
            let m = &message["message"];
            let from_page = m["params"]["documentURL"]
                .as_str()
                .is_some_and(|d| d.starts_with(origin));
            if m["method"] == "Network.requestWillBeSent"
                && from_page
                && let Some(url) = m["params"]["request"]["url"].as_str()
            {
                urls.push(url.to_owned());
            }
        }
        Ok(urls)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `steps`; when they fail, keeps a screenshot and fails the test
/// with the step's error.
pub(super) async fn with_screenshot<F>(name: &str, client: &Client, steps: F)
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let Err(err) = steps.await else {
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-failures");
    let shot = match client.screenshot().await {
        Ok(png) => {
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}.png"));
            std::fs::write(&path, png).unwrap();
            format!("screenshot: {}", path.display())
        }
        Err(e) => format!("no screenshot: {e}"),
    };
    panic!("{name}: {err:#}\n{shot}");
}

pub(super) async fn displayed(client: &Client, id: &str) -> anyhow::Result<bool> {
    Ok(client.find(Locator::Id(id)).await?.is_displayed().await?)
}

pub(super) async fn text(client: &Client, id: &str) -> anyhow::Result<String> {
    Ok(client.find(Locator::Id(id)).await?.text().await?)
}

/// What `js` (a function body with the selector as `arguments[0]`)
/// returns for `selector` now. The page redraws its lists on every event,
/// so element handles go stale; a script reads the page in one step.
pub(super) async fn query(
    client: &Client,
    js: &str,
    selector: &str,
) -> anyhow::Result<serde_json::Value> {
    Ok(client
        .execute(js, vec![serde_json::Value::from(selector)])
        .await?)
}

pub(super) async fn count(client: &Client, selector: &str) -> anyhow::Result<usize> {
    let n = query(
        client,
        "return document.querySelectorAll(arguments[0]).length;",
        selector,
    )
    .await?;
    n.as_u64().map(|n| n as usize).context("a count")
}

/// A real click on `selector`, found anew when a redraw replaced it.
pub(super) async fn click(client: &Client, selector: &str) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        let clicked = async { client.find(Locator::Css(selector)).await?.click().await }.await;
        match clicked {
            Ok(()) => return Ok(()),
            Err(e) if tries < 40 && e.to_string().contains("stale") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("click {selector}")),
        }
    }
}

/// Polls `check` every 25 ms until it holds or `limit` passes; returns how
/// long it took.
pub(super) async fn until<F, Fut>(
    limit: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A running host on an empty `logs` folder, chromedriver beside it, and
/// the host's loopback origin; `None` (after saying why) without a browser.
struct Dashboard {
    dir: tempfile::TempDir,
    logs: PathBuf,
    host: Host,
    driver: Driver,
    origin: String,
}

impl Dashboard {
    fn start() -> Option<Dashboard> {
        let (chromium, chromedriver) = browser()?;
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let host = Host::start(&site(dir.path(), &logs));
        let driver = Driver::start(chromium, &chromedriver);
        let origin = format!("http://127.0.0.1:{}", host.addr.port());
        Some(Dashboard {
            dir,
            logs,
            host,
            driver,
            origin,
        })
    }
}

#[test]
fn the_dashboard_logs_in_once_shows_a_new_notification_live_and_acknowledges_it() {
    let Some(Dashboard {
        dir: _dir,
        logs,
        host,
        driver,
        origin,
    }) = Dashboard::start()
    else {
        return;
    };
    let e = env();
    e.rt.block_on(async {
        let client = driver.session().await;
        with_screenshot("dashboard", &client, async {
            // Without logging in: the hint, no data.
            client.goto(&format!("{origin}/")).await?;
            until(Duration::from_secs(10), "login hint", || async {
                displayed(&client, "login").await
            })
            .await?;
            ensure!(!displayed(&client, "app").await?, "data shown before login");
            ensure!(
                count(&client, "#modules tr").await? == 0,
                "module rows before login"
            );

            // The one-time URL `outpost dashboard` prints.
            let out = host.cli(&["dashboard"]);
            ensure!(out.status.success(), "outpost dashboard failed");
            let printed = String::from_utf8(out.stdout)?;
            let url = printed
                .lines()
                .find(|l| l.starts_with("http://"))
                .context("no login URL printed")?
                .trim()
                .to_owned();
            ensure!(url.starts_with(&origin), "login URL {url} not on {origin}");
            client.goto(&url).await?;
            until(Duration::from_secs(10), "the page after login", || async {
                Ok(displayed(&client, "app").await? && text(&client, "live").await? == "live")
            })
            .await?;
            ensure!(!displayed(&client, "login").await?);
            ensure!(
                client.current_url().await?.as_str() == format!("{origin}/"),
                "the code stays in the address bar"
            );
            let rows = count(&client, "#modules tr").await?;
            ensure!(rows == 3, "{rows} module rows");
            // A marker that a reload would wipe.
            client
                .execute("window.__outpostMarker = 42;", vec![])
                .await?;

            // A notification raised after the page loaded.
            let mut events = subscribe(&host).await;
            std::fs::write(
                logs.join("analyzer.log"),
                "2026-12-04 10:00:00 ERROR XN-550 SN-20431 E-1203 Aspiration error on sampler\n",
            )?;
            let raised = next_of(&mut events, "notification-raised", |v| {
                v["key"].as_str().is_some_and(|k| k.contains("E-1203"))
            })
            .await;
            let id = raised["id"].as_i64().context("id")?;
            let item = format!("#notifications li[data-id='{id}']");
            // The page refreshes its lists only every 30 s by itself, so a
            // notification seen within 5 s came through the live stream.
            let seen = until(Duration::from_secs(5), "the new notification", || async {
                Ok(count(&client, &item).await? == 1)
            })
            .await?;
            eprintln!("notification raised → shown on the page: {seen:?}");
            let marker = client
                .execute("return window.__outpostMarker;", vec![])
                .await?;
            ensure!(marker == 42, "the page reloaded");
            let title = query(
                &client,
                "return document.querySelector(arguments[0]).textContent;",
                &format!("{item} .title"),
            )
            .await?;
            let title = title.as_str().context("title")?;
            ensure!(title.contains("E-1203"), "title {title:?}");
            ensure!(text(&client, "count-attention").await? != "0");

            // Acknowledge: recorded as the dashboard's, shown as such.
            click(&client, &format!("{item} button.ack")).await?;
            let acked = next_of(&mut events, "notification-acknowledged", |v| v["id"] == id).await;
            ensure!(acked["client"] == "dashboard", "{acked}");
            until(
                Duration::from_secs(5),
                "acknowledged on the page",
                || async {
                    Ok(count(&client, &format!("{item}.acked")).await? == 1
                        && count(&client, &format!("{item} button.ack")).await? == 0)
                },
            )
            .await?;
            // Dismiss: gone from the page and from the active list.
            click(&client, &format!("{item} button.dismiss")).await?;
            until(Duration::from_secs(5), "dismissed on the page", || async {
                Ok(count(&client, &item).await? == 0)
            })
            .await?;
            let (_, list) = host
                .call(reqwest::Method::GET, "/api/v1/notifications")
                .await;
            ensure!(
                list["active"]
                    .as_array()
                    .context("active")?
                    .iter()
                    .all(|n| n["id"] != id),
                "{list}"
            );

            // Everything the page asked for came from its own origin.
            let urls = driver.requested_urls(&client, &origin).await?;
            ensure!(
                urls.iter().any(|u| u.ends_with("/api/v1/events")),
                "the network log holds the page's requests: {urls:?}"
            );
            let foreign: Vec<_> = urls
                .iter()
                .filter(|u| !u.starts_with(&format!("{origin}/")))
                .collect();
            ensure!(foreign.is_empty(), "requests outside {origin}: {foreign:?}");
            Ok(())
        })
        .await;
        let _ = client.close().await;
    });
}

#[test]
fn a_used_or_foreign_login_link_shows_the_hint_not_the_data() {
    let Some(Dashboard {
        dir: _dir,
        logs: _,
        host,
        driver,
        origin,
    }) = Dashboard::start()
    else {
        return;
    };
    let e = env();
    e.rt.block_on(async {
        // The link is used once, by someone else.
        let (_, code) = host
            .call(reqwest::Method::POST, "/api/v1/login-codes")
            .await;
        let url = code["url"].as_str().unwrap().to_owned();
        assert_eq!(Host::client().get(&url).send().await.unwrap().status(), 303);
        let client = driver.session().await;
        with_screenshot("used-link", &client, async {
            client.goto(&url).await?;
            // Whatever page the refusal shows, the dashboard stays locked.
            client.goto(&format!("{origin}/")).await?;
            until(Duration::from_secs(10), "login hint", || async {
                displayed(&client, "login").await
            })
            .await?;
            ensure!(
                !displayed(&client, "app").await?,
                "data shown with a used link"
            );
            // A link to `localhost` is another origin for the browser: the
            // session cookie of one is never sent to the other.
            let (_, code) = host
                .call(reqwest::Method::POST, "/api/v1/login-codes")
                .await;
            let url = code["url"].as_str().context("url")?.to_owned();
            client.goto(&url).await?;
            until(Duration::from_secs(10), "the page after login", || async {
                displayed(&client, "app").await
            })
            .await?;
            let other = format!("http://localhost:{}/", host.addr.port());
            client.goto(&other).await?;
            until(
                Duration::from_secs(10),
                "login hint on localhost",
                || async { displayed(&client, "login").await },
            )
            .await?;
            Ok(())
        })
        .await;
        let _ = client.close().await;
    });
}
