//! Logging: stderr always, syslog (ident `bbvirt`, facility daemon) with
//! `--syslog` and in the hook.
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
    syslog: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets verbosity and syslog once, at start-up. Later calls are ignored.
pub fn init(verbosity: u8, syslog: bool) {
    if syslog {
        // The ident must live as long as the process: openlog keeps the pointer.
        static IDENT: &std::ffi::CStr = c"bbvirt";
        // SAFETY: IDENT is a static NUL-terminated string.
        unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }
    let _ = SETTINGS.set(Settings { verbosity, syslog });
}

/// The verbosity in force (0 before `init`).
pub fn verbosity() -> u8 {
    SETTINGS.get().map_or(0, |s| s.verbosity)
}

/// Logs one message at `level`.
pub fn log(level: Level, msg: &str) {
    let s = SETTINGS.get().copied().unwrap_or(Settings {
        verbosity: 0,
        syslog: false,
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
    eprintln!("bbvirt: {prefix}{msg}");
    if s.syslog {
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
