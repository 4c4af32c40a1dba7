//! Logging: stderr, and syslog (ident `bbvirt`, facility daemon) with
//! `--syslog` and in the hook; each message once in the journal.
//!
//! Where each message goes ([`sinks`]): syslog when asked for; stderr
//! always, except when syslog is on and stderr is itself the journal. Under
//! systemd a unit's stderr is a stream into the journal, and /dev/log is
//! the journal's too: `bbvirt sync --syslog` as bbvirt-sync.service runs it
//! would put each line there twice under one pid. systemd says so in
//! `JOURNAL_STREAM` (`DEVICE:INODE` of that stream, systemd.exec(5)); the
//! variable is inherited, so it counts only when fd 2 is still that stream
//! (fstat). Of the two, syslog stays: it carries the level as the entry's
//! priority, and its lines read the same wherever bbvirt runs (udev, the
//! hook, a unit, a terminal with `--syslog`). A terminal, udev (stderr is a
//! pipe to udevd) and libvirt's hook (its stderr is libvirt's) never match.
//!
//! What each level means:
//! - `error`: bbvirt could not do what it was asked; the exit status is non-zero.
//! - `warn`: something is wrong but bbvirt carried on (a serial listed for two
//!   guests, a device whose serial cannot be used, a stale entry replaced).
//! - `info`: a change bbvirt made to a guest (attached, detached). Shown at every
//!   verbosity: these are the lines an admin looks for in the journal.
//! - `note` (`-v`): why nothing was done, devices skipped, dry-run commands.
//! - `detail` (`-vv`): the hostdev XML sent to libvirt.
//! - `debug` (`-vvv`, `-vvvv`): how the domain, URI and device were chosen.

use std::ffi::CString;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Note,
    Detail,
    Debug,
}

impl Level {
    /// The lowest verbosity (`-v` count) at which this level is shown.
    fn min_verbosity(self) -> u8 {
        match self {
            Level::Error | Level::Warn | Level::Info => 0,
            Level::Note => 1,
            Level::Detail => 2,
            Level::Debug => 3,
        }
    }

    fn syslog_priority(self) -> libc::c_int {
        match self {
            Level::Error => libc::LOG_ERR,
            Level::Warn => libc::LOG_WARNING,
            Level::Info => libc::LOG_INFO,
            Level::Note | Level::Detail | Level::Debug => libc::LOG_DEBUG,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    verbosity: u8,
    sinks: Sinks,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Where each message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sinks {
    pub stderr: bool,
    pub syslog: bool,
}

/// Where messages go (see the module docs): `syslog` as asked for,
/// `journal_stream` the value of `JOURNAL_STREAM` if set, `stderr` the
/// (device, inode) of fd 2 if it is open.
pub fn sinks(syslog: bool, journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> Sinks {
    let stderr_is_journal = match (journal_stream.and_then(parse_journal_stream), stderr) {
        (Some(journal), Some(fd2)) => journal == fd2,
        _ => false,
    };
    Sinks {
        stderr: !(syslog && stderr_is_journal),
        syslog,
    }
}

/// `JOURNAL_STREAM`'s `DEVICE:INODE`, both decimal; None if malformed.
fn parse_journal_stream(s: &str) -> Option<(u64, u64)> {
    let (dev, ino) = s.split_once(':')?;
    let num = |t: &str| {
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    Some((num(dev)?, num(ino)?))
}

/// The (device, inode) of fd 2, or None if it is closed.
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Sets verbosity and syslog once, at start-up. Later calls are ignored.
pub fn init(verbosity: u8, syslog: bool) {
    if syslog {
        // The ident must live as long as the process: openlog keeps the pointer.
        static IDENT: &std::ffi::CStr = c"bbvirt";
        // SAFETY: IDENT is a static NUL-terminated string.
        unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }
    // fd 2 is looked at only when it matters: syslog on, under systemd.
    let journal_stream = std::env::var("JOURNAL_STREAM").ok().filter(|_| syslog);
    let fd2 = journal_stream.as_ref().and_then(|_| stderr_identity());
    let sinks = sinks(syslog, journal_stream.as_deref(), fd2);
    let _ = SETTINGS.set(Settings { verbosity, sinks });
}

/// The verbosity in force (0 before `init`).
pub fn verbosity() -> u8 {
    SETTINGS.get().map_or(0, |s| s.verbosity)
}

/// Logs one message at `level`.
pub fn log(level: Level, msg: &str) {
    let s = SETTINGS.get().copied().unwrap_or(Settings {
        verbosity: 0,
        sinks: Sinks {
            stderr: true,
            syslog: false,
        },
    });
    if s.verbosity < level.min_verbosity() {
        return;
    }
    // One message, one line: control characters from config values, domain
    // names or devices are shown escaped, so nothing can forge log lines.
    // (Detail messages are multi-line XML built from escaped values.)
    let escaped;
    let msg = if level != Level::Detail && msg.chars().any(char::is_control) {
        escaped = crate::text::escape_controls(msg);
        escaped.as_str()
    } else {
        msg
    };
    let prefix = match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        _ => "",
    };
    if s.sinks.stderr {
        eprintln!("bbvirt: {prefix}{msg}");
    }
    if s.sinks.syslog {
        // Interior NULs cannot reach syslog; replace them rather than drop the line.
        let line = CString::new(format!("{prefix}{msg}").replace('\0', "\\0"))
            .unwrap_or_else(|_| CString::from(c"(unprintable message)"));
        // SAFETY: both pointers are valid NUL-terminated strings; "%s" keeps
        // the message from being read as a format string.
        unsafe { libc::syslog(level.syslog_priority(), c"%s".as_ptr(), line.as_ptr()) };
    }
}

#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, &format!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, &format!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, &format!($($t)*)) } }
#[macro_export]
macro_rules! note { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Note, &format!($($t)*)) } }
#[macro_export]
macro_rules! detail { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Detail, &format!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Debug, &format!($($t)*)) } }

/// What bbvirt is doing right now, for the one line logged when a deadline
/// passes ("timed out after 20 s connecting to libvirt at qemu:///system").
static STEP: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Records the step about to start (also logged at `-vvvv`).
pub fn step(what: &str) {
    if verbosity() >= 4 {
        log(Level::Debug, what);
    }
    if let Ok(mut s) = STEP.lock() {
        s.clear();
        s.push_str(what);
    }
}

/// The last step recorded, or "starting".
pub fn current_step() -> String {
    match STEP.lock() {
        Ok(s) if !s.is_empty() => s.clone(),
        _ => "starting".to_string(),
    }
}

/// A dry-run line: what would be done, on stdout.
pub fn dry_run(line: &str) {
    println!("{line}");
}

/// An error and its causes on one line: "outer: inner: innermost".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: Sinks = Sinks {
        stderr: true,
        syslog: true,
    };

    #[test]
    fn stderr_that_is_the_journal_is_left_to_syslog() {
        // bbvirt-sync.service: --syslog, fd 2 the stream systemd named.
        let unit = sinks(true, Some("8:306630"), Some((8, 306630)));
        assert_eq!(
            unit,
            Sinks {
                stderr: false,
                ..ON
            }
        );
        // The same unit without --syslog: stderr is the one way in.
        assert_eq!(
            sinks(false, Some("8:306630"), Some((8, 306630))),
            Sinks {
                syslog: false,
                ..ON
            }
        );
    }

    #[test]
    fn stderr_elsewhere_is_kept() {
        // A terminal or a pipe (udev, libvirt's hook) that inherited the
        // variable from a unit: fd 2 is another file.
        for fd2 in [Some((8, 306631)), Some((9, 306630)), None] {
            assert_eq!(sinks(true, Some("8:306630"), fd2), ON, "{fd2:?}");
        }
        // No variable: no systemd stream (udev runs programs without it).
        assert_eq!(sinks(true, None, Some((8, 306630))), ON);
        assert_eq!(
            sinks(false, None, None),
            Sinks {
                syslog: false,
                ..ON
            }
        );
        // A value that is no DEVICE:INODE says nothing.
        for bad in [
            "",
            ":",
            "8:",
            ":306630",
            "8:306630:1",
            " 8:306630",
            "8:-1",
            "x:y",
            "+8:306630",
        ] {
            assert_eq!(sinks(true, Some(bad), Some((8, 306630))), ON, "{bad:?}");
        }
    }

    #[test]
    fn journal_stream_values() {
        assert_eq!(parse_journal_stream("8:306630"), Some((8, 306630)));
        assert_eq!(
            parse_journal_stream("18446744073709551615:0"),
            Some((u64::MAX, 0))
        );
        assert_eq!(parse_journal_stream("18446744073709551616:0"), None);
    }

    #[test]
    fn chain_joins_causes_once() {
        let io = std::io::Error::other("inner");
        let e = crate::sysfs::SysfsError::Io {
            path: "/sys/x".into(),
            source: io,
        };
        assert_eq!(chain(&e), "reading /sys/x: inner");
    }
}
