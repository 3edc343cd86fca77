//! Leases and retention in the real server: leases are in the database, so a SIGKILL with
//! leases outstanding loses none of them — after a restart on the same file the old lease ids
//! still acknowledge, and the leases run out when they should (the deployment offered again
//! as its next attempt); finished deployments past `--retention-days` are pruned by the
//! server's own maintenance; a long poll does not hold up a shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Launch, Server, json_call};

const ADMIN: &str = "leases-admin-token-0123456789";

fn start(db: &Path, args: &[&str]) -> Server {
    Launch::new(ADMIN)
        .database(db)
        .args(args)
        .env("RUST_LOG", Some("warn"))
        .start()
}

fn call(server: &Server, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    json_call(server.port, token, method, path, body)
}

/// Container services `names` of `acme` and a token with the `consume` scope.
fn set_up(server: &Server, names: &[&str]) -> String {
    for name in names {
        let service = json!({"environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
            "image": {"image_name": format!("acme/{name}"), "tag": "0"}});
        let (status, answer) = call(
            server,
            ADMIN,
            "PUT",
            &format!("/organization/acme/services/{name}"),
            Some(service),
        );
        assert_eq!(status, 201, "{answer}");
    }
    let (status, answer) = call(
        server,
        ADMIN,
        "POST",
        "/organization/acme/tokens",
        Some(json!({"name": "engine", "scopes": ["consume"]})),
    );
    assert_eq!(status, 201, "{answer}");
    answer["token"].as_str().unwrap().to_owned()
}

/// Queue tag `tag` of `acme/{name}`: the deployment id.
fn deploy(server: &Server, name: &str, tag: &str) -> String {
    let (status, answer) = call(
        server,
        ADMIN,
        "POST",
        "/organization/acme/container/deploy",
        Some(json!({"image_name": format!("acme/{name}"), "tag": tag})),
    );
    assert_eq!(status, 202, "{answer}");
    answer["queued"][0]["deployment_id"].as_str().unwrap().to_owned()
}

fn lease(server: &Server, token: &str, body: Value) -> Vec<Value> {
    let (status, answer) = call(
        server,
        token,
        "POST",
        "/organization/acme/deployments/lease",
        Some(body),
    );
    assert_eq!(status, 200, "{answer}");
    answer["items"].as_array().unwrap().clone()
}

fn ack(server: &Server, token: &str, item: &Value) -> u16 {
    let id = item["deployment_id"].as_str().unwrap();
    let (status, _) = call(
        server,
        token,
        "POST",
        &format!("/organization/acme/deployments/{id}/ack"),
        Some(json!({"lease_id": item["lease_id"]})),
    );
    status
}

/// `GET` the deployment as the admin: `(status, body)`.
fn get(server: &Server, id: &str) -> (u16, Value) {
    call(
        server,
        ADMIN,
        "GET",
        &format!("/organization/acme/deployments/{id}"),
        None,
    )
}

#[test]
fn leases_survive_a_sigkill_and_run_out_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("autodeploy.db");
    let mut server = start(&db, &[]);
    let token = set_up(&server, &["long", "short", "waiting"]);
    let long = deploy(&server, "long", "1");
    let short = deploy(&server, "short", "1");
    let long_item = lease(&server, &token, json!({"lease_seconds": 3600})).remove(0);
    assert_eq!(long_item["deployment_id"], long.as_str());
    let short_item = lease(&server, &token, json!({"lease_seconds": 10})).remove(0);
    assert_eq!(short_item["deployment_id"], short.as_str());
    let waiting = deploy(&server, "waiting", "1");

    server.kill();
    let server = start(&db, &[]);

    // Both deployments are still leased, and the long lease still acknowledges.
    for id in [&long, &short] {
        let (status, d) = get(&server, id);
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["status"], "IN_PROGRESS", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
    }
    // The waiting one is offered as before; the leased ones are not (the short one, at most
    // once its lease ran out, as its second attempt).
    let items = lease(&server, &token, json!({"max": 10}));
    let offered: Vec<(&str, u64)> = items
        .iter()
        .map(|i| (i["deployment_id"].as_str().unwrap(), i["attempt"].as_u64().unwrap()))
        .collect();
    assert!(offered.contains(&(waiting.as_str(), 1)), "{offered:?}");
    assert!(!offered.iter().any(|(id, _)| *id == long), "{offered:?}");
    assert!(
        offered.iter().all(|(id, attempt)| *id != short || *attempt == 2),
        "{offered:?}"
    );
    assert_eq!(ack(&server, &token, &long_item), 204);
    let (_, d) = get(&server, &long);
    assert_eq!(d["status"], "DELIVERED", "{d}");

    // The short lease runs out: its deployment is offered again, as its second attempt.
    let again = match items.iter().find(|i| i["deployment_id"] == short.as_str()) {
        Some(item) => item.clone(),
        None => {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let items = lease(&server, &token, json!({"max": 10, "wait_seconds": 20}));
                if let Some(item) = items.into_iter().find(|i| i["deployment_id"] == short.as_str()) {
                    break item;
                }
                assert!(Instant::now() < deadline, "the short lease never ran out");
            }
        }
    };
    assert_eq!(again["attempt"], 2, "{again}");
    assert_ne!(again["lease_id"], short_item["lease_id"]);
    assert_eq!(ack(&server, &token, &short_item), 409, "the expired lease acknowledged");
    assert_eq!(ack(&server, &token, &again), 204);
    let (_, d) = get(&server, &short);
    assert_eq!(
        (d["status"].as_str(), d["attempts"].as_u64()),
        (Some("DELIVERED"), Some(2)),
        "{d}"
    );
}

/// A consumer long-polling when the server is told to stop gets its answer (nothing) at once,
/// and the server exits, instead of both waiting out the poll's 20 s: longer than the 10 s a
/// container runtime waits for a stopping container before it kills it.
/// A leased item lists the deployment's fields in the order every answer about a deployment
/// does (`schema` first, as the queue message), then its lease.
#[test]
fn a_leased_item_keeps_the_deployments_field_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("autodeploy.db"), &[]);
    let token = set_up(&server, &["api"]);
    deploy(&server, "api", "1");
    let auth = format!("Token {token}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let (status, raw) = crate::harness::http(
        server.port,
        "POST",
        "/organization/acme/deployments/lease",
        &headers,
        b"{}",
    );
    assert_eq!(status, 200, "{raw}");
    let at = |key: &str| {
        raw.find(&format!("\"{key}\""))
            .unwrap_or_else(|| panic!("{key}: {raw}"))
    };
    let order = [
        "schema",
        "deployment_id",
        "organization_id",
        "status",
        "lease_id",
        "lease_expires_at",
        "attempt",
    ];
    assert!(order.windows(2).all(|pair| at(pair[0]) < at(pair[1])), "{raw}");
}

#[test]
fn a_long_poll_answers_at_once_when_the_server_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir.path().join("autodeploy.db"), &[]);
    let token = set_up(&server, &["api"]);
    let port = server.port;
    let poll = std::thread::spawn(move || {
        json_call(
            port,
            &token,
            "POST",
            "/organization/acme/deployments/lease",
            Some(json!({"wait_seconds": 20})),
        )
    });
    // The poll is waiting (nothing to lease) when the server is told to stop.
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let status = server.terminate();
    let stopped_after = asked.elapsed();
    assert!(status.success(), "{status:?}");
    let (status, answer) = poll.join().unwrap();
    assert_eq!((status, answer), (200, json!({"items": []})));
    assert!(
        stopped_after < Duration::from_secs(10),
        "the shutdown waited {stopped_after:?} for the long poll"
    );
}

#[test]
fn the_server_prunes_finished_deployments_past_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("autodeploy.db");
    let server = start(&db, &["--retention-days", "2"]);
    let token = set_up(&server, &["old", "young", "waiting"]);
    let old = deploy(&server, "old", "1");
    let young = deploy(&server, "young", "1");
    for item in lease(&server, &token, json!({"max": 10})) {
        assert_eq!(ack(&server, &token, &item), 204);
    }
    let waiting = deploy(&server, "waiting", "1");

    // `old` finished 3 days ago, `young` 1 day ago; `waiting` was recorded 3 days ago.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    for (id, days) in [(&old, 3), (&young, 1), (&waiting, 3)] {
        let changed = conn
            .execute(
                "UPDATE deployments SET updated_unix = updated_unix - ?2 WHERE id = ?1",
                rusqlite::params![id, days * 86_400],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    drop(conn);

    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&server, &old).0 != 404 {
        assert!(Instant::now() < deadline, "the old deployment was never pruned");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, d) = get(&server, &young);
    assert_eq!((status, d["status"].as_str()), (200, Some("DELIVERED")), "{d}");
    let (status, d) = get(&server, &waiting);
    assert_eq!((status, d["status"].as_str()), (200, Some("QUEUED")), "{d}");
}

#[test]
fn max_attempts_bounds_the_offers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("autodeploy.db");
    let server = start(&db, &["--max-attempts", "2"]);
    let token = set_up(&server, &["api"]);
    let id = deploy(&server, "api", "1");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    for attempt in 1..=2 {
        let items = lease(&server, &token, json!({}));
        assert_eq!(items.len(), 1, "offer {attempt}: {items:?}");
        assert_eq!(items[0]["deployment_id"], id.as_str());
        assert_eq!(items[0]["attempt"], attempt);
        // The lease runs out (as if its time had passed).
        let changed = conn
            .execute(
                "UPDATE deployments SET lease_expires_unix = lease_expires_unix - 100000 WHERE id = ?1",
                [&id],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    // The server's own maintenance releases it: the second offer was the last.
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let (_, d) = get(&server, &id);
        if d["status"] != "IN_PROGRESS" {
            break d;
        }
        assert!(Instant::now() < deadline, "the lease that ran out was never released");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert!(lease(&server, &token, json!({})).is_empty());
}
