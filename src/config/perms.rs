//! Before vm.conf is used at all: who could have written it.

use std::io::{self, Read};
use std::path::Path;

use super::ConfigError;

/// The permission rule, as a pure function of the file's owner uid and mode
/// and the effective uid we run as.  As root: the file must be owned by root.
/// Otherwise: by root or by the invoking user.  Never group/world-writable.
pub fn check_permissions(path: &Path, owner: u32, mode: u32, euid: u32) -> Result<(), ConfigError> {
    let insecure = |problem: String, fix: String| ConfigError::Insecure {
        path: path.to_path_buf(),
        problem,
        fix,
    };
    let quoted = crate::text::shell_quote(&path.to_string_lossy());
    if owner != 0 && (euid == 0 || owner != euid) {
        let problem = if euid == 0 {
            format!("is owned by uid {owner}, not root")
        } else {
            format!("is owned by uid {owner}, not root or you (uid {euid})")
        };
        return Err(insecure(problem, format!("chown root {quoted} (as root)")));
    }
    if mode & 0o022 != 0 {
        return Err(insecure(
            format!(
                "is writable by group or others (mode {:04o})",
                mode & 0o7777
            ),
            format!("chmod go-w {quoted}"),
        ));
    }
    Ok(())
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Regular file and [`check_permissions`] for the current effective uid.
pub(super) fn check_metadata(path: &Path, meta: &std::fs::Metadata) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    check_permissions(path, meta.uid(), meta.mode(), euid())
}

/// The file's bytes after the permission check; `None` if it does not exist.
pub(super) fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    // stat before open, so that a FIFO does not block us.
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    check_metadata(path, &meta)?;
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    // And again on the open file, in case it was replaced meanwhile.
    let meta = file.metadata().map_err(read_err)?;
    check_metadata(path, &meta)?;
    // Sized from that stat, read to the end through `Read`'s own loop
    // (`File`'s would stat the file and seek again first: udev's front
    // reads this file for every event).
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).map_or(0, |n| n + 1));
    io::Read::read_to_end(&mut (&mut file).take(u64::MAX), &mut bytes).map_err(read_err)?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;

    #[test]
    fn permission_rule() {
        let p = Path::new("/etc/bit-babbler/vm.conf");
        assert!(check_permissions(p, 0, 0o100644, 0).is_ok());
        assert!(check_permissions(p, 0, 0o100600, 1000).is_ok());
        assert!(check_permissions(p, 1000, 0o100644, 1000).is_ok());
        assert_eq!(
            check_permissions(p, 0, 0o100664, 0)
                .unwrap_err()
                .to_string(),
            "/etc/bit-babbler/vm.conf is writable by group or others (mode 0664): \
             run chmod go-w /etc/bit-babbler/vm.conf"
        );
        assert!(check_permissions(p, 0, 0o100646, 1000).is_err());
        assert_eq!(
            check_permissions(p, 1000, 0o100644, 0)
                .unwrap_err()
                .to_string(),
            "/etc/bit-babbler/vm.conf is owned by uid 1000, not root: \
             run chown root /etc/bit-babbler/vm.conf (as root)"
        );
        assert_eq!(
            check_permissions(Path::new("/tmp/my vm.conf"), 1001, 0o644, 1000)
                .unwrap_err()
                .to_string(),
            "/tmp/my vm.conf is owned by uid 1001, not root or you (uid 1000): \
             run chown root '/tmp/my vm.conf' (as root)"
        );
    }

    #[test]
    fn insecure_real_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("vm.conf");
        std::fs::write(&f, "DOMAIN_RNG_a=(A)\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(
            Config::load(&f)
                .expect("load")
                .expect("exists")
                .domains
                .len(),
            1
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let e = Config::load(&f).unwrap_err().to_string();
        assert!(e.contains("writable by group or others (mode 0666)"), "{e}");
        assert!(matches!(
            eval_with_bash(&f),
            Err(ConfigError::Insecure { .. })
        ));
        if euid() == 0 {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            std::os::unix::fs::chown(&f, Some(65534), None).expect("chown");
            let e = Config::load(&f).unwrap_err().to_string();
            assert!(e.contains("is owned by uid 65534, not root"), "{e}");
        }
    }
}
