//! The libvirt daemon's AppArmor profile and the hook's binary.
//!
//! libvirt runs its hooks inside the daemon's own profile (Debian's and
//! Ubuntu's `usr.sbin.libvirtd`: `/etc/libvirt/hooks/** rmix`), and that
//! profile lets the daemon execute programs only from `/bin`, `/sbin`,
//! `/usr/bin`, `/usr/sbin` (`PUx`) and libvirt's own directories. A bbvirt
//! anywhere else (`make install`'s default `/usr/local/bin`, `/opt`, a
//! build tree) is denied: the hook fails with exit status 126, and libvirt
//! used to fail every guest's start with it.
//!
//! Decided: bbvirt adds one rule for its binary to the profile's local
//! include, the place AppArmor keeps for an admin's additions
//! (`/etc/apparmor.d/local/usr.sbin.libvirtd`, and `usr.sbin.virtqemud`'s
//! where that profile exists), between two marker lines:
//!
//! ```text
//! # BEGIN bbvirt: bbvirt install writes these lines, bbvirt uninstall removes them
//! "/usr/local/bin/bbvirt" PUx,
//! # END bbvirt
//! ```
//!
//! `PUx` is what the profile gives `/usr/bin/*`, so a bbvirt anywhere runs
//! exactly as the packaged one does (its own profile if one is loaded,
//! else unconfined). Every other line of the file is the admin's and is
//! kept byte for byte. A binary in one of the allowed directories needs no
//! rule: an old block is then removed. `bbvirt install` (and `make install`
//! through `bbvirt install --apparmor-only`) writes the block and reloads
//! the profile when it is loaded (`apparmor_parser -r`), so the running
//! daemon takes it at once, no restart; `bbvirt uninstall` removes the
//! block when it names the running binary. Not chosen: running the binary
//! through a program the profile allows (`/usr/bin/env`, `timeout`), which
//! would step out of the daemon's confinement behind the admin's back.
//!
//! Pure functions here ([`plan`], [`with_block`], [`without_block`],
//! [`block_binaries`]); the reload is [`reload`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::plan::{Kind, Step};
use crate::note;

/// The daemons whose profiles run the hook: (profile name, profile file,
/// its local include), paths relative to the root.
pub const PROFILES: [(&str, &str, &str); 2] = [
    (
        "libvirtd",
        "etc/apparmor.d/usr.sbin.libvirtd",
        "etc/apparmor.d/local/usr.sbin.libvirtd",
    ),
    (
        "virtqemud",
        "etc/apparmor.d/usr.sbin.virtqemud",
        "etc/apparmor.d/local/usr.sbin.virtqemud",
    ),
];

/// The directories whose programs the daemons' profiles already let run.
pub const ALLOWED_DIRS: [&str; 4] = ["/bin", "/sbin", "/usr/bin", "/usr/sbin"];

/// The first line of bbvirt's block (a prefix: the line says more).
pub const BEGIN: &str = "# BEGIN bbvirt";
/// The last line of bbvirt's block.
pub const END: &str = "# END bbvirt";
const BEGIN_LINE: &str =
    "# BEGIN bbvirt: bbvirt install writes these lines, bbvirt uninstall removes them";

/// How long `apparmor_parser -r` may take (it compiles the whole profile:
/// seconds, more under emulation).
const PARSER_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the profiles already let the daemon run `binary`.
pub fn allowed_by_default(binary: &str) -> bool {
    Path::new(binary)
        .parent()
        .and_then(Path::to_str)
        .is_some_and(|dir| ALLOWED_DIRS.contains(&dir))
}

/// The block for `binary` (an absolute path of safe characters:
/// [`super::check_bindir`]), ending in a newline.
pub fn block(binary: &str) -> String {
    format!("{BEGIN_LINE}\n\"{binary}\" PUx,\n{END}\n")
}

/// The line range of bbvirt's block in `text` (first and last line,
/// inclusive), if there is a whole one.
fn block_range(lines: &[&str]) -> Option<(usize, usize)> {
    let begin = lines.iter().position(|l| l.starts_with(BEGIN))?;
    let end = lines[begin..].iter().position(|l| l.trim_end() == END)? + begin;
    Some((begin, end))
}

/// `text` without bbvirt's block (None when it has none).
pub fn without_block(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let (begin, end) = block_range(&lines)?;
    Some(
        lines[..begin]
            .iter()
            .chain(&lines[end + 1..])
            .copied()
            .collect(),
    )
}

/// `text` with `block` in place of bbvirt's block, or appended (after a
/// newline of its own when the text lacks one).
pub fn with_block(text: &str, block: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    match block_range(&lines) {
        Some((begin, end)) => {
            let mut out: String = lines[..begin].concat();
            out.push_str(block);
            out.push_str(&lines[end + 1..].concat());
            out
        }
        None if text.is_empty() || text.ends_with('\n') => format!("{text}{block}"),
        None => format!("{text}\n{block}"),
    }
}

/// The binaries bbvirt's block in `text` allows.
pub fn block_binaries(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let Some((begin, end)) = block_range(&lines) else {
        return Vec::new();
    };
    lines[begin + 1..end]
        .iter()
        .filter_map(|l| {
            let rule = l.trim().strip_suffix(',')?.trim();
            let (path, mode) = rule.rsplit_once(char::is_whitespace)?;
            mode.contains('x')
                .then(|| path.trim().trim_matches('"').to_string())
        })
        .collect()
}

/// The steps of `bbvirt install` for the binary `binary` under `root`: for
/// each daemon profile there, its local include with bbvirt's block (or
/// without it, for a binary the profile allows anyway).
pub fn plan(root: &Path, binary: &str) -> Vec<Step> {
    let wanted = (!allowed_by_default(binary)).then(|| block(binary));
    present_profiles(root)
        .map(|(_, local)| plan_one(local, wanted.as_deref()))
        .collect()
}

/// The steps of `bbvirt uninstall` for the binary `binary`: the block is
/// removed where it names that binary, and left where it names another
/// (that bbvirt's install put it there).
pub fn plan_uninstall(root: &Path, binary: &str) -> Vec<Step> {
    present_profiles(root)
        .map(|(_, local)| match read(&local) {
            Ok(Some(text)) if block_binaries(&text).iter().any(|b| b == binary) => {
                plan_one(local, None)
            }
            Ok(Some(text)) if without_block(&text).is_some() => Step::Keep {
                kind: Kind::AppArmor,
                path: local,
                reason: "its bbvirt lines allow another bbvirt binary".into(),
            },
            Ok(_) => Step::Absent {
                kind: Kind::AppArmor,
                path: local,
            },
            Err(e) => Step::Keep {
                kind: Kind::AppArmor,
                path: local,
                reason: format!("cannot read it: {e}"),
            },
        })
        .collect()
}

/// The profiles present under `root`: (profile file, local include).
fn present_profiles(root: &Path) -> impl Iterator<Item = (PathBuf, PathBuf)> + '_ {
    PROFILES.iter().filter_map(move |(_, profile, local)| {
        let profile = root.join(profile);
        profile.is_file().then(|| (profile, root.join(local)))
    })
}

/// A file's text, None when it does not exist.
fn read(path: &Path) -> io::Result<Option<String>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn plan_one(path: PathBuf, wanted: Option<&str>) -> Step {
    let kind = Kind::AppArmor;
    let existing = match read(&path) {
        Ok(t) => t,
        Err(e) => {
            return Step::Refuse {
                kind,
                path,
                reason: format!("cannot read it: {e}"),
            };
        }
    };
    match (existing, wanted) {
        (None, None) => Step::Absent { kind, path },
        (None, Some(block)) => Step::Install {
            kind,
            path,
            content: block.to_string(),
        },
        (Some(text), wanted) => {
            let new = match wanted {
                Some(block) => with_block(&text, block),
                None => without_block(&text).unwrap_or_else(|| text.clone()),
            };
            if new == text {
                Step::Unchanged { kind, path }
            } else {
                Step::Update {
                    kind,
                    path,
                    content: new,
                }
            }
        }
    }
}

/// Where the kernel lists the loaded profiles, `NAME (MODE)` a line.
pub const LOADED_PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

/// The mode (`enforce`, `complain`...) of the loaded profile `name`, from
/// the text of [`LOADED_PROFILES`].
pub fn loaded_mode(profiles: &str, name: &str) -> Option<String> {
    profiles.lines().find_map(|l| {
        let (n, mode) = l.rsplit_once(" (")?;
        (n == name).then(|| mode.trim_end_matches(')').to_string())
    })
}

/// Makes the running kernel load the changed profiles (only on `/`, only
/// the loaded ones: AppArmor loads the others with the rest at boot). A
/// failure is a warning with the command to run.
pub fn reload(changed: &[&Step], dry: bool) {
    let loaded = fs::read_to_string(LOADED_PROFILES).unwrap_or_default();
    for (name, profile, local) in PROFILES {
        if !changed.iter().any(|s| s.path().ends_with(local)) {
            continue;
        }
        let profile = Path::new("/").join(profile);
        if loaded_mode(&loaded, name).is_none() {
            note!(
                "the AppArmor profile {name} is not loaded: AppArmor reads the change when it \
                 loads {}",
                profile.display()
            );
            continue;
        }
        let Some(profile) = profile.to_str() else {
            continue;
        };
        super::run_reload(
            &["/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"],
            &["-r", profile],
            PARSER_TIMEOUT,
            &format!("reloaded the AppArmor profile {name}"),
            dry,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "# Site-specific additions and overrides for 'usr.sbin.libvirtd'\n";

    #[test]
    fn a_block_goes_in_once_and_out_again_leaving_the_admins_lines() {
        let b = block("/usr/local/bin/bbvirt");
        let with = with_block(LOCAL, &b);
        assert_eq!(with, format!("{LOCAL}{b}"));
        assert_eq!(with_block(&with, &b), with, "idempotent");
        assert_eq!(block_binaries(&with), ["/usr/local/bin/bbvirt"]);
        assert_eq!(without_block(&with).as_deref(), Some(LOCAL));
        assert_eq!(without_block(LOCAL), None);
        // another binary replaces it in place, the admin's lines around it kept
        let around = format!("{with}/srv/x rw,\n");
        let moved = with_block(&around, &block("/opt/bbvirt/bin/bbvirt"));
        assert_eq!(
            moved,
            format!("{LOCAL}{}/srv/x rw,\n", block("/opt/bbvirt/bin/bbvirt"))
        );
        assert_eq!(block_binaries(&moved), ["/opt/bbvirt/bin/bbvirt"]);
        // a file without a final newline keeps its last line whole
        assert_eq!(with_block("/a r,", &b), format!("/a r,\n{b}"));
        assert_eq!(with_block("", &b), b);
    }

    #[test]
    fn a_half_block_is_not_a_block() {
        let text = format!("{BEGIN_LINE}\n\"/x/bbvirt\" PUx,\n");
        assert_eq!(without_block(&text), None);
        assert!(block_binaries(&text).is_empty());
    }

    #[test]
    fn the_default_directories_need_no_rule() {
        for ok in ["/usr/bin/bbvirt", "/bin/bbvirt", "/usr/sbin/bbvirt"] {
            assert!(allowed_by_default(ok), "{ok}");
        }
        for denied in [
            "/usr/local/bin/bbvirt",
            "/opt/bbvirt/bin/bbvirt",
            "/usr/bin/x/bbvirt",
            "/root/.cargo/bin/bbvirt",
        ] {
            assert!(!allowed_by_default(denied), "{denied}");
        }
    }

    #[test]
    fn loaded_profiles_are_read_by_name() {
        let list = "virt-aa-helper (enforce)\nlibvirtd (enforce)\n\
                    libvirt-0b8a6b2c-1d0e-4a57-9a2b-6a5d3c1e2f40 (enforce)\nlsb_release (complain)\n";
        assert_eq!(loaded_mode(list, "libvirtd").as_deref(), Some("enforce"));
        assert_eq!(
            loaded_mode(list, "lsb_release").as_deref(),
            Some("complain")
        );
        assert_eq!(loaded_mode(list, "virtqemud"), None);
        assert_eq!(loaded_mode(list, "libvirt"), None);
    }

    #[test]
    fn plans_follow_the_profiles_present() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert!(plan(r, "/usr/local/bin/bbvirt").is_empty(), "no AppArmor");
        fs::create_dir_all(r.join("etc/apparmor.d/local")).unwrap();
        fs::write(r.join(PROFILES[0].1), "profile libvirtd {}\n").unwrap();
        fs::write(r.join(PROFILES[0].2), LOCAL).unwrap();
        let steps = plan(r, "/usr/local/bin/bbvirt");
        assert_eq!(steps.len(), 1, "libvirtd's only: {steps:?}");
        let Step::Update { content, path, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(path, &r.join(PROFILES[0].2));
        assert_eq!(
            content,
            &format!("{LOCAL}{}", block("/usr/local/bin/bbvirt"))
        );
        fs::write(path, content).unwrap();
        assert!(matches!(
            plan(r, "/usr/local/bin/bbvirt")[..],
            [Step::Unchanged { .. }]
        ));
        // uninstall: only for the binary the block names
        assert!(matches!(
            plan_uninstall(r, "/opt/x/bbvirt")[..],
            [Step::Keep { .. }]
        ));
        let steps = plan_uninstall(r, "/usr/local/bin/bbvirt");
        assert!(
            matches!(&steps[..], [Step::Update { content, .. }] if content == LOCAL),
            "{steps:?}"
        );
        // a packaged binary: the old block goes
        assert!(matches!(
            &plan(r, "/usr/bin/bbvirt")[..],
            [Step::Update { content, .. }] if content == LOCAL
        ));
        // virtqemud's profile too, its local file new
        fs::write(r.join(PROFILES[1].1), "profile virtqemud {}\n").unwrap();
        let steps = plan(r, "/opt/bbvirt/bin/bbvirt");
        assert!(
            matches!(&steps[1], Step::Install { path, content, .. }
                if path == &r.join(PROFILES[1].2) && content == &block("/opt/bbvirt/bin/bbvirt")),
            "{steps:?}"
        );
    }
}
