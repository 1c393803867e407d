//! The PostgreSQL store's schema: the SQLite store's migrations (`schema.rs`) in
//! PostgreSQL's dialect, one for one, versioned in the table `rankprune_schema`.

/// Migrations in order; migration i takes the schema from version i to i + 1, as
/// `schema::MIGRATIONS[i]` does for SQLite.
pub(super) const MIGRATIONS: &[&str] = &[
    // v1: studies, trials, per-step reports, final re-training results.
    "CREATE TABLE studies (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        budget TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE trials (
        id BIGSERIAL PRIMARY KEY,
        study_id BIGINT NOT NULL REFERENCES studies(id),
        number BIGINT NOT NULL,
        state TEXT NOT NULL CONSTRAINT trials_state_check CHECK (state IN
            ('queued', 'running', 'complete', 'failed', 'pruned', 'interrupted')),
        config TEXT NOT NULL,
        flops BIGINT NOT NULL,
        params BIGINT NOT NULL,
        size_bytes BIGINT NOT NULL,
        proxy_acc DOUBLE PRECISION,
        proxy_loss DOUBLE PRECISION,
        worker TEXT,
        error TEXT,
        queued_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        UNIQUE (study_id, number)
    );
    CREATE INDEX trials_by_state ON trials (study_id, state);
    CREATE TABLE reports (
        trial_id BIGINT NOT NULL REFERENCES trials(id),
        step BIGINT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (trial_id, step)
    );
    CREATE TABLE final_results (
        trial_id BIGINT PRIMARY KEY REFERENCES trials(id),
        top1 DOUBLE PRECISION NOT NULL,
        top5 DOUBLE PRECISION NOT NULL,
        loss DOUBLE PRECISION NOT NULL,
        epochs BIGINT NOT NULL,
        weights_path TEXT,
        finished_at DOUBLE PRECISION NOT NULL
    );",
    // v2: the validation accuracy of a final re-training.
    "ALTER TABLE final_results ADD COLUMN val_top1 DOUBLE PRECISION;",
    // v3: the study's cost target, why a trial was re-trained, rung fidelity.
    "ALTER TABLE studies ADD COLUMN target TEXT;
    ALTER TABLE final_results ADD COLUMN reason TEXT;
    CREATE TABLE rung_fidelity (
        study_id BIGINT NOT NULL REFERENCES studies(id),
        step BIGINT NOT NULL,
        n BIGINT NOT NULL,
        kendall_tau DOUBLE PRECISION,
        PRIMARY KEY (study_id, step)
    );",
    // v4: `pruned` trials become `early_stopped` (PostgreSQL changes a CHECK in place).
    "ALTER TABLE trials DROP CONSTRAINT trials_state_check;
    UPDATE trials SET state = 'early_stopped' WHERE state = 'pruned';
    ALTER TABLE trials ADD CONSTRAINT trials_state_check CHECK (state IN
        ('queued', 'running', 'complete', 'failed', 'early_stopped', 'interrupted'));",
    // v5: where each study stands.
    "ALTER TABLE studies ADD COLUMN state TEXT;
    ALTER TABLE studies ADD COLUMN stop_reason TEXT;
    ALTER TABLE studies ADD COLUMN state_at DOUBLE PRECISION;",
    // v6: worker leases and the budget's folder.
    "ALTER TABLE trials ADD COLUMN lease_until DOUBLE PRECISION;
    ALTER TABLE studies ADD COLUMN budget_dir TEXT;",
    // v7: the daemon's submissions and stops, file identities, controller verdicts.
    "ALTER TABLE studies ADD COLUMN submitted_at DOUBLE PRECISION;
    ALTER TABLE studies ADD COLUMN stop_requested_at DOUBLE PRECISION;
    ALTER TABLE studies ADD COLUMN identity TEXT;
    ALTER TABLE reports ADD COLUMN verdict BOOLEAN;",
    // v8: leases of the active daemon and of each study's controller.
    "CREATE TABLE leases (
        id BIGSERIAL PRIMARY KEY,
        scope TEXT NOT NULL,
        holder TEXT NOT NULL,
        acquired_at DOUBLE PRECISION NOT NULL,
        renewed_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        released_at DOUBLE PRECISION
    );
    CREATE INDEX leases_by_scope ON leases (scope, id);",
    // v9: the paired final stage's runs, a study's control config and verdict.
    "CREATE TABLE final_runs (
        study_id BIGINT NOT NULL REFERENCES studies(id),
        subject TEXT NOT NULL,
        seed BIGINT NOT NULL,
        val_top1 DOUBLE PRECISION NOT NULL,
        top1 DOUBLE PRECISION NOT NULL,
        top5 DOUBLE PRECISION NOT NULL,
        loss DOUBLE PRECISION NOT NULL,
        epochs BIGINT NOT NULL,
        weights_path TEXT,
        val_correct TEXT NOT NULL,
        test_correct TEXT NOT NULL,
        finished_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (study_id, subject, seed)
    );
    ALTER TABLE studies ADD COLUMN control TEXT;
    ALTER TABLE studies ADD COLUMN verdict TEXT;",
    // v10: a study's step-0 gate decision.
    "ALTER TABLE studies ADD COLUMN gate TEXT;",
    // v11: a trial's predicted latency.
    "ALTER TABLE trials ADD COLUMN latency_us BIGINT;",
];
