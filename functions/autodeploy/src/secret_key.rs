//! The key that seals the secrets stored in the database: the operator's
//! (`AUTODEPLOY_SECRET_KEY`), or one the server creates beside the database on first start.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use autodeploy_core::sealed::SecretKey;

pub const SECRET_KEY_ENV: &str = "AUTODEPLOY_SECRET_KEY";

/// The key file of `database`: `<database>.key`, beside it.
pub fn key_file(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// The key sealing the secrets of `database`: `AUTODEPLOY_SECRET_KEY` when set (base64 or hex
/// of 32 bytes), else the key in [`key_file`], which is created owner-only with a new random
/// key when it does not exist. Errors name the variable or the file, never the key.
pub fn load_or_create_secret_key(database: &Path) -> Result<SecretKey, String> {
    key_from(std::env::var_os(SECRET_KEY_ENV), database)
}

fn key_from(variable: Option<OsString>, database: &Path) -> Result<SecretKey, String> {
    if let Some(value) = variable.filter(|v| !v.is_empty()) {
        let text = value
            .into_string()
            .map_err(|_| format!("{SECRET_KEY_ENV} is not valid text"))?;
        return SecretKey::parse(&text).map_err(|e| format!("{SECRET_KEY_ENV}: {e}"));
    }
    let path = key_file(database);
    match read(&path)? {
        Some(key) => Ok(key),
        None => create(&path),
    }
}

/// The key in `path`, if there is such a file.
fn read(path: &Path) -> Result<Option<SecretKey>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => SecretKey::parse(&text).map(Some).map_err(|e| {
            format!(
                "the key file {} does not hold a key ({e}); it must hold the key the database's secrets were sealed with",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the key file {}: {e}", path.display())),
    }
}

/// Write a new key to `path` whole or not at all: into a temporary file first, then linked
/// to its name, which fails if another process created it meanwhile (its key is then used).
fn create(path: &Path) -> Result<SecretKey, String> {
    let failed = |e: std::io::Error| format!("cannot create the key file {}: {e}", path.display());
    let text = SecretKey::generate_encoded().map_err(|e| format!("cannot create a secret key: {e}"))?;
    let key = SecretKey::parse(&text).map_err(|e| format!("cannot create a secret key: {e}"))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(format!("{text}\n").as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            // The new name itself is durable once its directory is.
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(failed)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path)?.ok_or_else(|| format!("the key file {} vanished while it was created", path.display()))
        }
        Err(e) => Err(failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_key_file_is_created_once_owner_only_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("autodeploy.db");
        let first = key_from(None, &database).unwrap();
        let file = key_file(&database);
        assert_eq!(file, dir.path().join("autodeploy.db.key"));
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        // Nothing else is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("autodeploy.db.key")]);
        // The next start reads the same key: what the first sealed, the second opens.
        let sealed = first.seal("a-webhook-secret").unwrap();
        assert_eq!(
            key_from(None, &database).unwrap().open(&sealed).unwrap(),
            "a-webhook-secret"
        );
        // The variable wins over the file, and creates none.
        let other = dir.path().join("other.db");
        let variable = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let from_variable = key_from(Some(variable.into()), &other).unwrap();
        assert!(from_variable.open(&sealed).is_err());
        assert!(!key_file(&other).exists());
    }

    #[test]
    fn a_bad_key_is_refused_without_being_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("autodeploy.db");
        let message = key_from(Some("not-a-key-at-all".into()), &database).unwrap_err();
        assert!(message.starts_with(SECRET_KEY_ENV), "{message}");
        assert!(message.contains("openssl rand -base64 32"), "{message}");
        assert!(!message.contains("not-a-key-at-all"), "{message}");
        std::fs::write(key_file(&database), "half-a-key\n").unwrap();
        let message = key_from(None, &database).unwrap_err();
        assert!(
            message.contains("autodeploy.db.key") && !message.contains("half-a-key"),
            "{message}"
        );
    }
}
