//! The real `gridserve serve` binary for end-to-end tests: started on a free port with a
//! temporary (or given) data dir, stderr captured for failure messages, waited on until ready,
//! stopped with SIGTERM or SIGKILL, and killed if the test ends first.
#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const MODEL_FILE: &str = "models-data/gemma-3-270m-q4_k_m.gguf";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether the default model is installed; panics with the fix unless
/// `GRIDSERVE_SKIP_REAL_MODEL=1`.
pub fn model_installed() -> bool {
    let model = root().join(MODEL_FILE);
    if model.exists() {
        return true;
    }
    assert_eq!(
        std::env::var("GRIDSERVE_SKIP_REAL_MODEL").as_deref(),
        Ok("1"),
        "{} is missing: run scripts/setup.sh (or set GRIDSERVE_SKIP_REAL_MODEL=1)",
        model.display()
    );
    false
}

/// Collects everything a child writes to one pipe, for failure messages.
pub fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    text
}

pub fn tail(text: &Mutex<String>, max: usize) -> String {
    let s = text.lock().unwrap();
    let start = s.len().saturating_sub(max);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// Polls a child for exit until `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("polling a child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed (and reaped) if the test ends before it exits on its own.
pub struct KillOnDrop(pub Option<Child>);

impl KillOnDrop {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child already reaped")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The running server: its process, port and captured stderr.
pub struct Server {
    pub process: KillOnDrop,
    pub port: u16,
    pub stderr: Arc<Mutex<String>>,
    /// The grid store's directory when the test did not give one.
    _data: Option<tempfile::TempDir>,
}

impl Server {
    /// `serve` with `args` and `envs`, its grid store in a fresh temporary directory.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let data = tempfile::tempdir().expect("temp data dir");
        let mut server = Self::start_in(data.path(), args, envs);
        server._data = Some(data);
        server
    }

    /// `serve` with its grid store in `data_dir` (to restart on the same store).
    pub fn start_in(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let log = std::env::var("RUST_LOG").unwrap_or("info".into());
        let mut child = Command::new(env!("CARGO_BIN_EXE_gridserve"))
            .current_dir(root())
            .env("RUST_LOG", log)
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gridserve serve");
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = collect(child.stderr.take().expect("stderr piped"));
        let mut process = KillOnDrop(Some(child));

        // The first stdout line announces the bound address; keep draining the rest.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Ok(other) => {
                let status = wait_timeout(process.child(), Duration::from_secs(5));
                panic!(
                    "gridserve serve printed no address line ({other:?}); status {status:?}; stderr:\n{}",
                    tail(&stderr, 8000)
                );
            }
            Err(_) => panic!(
                "gridserve serve printed nothing within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                tail(&stderr, 8000)
            ),
        };
        let port = line
            .trim()
            .strip_prefix("listening on http://127.0.0.1:")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first stdout line {line:?}; stderr:\n{}",
                    tail(&stderr, 8000)
                )
            });
        Server {
            process,
            port,
            stderr,
            _data: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Polls `GET /ready` until it answers 200 (it is 503 while the model loads).
    pub fn wait_ready(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let url = self.url("/ready");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.process.child().try_wait().expect("poll server") {
                panic!(
                    "gridserve serve exited ({status}) before it was ready; stderr:\n{}",
                    tail(&self.stderr, 8000)
                );
            }
            let last = match rt.block_on(async { client.get(&url).send().await }) {
                Ok(r) if r.status() == reqwest::StatusCode::OK => return,
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "{url} not ready within {STARTUP_TIMEOUT:?} (last: {last}); stderr:\n{}",
                tail(&self.stderr, 8000)
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends SIGTERM and waits for the server to exit; returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.process.child().id();
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed: {kill}");
        let status = wait_timeout(self.process.child(), SHUTDOWN_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "gridserve serve did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                tail(&self.stderr, 8000)
            )
        });
        self.process.0 = None;
        status
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        let child = self.process.child();
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        self.process.0 = None;
    }
}

/// One HTTP call on a blocking runtime (`method` GET, POST or DELETE; optional JSON body and
/// bearer token); returns status and body text.
pub fn http(
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
    bearer: Option<&str>,
) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut request = client.request(method, url);
        if let Some(b) = body {
            request = request.json(&b);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body read"))
    })
}
