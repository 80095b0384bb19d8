//! A headless Chromium driven over WebDriver (chromedriver, through fantoccini), for the
//! dashboard's browser tests. Install both with `scripts/chromium.sh`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a DOM condition may take to hold before the test fails.
const DOM_TIMEOUT: Duration = Duration::from_secs(30);

/// The chromedriver the tests use: `$CAIRN_CHROMEDRIVER`, else `/usr/bin/chromedriver`.
/// Missing, it fails the test (never skips it) and says how to install it.
pub fn chromedriver_path() -> PathBuf {
    let path = std::env::var_os("CAIRN_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    assert!(
        path.exists(),
        "chromedriver not found at {}: run scripts/chromium.sh (it installs Debian's chromium \
         and chromium-driver), or set CAIRN_CHROMEDRIVER to a chromedriver binary",
        path.display()
    );
    path
}

/// One chromedriver process and one headless Chromium session on it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Start chromedriver on a free port and open headless Chromium (1400×900) through it.
    pub async fn open() -> Self {
        let path = chromedriver_path();
        let port = free_port();
        let mut driver = Command::new(&path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        // chromedriver says when it listens; read its output until then, then keep draining it.
        let stdout = driver.stdout.take().expect("chromedriver's stdout");
        let mut lines = BufReader::new(stdout).lines();
        tokio::time::timeout(DOM_TIMEOUT, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) if line.contains("started successfully") => return,
                    Ok(Some(_)) => {}
                    _ => panic!("chromedriver exited before it listened on port {port}"),
                }
            }
        })
        .await
        .expect("chromedriver listens within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let mut chrome = serde_json::json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1400,900",
            ],
        });
        let binary = std::env::var("CAIRN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if Path::new(&binary).exists() {
            chrome["binary"] = serde_json::Value::String(binary);
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), chrome);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!("open headless Chromium through chromedriver (scripts/chromium.sh): {e}")
            });
        Self { client, driver }
    }

    /// Load `url`.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("load {url}: {e}"));
    }

    /// Wait until an element matches the CSS selector `css` (polling the DOM), and return it.
    /// On timeout the test fails with the selector and the page's text.
    pub async fn wait(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(DOM_TIMEOUT)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                let text = self.page_text().await;
                panic!("no element matched `{css}` within 30 s ({e}); the page reads:\n{text}")
            }
        }
    }

    /// Wait until `css` matches, then click the element. The dashboard re-renders its tables
    /// as it refreshes, so an element found a moment ago may be gone by the click: then the
    /// selector is matched again, until the DOM timeout.
    pub async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + DOM_TIMEOUT;
        loop {
            match self.wait(css).await.click().await {
                Ok(_) => return,
                Err(e)
                    if e.is_stale_element_reference() && tokio::time::Instant::now() < deadline => {
                }
                Err(e) => panic!("click `{css}`: {e}"),
            }
        }
    }

    /// Wait until `css` matches, then read the element's visible text (matching again should
    /// the page re-render in between, as `click` does).
    pub async fn text(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + DOM_TIMEOUT;
        loop {
            match self.wait(css).await.text().await {
                Ok(text) => return text,
                Err(e)
                    if e.is_stale_element_reference() && tokio::time::Instant::now() < deadline => {
                }
                Err(e) => panic!("read the text of `{css}`: {e}"),
            }
        }
    }

    /// Every element matching `css` now.
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find `{css}`: {e}"))
    }

    /// The attribute `name` of every element matching `css` now (empty for a missing one).
    /// Should the page re-render while they are read, all of them are read again from the new
    /// page, so the values always come from one rendering.
    pub async fn attributes(&self, css: &str, name: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + DOM_TIMEOUT;
        'render: loop {
            let mut values = Vec::new();
            for element in self.all(css).await {
                match element.attr(name).await {
                    Ok(value) => values.push(value.unwrap_or_default()),
                    Err(e)
                        if e.is_stale_element_reference()
                            && tokio::time::Instant::now() < deadline =>
                    {
                        continue 'render;
                    }
                    Err(e) => panic!("read {name} of `{css}`: {e}"),
                }
            }
            return values;
        }
    }

    /// The page's visible text (for failure messages).
    pub async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    /// Save a PNG of the viewport at `path` (creating its directory).
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("take a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the screenshot directory");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// End the session and stop chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

/// Where the browser tests save their screenshots: `<target dir>/dashboard-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("dashboard-screenshots")
}

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}
