//! The persistent envelope store: SQLite in WAL mode with `synchronous=FULL`, so a write
//! that returned has reached the disk and survives `kill -9` or a power cut. Every change is
//! also appended to `audit_log` in the same transaction.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::envelope::{Envelope, Interval, Origin};
use crate::GatewayError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS envelopes (
    id           TEXT PRIMARY KEY,
    origin       TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    ramp_seconds REAL NOT NULL,
    start        REAL NOT NULL,
    end_at       REAL,
    intervals    TEXT NOT NULL,
    created_at   REAL NOT NULL,
    cancelled_at REAL
);
CREATE INDEX IF NOT EXISTS envelopes_live ON envelopes (cancelled_at, end_at);
CREATE TABLE IF NOT EXISTS audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,
    action      TEXT NOT NULL,
    envelope_id TEXT NOT NULL,
    actor       TEXT NOT NULL,
    detail      TEXT NOT NULL
);
";

const COLUMNS: &str =
    "id, origin, priority, ramp_seconds, intervals, created_at, cancelled_at FROM envelopes";

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "grid.sqlite3";

/// One audit record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub at: f64,
    pub action: String,
    pub envelope_id: String,
    pub actor: String,
    pub detail: String,
}

/// The store. Calls block on disk I/O (an fsync per write): call from a blocking thread.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn db_err(e: rusqlite::Error) -> GatewayError {
    GatewayError::Store(e.to_string())
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/grid.sqlite3`; fails with the path in the
    /// message if the directory cannot be created or written.
    pub fn open(data_dir: &Path) -> Result<Store, GatewayError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            GatewayError::Store(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DB_FILE);
        let fail = |e: rusqlite::Error| {
            GatewayError::Store(format!("cannot open {}: {e}", path.display()))
        };
        let conn = Connection::open(&path).map_err(fail)?;
        // WAL + FULL: each commit is fsynced to the WAL before it returns.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(GatewayError::Store(format!(
                "{}: journal_mode is {mode}, WAL is needed",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")
            .map_err(fail)?;
        // Creating the schema is the first write: an unwritable dir fails here, at start.
        conn.execute_batch(SCHEMA).map_err(fail)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a new envelope and audits it; `EnvelopeExists` if the id is taken (even by a
    /// cancelled one: ids are never reused, so the audit log stays unambiguous).
    pub fn insert(&self, e: &Envelope, actor: &str, at: f64) -> Result<(), GatewayError> {
        self.replace(&[], std::slice::from_ref(e), actor, at)
    }

    /// Cancels the envelopes `cancel` (those still live) and stores `insert`, in one
    /// transaction: an OpenADR event that changes replaces exactly its envelopes, and a crash
    /// leaves either the old schedule or the new one, never neither.
    pub fn replace(
        &self,
        cancel: &[String],
        insert: &[Envelope],
        actor: &str,
        at: f64,
    ) -> Result<(), GatewayError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err)?;
        for id in cancel {
            cancel_in(&tx, id, actor, at)?;
        }
        for e in insert {
            insert_in(&tx, e, actor, at)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Cancels an envelope (kept for the record) and audits it. Returns the envelope as it
    /// now is; cancelling twice changes nothing and is not audited again.
    pub fn cancel(&self, id: &str, actor: &str, at: f64) -> Result<Envelope, GatewayError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err)?;
        cancel_in(&tx, id, actor, at)?;
        let e = get_in(&tx, id)?.ok_or_else(|| GatewayError::EnvelopeNotFound(id.into()))?;
        tx.commit().map_err(db_err)?;
        Ok(e)
    }

    pub fn get(&self, id: &str) -> Result<Option<Envelope>, GatewayError> {
        get_in(&self.conn(), id)
    }

    /// Every envelope ever stored, cancelled ones included, oldest first.
    pub fn list(&self) -> Result<Vec<Envelope>, GatewayError> {
        self.select("1 ORDER BY created_at, id", params![])
    }

    /// Envelopes not cancelled whose schedule reaches past `since` (open-ended ones too).
    pub fn live_since(&self, since: f64) -> Result<Vec<Envelope>, GatewayError> {
        self.select(
            "cancelled_at IS NULL AND (end_at IS NULL OR end_at > ?1) ORDER BY created_at, id",
            params![since],
        )
    }

    /// Live envelopes (as `live_since`) whose origin starts with `prefix`: what one source
    /// (e.g. the OpenADR VEN) currently has in force or scheduled.
    pub fn live_from(&self, prefix: &str, since: f64) -> Result<Vec<Envelope>, GatewayError> {
        self.select(
            "cancelled_at IS NULL AND (end_at IS NULL OR end_at > ?1) AND substr(origin, 1, length(?2)) = ?2 ORDER BY created_at, id",
            params![since, prefix],
        )
    }

    /// Envelopes with an interval in force at `t`.
    pub fn active_at(&self, t: f64) -> Result<Vec<Envelope>, GatewayError> {
        let live = self.select(
            "cancelled_at IS NULL AND start <= ?1 AND (end_at IS NULL OR end_at > ?1) ORDER BY created_at, id",
            params![t],
        )?;
        Ok(live
            .into_iter()
            .filter(|e| e.interval_at(t).is_some())
            .collect())
    }

    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, GatewayError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT at, action, envelope_id, actor, detail FROM audit_log ORDER BY seq")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    action: r.get(1)?,
                    envelope_id: r.get(2)?,
                    actor: r.get(3)?,
                    detail: r.get(4)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    fn select(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Envelope>, GatewayError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {COLUMNS} WHERE {filter}"))
            .map_err(db_err)?;
        let rows = stmt.query_map(args, read_row).map_err(db_err)?;
        rows.map(|r| r.map_err(db_err).and_then(|e| e)).collect()
    }
}

fn insert_in(tx: &Connection, e: &Envelope, actor: &str, at: f64) -> Result<(), GatewayError> {
    let intervals = serde_json::to_string(&e.intervals)
        .map_err(|err| GatewayError::Store(format!("encoding intervals: {err}")))?;
    let taken = tx
        .query_row("SELECT 1 FROM envelopes WHERE id = ?1", [&e.id], |_| Ok(()))
        .optional()
        .map_err(db_err)?
        .is_some();
    if taken {
        return Err(GatewayError::EnvelopeExists(e.id.clone()));
    }
    tx.execute(
        "INSERT INTO envelopes (id, origin, priority, ramp_seconds, start, end_at, intervals, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![e.id, e.origin.as_string(), e.priority, e.ramp_seconds, e.start(), e.end(), intervals, e.created_at],
    )
    .map_err(db_err)?;
    audit(tx, at, "create", &e.id, actor, &intervals)
}

/// Cancels one envelope if it is live; cancelling twice changes nothing and is not audited
/// again.
fn cancel_in(tx: &Connection, id: &str, actor: &str, at: f64) -> Result<(), GatewayError> {
    let changed = tx
        .execute(
            "UPDATE envelopes SET cancelled_at = ?2 WHERE id = ?1 AND cancelled_at IS NULL",
            params![id, at],
        )
        .map_err(db_err)?;
    if changed == 1 {
        audit(tx, at, "cancel", id, actor, "")?;
    }
    Ok(())
}

fn audit(
    tx: &Connection,
    at: f64,
    action: &str,
    id: &str,
    actor: &str,
    detail: &str,
) -> Result<(), GatewayError> {
    tx.execute(
        "INSERT INTO audit_log (at, action, envelope_id, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, action, id, actor, detail],
    )
    .map(drop)
    .map_err(db_err)
}

fn get_in(conn: &Connection, id: &str) -> Result<Option<Envelope>, GatewayError> {
    conn.query_row(&format!("SELECT {COLUMNS} WHERE id = ?1"), [id], read_row)
        .optional()
        .map_err(db_err)?
        .transpose()
}

/// A row as stored; a row that does not decode is reported, not skipped, so a damaged store
/// is noticed instead of silently dropping a grid commitment.
fn read_row(r: &Row<'_>) -> rusqlite::Result<Result<Envelope, GatewayError>> {
    let (id, origin, intervals): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(4)?);
    let corrupt = |what: String| GatewayError::Store(format!("envelope {id}: {what}"));
    let Some(origin) = Origin::parse(&origin) else {
        return Ok(Err(corrupt(format!("unknown origin {origin:?}"))));
    };
    let intervals: Vec<Interval> = match serde_json::from_str(&intervals) {
        Ok(i) => i,
        Err(e) => return Ok(Err(corrupt(format!("intervals: {e}")))),
    };
    Ok(Ok(Envelope {
        id: id.clone(),
        origin,
        priority: r.get(2)?,
        ramp_seconds: r.get(3)?,
        intervals,
        created_at: r.get(5)?,
        cancelled_at: r.get(6)?,
    }))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
