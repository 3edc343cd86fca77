//! Real SQLite failures on the standalone stack (router + SQLite, whose deployments table is
//! the queue), instead of a store wrapper that fails on demand: a second connection to the
//! same database file installs a trigger that aborts the insert of a deployment (or of the
//! push mark the replay rule writes beside it), or holds the write lock. SPEC: "503 when the
//! deployment cannot be recorded — then nothing was recorded", so that a redelivery starts
//! clean. A delivery's records are one write: a failure for one service leaves nothing of the
//! others either.

use std::time::Duration;

use autodeploy_tests::{ADMIN, Api, GITHUB_REPO, Reply, fixture, outcome};
use http::{Method, StatusCode};
use rusqlite::Connection;
use serde_json::json;

/// A second connection to the API's database file, as another process would open it.
fn second_connection(api: &Api) -> Connection {
    let path = api.sqlite_path().expect("the API runs on a SQLite file");
    let conn = Connection::open(path).expect("opening the database a second time");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    conn
}

/// A trigger that aborts every insert into `table` (for `service` only, when given).
fn fail_inserts(conn: &Connection, table: &str, service: Option<&str>) {
    let when = match (table, service) {
        (_, None) => String::new(),
        ("deployments", Some(id)) => format!("WHEN NEW.service_id = '{id}'"),
        ("push_marks", Some(id)) => format!("WHEN NEW.service_id = '{id}'"),
        (other, Some(_)) => panic!("no per-service trigger for {other}"),
    };
    conn.execute_batch(&format!(
        "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} {when}
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
    ))
    .expect("creating the trigger");
}

fn heal(conn: &Connection, table: &str) {
    conn.execute_batch(&format!("DROP TRIGGER fail_{table};"))
        .expect("dropping the trigger");
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
    v.sort();
    v
}

/// `service_id` of every deployment in the log, sorted.
async fn logged(api: &Api) -> Vec<String> {
    let mut v: Vec<String> = api
        .deployments("acme")
        .await
        .iter()
        .map(|d| d["service_id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// `service_id` of every deployment waiting on the queue (the deployments table), sorted.
async fn on_queue(api: &Api) -> Vec<String> {
    let mut v: Vec<String> = api
        .sqlite
        .as_ref()
        .unwrap()
        .queued_messages(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, m)| m.service_id)
        .collect();
    v.sort();
    v
}

/// The services the replay rule remembers a queued push of, sorted.
fn push_marks(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT service_id FROM push_marks WHERE org = 'acme' ORDER BY service_id")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn assert_unavailable(r: &Reply) {
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        "{}",
        r.body
    );
    assert!(!String::from_utf8_lossy(&r.raw).contains("injected"));
}

async fn github_api() -> Api {
    let api = Api::new();
    api.set_secret("acme", "github").await;
    for id in ["api", "web"] {
        api.app("acme", id, "GITHUB", GITHUB_REPO, "master", json!({})).await;
    }
    api
}

/// A push whose record fails at `table` (for `failing`, or for every service): 503, and
/// nothing is left of the attempt: no deployment, no push mark, no remembered delivery. Once
/// healed, the redelivery queues both services. The API, its second connection, and the push.
async fn failed_record_then_redelivery(table: &str, failing: Option<&str>) -> (Api, Connection, Vec<u8>) {
    let api = github_api().await;
    let conn = second_connection(&api);
    let push = fixture("github/gp-push.json");
    fail_inserts(&conn, table, failing);

    let r = api.push("acme", "github", &push, "delivery-1").await;
    assert_unavailable(&r);
    assert!(logged(&api).await.is_empty(), "{table}");
    assert!(on_queue(&api).await.is_empty(), "{table}");
    assert!(push_marks(&conn).is_empty(), "{table}");

    heal(&conn, table);
    let r = api.push("acme", "github", &push, "delivery-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{table}: {}", r.body);
    assert_eq!(
        outcome(&r),
        (pairs(&[("api", "QUEUED"), ("web", "QUEUED")]), vec![]),
        "{table}"
    );
    assert_eq!(on_queue(&api).await, vec!["api", "web"], "{table}");
    (api, conn, push)
}

/// The record fails — at the deployment row, or at the push mark written beside it — for
/// every service: nothing is left of the attempt, and the redelivery queues exactly once.
#[tokio::test]
async fn a_push_whose_record_fails_is_a_503_and_a_clean_redelivery() {
    for table in ["deployments", "push_marks"] {
        let (api, conn, push) = failed_record_then_redelivery(table, None).await;
        assert_eq!(logged(&api).await, vec!["api", "web"], "{table}");
        assert_eq!(push_marks(&conn), vec!["api", "web"], "{table}");
        let r = api.push("acme", "github", &push, "delivery-1").await;
        assert_eq!(r.body["ignored"], "DUPLICATE_DELIVERY", "{table}");
    }
}

/// The record fails for one service only: 503, and the other service's record, written in the
/// same transaction, is not kept either (nothing half-done); the redelivery queues both, once.
#[tokio::test]
async fn a_push_whose_record_fails_for_one_service_leaves_nothing_and_the_redelivery_queues_all() {
    for table in ["deployments", "push_marks"] {
        failed_record_then_redelivery(table, Some("web")).await;
    }
}

/// Another process holds the database's write lock for longer than the store waits (its
/// 5-second busy timeout): 503, nothing recorded; once it lets go, the redelivery queues.
/// One service: each record waits out the timeout in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_a_503() {
    let api = Api::new();
    api.set_secret("acme", "github").await;
    api.app("acme", "api", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let conn = second_connection(&api);
    let push = fixture("github/gp-push.json");
    conn.execute_batch("BEGIN IMMEDIATE;").expect("taking the write lock");

    let r = api.push("acme", "github", &push, "delivery-1").await;
    assert_unavailable(&r);
    conn.execute_batch("ROLLBACK;").expect("releasing the write lock");
    assert!(logged(&api).await.is_empty());
    assert!(on_queue(&api).await.is_empty());

    let r = api.push("acme", "github", &push, "delivery-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(on_queue(&api).await, vec!["api"]);
}

async fn container(api: &Api, id: &str) {
    let body = json!({"environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
                      "image": {"image_name": "acme/api", "tag": "1.0.0"}});
    assert_eq!(api.put_service("acme", id, body).await.status, StatusCode::CREATED);
}

async fn deploy(api: &Api, tag: &str) -> Reply {
    api.call(
        Method::POST,
        "/organization/acme/container/deploy",
        Some(ADMIN),
        Some(json!({"image_name": "acme/api", "tag": tag})),
    )
    .await
}

/// The image endpoint's record fails, for every service or for one: 503, and every service
/// keeps its tag, version and ETag (the new tag is written in the same transaction as the
/// records); the retry queues each service once.
#[tokio::test]
async fn an_image_record_that_fails_leaves_every_service_unchanged() {
    for broken in [None, Some("broken")] {
        let api = Api::new();
        let conn = second_connection(&api);
        container(&api, "api").await;
        container(&api, "broken").await;

        let before = [
            api.get_service("acme", "api").await,
            api.get_service("acme", "broken").await,
        ];
        fail_inserts(&conn, "deployments", broken);
        assert_unavailable(&deploy(&api, "1.1.0").await);
        for old in &before {
            let id = old.body["id"].as_str().unwrap();
            let now = api.get_service("acme", id).await;
            assert_eq!((now.etag(), &now.body), (old.etag(), &old.body), "{broken:?}: {id}");
        }
        assert!(logged(&api).await.is_empty(), "{broken:?}");
        assert!(on_queue(&api).await.is_empty(), "{broken:?}");

        heal(&conn, "deployments");
        let r = deploy(&api, "1.1.0").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{broken:?}: {}", r.body);
        assert_eq!(
            outcome(&r),
            (pairs(&[("api", "QUEUED"), ("broken", "QUEUED")]), vec![]),
            "{broken:?}"
        );
        for id in ["api", "broken"] {
            assert_eq!(
                api.get_service("acme", id).await.body["image"]["tag"],
                "1.1.0",
                "{broken:?}"
            );
        }
        assert_eq!(on_queue(&api).await, vec!["api", "broken"], "{broken:?}");
        let r = deploy(&api, "1.1.0").await;
        assert_eq!(
            outcome(&r),
            (vec![], pairs(&[("api", "SAME_TAG"), ("broken", "SAME_TAG")])),
            "{broken:?}"
        );
    }
}
