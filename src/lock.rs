//! One bbvirt at a time talks to libvirt on a host.
//!
//! udev runs one bbvirt per event, and a storm of events (four devices
//! plugged at once, the hook's change events, an admin's manual run) starts
//! several at the same moment. Each reads a guest's live XML and then changes
//! it; two of them interleaving could both see "not attached" and both attach,
//! or lose a detach. An exclusive `flock` on `/run/bbvirt/lock`, taken before
//! the first libvirt connection and held until the process exits (or, in a
//! run over many devices, let go between two changes:
//! [`crate::context::Connections::release_lock`]), serialises them. Waiting for it is bounded by the same deadline as everything else
//! (the process gives up when the deadline passes, see `main`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the lock lives unless `$BBVIRT_RUN_DIR` says otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/bbvirt";

/// `$BBVIRT_RUN_DIR`, or `/run/bbvirt`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("BBVIRT_RUN_DIR").map_or_else(|| PathBuf::from(DEFAULT_RUN_DIR), PathBuf::from)
}

/// Holds the lock until dropped (or the process exits).
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

/// Takes the host-wide lock in `dir`, waiting as long as it takes: the
/// caller's deadline bounds the wait.
pub fn acquire(dir: &Path) -> std::io::Result<HostLock> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)?;
    loop {
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(HostLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) && err.raw_os_error() != Some(libc::EINTR)
        {
            return Err(err);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        let t = std::thread::spawn(move || {
            let _second = acquire(&d).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "must wait"
        );
        drop(first);
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "gets it after release"
        );
        t.join().unwrap();
    }
}
