//! Whether libvirt's daemon can run the installed hook, found by running
//! it as the daemon would.
//!
//! Reading the hook, its mode and the binary it names (what the
//! installation checks do) cannot tell whether the daemon may run
//! them: Debian's and Ubuntu's AppArmor profile for libvirtd runs hooks in
//! its own profile and lets them execute programs from a few directories
//! only, and a policy, a `noexec` mount or a broken binary stop the hook
//! just as well. So `check` runs the hook itself: `HOOK bbvirt-check
//! bbvirt-probe begin -` ([`crate::hook::PROBE`]), with libvirt's minimal
//! environment and, when the daemon's profile is loaded, confined by that
//! profile (the kernel's `exec` attribute: the profile applies from the
//! hook's own exec on, as it does under the daemon). bbvirt answers the
//! probe with `bbvirt-probe ok`; any other outcome is an error that quotes
//! what the hook said.
//!
//! Only on the running system (`/` as the root), as root, and bounded
//! ([`PROBE_TIMEOUT`]). The profile is the daemon's that answers
//! `qemu:///system`: virtqemud's when its socket exists, else libvirtd's.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::Finding;
use crate::install::apparmor::{LOADED_PROFILES, PROFILES, loaded_mode};

/// How long the probe may take (the hook bounds its own run at 5 s).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The environment libvirt gives a hook (`virCommandAddEnvPassCommon`:
/// `LC_ALL=C` and a `PATH`).
const HOOK_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The daemon's AppArmor profile the probe runs under: (name, mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    pub profile: String,
    pub mode: String,
}

/// What the hook did when probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran; its exit status (None: killed), stdout and stderr.
    Ran {
        status: Option<i32>,
        stdout: String,
        stderr: String,
    },
    /// It could not be started, or did not end in time.
    Failed(String),
}

/// The profile of the daemon that serves `qemu:///system` (virtqemud when
/// `virtqemud_sock` exists, else libvirtd), if the kernel has it loaded
/// (`profiles`: the text of [`LOADED_PROFILES`]).
pub fn confinement(profiles: &str, virtqemud_sock: bool) -> Option<Confinement> {
    let name = if virtqemud_sock {
        PROFILES[1].0
    } else {
        PROFILES[0].0
    };
    loaded_mode(profiles, name).map(|mode| Confinement {
        profile: name.to_string(),
        mode,
    })
}

/// The finding for a probe of the hook `hook` (as shown) that runs
/// `binary`.
pub fn finding(
    hook: &str,
    binary: &str,
    under: Option<&Confinement>,
    outcome: &Outcome,
) -> Finding {
    let context = match under {
        Some(c) => format!(
            "under the daemon's AppArmor profile {} ({})",
            c.profile, c.mode
        ),
        None => "unconfined (no AppArmor profile of the daemon is loaded)".to_string(),
    };
    let (status, stdout, stderr) = match outcome {
        Outcome::Ran {
            status,
            stdout,
            stderr,
        } => (*status, stdout.as_str(), stderr.trim()),
        Outcome::Failed(why) => {
            return Finding::warning(
                format!("could not run libvirt hook {hook} {context} to see that it works: {why}"),
                "run bbvirt check as root",
            );
        }
    };
    if status == Some(0)
        && stdout
            .lines()
            .any(|l| l == format!("{} ok", crate::hook::PROBE))
    {
        return Finding::ok(format!("libvirt hook {hook} runs {binary} {context}"));
    }
    let said = match stderr.lines().last() {
        Some(line) if !line.is_empty() => line.to_string(),
        _ => match status {
            Some(n) => format!("exit status {n}, nothing said"),
            None => "killed, nothing said".to_string(),
        },
    };
    // A hook script installed before this one exec'd bbvirt: its failure
    // (a non-zero status here) fails the guest's start too.
    let consequence = if status == Some(0) {
        "guests start without bbvirt's devices"
    } else {
        "libvirt fails every guest's start with it"
    };
    let denied = stderr.contains("126") || stderr.contains("Permission denied");
    let fix = match under {
        Some(c) if denied => format!(
            "let the profile run it: bbvirt install --apparmor-only (as root, with {binary}: \
             it adds a rule to /etc/apparmor.d/local/usr.sbin.{}), or install bbvirt in \
             /usr/bin (make install PREFIX=/usr, or the package)",
            c.profile
        ),
        _ if denied => format!(
            "make {binary} executable for root, on a file system mounted without noexec, \
             and allowed by the host's security policy (SELinux: see bbvirt(1))"
        ),
        _ => format!("reinstall bbvirt (bbvirt install, or the package) so that {binary} runs"),
    };
    Finding::error(
        format!("libvirt hook {hook} cannot run {binary} {context} ({consequence}): {said}"),
        fix,
    )
}

/// Runs the hook at `hook` with the probe's arguments, under `under`'s
/// profile when given.
pub fn probe(hook: &Path, under: Option<&Confinement>) -> Outcome {
    let mut cmd = Command::new(hook);
    cmd.args(["bbvirt-check", crate::hook::PROBE, "begin", "-"])
        .env_clear()
        .env("PATH", HOOK_PATH_ENV)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .current_dir("/");
    if let Some(c) = under {
        let request = format!("exec {}", c.profile).into_bytes();
        // SAFETY: between fork and exec the closure only calls open, write
        // and close on buffers made before the fork (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || change_onexec(&request));
        }
    }
    match crate::child::run(&mut cmd, PROBE_TIMEOUT, 64 << 10) {
        Ok(done) => Outcome::Ran {
            status: done.status.code(),
            stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Asks AppArmor to confine the next exec by a profile: `request` is
/// `exec NAME`, written to the task's exec attribute (the AppArmor one
/// where the kernel stacks LSMs, else the shared one), as `aa-exec` does.
fn change_onexec(request: &[u8]) -> io::Result<()> {
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for path in [
        c"/proc/thread-self/attr/apparmor/exec",
        c"/proc/thread-self/attr/exec",
    ] {
        // SAFETY: a NUL-terminated path; the descriptor is closed below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            last = io::Error::last_os_error();
            continue;
        }
        // SAFETY: writes `request.len()` bytes from a live buffer.
        let n = unsafe { libc::write(fd, request.as_ptr().cast(), request.len()) };
        let err = io::Error::last_os_error();
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        if n == request.len() as isize {
            return Ok(());
        }
        last = err;
    }
    Err(last)
}

/// The probe's finding on the running system: the hook at `hook` (under
/// `/`), which runs `binary`.
pub fn check(hook: &Path, binary: &str) -> Finding {
    let profiles = std::fs::read_to_string(LOADED_PROFILES).unwrap_or_default();
    let under = confinement(&profiles, Path::new(crate::daemon::VIRTQEMUD_SOCK).exists());
    let outcome = probe(hook, under.as_ref());
    finding(
        &hook.display().to_string(),
        binary,
        under.as_ref(),
        &outcome,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Severity;

    const HOOK: &str = "/etc/libvirt/hooks/qemu.d/bbvirt";
    const BIN: &str = "/usr/local/bin/bbvirt";

    fn ran(status: i32, stdout: &str, stderr: &str) -> Outcome {
        Outcome::Ran {
            status: Some(status),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    fn libvirtd() -> Confinement {
        Confinement {
            profile: "libvirtd".into(),
            mode: "enforce".into(),
        }
    }

    #[test]
    fn the_daemons_profile_is_the_one_that_serves_the_uri() {
        let list = "libvirtd (enforce)\nvirtqemud (complain)\n";
        assert_eq!(confinement(list, false), Some(libvirtd()));
        assert_eq!(
            confinement(list, true).map(|c| c.mode),
            Some("complain".to_string())
        );
        assert_eq!(confinement("", false), None);
        assert_eq!(confinement("libvirtd (enforce)\n", true), None);
    }

    #[test]
    fn only_bbvirts_answer_is_ok() {
        let ok = finding(
            HOOK,
            BIN,
            Some(&libvirtd()),
            &ran(0, "bbvirt-probe ok\n", ""),
        );
        assert_eq!(ok.severity, Severity::Ok, "{ok}");
        assert!(
            ok.what.contains("AppArmor profile libvirtd (enforce)"),
            "{ok}"
        );
        // exit 0 but no answer: the new script covering for a failure
        let covered = finding(
            HOOK,
            BIN,
            Some(&libvirtd()),
            &ran(
                0,
                "",
                "bbvirt: hook: bbvirt-check bbvirt-probe: cannot run /usr/local/bin/bbvirt: exit status 126: not permitted to execute it\n",
            ),
        );
        assert_eq!(covered.severity, Severity::Error);
        assert!(covered.what.contains("AppArmor"), "{covered}");
        assert!(covered.what.contains("guests start without"), "{covered}");
        assert!(
            covered.what.ends_with("not permitted to execute it"),
            "{covered}"
        );
        assert!(
            covered.fix.contains("bbvirt install --apparmor-only"),
            "{covered}"
        );
        assert!(covered.fix.contains("local/usr.sbin.libvirtd"), "{covered}");
    }

    #[test]
    fn an_old_hook_that_fails_fails_every_start() {
        let f = finding(
            HOOK,
            BIN,
            Some(&libvirtd()),
            &ran(
                126,
                "",
                "/etc/libvirt/hooks/qemu.d/bbvirt: 13: exec: /usr/local/bin/bbvirt: Permission denied\n",
            ),
        );
        assert_eq!(f.severity, Severity::Error);
        assert!(f.what.contains("libvirt fails every guest's start"), "{f}");
        assert!(f.what.ends_with("Permission denied"), "{f}");
    }

    #[test]
    fn unconfined_failures_say_so_and_a_probe_that_cannot_run_is_a_warning() {
        let f = finding(
            HOOK,
            BIN,
            None,
            &ran(0, "", "bbvirt: hook: x: cannot run /x: it is missing\n"),
        );
        assert_eq!(f.severity, Severity::Error);
        assert!(f.what.contains("unconfined"), "{f}");
        assert!(f.fix.contains("reinstall"), "{f}");
        let w = finding(
            HOOK,
            BIN,
            None,
            &Outcome::Failed("no answer after 15 s".into()),
        );
        assert_eq!(w.severity, Severity::Warning);
        let silent = finding(HOOK, BIN, None, &ran(3, "", ""));
        assert!(
            silent.what.ends_with("exit status 3, nothing said"),
            "{silent}"
        );
    }
}
