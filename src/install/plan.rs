//! What `bbvirt install` and `bbvirt uninstall` would do, file by file,
//! worked out from the file system without changing it ([`plan`],
//! [`plan_uninstall`]).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::paths::{CONFIG_PATH, HOOK_PATH, HOOKS_DIR, RULE_PATH, RULES_DIR};

/// The line that marks a file as written by `bbvirt install`.
pub const MARKER: &str = "# Installed by bbvirt install";

/// The full marker line written into the rule and the hook.
pub(super) const MARKER_LINE: &str =
    "# Installed by bbvirt install: it updates this file, bbvirt uninstall removes it.";

const RULE_TEMPLATE: &str = include_str!("../../dist/udev/rules.d/60-bbvirt.rules");
const HOOK_TEMPLATE: &str = include_str!("../../dist/libvirt/hooks/qemu.d/bbvirt");
const CONFIG_TEMPLATE: &str = include_str!("../../dist/bit-babbler/vm.conf");

/// The files bbvirt installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The udev rule: marked, updated, removed.
    Rule,
    /// The libvirt qemu hook: marked, updated, removed.
    Hook,
    /// The example vm.conf: written only when none exists, never removed.
    Config,
    /// bbvirt's lines in the daemon's AppArmor local include: a block in
    /// the admin's file, written, updated, removed ([`super::apparmor`]);
    /// not in [`Kind::ALL`], as its files depend on the profiles present.
    AppArmor,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Rule, Kind::Hook, Kind::Config];

    /// The path relative to the root.
    pub fn rel_path(self) -> &'static str {
        match self {
            Kind::Rule => RULE_PATH,
            Kind::Hook => HOOK_PATH,
            Kind::Config => CONFIG_PATH,
            Kind::AppArmor => super::apparmor::PROFILES[0].2,
        }
    }

    pub fn mode(self) -> u32 {
        match self {
            Kind::Hook => 0o755,
            Kind::Rule | Kind::Config | Kind::AppArmor => 0o644,
        }
    }

    /// Whether bbvirt marks, updates and removes the file.
    pub(super) fn managed(self) -> bool {
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

/// The udev rule's front ([`crate::event`]) for a bbvirt in `bindir`:
/// `bbvirt-event` next to it (a build directory), else in `../lib/bbvirt/`
/// (where `make install` and the package put it); None when neither is an
/// executable file: the rule then runs bbvirt itself, as before the front.
pub fn front_for(bindir: &str) -> Option<String> {
    let dir = Path::new(bindir);
    [
        Some(dir.join("bbvirt-event")),
        dir.parent().map(|p| p.join("lib/bbvirt/bbvirt-event")),
    ]
    .into_iter()
    .flatten()
    .find(|p| is_executable(p))
    .and_then(|p| p.to_str().map(str::to_string))
}

/// A dist template with its placeholders filled in: `@EVENT@` is the
/// front and a space, or nothing (`front_for`).
pub fn render(template: &str, bindir: &str) -> String {
    let event = front_for(bindir)
        .map(|f| format!("{f} "))
        .unwrap_or_default();
    template
        .replace("@BINDIR@", bindir)
        .replace("@EVENT@", &event)
        .replace("@UDEVRULESDIR@", RULES_DIR)
}

/// The content `bbvirt install` writes for a file, without the marker.
pub fn content(kind: Kind, bindir: &str) -> String {
    match kind {
        Kind::Rule => render(RULE_TEMPLATE, bindir),
        Kind::Hook => render(HOOK_TEMPLATE, bindir),
        Kind::Config => CONFIG_TEMPLATE.to_string(),
        Kind::AppArmor => super::apparmor::block(&format!("{bindir}/bbvirt")),
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
    plan_over(kind, path, &existing, mode_ok, plain)
}

/// The step for a regular file `existing` where a managed file goes.
fn plan_over(kind: Kind, path: PathBuf, existing: &str, mode_ok: bool, plain: String) -> Step {
    if is_marked(existing) {
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
    } else if *existing == plain {
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

/// A regular file with an execute bit (following links): what udev and
/// libvirt can run.
pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether libvirt under `root` has a qemu hook to run: an executable
/// `hooks/qemu`, or an executable file in `hooks/qemu.d` (what libvirt
/// checks when it starts; it caches the answer until a restart or reload).
pub fn hook_active(root: &Path) -> bool {
    let hooks = root.join(HOOKS_DIR);
    if is_executable(&hooks.join("qemu")) {
        return true;
    }
    match fs::read_dir(hooks.join("qemu.d")) {
        Ok(entries) => entries.flatten().any(|e| is_executable(&e.path())),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn marker_goes_after_the_shebang_or_first() {
        let hook = with_marker(&content(Kind::Hook, "/usr/bin"));
        let mut lines = hook.lines();
        assert_eq!(lines.next(), Some("#!/bin/sh"));
        assert_eq!(lines.next(), Some(MARKER_LINE));
        assert!(is_marked(&hook));
        assert!(hook.contains("\nbin=/usr/bin/bbvirt\n"), "{hook}");
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
