//! `bbvirt install` and `bbvirt uninstall`: the admin's way to put the udev
//! rule, the libvirt qemu hook and an example vm.conf in place for the
//! running binary, and to take them away again.
//!
//! | file | mode | install | uninstall |
//! |------|------|---------|-----------|
//! | `/etc/udev/rules.d/60-bbvirt.rules` | 0644 | written, updated | removed |
//! | `/etc/libvirt/hooks/qemu.d/bbvirt` | 0755 | written, updated | removed |
//! | `/etc/bit-babbler/vm.conf` | 0644 | only when none exists | never |
//! | `/etc/apparmor.d/local/usr.sbin.libvirtd` (and `usr.sbin.virtqemud`) | 0644 | bbvirt's lines added, updated | bbvirt's lines removed |
//!
//! The rule goes to `/etc/udev/rules.d`, the admin's directory, not to
//! `/usr/lib/udev/rules.d`, which belongs to packages (the bbvirt package and
//! `make install PREFIX=/usr` put it there). A rule of the same name in
//! `/etc` takes precedence, so the two never both run.
//!
//! The files come from `dist/`, built into the binary, with `@BINDIR@`
//! replaced by the directory of the running binary and `@UDEVRULESDIR@` by
//! the rules directory. The rule and the hook get a [`MARKER`] line: only a
//! file with that line is ever updated or removed. A file without it is
//! refused (install exits 1 and changes nothing), unless its content is
//! exactly what bbvirt would write, e.g. the hook the bbvirt package installs,
//! which is then kept as it is. vm.conf is never overwritten nor removed.
//!
//! The AppArmor local include gets a block of bbvirt's lines in the
//! admin's file, only where the daemon's profile exists and only for a
//! binary outside the directories the profile allows ([`apparmor`]; with
//! `--apparmor-only`, that alone: `make install` runs it).
//!
//! After the rule changes, `udevadm control --reload`, and after the
//! AppArmor lines change, `apparmor_parser -r` of the loaded profile (only
//! when the root is `/`). libvirt looks for hooks only when it starts: when no qemu hook
//! existed before, bbvirt says to restart libvirtd (or virtqemud).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cli::Opts;
use crate::{error, note, warn};

pub mod apparmor;
pub mod paths;
mod plan;

pub use plan::{
    Kind, MARKER, Plan, Step, content, hook_active, is_executable, is_marked, plan, plan_uninstall,
    render, with_marker,
};

use paths::{ADMIN_RULE_DIR, ORIGINAL_RULE_NAME, PACKAGE_RULE_DIRS};

/// Why `bbvirt install` or `bbvirt uninstall` did not (fully) succeed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("--root {}: not a directory", .0.display())]
    RootNotADirectory(PathBuf),
    #[error("--root {}: {source}", .path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot find the running binary: {0}")]
    NoBinary(#[source] io::Error),
    #[error("{}: unusable path", .0.display())]
    UnusablePath(PathBuf),
    #[error(
        "{0}: the binary's directory must be an absolute path of letters, digits \
         and / . _ + - only (udev and sh read it): install bbvirt elsewhere first"
    )]
    UnsafeBindir(String),
    #[error(
        "the running binary is {}, but the rule and the hook run {dir}/bbvirt: \
         run it as bbvirt", .exe.display()
    )]
    NotNamedBbvirt { exe: PathBuf, dir: String },
    /// Files bbvirt did not write are in the way; nothing was changed.
    #[error("nothing was changed")]
    Refused { refusals: Vec<(PathBuf, String)> },
    /// Some files could not be written or removed (each was logged).
    #[error("{} file(s) could not be changed", .0)]
    Incomplete(usize),
}

impl InstallError {
    /// The error lines to log (the refusals, then "nothing was changed").
    pub fn messages(&self) -> Vec<String> {
        match self {
            InstallError::Refused { refusals } => refusals
                .iter()
                .map(|(path, reason)| format!("refusing to overwrite {}: {reason}", path.display()))
                .chain([self.to_string()])
                .collect(),
            // Each failure was logged as it happened.
            InstallError::Incomplete(_) => Vec::new(),
            _ => vec![crate::log::chain(self)],
        }
    }
}

/// How long `udevadm control --reload` may take.
const UDEVADM_TIMEOUT: Duration = Duration::from_secs(10);

/// The directory of the running binary, checked to be usable on a udev
/// `RUN` line and in the hook's shell script.
pub fn running_bindir() -> Result<String, InstallError> {
    let exe = std::env::current_exe().map_err(InstallError::NoBinary)?;
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let dir = exe
        .parent()
        .and_then(|d| d.to_str())
        .ok_or_else(|| InstallError::UnusablePath(exe.clone()))?;
    check_bindir(dir)?;
    if name != "bbvirt" {
        return Err(InstallError::NotNamedBbvirt {
            dir: dir.to_string(),
            exe,
        });
    }
    Ok(dir.to_string())
}

/// A binary directory must be absolute and made of characters that mean
/// nothing to udev or sh.
pub fn check_bindir(dir: &str) -> Result<(), InstallError> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._+-".contains(c);
    if !dir.starts_with('/') || !dir.chars().all(safe) {
        return Err(InstallError::UnsafeBindir(dir.to_string()));
    }
    Ok(())
}

/// Writes `content` to `path` with `mode`, atomically (a temporary file in
/// the same directory, renamed over), creating missing directories.
fn write_file(path: &Path, content: &str, mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.bbvirt-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn carry_out(step: &Step) -> io::Result<()> {
    match step {
        Step::Install {
            kind,
            path,
            content,
        }
        | Step::Update {
            kind,
            path,
            content,
        } => write_file(path, content, kind.mode()),
        Step::Remove { path, .. } => fs::remove_file(path),
        _ => Ok(()),
    }
}

fn is_system_root(root: &Path) -> bool {
    fs::canonicalize(root).is_ok_and(|r| r == Path::new("/"))
}

fn check_root(root: &Path) -> Result<(), InstallError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(InstallError::RootNotADirectory(root.to_path_buf())),
        Err(source) => Err(InstallError::Root {
            path: root.to_path_buf(),
            source,
        }),
    }
}

/// Installs under `root` (`apparmor_only`: only the AppArmor rule, what
/// `make install` asks for).
pub fn install(root: &Path, apparmor_only: bool, opts: &Opts) -> Result<(), InstallError> {
    check_root(root)?;
    let bindir = running_bindir()?;
    // --apparmor-only: no rule, hook or vm.conf to plan (nor a hook whose
    // absence would ask for a restart)
    let mut plan = if apparmor_only {
        Plan {
            steps: Vec::new(),
            hook_active_before: true,
        }
    } else {
        plan(root, &bindir)
    };
    plan.steps
        .extend(apparmor::plan(root, &format!("{bindir}/bbvirt")));
    let dry = opts.dry_run;
    let system_dir = ["/usr/", "/opt/"].iter().any(|p| bindir.starts_with(p)) || bindir == "/bin";
    if !system_dir
        && plan
            .steps
            .iter()
            .any(|s| matches!(s.kind(), Kind::Rule | Kind::Hook) && s.changes())
    {
        warn!(
            "the rule and the hook will run {bindir}/bbvirt: keep it there, or install \
             bbvirt in /usr/local/bin (make install) and run its install"
        );
    }
    let refusals: Vec<(PathBuf, String)> = plan
        .refusals()
        .filter_map(|s| match s {
            Step::Refuse { path, reason, .. } => Some((path.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    if !refusals.is_empty() {
        return Err(InstallError::Refused { refusals });
    }
    let failed = carry_out_all(&plan.steps, root, dry);
    if !apparmor_only {
        warn_other_rules(root);
    }
    if plan.needs_libvirt_restart() {
        println!(
            "restart libvirtd (or virtqemud) so it finds the new hook: systemctl restart libvirtd"
        );
    }
    incomplete(failed)
}

/// Uninstalls under `root` (`apparmor_only`: only the AppArmor rule).
pub fn uninstall(root: &Path, apparmor_only: bool, opts: &Opts) -> Result<(), InstallError> {
    check_root(root)?;
    let dry = opts.dry_run;
    let mut steps = if apparmor_only {
        Vec::new()
    } else {
        plan_uninstall(root)
    };
    // The rule for this binary only: another bbvirt's install may own it.
    match running_bindir() {
        Ok(bindir) => steps.extend(apparmor::plan_uninstall(root, &format!("{bindir}/bbvirt"))),
        Err(e) => warn!("AppArmor rule left as it is: {}", crate::log::chain(&e)),
    }
    incomplete(carry_out_all(&steps, root, dry))
}

/// Carries out the steps (`dry`: only says what they would do), one line
/// each; a failure is logged and the rest go on. Then udev and AppArmor
/// reload what changed (on the running system only). Returns how many
/// failed.
fn carry_out_all(steps: &[Step], root: &Path, dry: bool) -> usize {
    let mut failed = 0;
    let mut changed: Vec<&Step> = Vec::new();
    for step in steps {
        if !dry && let Err(e) = carry_out(step) {
            error!("{}: {e}", step.path().display());
            failed += 1;
            continue;
        }
        println!("{}", step.line(dry));
        if step.changes() {
            changed.push(step);
        }
    }
    if changed.iter().any(|s| s.kind() == Kind::Rule) {
        reload_udev(root, dry);
    }
    let profiles: Vec<&Step> = changed
        .into_iter()
        .filter(|s| s.kind() == Kind::AppArmor)
        .collect();
    if !profiles.is_empty() {
        if is_system_root(root) {
            apparmor::reload(&profiles, dry);
        } else {
            note!("not reloading AppArmor: --root is not /");
        }
    }
    failed
}

fn incomplete(failed: usize) -> Result<(), InstallError> {
    match failed {
        0 => Ok(()),
        n => Err(InstallError::Incomplete(n)),
    }
}

/// Warns when the bit-babbler package's rule would run (its own bbvirt) too.
fn warn_other_rules(root: &Path) {
    let masked = root.join(ADMIN_RULE_DIR).join(ORIGINAL_RULE_NAME);
    if fs::symlink_metadata(&masked).is_ok() {
        return;
    }
    for dir in PACKAGE_RULE_DIRS {
        let other = root.join(dir).join(ORIGINAL_RULE_NAME);
        if other.is_file() {
            warn!(
                "{} (the bit-babbler package's rule) also passes BitBabblers to guests: \
                 mask it with: ln -s /dev/null {}",
                other.display(),
                masked.display()
            );
            return;
        }
    }
}

/// `udevadm control --reload`, only on the running system; a failure is a
/// warning (udevd also notices changed rules by itself).
fn reload_udev(root: &Path, dry: bool) {
    if !is_system_root(root) {
        note!("not reloading udev: --root is not /");
        return;
    }
    run_reload(
        &["/usr/bin/udevadm", "/bin/udevadm", "/sbin/udevadm"],
        &["control", "--reload"],
        UDEVADM_TIMEOUT,
        "reloaded the udev rules",
        dry,
    );
}

/// Runs the first of `programs` that exists with `args`, bounded by
/// `limit`: prints `done` when it succeeds; a failure (or no program) is a
/// warning with the command to run by hand. `dry`: only says what it would
/// run. The one way install and uninstall make udev and AppArmor reload.
pub(super) fn run_reload(programs: &[&str], args: &[&str], limit: Duration, done: &str, dry: bool) {
    let shown = |program: &str| format!("{program} {}", args.join(" "));
    let Some(program) = programs.iter().find(|p| Path::new(p).is_file()) else {
        warn!(
            "{} not found: run `{}` yourself",
            programs[0],
            shown(programs[0])
        );
        return;
    };
    let shown = shown(program);
    if dry {
        println!("would run {shown}");
        return;
    }
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    match crate::child::run(&mut cmd, limit, 64 << 10) {
        Ok(finished) if finished.status.success() => println!("{done}"),
        Ok(finished) => warn!(
            "{shown}: failed ({}: {}): run it yourself",
            crate::child::describe_status(finished.status),
            crate::child::stderr_summary(&finished.stderr)
        ),
        Err(e) => warn!("{shown}: {e}: run it yourself"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindirs() {
        for ok in ["/usr/bin", "/usr/local/bin", "/opt/bb-virt_1.0+x/bin"] {
            assert!(check_bindir(ok).is_ok(), "{ok}");
        }
        for bad in [
            "usr/bin",
            "/home/a b/bin",
            "/x$y",
            "/x%k",
            "/x\"",
            "/@BINDIR@",
            "/a;b",
        ] {
            assert!(check_bindir(bad).is_err(), "{bad}");
        }
    }
}
