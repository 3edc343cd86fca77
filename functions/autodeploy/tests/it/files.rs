//! What the server leaves on disk: the database, its `-wal` / `-shm` and the key that seals
//! its secrets are readable by their owner only, from the first start on and after a start on
//! files that were not; the key comes from the operator or is created once.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::{Launch, Server};

const ADMIN: &str = "files-admin-token-0123456789";
/// 32 bytes in base64.
const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

/// The database, its journal files and its key file.
fn files(database: &Path) -> [PathBuf; 4] {
    let with = |suffix: &str| {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [database.to_owned(), with("-wal"), with("-shm"), with(".key")]
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A write, so that the journal files hold something.
fn store_a_secret(server: &Server) {
    server.set_webhook_secret(ADMIN, "github", "files-webhook-secret-0123");
}

#[test]
fn the_database_its_journal_and_its_key_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("autodeploy.db");
    let mut server = Launch::new(ADMIN).database(&database).start();
    store_a_secret(&server);
    for file in files(&database) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let key = std::fs::read_to_string(&files(&database)[3]).unwrap();

    // A crash leaves the journal files; someone opens them all up.
    server.kill();
    for file in files(&database) {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = Launch::new(ADMIN).database(&database).start();
    for file in files(&database) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert!(server.stderr().contains("made readable by its owner only"));
    // The key was read, not replaced.
    assert_eq!(std::fs::read_to_string(&files(&database)[3]).unwrap(), key);
    store_a_secret(&server);
}

#[test]
fn the_secret_key_comes_from_the_operator_or_is_created_beside_the_database() {
    // Given: no key file.
    let server = Launch::new(ADMIN).env("AUTODEPLOY_SECRET_KEY", Some(KEY)).start();
    store_a_secret(&server);
    let [database, .., key_file] = files(&server.database);
    assert!(database.exists() && !key_file.exists());
    drop(server);

    // Created: 32 bytes, written as the variable takes them.
    let server = Launch::new(ADMIN).start();
    let key_file = &files(&server.database)[3];
    let created = std::fs::read_to_string(key_file).unwrap();
    assert_eq!(created.trim_end().len(), 44, "{created}");
    assert_ne!(created.trim_end(), KEY);
    drop(server);

    // Not a key: refused, without repeating it, before the database is made.
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("autodeploy.db");
    let out = Launch::new(ADMIN)
        .database(&database)
        .env("AUTODEPLOY_SECRET_KEY", Some("my-secret-passphrase"))
        .run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AUTODEPLOY_SECRET_KEY: a secret key must be 32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("my-secret-passphrase"), "{stderr}");
    assert!(!database.exists());
}

/// The secrets kept in the database are sealed: neither the database nor its journal holds
/// one in the clear, they are read back with the key, and another key (or none) is refused at
/// start-up rather than failing every delivery later.
#[test]
fn secrets_are_sealed_at_rest_and_only_their_key_opens_them() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("autodeploy.db");
    let secret = "files-webhook-secret-0123";
    let mut server = Launch::new(ADMIN)
        .database(&database)
        .env("AUTODEPLOY_SECRET_KEY", Some(KEY))
        .start();
    store_a_secret(&server);
    server.kill();
    for file in &files(&database)[..3] {
        if let Ok(bytes) = std::fs::read(file) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(secret),
                "{} holds the secret in the clear",
                file.display()
            );
        }
    }
    // The right key opens it: a delivery signed with the secret is believed.
    let server = Launch::new(ADMIN)
        .database(&database)
        .env("AUTODEPLOY_SECRET_KEY", Some(KEY))
        .start();
    let body = br#"{"zen": "sealed"}"#;
    let signature = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let (status, answer) = crate::harness::http(
        server.port,
        "POST",
        "/organization/acme/webhooks/github",
        &[
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "ping"),
            ("X-Hub-Signature-256", &signature),
        ],
        body,
    );
    assert_eq!(status, 200, "{answer}");
    drop(server);
    // Another key is refused, and says so without repeating either key.
    let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let out = Launch::new(ADMIN)
        .database(&database)
        .env("AUTODEPLOY_SECRET_KEY", Some(other))
        .run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not open the secrets"), "{stderr}");
    assert!(!stderr.contains(other) && !stderr.contains(KEY), "{stderr}");
    // No key at all (a database restored without its key file): the missing file is named,
    // and the key made for it is not left behind.
    let out = Launch::new(ADMIN).database(&database).run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let key_file = files(&database)[3].clone();
    assert!(
        stderr.contains(&format!("there was no key file {}", key_file.display())),
        "{stderr}"
    );
    assert!(!key_file.exists());
}
