//! A real browser for the tests: Debian's Chromium, headless, driven through chromedriver
//! (WebDriver). Without Chromium a test says so and passes, for a developer who has not installed
//! it; under CI (`CI` set) a missing browser fails it, so the check cannot quietly stop running.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::harness::ProcessGroup;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Long enough for a cold Chromium on two busy cores; a healthy run takes a few seconds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// chromedriver and the browser session it drives; both end when this is dropped.
pub struct Browser {
    pub client: Client,
    /// chromedriver, with the browser it starts in its process group: ended together on drop.
    _driver: ProcessGroup,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` when Chromium is not installed and this is not CI.
    pub async fn start() -> Option<Self> {
        let installed = [CHROMIUM, CHROMEDRIVER]
            .iter()
            .all(|path| std::path::Path::new(path).exists());
        if !installed {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(
                !in_ci,
                "CI must run the browser tests: apt-get install chromium chromium-driver"
            );
            eprintln!("skipped: the browser tests need {CHROMIUM} and {CHROMEDRIVER}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(CHROMEDRIVER);
        driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = ProcessGroup::spawn(driver).unwrap();
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,2000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities.as_object().unwrap().clone());
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        // chromedriver takes a moment to listen.
        let client = loop {
            match builder.connect(&url).await {
                Ok(client) => break client,
                Err(error) if started.elapsed() < PATIENCE => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cannot start a Chromium session: {error}"),
            }
        };
        Some(Self {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let started = Instant::now();
        loop {
            let found = self
                .client
                .wait()
                .at_most(PATIENCE)
                .for_element(Locator::Css(css))
                .await;
            match found {
                Ok(element) => return element,
                // Asked while the page was being replaced (a form just submitted, on a slow
                // machine): Chromium aborts the command rather than wait. The page that comes
                // next is the one to look in.
                Err(error)
                    if error.to_string().contains("aborted by navigation")
                        && started.elapsed() < PATIENCE =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("no `{css}` on the page: {error}"),
            }
        }
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }
}
