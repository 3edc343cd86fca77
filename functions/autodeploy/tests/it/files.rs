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
