//! Durability of the standalone server (docs/proofs.md): the real binary under a load of
//! signed, distinct GitHub pushes from several threads is killed with SIGKILL mid-load,
//! restarted on the same database, and every push that was answered 202 has its deployment in
//! the log and its message in the queue table — SPEC "a process killed at any moment loses
//! nothing it acknowledged".

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Launch, Server, try_http};

const ADMIN: &str = "durability-admin-token-0123456789";
const SECRET: &str = "durability-webhook-secret-0123";
const REPO: &str = "https://github.com/binkkatal/sample_app.git";
const PUSHES: usize = 200;
const THREADS: usize = 8;
/// SIGKILL once this many pushes were acknowledged.
const KILL_AFTER: usize = 60;

fn start(db: &Path) -> Server {
    Launch::new(ADMIN).database(db).env("RUST_LOG", Some("warn")).start()
}

fn push_body(i: usize) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/webhooks/github/gp-push.json"
    );
    let mut body: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let after = format!("ad{i:038x}");
    body["after"] = after.clone().into();
    body["head_commit"]["id"] = after.into();
    serde_json::to_vec(&body).unwrap()
}

/// Deliver push `i` (its delivery id is `delivery-{i}`, as the provider would resend it).
fn deliver(port: u16, i: usize) -> std::io::Result<(u16, String)> {
    let body = push_body(i);
    let sig = signature(&body);
    let delivery = format!("delivery-{i}");
    let headers = [
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", delivery.as_str()),
        ("X-Hub-Signature-256", sig.as_str()),
    ];
    try_http(port, "POST", "/organization/acme/webhooks/github", &headers, &body)
}

fn signature(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Every deployment id in the log of `acme`, following the cursor.
fn logged_deployments(port: u16) -> BTreeSet<String> {
    logged_commits(port).into_keys().collect()
}

/// Every deployment of `acme`: deployment id → commit, following the cursor.
fn logged_commits(port: u16) -> std::collections::BTreeMap<String, String> {
    let auth = format!("Token {ADMIN}");
    let mut ids = std::collections::BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/organization/acme/deployments?limit=100".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = try_http(port, "GET", &path, &[("Authorization", &auth)], b"").unwrap();
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        for d in page["items"].as_array().unwrap() {
            let id = d["deployment_id"].as_str().unwrap().to_owned();
            let commit = d["git_commit_id"].as_str().unwrap().to_owned();
            assert!(ids.insert(id, commit).is_none(), "listed twice: {d}");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

/// The deployment ids of the deployment log (the queue), in commit order, from a connection
/// of our own.
fn queue_table(db: &PathBuf) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let mut stmt = conn.prepare("SELECT id FROM deployments ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_push() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("autodeploy.db");
    let mut server = start(&db);
    let port = server.port;
    let auth = format!("Token {ADMIN}");
    let json = ("Content-Type", "application/json");
    let service = format!(
        r#"{{"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {{"provider": "GITHUB", "url": "{REPO}", "branch": "master"}}}}"#
    );
    let (status, body) = try_http(
        port,
        "PUT",
        "/organization/acme/services/api",
        &[("Authorization", &auth), json],
        service.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    server.set_webhook_secret(ADMIN, "github", SECRET);

    // 8 threads share 200 distinct pushes; each records the deployment id of every 202.
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (next, acked, failed, stop) = (next.clone(), acked.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= PUSHES || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let body = push_body(i);
                    let sig = signature(&body);
                    let delivery = format!("delivery-{i}");
                    let headers = [
                        json,
                        ("X-GitHub-Event", "push"),
                        ("X-GitHub-Delivery", delivery.as_str()),
                        ("X-Hub-Signature-256", sig.as_str()),
                    ];
                    match try_http(port, "POST", "/organization/acme/webhooks/github", &headers, &body) {
                        Ok((202, reply)) => {
                            let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
                            let id = reply["queued"][0]["deployment_id"].as_str().unwrap().to_owned();
                            acked.lock().unwrap().push((i, id));
                        }
                        Ok((status, reply)) => panic!("push {i}: {status} {reply}"),
                        Err(_) => {
                            // The server is gone (killed): this push was never acknowledged.
                            failed.fetch_add(1, Ordering::SeqCst);
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < KILL_AFTER {
        assert!(Instant::now() < deadline, "the load did not get going");
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill();
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = next.load(Ordering::SeqCst).min(PUSHES);
    eprintln!(
        "acknowledged {} pushes, {} failed when the server was killed, of {sent} started",
        acked.len(),
        failed.load(Ordering::SeqCst)
    );
    assert!(acked.len() < PUSHES, "the kill came after the load: nothing was proved");
    assert!(failed.load(Ordering::SeqCst) > 0, "no request was cut off by the kill");

    // Restart on the same database: nothing acknowledged is missing.
    let mut server = start(&db);
    let port = server.port;
    let logged = logged_deployments(port);
    let missing: Vec<_> = acked.iter().filter(|(_, id)| !logged.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // The queue table holds exactly the logged deployments, each once.
    let queue = queue_table(&db);
    let queued: BTreeSet<String> = queue.iter().cloned().collect();
    assert_eq!(queued.len(), queue.len(), "a message queued twice");
    assert_eq!(queued, logged);
    // At most the in-flight pushes (one per thread) were recorded without their 202.
    assert!(logged.len() <= acked.len() + THREADS, "{} logged", logged.len());
    eprintln!(
        "after the restart: {} deployments logged and queued ({} recorded without their 202)",
        logged.len(),
        logged.len() - acked.len()
    );

    // The provider redelivers every push: an acknowledged one is a duplicate, not a second
    // deployment; one never recorded queues now. So no push is lost across the crash, and
    // every acknowledged push has exactly one deployment.
    //
    // A push recorded but never answered is the subtle case: the service remembers the pushes
    // it queued, so its redelivery is ALREADY_QUEUED even after newer pushes to the service
    // were recorded — never a second, older deployment.
    let (i, _) = acked[0];
    let (status, reply) = deliver(port, i).unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("DUPLICATE_DELIVERY"), "{reply}");
    let acked_pushes: BTreeSet<usize> = acked.iter().map(|(i, _)| *i).collect();
    let mut redelivered = std::collections::BTreeMap::<String, usize>::new();
    for i in (0..sent).filter(|i| !acked_pushes.contains(i)) {
        let (status, reply) = deliver(port, i).unwrap();
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        let outcome = match status {
            202 => "queued now".to_owned(),
            200 => reply["ignored"]
                .as_str()
                .or(reply["skipped"][0]["reason"].as_str())
                .unwrap_or("?")
                .to_owned(),
            other => panic!("redelivery of {i}: {other} {reply}"),
        };
        *redelivered.entry(outcome).or_default() += 1;
    }
    eprintln!(
        "redelivered the {} unacknowledged pushes: {redelivered:?}",
        sent - acked.len()
    );
    let commits = logged_commits(port);
    for i in 0..sent {
        let after = format!("ad{i:038x}");
        let n = commits.values().filter(|c| **c == after).count();
        assert_eq!(n, 1, "push {i} has {n} deployments");
    }
    assert_eq!(commits.len(), sent);
    let queue = queue_table(&db);
    assert_eq!(queue.len(), commits.len());
    assert_eq!(
        queue.into_iter().collect::<BTreeSet<_>>(),
        commits.into_keys().collect()
    );
    server.kill();
}

/// A log that cannot be synced after a write committed (here removed under the server; a
/// failing disk's fsync is the same case): the write is neither acknowledged nor answered
/// "nothing was changed" (a 503 that a redelivery would contradict with DUPLICATE_DELIVERY).
/// The server stops without an answer, says why, and starts again on the same database.
#[test]
fn a_log_that_cannot_be_synced_stops_the_server_without_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("autodeploy.db");
    let mut server = start(&db);
    let auth = format!("Token {ADMIN}");
    let service = format!(
        r#"{{"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {{"provider": "GITHUB", "url": "{REPO}", "branch": "master"}}}}"#
    );
    let (status, body) = try_http(
        server.port,
        "PUT",
        "/organization/acme/services/api",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        service.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    server.set_webhook_secret(ADMIN, "github", SECRET);
    assert_eq!(deliver(server.port, 0).unwrap().0, 202);

    let mut log = db.as_os_str().to_owned();
    log.push("-wal");
    std::fs::remove_file(&log).unwrap();
    match deliver(server.port, 1) {
        Err(_) => {}
        Ok(answer) => panic!("answered though its write is not known to be on disk: {answer:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let stderr = server.stderr();
    assert!(
        stderr.contains("could not be synced to disk") && stderr.contains("stopping without answering"),
        "{stderr}"
    );

    // It starts again on what the disk holds (here without the removed log's writes).
    let server = start(&db);
    let (status, _) = try_http(
        server.port,
        "GET",
        "/organization/acme/services",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
}

/// A tmpfs of `size` mounted on `at` for the test's life (unmounted when dropped); `None` where
/// mounting is not allowed (it needs root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the disk holding `dir` with one file, until it refuses more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // What the last chunk left, byte by byte.
    while file.write_all(&[0]).is_ok() {}
    let _ = file.sync_all();
    filler
}

/// A full disk: the health check answers 503 (a one-row write may still fit in the log's
/// space, so the space left is read); pushes fill what the log holds, then are 503 and change
/// nothing; once space is freed, both work again without a restart.
#[test]
fn a_full_disk_fails_the_health_check_until_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_disk) = Tmpfs::mount(dir.path(), "8m") else {
        eprintln!("not run: mounting a tmpfs needs root");
        return;
    };
    let mut server = start(&dir.path().join("autodeploy.db"));
    let port = server.port;
    let auth = format!("Token {ADMIN}");
    let service = format!(
        r#"{{"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {{"provider": "GITHUB", "url": "{REPO}", "branch": "master"}}}}"#
    );
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let (status, body) = try_http(
        port,
        "PUT",
        "/organization/acme/services/api",
        &headers,
        service.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    server.set_webhook_secret(ADMIN, "github", SECRET);
    assert_eq!(deliver(port, 0).unwrap().0, 202);
    // Long enough for the checkpointer (each second) to copy the log back: the next write
    // then starts the log over, in space the file holds already, where a full disk still
    // takes one row.
    std::thread::sleep(Duration::from_millis(2500));

    let filler = fill(dir.path());
    let (status, body) = try_http(port, "GET", "/health", &[], b"").unwrap();
    assert_eq!(status, 503, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "UNAVAILABLE", "{body}");
    // Pushes take what space the log holds already, then are refused, each as a whole.
    let mut acked = 1;
    let refused = (1..1000)
        .find(|&i| match deliver(port, i).unwrap() {
            (202, _) => {
                acked += 1;
                false
            }
            (503, _) => true,
            (status, body) => panic!("push {i} on a full disk: {status} {body}"),
        })
        .expect("the full disk refused no push");

    std::fs::remove_file(filler).unwrap();
    let (status, body) = try_http(port, "GET", "/health", &[], b"").unwrap();
    assert_eq!(status, 200, "{body}");
    // The refused push was not remembered: its redelivery is processed.
    assert_eq!(deliver(port, refused).unwrap().0, 202);
    assert_eq!(logged_deployments(port).len(), acked + 1);
    assert!(server.terminate().success());
}
