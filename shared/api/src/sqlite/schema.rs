//! The database's schema, as migrations applied in order; `PRAGMA user_version` counts those
//! applied. A migration is never edited once released: a change is a new one.

use rusqlite::Connection;

use super::unavailable;
use crate::store::StoreError;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE services (
    org        TEXT NOT NULL,
    id         TEXT NOT NULL,
    etag       TEXT NOT NULL,
    data       TEXT NOT NULL,
    repository TEXT,
    image_path TEXT,
    last_push  TEXT,
    PRIMARY KEY (org, id)
) WITHOUT ROWID;
CREATE INDEX services_by_repository ON services (org, repository) WHERE repository IS NOT NULL;
CREATE INDEX services_by_image_path ON services (org, image_path) WHERE image_path IS NOT NULL;

CREATE TABLE webhook_secrets (
    org      TEXT NOT NULL,
    provider TEXT NOT NULL,
    secret   TEXT NOT NULL,
    set_at   TEXT NOT NULL,
    PRIMARY KEY (org, provider)
) WITHOUT ROWID;

CREATE TABLE tokens (
    org        TEXT NOT NULL,
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org, id)
) WITHOUT ROWID;

CREATE TABLE deployments (
    org        TEXT NOT NULL,
    id         TEXT NOT NULL,
    service_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (org, id)
) WITHOUT ROWID;
CREATE INDEX deployments_by_service ON deployments (org, service_id, id);
CREATE INDEX deployments_pending ON deployments (status, id) WHERE status = 'PENDING';

CREATE TABLE queue (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL UNIQUE,
    message       TEXT NOT NULL
);

CREATE TABLE deliveries (
    org        TEXT NOT NULL,
    provider   TEXT NOT NULL,
    id         TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (org, provider, id)
) WITHOUT ROWID;
CREATE INDEX deliveries_by_expiry ON deliveries (expires_at);
"#,
    r#"
CREATE TABLE delivery_services (
    org        TEXT NOT NULL,
    provider   TEXT NOT NULL,
    id         TEXT NOT NULL,
    service_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (org, provider, id, service_id)
) WITHOUT ROWID;
CREATE INDEX delivery_services_by_expiry ON delivery_services (expires_at);
"#,
    // Deployments carry their lifecycle, and are the queue themselves (in commit order, `seq`);
    // services remember the pushes they queued (the replay rule) instead of the deliveries.
    r#"
CREATE TABLE deployments_v3 (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    org                TEXT NOT NULL,
    id                 TEXT NOT NULL,
    service_id         TEXT NOT NULL,
    status             TEXT NOT NULL,
    data               TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT,
    updated_at         TEXT NOT NULL,
    updated_unix       INTEGER NOT NULL,
    next_attempt_unix  INTEGER,
    lease_id           TEXT,
    lease_expires_unix INTEGER,
    result             TEXT,
    UNIQUE (org, id)
);
INSERT INTO deployments_v3 (org, id, service_id, status, data, updated_at, updated_unix)
    SELECT d.org, d.id, d.service_id, d.status, d.data,
           json_extract(d.data, '$.requested_at'),
           coalesce(CAST(strftime('%s', json_extract(d.data, '$.requested_at')) AS INTEGER), 0)
    FROM deployments d LEFT JOIN queue q ON q.deployment_id = d.id
    ORDER BY coalesce(q.seq, 0), d.id;
DROP TABLE deployments;
DROP TABLE queue;
ALTER TABLE deployments_v3 RENAME TO deployments;
CREATE INDEX deployments_by_service ON deployments (org, service_id, id);
CREATE INDEX deployments_by_status ON deployments (org, status, id);
CREATE INDEX deployments_open ON deployments (org, service_id, seq) WHERE status IN ('QUEUED', 'IN_PROGRESS');
CREATE INDEX deployments_finished ON deployments (updated_unix) WHERE status IN ('DELIVERED', 'FAILED', 'SUPERSEDED');

DROP TABLE delivery_services;
CREATE TABLE push_marks (
    org         TEXT NOT NULL,
    service_id  TEXT NOT NULL,
    mark        TEXT NOT NULL,
    queued_unix INTEGER NOT NULL,
    PRIMARY KEY (org, service_id, mark)
) WITHOUT ROWID;
CREATE INDEX push_marks_by_age ON push_marks (queued_unix);
"#,
    // Whether a service's deployments go to pull consumers or to a deploy target; leases.
    r#"
ALTER TABLE services ADD COLUMN target_id TEXT;
UPDATE services SET target_id = json_extract(data, '$.deploy_target.target_id');
CREATE INDEX deployments_leases ON deployments (lease_expires_unix) WHERE status = 'IN_PROGRESS';
CREATE INDEX deployments_retries ON deployments (org, next_attempt_unix) WHERE status = 'QUEUED';
"#,
    // The deliveries history.
    r#"
CREATE TABLE delivery_log (
    org           TEXT NOT NULL,
    id            TEXT NOT NULL,
    source        TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    received_unix INTEGER NOT NULL,
    data          TEXT NOT NULL,
    PRIMARY KEY (org, id)
) WITHOUT ROWID;
CREATE INDEX delivery_log_by_source ON delivery_log (org, source, id);
CREATE INDEX delivery_log_by_outcome ON delivery_log (org, outcome, id);
CREATE INDEX delivery_log_by_age ON delivery_log (received_unix);
"#,
    // Deploy targets; `spec` holds their secrets and tokens.
    r#"
CREATE TABLE targets (
    org        TEXT NOT NULL,
    id         TEXT NOT NULL,
    etag       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    spec       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (org, id)
) WITHOUT ROWID;
CREATE INDEX services_by_target ON services (org, target_id) WHERE target_id IS NOT NULL;
"#,
    // The history's ids alone, in order: what keeping an organization's newest deliveries
    // counts through on every delivery, without reading their documents.
    r#"
CREATE INDEX delivery_log_newest ON delivery_log (org, id);
"#,
    // The history in two B-trees instead of five: rows in arrival order (what retention
    // purges from the oldest), one index of ids per organization (pages, trims, lookups);
    // filters read the newest thousand rows, no more. Rejected deliveries are counted per
    // organization and received minute, so the flood bound costs accepted deliveries nothing.
    r#"
CREATE TABLE delivery_history (
    seq           INTEGER PRIMARY KEY,
    org           TEXT NOT NULL,
    id            TEXT NOT NULL,
    source        TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    received_unix INTEGER NOT NULL,
    data          TEXT NOT NULL,
    UNIQUE (org, id)
);
INSERT INTO delivery_history (org, id, source, outcome, received_unix, data)
    SELECT org, id, source, outcome, received_unix, data FROM delivery_log ORDER BY received_unix, id;
DROP TABLE delivery_log;
ALTER TABLE delivery_history RENAME TO delivery_log;
CREATE TABLE rejected_deliveries (
    org    TEXT NOT NULL,
    minute INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (org, minute)
) WITHOUT ROWID;
"#,
    // Push marks and delivery ids as rows in insertion order, found through a unique index:
    // keyed by their random text, every insert wrote a page of its own twice (the rows, and
    // the age index, which orders by second and then by that text); now only the unique index
    // takes a random page, and one push's marks share it (the mark before the service).
    // Retries are indexed only once they have a next attempt, which new deployments do not.
    // Finished deployments are told by comparisons: a list of three in `IN` made SQLite build
    // a temporary table at every insert and update of a deployment to evaluate the index's
    // condition.
    r#"
CREATE TABLE push_marks_v2 (
    org         TEXT NOT NULL,
    service_id  TEXT NOT NULL,
    mark        TEXT NOT NULL,
    queued_unix INTEGER NOT NULL
);
INSERT INTO push_marks_v2 (org, service_id, mark, queued_unix)
    SELECT org, service_id, mark, queued_unix FROM push_marks ORDER BY queued_unix;
DROP TABLE push_marks;
ALTER TABLE push_marks_v2 RENAME TO push_marks;
CREATE UNIQUE INDEX push_marks_by_mark ON push_marks (org, mark, service_id);
CREATE INDEX push_marks_by_service ON push_marks (org, service_id);
CREATE INDEX push_marks_by_age ON push_marks (queued_unix);

CREATE TABLE deliveries_v2 (
    org        TEXT NOT NULL,
    provider   TEXT NOT NULL,
    id         TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
INSERT INTO deliveries_v2 (org, provider, id, expires_at)
    SELECT org, provider, id, expires_at FROM deliveries ORDER BY expires_at;
DROP TABLE deliveries;
ALTER TABLE deliveries_v2 RENAME TO deliveries;
CREATE UNIQUE INDEX deliveries_by_id ON deliveries (org, provider, id);
CREATE INDEX deliveries_by_expiry ON deliveries (expires_at);

DROP INDEX deployments_retries;
CREATE INDEX deployments_retries ON deployments (org, next_attempt_unix)
    WHERE status = 'QUEUED' AND next_attempt_unix IS NOT NULL;
DROP INDEX deployments_finished;
CREATE INDEX deployments_finished ON deployments (updated_unix)
    WHERE status = 'DELIVERED' OR status = 'FAILED' OR status = 'SUPERSEDED';
"#,
    // What `GET /health` writes: a write that changes a page, so that it fails when the
    // database's files cannot be written (a full disk, a read-only log), as other writes do.
    // The refused deliveries' own index.
    r#"
CREATE TABLE health_checks (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    checks INTEGER NOT NULL
);
-- The refused deliveries of an organization, to keep only the newest of them.
CREATE INDEX delivery_log_rejected ON delivery_log (org, id) WHERE outcome = 'REJECTED';
"#,
    // The push marks of the deployments recorded before marks existed (a database of the
    // first release, whose marks the lifecycle migration above did not carry over): without
    // them the replay rule knew only each service's last push, and a push queued before the
    // upgrade was queued again when sent again, an older one rolling its service back. Each
    // git push deployment's `before..after` is its service's mark, as of when it was
    // requested; marks past their retention go at the next upkeep.
    r#"
INSERT OR IGNORE INTO push_marks (org, service_id, mark, queued_unix)
    SELECT org, service_id,
           json_extract(data, '$.trigger.before') || '..' || json_extract(data, '$.trigger.commit_sha'),
           coalesce(CAST(strftime('%s', json_extract(data, '$.requested_at')) AS INTEGER), updated_unix)
    FROM deployments
    WHERE json_extract(data, '$.trigger.type') = 'GIT_PUSH'
    ORDER BY seq;
"#,
    // A deployment in progress when its service was deleted: cancelled when it comes back to
    // waiting, even when a service of the same id was created meanwhile (which is another
    // service: the old one's image or commit must not be deployed as its).
    r#"
ALTER TABLE deployments ADD COLUMN service_deleted INTEGER NOT NULL DEFAULT 0;
-- The history's refusals of organizations with nothing set up, by their row: the newest
-- thousand of them all together are kept.
CREATE TABLE unconfigured_refusals (log_seq INTEGER PRIMARY KEY);
-- A deleted service's push marks stay until their retention (a service created again under its
-- id still refuses their replays): nothing reads them by service any more.
DROP INDEX push_marks_by_service;
"#,
    // The waiting deployments' index carries their status: the bound on a service's waiting
    // deployments is counted in the index alone, where each step read the deployment's row.
    r#"
DROP INDEX deployments_open;
CREATE INDEX deployments_open ON deployments (org, service_id, seq, status)
    WHERE status IN ('QUEUED', 'IN_PROGRESS');
"#,
    // Push marks in their stored form (`stored_mark!`): lowercase hexadecimal ids as bytes.
    // The form is one-to-one, so no two marks of a service meet; `OR IGNORE` leaves a mark as
    // it was rather than fail the upgrade, should one ever.
    concat!(
        "UPDATE OR IGNORE push_marks SET mark = ",
        stored_mark!("mark"),
        " WHERE typeof(mark) = 'text';"
    ),
];

/// Bring the database at `conn` to this build's schema. An upgrade is logged: an older
/// autodeploy refuses the database from then on.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unavailable)?;
    let not_ours = || {
        StoreError::Incompatible(
            "it is not an autodeploy database (it holds other tables, or another schema version)".to_owned(),
        )
    };
    let applied = usize::try_from(applied).map_err(|_| not_ours())?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Incompatible(format!(
            "it has schema version {applied}, newer than this build knows ({}): it was written by a newer autodeploy",
            MIGRATIONS.len()
        )));
    }
    if applied == 0 {
        // A new database is empty; one with tables of its own belongs to something else.
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        if tables > 0 {
            return Err(not_ours());
        }
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        // The statement's text is left out of the error: the cause is what tells.
        let failed = |e: rusqlite::Error| {
            let cause = match &e {
                rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
                other => other.to_string(),
            };
            StoreError::Unavailable(format!("migration {} of the schema failed: {cause}", i + 1))
        };
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    if applied > 0 && applied < MIGRATIONS.len() {
        tracing::info!(
            from = applied,
            to = MIGRATIONS.len(),
            "the database's schema was upgraded: an older autodeploy can no longer open it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of the release before the history moved to arrival order keeps its
    /// deliveries, in their order, with the indexes the history's reads use.
    #[test]
    fn the_history_survives_its_move_to_arrival_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 7).unwrap();
        for (id, received) in [("0192a", 20), ("0191f", 10), ("0192b", 30)] {
            conn.execute(
                "INSERT INTO delivery_log (org, id, source, outcome, received_unix, data)
                 VALUES ('acme', ?1, 'GITHUB', 'QUEUED', ?2, '{}')",
                rusqlite::params![id, received],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, String)> = conn
            .prepare("SELECT seq, id FROM delivery_log ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "0191f".to_owned()),
                (2, "0192a".to_owned()),
                (3, "0192b".to_owned())
            ]
        );
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM delivery_log WHERE org = 'acme' ORDER BY id DESC LIMIT 1 OFFSET 999",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("COVERING INDEX"), "{plan}");
        let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);
    }

    /// The push marks `(service, mark, queued_unix)`, in `order`, marks stored as bytes
    /// (`stored_mark`) read back as text.
    fn push_marks(conn: &Connection, order: &str) -> Vec<(String, String, i64)> {
        let text = |stored: rusqlite::types::Value| match stored {
            // The position of `..` in the text, then the digits around it.
            rusqlite::types::Value::Blob(bytes) => {
                let (split, digits) = (usize::from(bytes[0]) - 1, hex::encode(&bytes[1..]));
                format!("{}..{}", &digits[..split], &digits[split..])
            }
            rusqlite::types::Value::Text(mark) => mark,
            other => panic!("a mark stored as {other:?}"),
        };
        conn.prepare(&format!(
            "SELECT service_id, mark, queued_unix FROM push_marks ORDER BY {order}"
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, text(r.get(1)?), r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// A push mark as [`push_marks`] reads it.
    fn mark(service: &str, mark: &str, queued_unix: i64) -> (String, String, i64) {
        (service.to_owned(), mark.to_owned(), queued_unix)
    }

    /// A database of the first release (schema 2: deployments, their queue, each service's
    /// last push) gets a push mark for each git push deployment it recorded, so that the
    /// replay rule still knows every push queued before the upgrade.
    #[test]
    fn first_release_pushes_keep_their_marks() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        let push = |before: &str, after: &str, at: &str| {
            format!(
                r#"{{"deployment_id": "x", "requested_at": "{at}",
                    "trigger": {{"type": "GIT_PUSH", "before": "{before}", "commit_sha": "{after}"}}}}"#
            )
        };
        let tag = r#"{"requested_at": "2026-12-01T00:00:00Z", "trigger": {"type": "IMAGE_TAG", "tag": "1.2.0"}}"#;
        for (id, service, data) in [
            ("d1", "web", push("a", "b", "2026-12-01T10:00:00Z")),
            ("d2", "web", push("b", "c", "2026-12-02T10:00:00Z")),
            ("d3", "api", push("b", "c", "2026-12-02T10:00:00Z")),
            ("d4", "worker", tag.to_owned()),
        ] {
            conn.execute(
                "INSERT INTO deployments (org, id, service_id, status, data) VALUES ('acme', ?1, ?2, 'QUEUED', ?3)",
                rusqlite::params![id, service, data],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        assert_eq!(
            push_marks(&conn, "service_id, mark"),
            [
                mark("api", "b..c", 1_796_205_600),
                mark("web", "a..b", 1_796_119_200),
                mark("web", "b..c", 1_796_205_600)
            ]
        );
    }

    /// A database of the release before push marks and delivery ids moved to insertion order
    /// keeps them all, each still found by its key, oldest first.
    #[test]
    fn push_marks_and_delivery_ids_survive_their_move_to_insertion_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 8).unwrap();
        for (service, mark, queued) in [("web", "b..c", 20), ("api", "a..b", 10), ("web", "a..b", 30)] {
            conn.execute(
                "INSERT INTO push_marks (org, service_id, mark, queued_unix) VALUES ('acme', ?1, ?2, ?3)",
                rusqlite::params![service, mark, queued],
            )
            .unwrap();
        }
        for (id, expires) in [("d2", 200), ("d1", 100)] {
            conn.execute(
                "INSERT INTO deliveries (org, provider, id, expires_at) VALUES ('acme', 'github', ?1, ?2)",
                rusqlite::params![id, expires],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        assert_eq!(
            push_marks(&conn, "rowid"),
            [
                mark("api", "a..b", 10),
                mark("web", "b..c", 20),
                mark("web", "a..b", 30)
            ]
        );
        // In their stored form since, and found by the statement that looks them up.
        let as_bytes: i64 = conn
            .query_row("SELECT count(*) FROM push_marks WHERE typeof(mark) = 'blob'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(as_bytes, 3);
        let queued_before: bool = conn
            .query_row(
                super::super::deployments::PUSH_QUEUED_SINCE,
                rusqlite::params!["acme", "web", super::super::stored_mark("b..c"), 0],
                |r| r.get(0),
            )
            .unwrap();
        assert!(queued_before);
        let ids: Vec<(String, i64)> = conn
            .prepare("SELECT id, expires_at FROM deliveries ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [("d1".to_owned(), 100), ("d2".to_owned(), 200)]);
        // The keys stay unique: a second mark or id of the same key is refused.
        assert!(
            conn.execute(
                "INSERT INTO push_marks (org, service_id, mark, queued_unix) VALUES ('acme', 'api', ?1, 40)",
                [super::super::stored_mark("a..b")],
            )
            .is_err()
        );
        assert!(
            conn.execute(
                "INSERT INTO deliveries (org, provider, id, expires_at) VALUES ('acme', 'github', 'd1', 300)",
                [],
            )
            .is_err()
        );
    }
}
