//! `bbvirt install` and `bbvirt uninstall`: the admin's way to put the udev
//! rule, the libvirt qemu hook and an example vm.conf in place for the
//! running binary, and to take them away again.
//!
//! | file | mode | install | uninstall |
//! |------|------|---------|-----------|
//! | `/etc/udev/rules.d/60-bbvirt.rules` | 0644 | written, updated | removed |
//! | `/etc/libvirt/hooks/qemu.d/bbvirt` | 0755 | written, updated | removed |
//! | `/etc/bit-babbler/vm.conf` | 0644 | only when none exists | never |
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
//! After the rule changes, `udevadm control --reload` (only when the root is
//! `/`). libvirt looks for hooks only when it starts: when no qemu hook
//! existed before, bbvirt says to restart libvirtd (or virtqemud).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cli::Opts;
use crate::{error, note, warn};

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

/// The line that marks a file as written by `bbvirt install`.
pub const MARKER: &str = "# Installed by bbvirt install";

/// The full marker line written into the rule and the hook.
const MARKER_LINE: &str =
    "# Installed by bbvirt install: it updates this file, bbvirt uninstall removes it.";

/// Where `bbvirt install` puts the udev rule (relative to the root).
pub const RULE_PATH: &str = "etc/udev/rules.d/60-bbvirt.rules";
/// The rules directory written into the rule for `@UDEVRULESDIR@`.
pub const RULES_DIR: &str = "/etc/udev/rules.d";
/// Where the hook goes (relative to the root).
pub const HOOK_PATH: &str = "etc/libvirt/hooks/qemu.d/bbvirt";
/// Where the example config goes (relative to the root).
pub const CONFIG_PATH: &str = "etc/bit-babbler/vm.conf";

const RULE_TEMPLATE: &str = include_str!("../dist/udev/rules.d/60-bbvirt.rules");
const HOOK_TEMPLATE: &str = include_str!("../dist/libvirt/hooks/qemu.d/bbvirt");
const CONFIG_TEMPLATE: &str = include_str!("../dist/bit-babbler/vm.conf");

/// How long `udevadm control --reload` may take.
const UDEVADM_TIMEOUT: Duration = Duration::from_secs(10);

/// The files bbvirt installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The udev rule: marked, updated, removed.
    Rule,
    /// The libvirt qemu hook: marked, updated, removed.
    Hook,
    /// The example vm.conf: written only when none exists, never removed.
    Config,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Rule, Kind::Hook, Kind::Config];

    /// The path relative to the root.
    pub fn rel_path(self) -> &'static str {
        match self {
            Kind::Rule => RULE_PATH,
            Kind::Hook => HOOK_PATH,
            Kind::Config => CONFIG_PATH,
        }
    }

    pub fn mode(self) -> u32 {
        match self {
            Kind::Hook => 0o755,
            Kind::Rule | Kind::Config => 0o644,
        }
    }

    /// Whether bbvirt marks, updates and removes the file.
    fn managed(self) -> bool {
        !matches!(self, Kind::Config)
    }
}

/// One thing to do (or not) to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write a new file.
    Install {
        kind: Kind,
        path: PathBuf,
        content: String,
    },
    /// Rewrite a file bbvirt wrote, whose content or mode differs.
    Update {
        kind: Kind,
        path: PathBuf,
        content: String,
    },
    /// Already as it should be.
    Unchanged { kind: Kind, path: PathBuf },
    /// Left alone, with the reason (not an error).
    Keep {
        kind: Kind,
        path: PathBuf,
        reason: String,
    },
    /// Cannot be installed: a file bbvirt did not write is in the way.
    Refuse {
        kind: Kind,
        path: PathBuf,
        reason: String,
    },
    /// Remove a file bbvirt wrote.
    Remove { kind: Kind, path: PathBuf },
    /// Nothing there to remove.
    Absent { kind: Kind, path: PathBuf },
}

impl Step {
    pub fn path(&self) -> &Path {
        match self {
            Step::Install { path, .. }
            | Step::Update { path, .. }
            | Step::Unchanged { path, .. }
            | Step::Keep { path, .. }
            | Step::Refuse { path, .. }
            | Step::Remove { path, .. }
            | Step::Absent { path, .. } => path,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Step::Install { kind, .. }
            | Step::Update { kind, .. }
            | Step::Unchanged { kind, .. }
            | Step::Keep { kind, .. }
            | Step::Refuse { kind, .. }
            | Step::Remove { kind, .. }
            | Step::Absent { kind, .. } => *kind,
        }
    }

    /// Whether carrying the step out changes the file system.
    pub fn changes(&self) -> bool {
        matches!(
            self,
            Step::Install { .. } | Step::Update { .. } | Step::Remove { .. }
        )
    }

    /// The line printed for the step (`dry`: what would be done).
    pub fn line(&self, dry: bool) -> String {
        let p = self.path().display();
        match self {
            Step::Install { .. } if dry => format!("would install {p}"),
            Step::Install { .. } => format!("installed {p}"),
            Step::Update { .. } if dry => format!("would update {p}"),
            Step::Update { .. } => format!("updated {p}"),
            Step::Remove { .. } if dry => format!("would remove {p}"),
            Step::Remove { .. } => format!("removed {p}"),
            Step::Unchanged { .. } => format!("unchanged {p}"),
            Step::Absent { .. } => format!("absent {p}"),
            Step::Keep { reason, .. } => format!("kept {p} ({reason})"),
            Step::Refuse { reason, .. } => format!("refused {p}: {reason}"),
        }
    }
}

/// What `bbvirt install` would do under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Whether libvirt had a qemu hook to run before (`hooks/qemu` or an
    /// executable in `hooks/qemu.d`): if not, it must be restarted to run ours.
    pub hook_active_before: bool,
}

impl Plan {
    pub fn refusals(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Refuse { .. }))
    }

    /// Whether libvirt must be restarted to find the hook.
    pub fn needs_libvirt_restart(&self) -> bool {
        !self.hook_active_before
            && self.steps.iter().any(|s| {
                matches!(
                    s,
                    Step::Install {
                        kind: Kind::Hook,
                        ..
                    }
                )
            })
    }
}

/// Whether a file's text carries the marker (in its first lines: after the
/// `#!` line of a script, or at the top).
pub fn is_marked(text: &str) -> bool {
    text.lines().take(5).any(|l| l.starts_with(MARKER))
}

/// Puts the marker line in: after a `#!` line, else first.
pub fn with_marker(text: &str) -> String {
    if text.starts_with("#!") {
        let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
        format!("{first}\n{MARKER_LINE}\n{rest}")
    } else {
        format!("{MARKER_LINE}\n{text}")
    }
}

/// A dist template with its placeholders filled in.
pub fn render(template: &str, bindir: &str) -> String {
    template
        .replace("@BINDIR@", bindir)
        .replace("@UDEVRULESDIR@", RULES_DIR)
}

/// The content `bbvirt install` writes for a file, without the marker.
pub fn content(kind: Kind, bindir: &str) -> String {
    match kind {
        Kind::Rule => render(RULE_TEMPLATE, bindir),
        Kind::Hook => render(HOOK_TEMPLATE, bindir),
        Kind::Config => CONFIG_TEMPLATE.to_string(),
    }
}

/// Plans `bbvirt install` under `root` for a binary in `bindir`. Reads the
/// file system, changes nothing.
pub fn plan(root: &Path, bindir: &str) -> Plan {
    let steps = Kind::ALL
        .iter()
        .map(|&kind| plan_install_one(kind, &root.join(kind.rel_path()), bindir))
        .collect();
    Plan {
        steps,
        hook_active_before: hook_active(root),
    }
}

fn plan_install_one(kind: Kind, path: &Path, bindir: &str) -> Step {
    let path = path.to_path_buf();
    let plain = content(kind, bindir);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let content = if kind.managed() {
                with_marker(&plain)
            } else {
                plain
            };
            return Step::Install {
                kind,
                path,
                content,
            };
        }
        Err(e) => {
            return Step::Refuse {
                kind,
                path,
                reason: format!("cannot inspect it: {e}"),
            };
        }
    };
    if !kind.managed() {
        return Step::Keep {
            kind,
            path,
            reason: "it exists; bbvirt never overwrites a vm.conf".into(),
        };
    }
    if !meta.file_type().is_file() {
        let what = if meta.file_type().is_symlink() {
            "a symbolic link"
        } else if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Step::Refuse {
            kind,
            path,
            reason: format!("it is {what}, not written by bbvirt install; remove it first"),
        };
    }
    let existing = match fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            return Step::Refuse {
                kind,
                path,
                reason: format!("cannot read it: {e}"),
            };
        }
    };
    let mode_ok = meta.mode() & 0o7777 == kind.mode();
    if is_marked(&existing) {
        let wanted = with_marker(&plain);
        if existing == wanted && mode_ok {
            Step::Unchanged { kind, path }
        } else {
            Step::Update {
                kind,
                path,
                content: wanted,
            }
        }
    } else if existing == plain {
        Step::Keep {
            kind,
            path,
            reason: "not written by bbvirt install, but the same content".into(),
        }
    } else {
        Step::Refuse {
            kind,
            path,
            reason: format!(
                "it exists and was not written by bbvirt install (no \"{MARKER}\" line); \
                 move it away or remove it first"
            ),
        }
    }
}

/// Plans `bbvirt uninstall` under `root`. Reads the file system, changes nothing.
pub fn plan_uninstall(root: &Path) -> Vec<Step> {
    Kind::ALL
        .iter()
        .map(|&kind| plan_uninstall_one(kind, root.join(kind.rel_path())))
        .collect()
}

fn plan_uninstall_one(kind: Kind, path: PathBuf) -> Step {
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Step::Absent { kind, path },
        Err(e) => {
            return Step::Keep {
                kind,
                path,
                reason: format!("cannot inspect it: {e}"),
            };
        }
    };
    if !kind.managed() {
        return Step::Keep {
            kind,
            path,
            reason: "your configuration: bbvirt uninstall never removes it".into(),
        };
    }
    if !meta.file_type().is_file() {
        return Step::Keep {
            kind,
            path,
            reason: "not written by bbvirt install: not a regular file".into(),
        };
    }
    match fs::read(&path) {
        Ok(b) if is_marked(&String::from_utf8_lossy(&b)) => Step::Remove { kind, path },
        Ok(_) => Step::Keep {
            kind,
            path,
            reason: "not written by bbvirt install".into(),
        },
        Err(e) => Step::Keep {
            kind,
            path,
            reason: format!("cannot read it: {e}"),
        },
    }
}

/// Whether libvirt under `root` has a qemu hook to run: an executable
/// `hooks/qemu`, or an executable file in `hooks/qemu.d` (what libvirt
/// checks when it starts; it caches the answer until a restart or reload).
pub fn hook_active(root: &Path) -> bool {
    let hooks = root.join("etc/libvirt/hooks");
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if executable(&hooks.join("qemu")) {
        return true;
    }
    match fs::read_dir(hooks.join("qemu.d")) {
        Ok(entries) => entries.flatten().any(|e| executable(&e.path())),
        Err(_) => false,
    }
}

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

/// Installs under `root`.
pub fn install(root: &Path, opts: &Opts) -> Result<(), InstallError> {
    check_root(root)?;
    let bindir = running_bindir()?;
    let plan = plan(root, &bindir);
    let dry = opts.dry_run;
    let system_dir = ["/usr/", "/opt/"].iter().any(|p| bindir.starts_with(p)) || bindir == "/bin";
    if !system_dir && plan.steps.iter().any(|s| s.kind().managed() && s.changes()) {
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
    let (failed, rule_changed) = carry_out_all(&plan.steps, dry);
    warn_other_rules(root);
    if rule_changed {
        reload_udev(root, dry);
    }
    if plan.needs_libvirt_restart() {
        println!(
            "restart libvirtd (or virtqemud) so it finds the new hook: systemctl restart libvirtd"
        );
    }
    incomplete(failed)
}

/// Uninstalls under `root`.
pub fn uninstall(root: &Path, opts: &Opts) -> Result<(), InstallError> {
    check_root(root)?;
    let dry = opts.dry_run;
    let (failed, rule_changed) = carry_out_all(&plan_uninstall(root), dry);
    if rule_changed {
        reload_udev(root, dry);
    }
    incomplete(failed)
}

/// Carries out the steps (`dry`: only says what they would do), one line
/// each; a failure is logged and the rest go on. Returns how many failed,
/// and whether the rule changed.
fn carry_out_all(steps: &[Step], dry: bool) -> (usize, bool) {
    let mut failed = 0;
    let mut rule_changed = false;
    for step in steps {
        if !dry && let Err(e) = carry_out(step) {
            error!("{}: {e}", step.path().display());
            failed += 1;
            continue;
        }
        println!("{}", step.line(dry));
        rule_changed |= step.kind() == Kind::Rule && step.changes();
    }
    (failed, rule_changed)
}

fn incomplete(failed: usize) -> Result<(), InstallError> {
    match failed {
        0 => Ok(()),
        n => Err(InstallError::Incomplete(n)),
    }
}

/// Warns when the bit-babbler package's rule would run (its own bbvirt) too.
fn warn_other_rules(root: &Path) {
    let masked = root.join("etc/udev/rules.d/60-bit-babbler.rules");
    if fs::symlink_metadata(&masked).is_ok() {
        return;
    }
    for dir in ["usr/lib/udev/rules.d", "lib/udev/rules.d"] {
        let other = root.join(dir).join("60-bit-babbler.rules");
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
    let Some(udevadm) = ["/usr/bin/udevadm", "/bin/udevadm", "/sbin/udevadm"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        warn!("udevadm not found: reload the udev rules yourself (udevadm control --reload)");
        return;
    };
    if dry {
        println!("would run {} control --reload", udevadm.display());
        return;
    }
    let mut cmd = Command::new(udevadm);
    cmd.args(["control", "--reload"]).stdin(Stdio::null());
    match crate::child::run(&mut cmd, UDEVADM_TIMEOUT, 64 << 10) {
        Ok(done) if done.status.success() => println!("reloaded the udev rules"),
        Ok(done) => warn!(
            "{} control --reload: failed ({}: {}): reload the udev rules yourself",
            udevadm.display(),
            crate::child::describe_status(done.status),
            crate::child::stderr_summary(&done.stderr)
        ),
        Err(e) => warn!(
            "{} control --reload: {e}: reload the udev rules yourself",
            udevadm.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_goes_after_the_shebang_or_first() {
        let hook = with_marker(&content(Kind::Hook, "/usr/bin"));
        let mut lines = hook.lines();
        assert_eq!(lines.next(), Some("#!/bin/sh"));
        assert_eq!(lines.next(), Some(MARKER_LINE));
        assert!(is_marked(&hook));
        assert!(
            hook.ends_with("exec /usr/bin/bbvirt hook \"$@\"\n"),
            "{hook}"
        );
        let rule = with_marker(&content(Kind::Rule, "/usr/local/bin"));
        assert!(rule.starts_with(MARKER_LINE));
        assert!(is_marked(&rule));
        assert!(!rule.contains('@'), "{rule}");
        assert!(rule.contains("RUN+=\"/usr/local/bin/bbvirt attach "));
        assert!(rule.contains("as /etc/udev/rules.d/60-bbvirt.rules"));
    }

    #[test]
    fn hook_without_its_binary_lets_the_guest_start() {
        // Package removed, conffile kept: the hook must not fail the start.
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("bbvirt");
        let bindir = dir.path().join("gone");
        fs::write(
            &hook,
            with_marker(&content(Kind::Hook, bindir.to_str().unwrap())),
        )
        .unwrap();
        let st = Command::new("/bin/sh")
            .arg(&hook)
            .args(["guest1", "prepare", "begin", "-"])
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{st}");
    }

    #[test]
    fn dist_files_are_not_marked() {
        for kind in Kind::ALL {
            assert!(!is_marked(&content(kind, "/usr/bin")), "{kind:?}");
        }
        assert!(!is_marked("#!/bin/sh\n# Installed by bbvirt as x\n"));
    }

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

    #[test]
    fn plan_on_an_empty_root_installs_three_files() {
        let root = tempfile::tempdir().unwrap();
        let p = plan(root.path(), "/usr/bin");
        assert!(!p.hook_active_before);
        assert!(p.needs_libvirt_restart());
        let kinds: Vec<_> = p
            .steps
            .iter()
            .map(|s| match s {
                Step::Install { kind, .. } => *kind,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, Kind::ALL);
    }

    #[test]
    fn existing_hook_means_no_restart() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("etc/libvirt/hooks/qemu.d");
        fs::create_dir_all(&d).unwrap();
        let other = d.join("other");
        fs::write(&other, "#!/bin/sh\n").unwrap();
        assert!(!hook_active(root.path()), "not executable");
        fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(hook_active(root.path()));
        assert!(!plan(root.path(), "/usr/bin").needs_libvirt_restart());
    }
}
