//! The installed hook script (`dist/libvirt/hooks/qemu.d/bbvirt`, rendered
//! as `bbvirt install` writes it) run for real by `/bin/sh`: it passes on
//! bbvirt's output and its one refusal, and turns every other failure of
//! bbvirt (missing, not executable, denied, crashed, killed) into a log
//! line and exit 0, so that libvirt goes on. And `check`'s probe of it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bbvirt::check::Severity;
use bbvirt::check::hook_probe::{self, Outcome};
use bbvirt::install::{Kind, content};

/// A bin directory for the hook, the rendered hook, and a PATH whose
/// `logger` records its arguments in `logged`.
struct Scene {
    _dir: tempfile::TempDir,
    bindir: PathBuf,
    hook: PathBuf,
    path_env: String,
    logged: PathBuf,
}

fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let bindir = dir.path().join("bin");
    let fakes = dir.path().join("fakes");
    fs::create_dir_all(&bindir).unwrap();
    fs::create_dir_all(&fakes).unwrap();
    let hook = dir.path().join("bbvirt-hook");
    fs::write(&hook, content(Kind::Hook, bindir.to_str().unwrap())).unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let logged = dir.path().join("logged");
    script(
        &fakes.join("logger"),
        &format!(
            "printf '%s|' \"$@\" >> '{}'\necho >> '{}'\n",
            logged.display(),
            logged.display()
        ),
    );
    Scene {
        path_env: format!("{}:/usr/bin:/bin", fakes.display()),
        _dir: dir,
        bindir,
        hook,
        logged,
    }
}

fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

impl Scene {
    fn bbvirt(&self) -> PathBuf {
        self.bindir.join("bbvirt")
    }

    /// bbvirt is the built binary.
    fn real(&self) {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bbvirt"), self.bbvirt()).unwrap();
    }

    /// Runs the hook with `args`, `stdin` as the domain XML: (status,
    /// stdout, stderr).
    fn run(&self, args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
        use std::io::Write;
        let mut child = Command::new(&self.hook)
            .args(args)
            .env_clear()
            .env("PATH", &self.path_env)
            .env("BBVIRT_RUN_DIR", self.bindir.join("run"))
            .env("BBVIRT_SYSFS_ROOT", self.bindir.join("sys"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // a hook may exit without reading its stdin (as libvirt allows)
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn logged(&self) -> String {
        fs::read_to_string(&self.logged).unwrap_or_default()
    }

    /// The hook went on (exit 0, nothing printed) and logged `why`, with
    /// the guest, the operation and bbvirt's path, to syslog as "bbvirt".
    fn goes_on_logging(&self, why: &str) {
        let (code, out, err) = self.run(&["g1", "started", "begin", "-"], "<domain/>");
        assert_eq!((code, out.as_str()), (Some(0), ""), "stderr: {err}");
        let bin = self.bbvirt().display().to_string();
        let line = format!("hook: g1 started: cannot run {bin}: {why}");
        assert!(err.contains(&line), "stderr: {err}\nwanted: {line}");
        let logged = self.logged();
        assert!(
            logged.starts_with("-t|bbvirt|-p|daemon.err|--|"),
            "{logged}"
        );
        assert!(logged.contains(&line), "logged: {logged}\nwanted: {line}");
        assert!(
            logged.contains("libvirt goes on without bbvirt"),
            "{logged}"
        );
    }
}

#[test]
fn bbvirt_missing_is_logged_and_libvirt_goes_on() {
    scene().goes_on_logging("it is missing");
}

#[test]
fn bbvirt_not_executable_is_logged_and_libvirt_goes_on() {
    let s = scene();
    fs::copy(env!("CARGO_BIN_EXE_bbvirt"), s.bbvirt()).unwrap();
    fs::set_permissions(s.bbvirt(), fs::Permissions::from_mode(0o644)).unwrap();
    s.goes_on_logging("it is not an executable file");
    // a directory in its place likewise
    fs::remove_file(s.bbvirt()).unwrap();
    fs::create_dir(s.bbvirt()).unwrap();
    fs::remove_file(&s.logged).ok();
    s.goes_on_logging("it is not an executable file");
}

#[test]
fn bbvirt_crashing_prints_nothing_half_written() {
    let s = scene();
    // half an XML, then a crash: libvirt must get nothing (= unchanged)
    script(&s.bbvirt(), "printf '<domain><name>g1'\nkill -SEGV $$\n");
    let (code, out, err) = s.run(&["g1", "restore", "begin", "-"], "<domain/>");
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    assert!(
        err.contains("cannot run") && err.contains("killed by signal 11"),
        "{err}"
    );
    s.goes_on_logging("killed by signal 11");
}

#[test]
fn a_denied_exec_is_named_as_such() {
    // What the shell reports when the kernel refuses the exec (AppArmor,
    // SELinux, noexec): status 126. The lab shows the real denial.
    let s = scene();
    script(&s.bbvirt(), "exit 126\n");
    s.goes_on_logging("exit status 126: not permitted to execute it");
}

#[test]
fn other_failures_go_on_too() {
    let s = scene();
    script(&s.bbvirt(), "echo partial; exit 3\n");
    s.goes_on_logging("exit status 3");
}

#[test]
fn only_bbvirts_refusal_fails_libvirts_operation() {
    let s = scene();
    script(&s.bbvirt(), "echo 'bbvirt: refusing' >&2; exit 5\n");
    let (code, out, err) = s.run(&["g1", "prepare", "begin", "-"], "<domain/>");
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(err.contains("bbvirt: refusing"), "{err}");
    assert_eq!(
        s.logged(),
        "",
        "a refusal is bbvirt's own: it logged why itself"
    );
}

#[test]
fn bbvirts_output_reaches_libvirt_whole_when_it_succeeds() {
    let s = scene();
    script(
        &s.bbvirt(),
        "cat >/dev/null; printf '<domain>\\n  <name>g1</name>\\n</domain>\\n'\n",
    );
    let (code, out, _) = s.run(&["g1", "restore", "begin", "-"], "<domain/>");
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "<domain>\n  <name>g1</name>\n</domain>\n")
    );
    // nothing printed stays nothing (libvirt: unchanged)
    script(&s.bbvirt(), "exit 0\n");
    let (code, out, _) = s.run(&["g1", "restore", "begin", "-"], "<domain/>");
    assert_eq!((code, out.as_str()), (Some(0), ""));
}

#[test]
fn the_real_bbvirt_answers_the_probe_through_the_script() {
    let s = scene();
    s.real();
    let (code, out, err) = s.run(&["bbvirt-check", "bbvirt-probe", "begin", "-"], "");
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "bbvirt-probe ok\n"),
        "{err}"
    );
    assert_eq!(s.logged(), "");
}

#[test]
fn checks_probe_runs_the_hook_as_libvirt_would() {
    let s = scene();
    let bin = s.bbvirt().display().to_string();
    let hook = s.hook.display().to_string();
    // unconfined here (no AppArmor in the test): what a missing binary does
    let outcome = hook_probe::probe(&s.hook, None);
    let f = hook_probe::finding(&hook, &bin, None, &outcome);
    assert_eq!(f.severity, Severity::Error, "{f}");
    assert!(f.what.contains("it is missing"), "{f}");
    // the real one answers
    s.real();
    let outcome = hook_probe::probe(&s.hook, None);
    assert!(
        matches!(&outcome, Outcome::Ran { status: Some(0), stdout, .. } if stdout == "bbvirt-probe ok\n"),
        "{outcome:?}"
    );
    let f = hook_probe::finding(&hook, &bin, None, &outcome);
    assert_eq!(f.severity, Severity::Ok, "{f}");
    // a hook that hangs is cut off, a warning
    script(&s.hook, "sleep 60\n");
    let start = std::time::Instant::now();
    let outcome = hook_probe::probe(&s.hook, None);
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(50));
}
