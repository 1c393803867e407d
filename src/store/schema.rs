//! Schema and migrations, versioned by SQLite's `user_version`.

use super::{StoreError, StoreResult};
use rusqlite::Connection;

/// Migrations in order; migration i takes the schema from version i to i + 1.
pub(super) const MIGRATIONS: &[&str] = &[
    // v1: studies, trials, per-step reports, final re-training results.
    "CREATE TABLE studies (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        budget TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE trials (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        number INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN
            ('queued', 'running', 'complete', 'failed', 'pruned', 'interrupted')),
        config TEXT NOT NULL,
        flops INTEGER NOT NULL,
        params INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        proxy_acc REAL,
        proxy_loss REAL,
        worker TEXT,
        error TEXT,
        queued_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        UNIQUE (study_id, number)
    );
    CREATE INDEX trials_by_state ON trials (study_id, state);
    CREATE TABLE reports (
        trial_id INTEGER NOT NULL REFERENCES trials(id),
        step INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (trial_id, step)
    );
    CREATE TABLE final_results (
        trial_id INTEGER PRIMARY KEY REFERENCES trials(id),
        top1 REAL NOT NULL,
        top5 REAL NOT NULL,
        loss REAL NOT NULL,
        epochs INTEGER NOT NULL,
        weights_path TEXT,
        finished_at REAL NOT NULL
    );",
    // v2: the validation accuracy of a final re-training, which chooses the winner (the
    // test accuracy is reported, never used to choose).
    "ALTER TABLE final_results ADD COLUMN val_top1 REAL;",
    // v3: the study's cost target (JSON), fixed when it starts; why each trial was
    // re-trained (`top_k` or `warm_start`); how well each rung's
    // scores ranked the re-trained trials (Kendall's tau against their validation
    // accuracy after re-training), written after the final stage.
    "ALTER TABLE studies ADD COLUMN target TEXT;
    ALTER TABLE final_results ADD COLUMN reason TEXT;
    CREATE TABLE rung_fidelity (
        study_id INTEGER NOT NULL REFERENCES studies(id),
        step INTEGER NOT NULL,
        n INTEGER NOT NULL,
        kendall_tau REAL,
        PRIMARY KEY (study_id, step)
    );",
    // v4: a trial stopped by the early-stop rule is `early_stopped`, not `pruned` (filter
    // pruning owns that word). SQLite cannot change a CHECK constraint in place, so the
    // table is rebuilt (foreign keys are enforced only after migrating). It repeats v1's
    // columns on purpose: a migration is history, applied as written to old stores.
    "CREATE TABLE trials_v4 (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        number INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN
            ('queued', 'running', 'complete', 'failed', 'early_stopped', 'interrupted')),
        config TEXT NOT NULL,
        flops INTEGER NOT NULL,
        params INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        proxy_acc REAL,
        proxy_loss REAL,
        worker TEXT,
        error TEXT,
        queued_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        UNIQUE (study_id, number)
    );
    INSERT INTO trials_v4 SELECT id, study_id, number,
        CASE state WHEN 'pruned' THEN 'early_stopped' ELSE state END,
        config, flops, params, size_bytes, proxy_acc, proxy_loss, worker, error,
        queued_at, started_at, finished_at
        FROM trials;
    DROP TABLE trials;
    ALTER TABLE trials_v4 RENAME TO trials;
    CREATE INDEX trials_by_state ON trials (study_id, state);",
    // v5: where each study stands (`running`, `final_stage`, `finished`, `interrupted`),
    // why its search loop ended, and when the state last changed; NULL in studies run
    // before v5.
    "ALTER TABLE studies ADD COLUMN state TEXT;
    ALTER TABLE studies ADD COLUMN stop_reason TEXT;
    ALTER TABLE studies ADD COLUMN state_at REAL;",
    // v6: worker processes. A trial claimed by one holds a lease until `lease_until`
    // (renewed by its heartbeats; NULL for trials run by the controller's own workers),
    // and a study records the folder its budget's relative paths resolve against.
    "ALTER TABLE trials ADD COLUMN lease_until REAL;
    ALTER TABLE studies ADD COLUMN budget_dir TEXT;",
    // v7: the daemon. A study submitted to it (`submitted_at`), a stop asked for by
    // `rankprune stop` (`stop_requested_at`), the SHA-256 of the files a study reads
    // (`identity`, JSON) and the controller's early-stop verdict on each report (NULL
    // until it decides; 1 stop, 0 continue).
    "ALTER TABLE studies ADD COLUMN submitted_at REAL;
    ALTER TABLE studies ADD COLUMN stop_requested_at REAL;
    ALTER TABLE studies ADD COLUMN identity TEXT;
    ALTER TABLE reports ADD COLUMN verdict INTEGER;",
    // v8: leases of the store's active daemon (scope `daemon`) and of each study's
    // controller (scope `study:ID`). A row per holding, kept as history: the newest row
    // of a scope is its holder while `released_at` is NULL and `expires_at` lies ahead
    // (renewed by the holder's heartbeats).
    "CREATE TABLE leases (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        holder TEXT NOT NULL,
        acquired_at REAL NOT NULL,
        renewed_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        released_at REAL
    );
    CREATE INDEX leases_by_scope ON leases (scope, id);",
    // v9: the paired final stage. One row per re-training of a subject (`trial:ID` for a
    // finalist, `control` for the one-shot heuristic's config) with one training seed,
    // with its per-image correctness on validation and test ('0'/'1' per image, in the
    // sets' order); a study's control config and its verdict (JSON).
    "CREATE TABLE final_runs (
        study_id INTEGER NOT NULL REFERENCES studies(id),
        subject TEXT NOT NULL,
        seed INTEGER NOT NULL,
        val_top1 REAL NOT NULL,
        top1 REAL NOT NULL,
        top5 REAL NOT NULL,
        loss REAL NOT NULL,
        epochs INTEGER NOT NULL,
        weights_path TEXT,
        val_correct TEXT NOT NULL,
        test_correct TEXT NOT NULL,
        finished_at REAL NOT NULL,
        PRIMARY KEY (study_id, subject, seed)
    );
    ALTER TABLE studies ADD COLUMN control TEXT;
    ALTER TABLE studies ADD COLUMN verdict TEXT;",
    // v10: whether a study's step-0 gate stops trials, and the measurement behind it.
    "ALTER TABLE studies ADD COLUMN gate TEXT;",
    // v11: a trial's predicted inference latency in microseconds (the study's latency
    // table at its batch size), for studies with a latency target; NULL otherwise.
    "ALTER TABLE trials ADD COLUMN latency_us INTEGER;",
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the file up to [`VERSION`] in one immediate transaction: the version is read
/// under the write lock, so processes opening a new file at the same time (a search and
/// a `trials` reader) migrate it once, the others waiting on the busy timeout.
pub fn migrate(conn: &mut Connection, path: &str) -> StoreResult<()> {
    let err = |source| StoreError::Sqlite {
        path: path.to_string(),
        source,
    };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if found == VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if found > VERSION {
        return Err(StoreError::TooNew {
            path: path.to_string(),
            found,
            known: VERSION,
        });
    }
    for sql in MIGRATIONS.iter().skip(found as usize) {
        tx.execute_batch(sql).map_err(err)?;
    }
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(err)?;
    tx.commit().map_err(err)
}
