//! `bbvirt install` and `bbvirt uninstall` end to end, always under
//! `--root <tempdir>` (never on the running system).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{bbvirt, expect_exit};
use bbvirt::exit;
use bbvirt::install::MARKER;

const RULE: &str = "etc/udev/rules.d/60-bbvirt.rules";
const HOOK: &str = "etc/libvirt/hooks/qemu.d/bbvirt";
const CONF: &str = "etc/bit-babbler/vm.conf";

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let root = self.dir.path().to_str().unwrap();
        let mut all = args.to_vec();
        all.extend_from_slice(&["--root", root]);
        bbvirt(self.dir.path(), &all)
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap()
    }

    fn mode(&self, rel: &str) -> u32 {
        fs::metadata(self.path(rel)).unwrap().permissions().mode() & 0o7777
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// Every file under the root, with its content and mode.
    fn snapshot(&self) -> Vec<(PathBuf, String, u32)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, String, u32)>) {
            let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                let p = e.path();
                let m = fs::symlink_metadata(&p).unwrap();
                let mode = m.permissions().mode();
                if m.is_dir() {
                    out.push((p.clone(), String::new(), mode));
                    walk(&p, out);
                } else {
                    let text = fs::read(&p)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    out.push((p, text, mode));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

fn bindir() -> String {
    Path::new(env!("CARGO_BIN_EXE_bbvirt"))
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn text_has_placeholder(text: &str) -> bool {
    text.contains("@EVENT@") || text.contains("@BINDIR@")
}

#[test]
fn installs_three_files_with_modes_and_the_binary_path() {
    let r = Root::new();
    let (out, _) = expect_exit(&r.run(&["install"]), exit::OK);
    for rel in [RULE, HOOK, CONF] {
        assert!(
            out.contains(&format!("installed {}", r.path(rel).display())),
            "{out}"
        );
    }
    assert!(
        out.contains("systemctl restart libvirtd"),
        "new hook: {out}"
    );
    assert_eq!(r.mode(RULE), 0o644);
    assert_eq!(r.mode(HOOK), 0o755);
    assert_eq!(r.mode(CONF), 0o644);
    let exe = env!("CARGO_BIN_EXE_bbvirt");
    let rule = r.read(RULE);
    let hook = r.read(HOOK);
    for text in [&rule, &hook] {
        assert!(!text.contains("@BINDIR@"), "{text}");
        assert!(!text.contains("@UDEVRULESDIR@"), "{text}");
        assert!(text.lines().any(|l| l.starts_with(MARKER)), "{text}");
    }
    // The front built next to the binary runs it (bbvirt::event).
    let front = env!("CARGO_BIN_EXE_bbvirt-event");
    assert!(!text_has_placeholder(&rule), "{rule}");
    assert!(
        rule.contains(&format!(
            "RUN+=\"{front} {exe} attach $env{{BUSNUM}}:$env{{DEVNUM}} --syslog\""
        )),
        "{rule}"
    );
    assert!(
        rule.contains(&format!("RUN+=\"{front} {exe} detach ")),
        "{rule}"
    );
    assert!(
        rule.contains("# Installed by bbvirt as /etc/udev/rules.d/60-bbvirt.rules;"),
        "{rule}"
    );
    assert!(hook.starts_with("#!/bin/sh\n"), "{hook}");
    assert!(
        hook.contains(&format!("\nbin={}/bbvirt\n", bindir())),
        "{hook}"
    );
    assert_eq!(
        r.read(CONF),
        include_str!("../../dist/bit-babbler/vm.conf"),
        "vm.conf is the example, unmarked"
    );
}

#[test]
fn second_run_is_unchanged() {
    let r = Root::new();
    expect_exit(&r.run(&["install"]), exit::OK);
    let before = r.snapshot();
    let (out, _) = expect_exit(&r.run(&["install"]), exit::OK);
    assert!(
        out.contains(&format!("unchanged {}", r.path(RULE).display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("unchanged {}", r.path(HOOK).display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("kept {}", r.path(CONF).display())),
        "{out}"
    );
    assert!(!out.contains("restart"), "the hook was there: {out}");
    assert_eq!(r.snapshot(), before);
}

#[test]
fn marked_file_is_updated_in_place() {
    let r = Root::new();
    expect_exit(&r.run(&["install"]), exit::OK);
    r.write(
        HOOK,
        &format!("#!/bin/sh\n{MARKER}\nexec /old/bbvirt hook \"$@\"\n"),
    );
    fs::set_permissions(r.path(HOOK), fs::Permissions::from_mode(0o700)).unwrap();
    let (out, _) = expect_exit(&r.run(&["install"]), exit::OK);
    assert!(
        out.contains(&format!("updated {}", r.path(HOOK).display())),
        "{out}"
    );
    assert!(r.read(HOOK).contains(&bindir()));
    assert_eq!(r.mode(HOOK), 0o755);
    assert!(!out.contains("restart"), "a hook existed: {out}");
}

#[test]
fn foreign_files_are_refused_and_untouched() {
    for target in [RULE, HOOK] {
        let r = Root::new();
        r.write(target, "# mine\n");
        let before = r.snapshot();
        let (out, err) = expect_exit(&r.run(&["install"]), exit::FAILED);
        let shown = r.path(target).display().to_string();
        assert!(
            err.contains(&format!("refusing to overwrite {shown}")),
            "{err}"
        );
        assert!(err.contains("not written by bbvirt install"), "{err}");
        assert!(out.is_empty(), "nothing done: {out}");
        assert_eq!(r.snapshot(), before, "nothing changed");
        // Uninstall leaves it too.
        let (out, _) = expect_exit(&r.run(&["uninstall"]), exit::OK);
        assert!(out.contains(&format!("kept {shown}")), "{out}");
        assert_eq!(r.read(target), "# mine\n");
    }
}

#[test]
fn symlink_in_the_way_is_refused() {
    let r = Root::new();
    fs::create_dir_all(r.path(RULE).parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/null", r.path(RULE)).unwrap();
    let (_, err) = expect_exit(&r.run(&["install"]), exit::FAILED);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(fs::read_link(r.path(RULE)).unwrap(), Path::new("/dev/null"));
}

#[test]
fn existing_vm_conf_is_kept() {
    let r = Root::new();
    r.write(CONF, "DOMAIN_RNG_g=( KWIF4Q )\n");
    fs::set_permissions(r.path(CONF), fs::Permissions::from_mode(0o600)).unwrap();
    let (out, _) = expect_exit(&r.run(&["install"]), exit::OK);
    assert!(
        out.contains(&format!("kept {}", r.path(CONF).display())),
        "{out}"
    );
    assert_eq!(r.read(CONF), "DOMAIN_RNG_g=( KWIF4Q )\n");
    assert_eq!(r.mode(CONF), 0o600);
}

#[test]
fn uninstall_removes_only_marked_files() {
    let r = Root::new();
    expect_exit(&r.run(&["install"]), exit::OK);
    let other_hook = "etc/libvirt/hooks/qemu.d/other";
    r.write(other_hook, "#!/bin/sh\n");
    let (out, _) = expect_exit(&r.run(&["uninstall"]), exit::OK);
    for rel in [RULE, HOOK] {
        assert!(
            out.contains(&format!("removed {}", r.path(rel).display())),
            "{out}"
        );
        assert!(!r.path(rel).exists(), "{rel}");
    }
    assert!(
        out.contains(&format!("kept {}", r.path(CONF).display())),
        "{out}"
    );
    assert!(r.path(CONF).exists());
    assert!(r.path(other_hook).exists());
    // Again: nothing left to remove.
    let (out, _) = expect_exit(&r.run(&["uninstall"]), exit::OK);
    assert!(
        out.contains(&format!("absent {}", r.path(RULE).display())),
        "{out}"
    );
}

#[test]
fn dry_run_changes_nothing() {
    let r = Root::new();
    let (out, _) = expect_exit(&r.run(&["install", "--dry-run"]), exit::OK);
    assert!(
        out.contains(&format!("would install {}", r.path(RULE).display())),
        "{out}"
    );
    assert!(r.snapshot().is_empty(), "{:?}", r.snapshot());
    expect_exit(&r.run(&["install"]), exit::OK);
    let before = r.snapshot();
    let (out, _) = expect_exit(&r.run(&["-n", "uninstall"]), exit::OK);
    assert!(
        out.contains(&format!("would remove {}", r.path(HOOK).display())),
        "{out}"
    );
    assert_eq!(r.snapshot(), before);
}

#[test]
fn missing_root_is_an_error() {
    let r = Root::new();
    let gone = r.path("nope");
    let out = bbvirt(r.dir.path(), &["install", "--root", gone.to_str().unwrap()]);
    let (_, err) = expect_exit(&out, exit::FAILED);
    assert!(err.contains("--root"), "{err}");
}

#[test]
fn installed_hook_is_executable_and_runs_bbvirt_hook() {
    let r = Root::new();
    expect_exit(&r.run(&["install"]), exit::OK);
    // Run it as libvirt would (by path, through its #! line). Without
    // arguments, `bbvirt hook` says what it expected, and exits 0 as always.
    let out = Command::new(r.path(HOOK))
        .env("BBVIRT_SYSFS_ROOT", r.dir.path())
        .output()
        .expect("running the installed hook");
    let (_, err) = expect_exit(&out, exit::OK);
    assert!(
        err.contains("hook: expected DOMAIN OPERATION SUBOP EXTRA"),
        "{err}"
    );
    let out = Command::new(r.path(HOOK))
        .args(["guest", "prepare", "begin", "-"])
        .env("BBVIRT_SYSFS_ROOT", r.dir.path())
        .output()
        .unwrap();
    expect_exit(&out, exit::OK);
}

#[test]
fn identical_foreign_hook_is_kept_not_refused() {
    // What the bbvirt package (or make install) puts there, for this binary.
    let r = Root::new();
    let dist =
        include_str!("../../dist/libvirt/hooks/qemu.d/bbvirt").replace("@BINDIR@", &bindir());
    r.write(HOOK, &dist);
    fs::set_permissions(r.path(HOOK), fs::Permissions::from_mode(0o755)).unwrap();
    let (out, _) = expect_exit(&r.run(&["install"]), exit::OK);
    assert!(
        out.contains(&format!("kept {} (", r.path(HOOK).display())),
        "{out}"
    );
    assert!(!out.contains("restart"), "{out}");
    assert_eq!(r.read(HOOK), dist);
    expect_exit(&r.run(&["uninstall"]), exit::OK);
    assert_eq!(r.read(HOOK), dist, "uninstall keeps it");
}

const AA_PROFILE: &str = "etc/apparmor.d/usr.sbin.libvirtd";
const AA_LOCAL: &str = "etc/apparmor.d/local/usr.sbin.libvirtd";
const AA_ADMIN: &str =
    "# Site-specific additions and overrides for 'usr.sbin.libvirtd'\n/srv/images/** r,\n";

/// The daemon's AppArmor profile is there: install adds a rule for this
/// binary (in target/, outside the profile's directories) to the local
/// include, keeping the admin's lines; uninstall takes exactly it out.
#[test]
fn apparmor_gets_a_rule_for_this_binary_and_loses_it_again() {
    let r = Root::new();
    r.write(
        AA_PROFILE,
        "profile libvirtd /usr/sbin/libvirtd {\n  include if exists <local/usr.sbin.libvirtd>\n}\n",
    );
    r.write(AA_LOCAL, AA_ADMIN);
    let out = r.run(&["install"]);
    let (stdout, stderr) = expect_exit(&out, 0);
    let exe = format!("{}/bbvirt", bindir());
    assert_eq!(
        r.read(AA_LOCAL),
        format!("{AA_ADMIN}{}", bbvirt::install::apparmor::block(&exe)),
        "{stdout}{stderr}"
    );
    assert!(r.read(AA_LOCAL).contains(&format!("\n\"{exe}\" PUx,\n")));
    assert!(
        stdout.contains(&format!("updated {}", r.path(AA_LOCAL).display())),
        "{stdout}"
    );
    // again: nothing changes
    let before = r.snapshot();
    expect_exit(&r.run(&["install"]), 0);
    assert_eq!(r.snapshot(), before);
    // uninstall: the admin's file as it was, the rest removed as before
    expect_exit(&r.run(&["uninstall"]), 0);
    assert_eq!(r.read(AA_LOCAL), AA_ADMIN);
    assert!(!r.path(HOOK).exists());
}

/// `--apparmor-only` (what `make install` runs) touches nothing else, and
/// creates the local include when the profile has none yet.
#[test]
fn apparmor_only_writes_the_rule_and_nothing_else() {
    let r = Root::new();
    r.write(AA_PROFILE, "profile libvirtd {}\n");
    let out = r.run(&["install", "--apparmor-only"]);
    expect_exit(&out, 0);
    let exe = format!("{}/bbvirt", bindir());
    assert_eq!(r.read(AA_LOCAL), bbvirt::install::apparmor::block(&exe));
    assert_eq!(r.mode(AA_LOCAL), 0o644);
    for rel in [RULE, HOOK, CONF] {
        assert!(!r.path(rel).exists(), "{rel}");
    }
    // --dry-run says what it would do and does nothing
    r.write(AA_LOCAL, AA_ADMIN);
    let out = r.run(&["uninstall", "--apparmor-only", "--dry-run"]);
    let (stdout, _) = expect_exit(&out, 0);
    assert!(
        stdout.contains("unchanged") || stdout.contains("kept") || stdout.contains("absent"),
        "{stdout}"
    );
    assert_eq!(r.read(AA_LOCAL), AA_ADMIN);
    // another bbvirt's rule is not this one's to remove
    let other = format!(
        "{AA_ADMIN}{}",
        bbvirt::install::apparmor::block("/opt/other/bin/bbvirt")
    );
    r.write(AA_LOCAL, &other);
    let (stdout, _) = expect_exit(&r.run(&["uninstall", "--apparmor-only"]), 0);
    assert!(stdout.contains("allow another bbvirt binary"), "{stdout}");
    assert_eq!(r.read(AA_LOCAL), other);
    // install replaces it with this binary's
    expect_exit(&r.run(&["install", "--apparmor-only"]), 0);
    assert_eq!(
        r.read(AA_LOCAL),
        format!("{AA_ADMIN}{}", bbvirt::install::apparmor::block(&exe))
    );
}
