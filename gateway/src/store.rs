//! The state store: tenants and their quotas, sessions, the usage ledger and the gateway's
//! keys, in one SQLite database under the data directory.
//!
//! SQLite in WAL mode with `synchronous=FULL`: a committed transaction survives a crash of
//! the process or the machine. Every multi-row change is one transaction, so a crash never
//! leaves half a heartbeat's usage in the ledger.

use std::path::Path;
use std::sync::Mutex;

use gpufn_pool::{RateLimit, TenantQuota};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "gateway.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database lock was poisoned by a panic; restart the gateway")]
    Poisoned,
}

/// A tenant as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantRecord {
    pub name: String,
    pub quota: TenantQuota,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// A session as stored: created at attach, ended with a reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionRecord {
    pub id: u64,
    pub tenant: String,
    pub function: Option<String>,
    pub worker: String,
    pub device: u32,
    pub vram_bytes: u64,
    pub compute_percent: u8,
    pub qos: String,
    pub created_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<String>,
}

/// Usage to add to the ledger for one session in one time bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageDelta {
    pub session: u64,
    pub tenant: String,
    pub function: Option<String>,
    /// Unix seconds, aligned to [`LEDGER_BUCKET_S`].
    pub bucket_start_s: i64,
    pub gpu_seconds: f64,
    pub vram_gib_seconds: f64,
    pub bytes_moved: u64,
    pub swap_events: u64,
}

/// The ledger's finest time resolution: one row per session per minute.
pub const LEDGER_BUCKET_S: i64 = 60;

/// What `/v1/usage` asks for.
#[derive(Clone, Debug, Default)]
pub struct UsageQuery {
    pub tenant: Option<String>,
    pub function: Option<String>,
    /// Unix seconds, inclusive.
    pub from_s: Option<i64>,
    /// Unix seconds, exclusive.
    pub to_s: Option<i64>,
    /// Aggregation window in seconds (a multiple of [`LEDGER_BUCKET_S`]); `None`: one row
    /// per tenant and function over the whole range.
    pub window_s: Option<i64>,
}

/// One aggregated ledger row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsageRow {
    pub tenant: String,
    pub function: Option<String>,
    /// Start of the window (unix seconds); `None` when not windowed.
    pub window_start_s: Option<i64>,
    pub sessions: u64,
    pub gpu_seconds: f64,
    pub vram_gib_seconds: f64,
    pub bytes_moved: u64,
    pub swap_events: u64,
}

/// The store. Cheap operations under one mutex: SQLite serialises writers anyway.
pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    max_sessions INTEGER,
    max_vram_bytes INTEGER,
    rate_per_second INTEGER,
    rate_burst INTEGER,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    function TEXT,
    worker TEXT NOT NULL,
    device INTEGER NOT NULL,
    vram_bytes INTEGER NOT NULL,
    compute_percent INTEGER NOT NULL,
    qos TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_tenant ON sessions (tenant);
CREATE TABLE IF NOT EXISTS usage (
    session INTEGER NOT NULL,
    bucket_start_s INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    function TEXT,
    gpu_seconds REAL NOT NULL DEFAULT 0,
    vram_gib_seconds REAL NOT NULL DEFAULT 0,
    bytes_moved INTEGER NOT NULL DEFAULT 0,
    swap_events INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session, bucket_start_s)
);
CREATE INDEX IF NOT EXISTS usage_by_tenant ON usage (tenant, bucket_start_s);
CREATE TABLE IF NOT EXISTS functions (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    manifest TEXT NOT NULL,
    artifact_sha256 TEXT,
    version INTEGER NOT NULL,
    deployed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
";

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(dir.join(DATABASE_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Runs `f` on the connection (`functions::registry` keeps its queries next to its types).
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(f(&mut conn)?)
    }

    /// Whether the database answers (for `/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    /// A named secret, created with `generate` (and stored) on first use.
    pub fn secret_or_create(
        &self,
        name: &str,
        generate: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let existing: Option<String> = tx
                .query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            let value = match existing {
                Some(v) => v,
                None => {
                    let v = generate();
                    tx.execute(
                        "INSERT INTO secrets (name, value) VALUES (?1, ?2)",
                        params![name, v],
                    )?;
                    v
                }
            };
            tx.commit()?;
            Ok(value)
        })
    }

    // ----- tenants -------------------------------------------------------------------------

    /// Creates a tenant or replaces its quota.
    pub fn put_tenant(
        &self,
        name: &str,
        quota: TenantQuota,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (rate, burst) = match quota.rate {
            Some(r) => (Some(r.per_second), Some(r.burst)),
            None => (None, None),
        };
        self.with(|c| {
            c.execute(
                "INSERT INTO tenants (name, max_sessions, max_vram_bytes, rate_per_second, rate_burst, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(name) DO UPDATE SET max_sessions = ?2, max_vram_bytes = ?3,
                     rate_per_second = ?4, rate_burst = ?5",
                params![name, quota.max_sessions, quota.max_vram_bytes.map(|b| b as i64), rate, burst, now_ms],
            )
            .map(|_| ())
        })
    }

    /// Removes a tenant's record (its quota falls back to the default). Returns whether it
    /// existed. Its ledger is kept.
    pub fn delete_tenant(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|c| Ok(c.execute("DELETE FROM tenants WHERE name = ?1", [name])? > 0))
    }

    pub fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT name, max_sessions, max_vram_bytes, rate_per_second, rate_burst, created_at_ms
                 FROM tenants WHERE name = ?1",
                [name],
                tenant_from_row,
            )
            .optional()
        })
    }

    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT name, max_sessions, max_vram_bytes, rate_per_second, rate_burst, created_at_ms
                 FROM tenants ORDER BY name",
            )?;
            let rows = stmt.query_map([], tenant_from_row)?;
            rows.collect()
        })
    }

    // ----- sessions ------------------------------------------------------------------------

    /// The smallest session id never used, so ids stay unique across restarts.
    pub fn next_session_id(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            let max: Option<i64> = c.query_row("SELECT MAX(id) FROM sessions", [], |r| r.get(0))?;
            Ok(max.map_or(1, |m| m as u64 + 1))
        })
    }

    pub fn insert_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO sessions (id, tenant, function, worker, device, vram_bytes, compute_percent, qos, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    s.id as i64, s.tenant, s.function, s.worker, s.device, s.vram_bytes as i64,
                    s.compute_percent, s.qos, s.created_at_ms
                ],
            )
            .map(|_| ())
        })
    }

    /// Marks a session ended (once; a second end keeps the first reason).
    pub fn end_session(&self, id: u64, now_ms: i64, reason: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET ended_at_ms = ?2, end_reason = ?3 WHERE id = ?1 AND ended_at_ms IS NULL",
                params![id as i64, now_ms, reason],
            )
            .map(|_| ())
        })
    }

    /// Ends every session still open: on start-up, sessions of an earlier run are gone.
    pub fn end_open_sessions(&self, now_ms: i64, reason: &str) -> Result<usize, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET ended_at_ms = ?1, end_reason = ?2 WHERE ended_at_ms IS NULL",
                params![now_ms, reason],
            )
        })
    }

    pub fn session(&self, id: u64) -> Result<Option<SessionRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("{SESSION_COLUMNS} WHERE id = ?1"),
                [id as i64],
                session_from_row,
            )
            .optional()
        })
    }

    /// Sessions, newest first, optionally of one tenant and optionally only open ones.
    pub fn sessions(
        &self,
        tenant: Option<&str>,
        include_ended: bool,
        limit: u32,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{SESSION_COLUMNS} WHERE (?1 IS NULL OR tenant = ?1) AND (?2 OR ended_at_ms IS NULL)
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![tenant, include_ended, limit], session_from_row)?;
            rows.collect()
        })
    }

    // ----- usage ledger --------------------------------------------------------------------

    /// Adds usage in one transaction.
    pub fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO usage (session, bucket_start_s, tenant, function, gpu_seconds, vram_gib_seconds, bytes_moved, swap_events)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(session, bucket_start_s) DO UPDATE SET
                        gpu_seconds = gpu_seconds + ?5, vram_gib_seconds = vram_gib_seconds + ?6,
                        bytes_moved = bytes_moved + ?7, swap_events = swap_events + ?8",
                )?;
                for d in deltas {
                    stmt.execute(params![
                        d.session as i64,
                        d.bucket_start_s,
                        d.tenant,
                        d.function,
                        d.gpu_seconds,
                        d.vram_gib_seconds,
                        d.bytes_moved as i64,
                        d.swap_events as i64
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// Aggregates the ledger.
    pub fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let window = q.window_s.filter(|w| *w > 0);
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT tenant, function,
                        CASE WHEN ?5 IS NULL THEN NULL ELSE (bucket_start_s / ?5) * ?5 END AS w,
                        COUNT(DISTINCT session), SUM(gpu_seconds), SUM(vram_gib_seconds),
                        SUM(bytes_moved), SUM(swap_events)
                 FROM usage
                 WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR function = ?2)
                   AND (?3 IS NULL OR bucket_start_s >= ?3) AND (?4 IS NULL OR bucket_start_s < ?4)
                 GROUP BY tenant, function, w
                 ORDER BY tenant, function, w",
            )?;
            let rows = stmt.query_map(
                params![q.tenant, q.function, q.from_s, q.to_s, window],
                |r| {
                    Ok(UsageRow {
                        tenant: r.get(0)?,
                        function: r.get(1)?,
                        window_start_s: r.get(2)?,
                        sessions: r.get::<_, i64>(3)? as u64,
                        gpu_seconds: r.get(4)?,
                        vram_gib_seconds: r.get(5)?,
                        bytes_moved: r.get::<_, i64>(6)? as u64,
                        swap_events: r.get::<_, i64>(7)? as u64,
                    })
                },
            )?;
            rows.collect()
        })
    }

    /// One session's ledger totals.
    pub fn session_usage(&self, id: u64) -> Result<Option<UsageRow>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT tenant, function, COUNT(*), SUM(gpu_seconds), SUM(vram_gib_seconds),
                        SUM(bytes_moved), SUM(swap_events)
                 FROM usage WHERE session = ?1 GROUP BY session",
                [id as i64],
                |r| {
                    Ok(UsageRow {
                        tenant: r.get(0)?,
                        function: r.get(1)?,
                        window_start_s: None,
                        sessions: 1,
                        gpu_seconds: r.get(3)?,
                        vram_gib_seconds: r.get(4)?,
                        bytes_moved: r.get::<_, i64>(5)? as u64,
                        swap_events: r.get::<_, i64>(6)? as u64,
                    })
                },
            )
            .optional()
        })
    }
}

const SESSION_COLUMNS: &str =
    "SELECT id, tenant, function, worker, device, vram_bytes, compute_percent, qos,
    created_at_ms, ended_at_ms, end_reason FROM sessions";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get::<_, i64>(0)? as u64,
        tenant: r.get(1)?,
        function: r.get(2)?,
        worker: r.get(3)?,
        device: r.get(4)?,
        vram_bytes: r.get::<_, i64>(5)? as u64,
        compute_percent: r.get(6)?,
        qos: r.get(7)?,
        created_at_ms: r.get(8)?,
        ended_at_ms: r.get(9)?,
        end_reason: r.get(10)?,
    })
}

fn tenant_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TenantRecord> {
    let rate: Option<u32> = r.get(3)?;
    let burst: Option<u32> = r.get(4)?;
    Ok(TenantRecord {
        name: r.get(0)?,
        quota: TenantQuota {
            max_sessions: r.get(1)?,
            max_vram_bytes: r.get::<_, Option<i64>>(2)?.map(|b| b as u64),
            rate: rate.map(|per_second| RateLimit {
                per_second,
                burst: burst.unwrap_or(per_second),
            }),
        },
        created_at_ms: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_aggregates_by_tenant_function_and_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = |session, tenant: &str, bucket, gpu| UsageDelta {
            session,
            tenant: tenant.into(),
            function: None,
            bucket_start_s: bucket,
            gpu_seconds: gpu,
            vram_gib_seconds: 1.0,
            bytes_moved: 10,
            swap_events: 1,
        };
        store
            .add_usage(&[d(1, "a", 0, 1.0), d(1, "a", 60, 2.0), d(2, "b", 60, 4.0)])
            .unwrap();
        store.add_usage(&[d(1, "a", 60, 0.5)]).unwrap();
        let all = store.usage(&UsageQuery::default()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].tenant, "a");
        assert_eq!(all[0].gpu_seconds, 3.5);
        assert_eq!(all[0].bytes_moved, 30);
        let windowed = store
            .usage(&UsageQuery {
                tenant: Some("a".into()),
                window_s: Some(60),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(windowed.len(), 2);
        assert_eq!(windowed[1].window_start_s, Some(60));
        assert_eq!(windowed[1].gpu_seconds, 2.5);
    }

    #[test]
    fn tenants_and_secrets_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let quota = TenantQuota {
            max_sessions: Some(2),
            max_vram_bytes: Some(1 << 30),
            rate: Some(RateLimit {
                per_second: 1,
                burst: 3,
            }),
        };
        let secret = {
            let store = Store::open(dir.path()).unwrap();
            store.put_tenant("acme", quota, 5).unwrap();
            store.secret_or_create("k", || "s1".into()).unwrap()
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.tenant("acme").unwrap().unwrap().quota, quota);
        assert_eq!(store.secret_or_create("k", || "s2".into()).unwrap(), secret);
    }
}
