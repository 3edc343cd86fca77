//! What the server asks of the operating system at start: owner-only files, and as many file
//! descriptors as it is allowed.

use std::io::ErrorKind;
use std::path::Path;

/// Descriptors kept out of the connection cap: standard streams, the runtime's own, the
/// listeners, the database and its journal files, the key file, outbound connections.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Every file the server creates from now on is readable and writable by its owner only
/// (the database and its `-wal` / `-shm` hold secrets).
pub fn owner_only_umask() {
    // SAFETY: umask only replaces the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Make each of `paths` that exists owner-only (0600) if it is not; the ones changed.
pub fn make_owner_only<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<Vec<&'a Path>, String> {
    use std::os::unix::fs::PermissionsExt;

    let mut changed = Vec::new();
    for path in paths {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => continue,
            Err(e) => return Err(format!("cannot read the permissions of {}: {e}", path.display())),
        };
        // Only the files the server keeps: never a directory or a device named by mistake.
        if metadata.is_file() && metadata.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot make {} readable by its owner only: {e}", path.display()))?;
            changed.push(path);
        }
    }
    Ok(changed)
}

/// Raise the soft limit on open files to the hard limit; the soft limit now in force
/// (`None`: unlimited, or unknown).
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // Refused where the hard limit is not a number the kernel takes (macOS'
            // "unlimited"): the soft limit stays what it was.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The connection cap: `requested`, lowered to leave [`RESERVED_DESCRIPTORS`] of the
/// `open_files` limit to everything else, and at least 1.
pub fn connection_cap(requested: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else {
        return requested;
    };
    let room = usize::try_from(open_files.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
    requested.min(room).max(1)
}

/// The threads that serve requests on a machine of `cores` cores: all but one, at least one.
/// Every write goes through the database's one writer thread, which limits throughput; a
/// request thread on each core slows it down (the threads take turns on the cores, and
/// handing requests from one to another costs more than they save).
pub fn request_threads(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_is_left_to_the_writer() {
        assert_eq!(request_threads(1), 1);
        assert_eq!(request_threads(2), 1);
        assert_eq!(request_threads(8), 7);
    }

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(1024, Some(1_048_576)), 1024);
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(256)), 192);
        assert_eq!(connection_cap(1024, Some(1024)), 960);
        assert_eq!(connection_cap(1024, Some(10)), 1);
    }
}
