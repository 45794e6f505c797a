//! A real browser for tests: Debian's chromium, headless, driven through WebDriver by its
//! chromedriver on a free loopback port. Only the handful of W3C WebDriver commands the tests
//! use (new session, navigate, execute script, screenshot), spoken with reqwest.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// Where Debian puts them (packages `chromium` and `chromium-driver`, installed by setup.sh).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless chromium window of `width`×`height` CSS pixels at device scale 1 (so a
/// screenshot's pixels are CSS pixels).
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
}

impl Browser {
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        let port = crate::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {CHROMEDRIVER} (run scripts/setup.sh)"))?;
        // reqwest is built without a TLS provider (as the binary, which installs ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            driver,
            http,
            session: String::new(),
            base,
        };
        // chromedriver answers /status once it listens.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("chromedriver did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--force-device-scale-factor=1", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let answer = browser.call("POST", "/session", caps).await?;
        browser.session = answer["sessionId"]
            .as_str()
            .context("no session ID from chromedriver")?
            .to_owned();
        Ok(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "POST" => self.http.post(&url).json(&body),
            "DELETE" => self.http.delete(&url),
            _ => self.http.get(&url),
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let answer: Value = response.json().await.context("WebDriver answer")?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {}", answer["value"]);
        }
        Ok(answer["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", &self.session_path("/url"), json!({ "url": url }))
            .await
            .map(drop)
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page; its return value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let value = self
            .call("GET", &self.session_path("/screenshot"), Value::Null)
            .await?;
        data_encoding::BASE64
            .decode(
                value
                    .as_str()
                    .context("screenshot is not a string")?
                    .as_bytes(),
            )
            .context("screenshot is not base64")
    }

    /// Polls `script` (returning a boolean) until it is true or `limit` passed.
    pub async fn wait_for(&self, script: &str, limit: Duration) -> anyhow::Result<bool> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.execute(script, Vec::new()).await?.as_bool() == Some(true) {
                return Ok(true);
            }
            if tokio::time::Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Browser {
    /// Ends the session (chromium exits) and the driver.
    pub async fn close(mut self) {
        let path = self.session_path("");
        let _ = self.call("DELETE", &path, Value::Null).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver leads its own process group, chromium included: a test that panicked
        // before `close` leaves nothing running.
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.driver.wait();
    }
}

/// An RGBA image: width, height and 4 bytes per pixel, row by row.
pub struct Rgba {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl Rgba {
    /// Decodes a PNG (any colour type and 8-bit depth) to RGBA.
    pub fn from_png(png: &[u8]) -> anyhow::Result<Self> {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
        let mut reader = decoder.read_info().context("PNG")?;
        let mut pixels = vec![0; reader.output_buffer_size().context("PNG size")?];
        let info = reader.next_frame(&mut pixels).context("PNG")?;
        pixels.truncate(info.buffer_size());
        if info.color_type != png::ColorType::Rgba || info.bit_depth != png::BitDepth::Eight {
            bail!("PNG decoded to {:?} {:?}", info.color_type, info.bit_depth);
        }
        Ok(Self {
            width: info.width,
            height: info.height,
            pixels,
        })
    }

    /// The pixels as packed RGB8 (alpha dropped), as `frame/v1` carries them.
    pub fn rgb(&self) -> Vec<u8> {
        self.pixels
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect()
    }

    /// The pixel at `(x, y)` as `[r, g, b]`; `None` outside the image.
    pub fn at(&self, x: i64, y: i64) -> Option<[u8; 3]> {
        let (x, y) = (u32::try_from(x).ok()?, u32::try_from(y).ok()?);
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 4;
        Some([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }
}
