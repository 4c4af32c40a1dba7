//! The follow-up process: starting it, detached, and telling whether one is
//! pending. The follow-up gets a guest restored, migrated in or reverted to
//! a snapshot its devices once libvirt is done with it; what that run does
//! is `src/actions/after_job.rs`' job, how and why it runs apart is this
//! module's.
//!
//! Why a process of its own: the libvirt hook runs while libvirt holds the
//! guest, and must never call libvirt (it would deadlock); udev's runs must
//! not wait either. And the guest is not ready when the hook runs: during a
//! restore or an incoming migration libvirt holds the guest's job (an attach
//! then waits for it, up to 30 s, and an incoming migration can take much
//! longer). So the hook starts `bbvirt sync GUEST --after-job --syslog` in
//! the background ([`Detached::start`]), and that run waits, without the
//! host lock, until libvirt has no job on the guest
//! ([`crate::libvirt::Connection::job_state`]), then removes the guest's
//! parked and stale entries and attaches what this host gives it
//! ([`crate::context::Context::follow_up`]). Bounded: it gives up after
//! [`WAIT`] (and its own deadline after that).
//!
//! How it is started: in a session of its own, stdin, stdout and stderr on
//! `/dev/null` (libvirt reads the hook's output until it closes: a child
//! holding it would hold libvirt). It inherits an exclusive `flock` on
//! `RUN_DIR/follow-up/<name in hex>`, taken by the hook before it starts
//! it and held until it exits: while it is held a follow-up is pending
//! ([`Detached::pending`]), so a second one is not started and the
//! `started` hook does not also re-announce the guest's devices to udev
//! (whose attach would wait for the job inside a udev worker).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a follow-up waits for libvirt to finish with the guest (a
/// restore of a large guest, a slow incoming migration) before it gives up.
pub const WAIT: Duration = Duration::from_secs(600);

/// Starting follow-ups and asking whether one is pending (a fake in tests).
pub trait FollowUps {
    /// Whether a follow-up for the guest `domain` (its libvirt name) is
    /// pending.
    fn pending(&self, domain: &str) -> bool;
    /// Starts one unless one is pending: Ok(true) started, Ok(false) one
    /// was pending already.
    fn start(&self, domain: &str) -> Result<bool, String>;
}

/// The real thing: `EXE [-C CONFIG] sync NAME --after-job --syslog`,
/// detached.
#[derive(Debug, Clone)]
pub struct Detached {
    /// Where the pending-locks live (`/run/bbvirt`, [`crate::lock::run_dir`]).
    pub run_dir: PathBuf,
    /// The bbvirt to run (this one).
    pub exe: PathBuf,
    /// `-C CONFIG` to pass on, when the hook was given one.
    pub config: Option<String>,
}

/// The lock file of a guest's follow-up: its name in hex (libvirt names
/// may hold any character but `/`; hex is safe as a file name whatever
/// they hold).
pub fn lock_path(run_dir: &Path, domain: &str) -> PathBuf {
    let hex: String = domain.bytes().map(|b| format!("{b:02x}")).collect();
    run_dir.join("follow-up").join(hex)
}

fn open_lock(run_dir: &Path, domain: &str) -> std::io::Result<File> {
    let path = lock_path(run_dir, domain);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Takes the lock without waiting: Ok(false) when someone holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

impl FollowUps for Detached {
    fn pending(&self, domain: &str) -> bool {
        // A lock we can take is one nobody holds (ours is released when
        // the file is dropped).
        open_lock(&self.run_dir, domain)
            .and_then(|f| try_lock(&f))
            .is_ok_and(|free| !free)
    }

    fn start(&self, domain: &str) -> Result<bool, String> {
        let file = open_lock(&self.run_dir, domain)
            .map_err(|e| format!("{}: {e}", lock_path(&self.run_dir, domain).display()))?;
        if !try_lock(&file).map_err(|e| format!("locking the follow-up of {domain:?}: {e}"))? {
            return Ok(false);
        }
        let mut cmd = Command::new(&self.exe);
        if let Some(c) = &self.config {
            cmd.arg("-C").arg(c);
        }
        cmd.arg("sync")
            .arg(OsString::from(domain))
            .args(["--after-job", "--syslog"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let fd = file.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec:
        // setsid, and fcntl clearing close-on-exec on the lock's descriptor
        // so that the child keeps holding the lock.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.exe.display()))?;
        // The child is reaped by whoever inherits it once the hook exits;
        // the lock is held by its copy of the descriptor.
        drop(child);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_are_safe_for_any_guest_name() {
        let dir = Path::new("/run/bbvirt");
        assert_eq!(
            lock_path(dir, "g1"),
            PathBuf::from("/run/bbvirt/follow-up/6731")
        );
        let odd = lock_path(dir, "../x y\n");
        assert_eq!(odd.parent(), Some(Path::new("/run/bbvirt/follow-up")));
        assert!(
            odd.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
    }

    #[test]
    fn a_started_follow_up_is_pending_until_it_exits_and_never_doubled() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for bbvirt: ignores its words, lives 2 s.
        let exe = dir.path().join("fake-bbvirt");
        std::fs::write(&exe, "#!/bin/sh\nsleep 2\n").unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let f = Detached {
            run_dir: dir.path().to_path_buf(),
            exe,
            config: None,
        };
        assert!(!f.pending("g1"));
        assert_eq!(f.start("g1"), Ok(true));
        assert!(f.pending("g1"), "the child holds the lock");
        assert_eq!(f.start("g1"), Ok(false), "one at a time per guest");
        assert!(!f.pending("g2"));
        let t = std::time::Instant::now();
        while f.pending("g1") {
            assert!(t.elapsed() < Duration::from_secs(10), "never released");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
