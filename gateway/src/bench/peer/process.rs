//! Child processes of the peer benchmark (llama.cpp's tools, the two servers, the install
//! script). Every child is held by a guard that stops it when dropped, so no error path leaves a
//! second load running on the cores the next measurement uses.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::GatewayError;

/// The llama.cpp binaries the comparison runs.
pub const PEER_BINARIES: [&str; 3] = ["llama-bench", "llama-batched-bench", "llama-server"];

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running child that is stopped (SIGTERM, then SIGKILL) when the guard is dropped.
pub struct ChildGuard {
    name: String,
    /// Where its stderr goes (quoted in error messages).
    log: Option<PathBuf>,
    child: Option<Child>,
}

impl ChildGuard {
    /// Starts `cmd` with stderr to `log` (or inherited without one).
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<&Path>) -> Result<Self, GatewayError> {
        if let Some(path) = log {
            let file = File::create(path)
                .map_err(|e| GatewayError::Bench(format!("creating {}: {e}", path.display())))?;
            cmd.stderr(file);
        }
        let child = cmd
            .spawn()
            .map_err(|e| GatewayError::Bench(format!("starting {name}: {e}")))?;
        Ok(ChildGuard {
            name: name.to_string(),
            log: log.map(Path::to_path_buf),
            child: Some(child),
        })
    }

    /// `Some(status)` once the child has ended.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, GatewayError> {
        match &mut self.child {
            Some(child) => child
                .try_wait()
                .map_err(|e| GatewayError::Bench(format!("checking on {}: {e}", self.name))),
            None => Ok(None),
        }
    }

    /// Reads the child's piped stdout to its end, then waits for it to exit. On an error the
    /// child stays with the guard, whose Drop stops it.
    fn output(&mut self) -> Result<(String, ExitStatus), GatewayError> {
        let name = &self.name;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| GatewayError::Bench(format!("{name} was already stopped")))?;
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout
                .read_to_string(&mut out)
                .map_err(|e| GatewayError::Bench(format!("reading the output of {name}: {e}")))?;
        }
        let status = child
            .wait()
            .map_err(|e| GatewayError::Bench(format!("waiting for {name}: {e}")))?;
        self.child = None;
        Ok((out, status))
    }

    /// The exit status, and the last lines of the log, as an error message.
    pub fn failure(&self, status: impl std::fmt::Display) -> GatewayError {
        let log = self.log.as_deref().map_or(String::new(), |p| {
            format!("; last lines of {}:\n{}", p.display(), log_tail(p, 12))
        });
        GatewayError::Bench(format!("{} {status}{log}", self.name))
    }

    /// SIGTERM, up to `STOP_GRACE` to exit, then SIGKILL. Servers get the chance to shut down
    /// cleanly; a stuck one is still gone before the next measurement starts.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own child's pid; std offers only SIGKILL.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!("{} did not exit on SIGTERM; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a tool to its end and returns its stdout; stderr goes to `log` (inherited without one,
/// so a long build shows its progress). A non-zero exit is an error quoting the log.
pub fn run_tool(name: &str, cmd: &mut Command, log: Option<&Path>) -> Result<String, GatewayError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut guard = ChildGuard::spawn(name, cmd, log)?;
    let (out, status) = guard.output()?;
    if !status.success() {
        return Err(guard.failure(format!("failed ({status})")));
    }
    Ok(out)
}

/// The program and its arguments, space-separated, for the report.
pub fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of a log file (empty if unreadable).
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The directory of llama.cpp's binaries: `given`, else the last stdout line of
/// `scripts/install-llama-cpp.sh` (which builds them once and is instant afterwards).
pub fn find_llama_bin(given: Option<&Path>) -> Result<PathBuf, GatewayError> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => {
            let script = install_script()?;
            tracing::info!("peer: locating llama.cpp with {}", script.display());
            let mut cmd = Command::new("bash");
            cmd.arg(&script);
            let out = run_tool("scripts/install-llama-cpp.sh", &mut cmd, None)?;
            let last = out.lines().rev().find(|l| !l.trim().is_empty());
            PathBuf::from(last.unwrap_or_default().trim())
        }
    };
    let missing: Vec<&str> = PEER_BINARIES
        .iter()
        .copied()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(GatewayError::Bench(format!(
            "{} is missing in {} (build them with scripts/install-llama-cpp.sh)",
            missing.join(", "),
            dir.display()
        )));
    }
    Ok(dir)
}

/// The install script: from the working directory (the repository, as `scripts/run.sh` runs
/// us), else from the source tree this binary was built in.
fn install_script() -> Result<PathBuf, GatewayError> {
    let relative = Path::new("scripts/install-llama-cpp.sh");
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    [relative.to_path_buf(), built_in]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            GatewayError::Bench(
                "scripts/install-llama-cpp.sh not found; run from the repository or pass \
                 --llama-bin DIR"
                    .into(),
            )
        })
}

/// A port nobody listens on now (the OS's pick; released for the server to take).
pub fn free_port() -> Result<u16, GatewayError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| GatewayError::Bench(format!("finding a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| GatewayError::Bench(format!("finding a free port: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_gives_its_stdout_and_a_failure_quotes_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.log");
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo out; echo err >&2"]);
        assert_eq!(run_tool("t", &mut ok, Some(&log)).unwrap(), "out\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "err\n");
        let mut bad = Command::new("sh");
        bad.args(["-c", "echo boom >&2; exit 3"]);
        let err = run_tool("t", &mut bad, Some(&log)).unwrap_err().to_string();
        assert!(err.contains("failed") && err.contains("boom"), "{err}");
        let mut missing = Command::new("/nonexistent/tool");
        assert!(run_tool("t", &mut missing, None).is_err());
    }

    #[test]
    fn dropping_the_guard_stops_the_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let mut guard = ChildGuard::spawn("sleep", &mut cmd, None).unwrap();
        let pid = guard.child.as_ref().unwrap().id() as i32;
        assert_eq!(guard.exited().unwrap(), None);
        let start = Instant::now();
        drop(guard);
        assert!(start.elapsed() < STOP_GRACE);
        // SAFETY: signal 0 only asks whether the pid exists (it was reaped by the guard).
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
    }

    #[test]
    fn missing_binaries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_llama_bin(Some(dir.path())).unwrap_err().to_string();
        assert!(
            err.contains("llama-bench, llama-batched-bench, llama-server"),
            "{err}"
        );
        assert!(free_port().unwrap() > 0);
    }

    #[test]
    fn command_lines_are_recorded() {
        let mut cmd = Command::new("llama-bench");
        cmd.args(["-m", "m.gguf", "-t", "2"]);
        assert_eq!(command_line(&cmd), "llama-bench -m m.gguf -t 2");
    }
}
