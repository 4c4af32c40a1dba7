//! Checking the installation under a root: the udev rule, the qemu hook,
//! and the original package's rule (paths from [`crate::install::paths`]).

use std::path::{Path, PathBuf};

use crate::install::paths::{
    HOOK_PATH, ORIGINAL_RULE_DIVERTED, ORIGINAL_RULE_NAME, RULE_DIRS, RULE_NAME,
};

use super::Finding;

/// Checks, under `root`, the udev rule, the qemu hook and the original
/// package's rule; `bbvirt_path` is this binary, which the rule and the hook
/// must run.
pub fn check_installation(root: &Path, bbvirt_path: &Path) -> Vec<Finding> {
    installation_findings(root, Some(bbvirt_path))
}

pub(super) fn installation_findings(root: &Path, bbvirt: Option<&Path>) -> Vec<Finding> {
    let mut found = check_rule(root, bbvirt);
    found.extend(check_hook(root, bbvirt));
    found.push(check_original_rule(root));
    found
}

/// `root` joined with an absolute path (`/x` under root is `root/x`).
fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// The copies of rule `name` under `root`, highest precedence first, as
/// (path as seen on the system, path under root). The same file seen
/// through a symlinked directory (`/lib` -> `/usr/lib`) counts once.
fn rule_copies(root: &Path, name: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for dir in RULE_DIRS {
        let shown = format!("/{dir}/{name}");
        let real = under(root, &shown);
        // symlink_metadata: a dangling symlink (or one to /dev/null) is there too.
        if std::fs::symlink_metadata(&real).is_err() {
            continue;
        }
        let dir_canon =
            std::fs::canonicalize(under(root, dir)).unwrap_or_else(|_| under(root, dir));
        let key = dir_canon.join(name);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.push((shown, real));
    }
    out
}

/// udev ignores a rule that is an empty file or a symlink to /dev/null.
fn is_masked(path: &Path) -> bool {
    std::fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null"))
        || std::fs::canonicalize(path).is_ok_and(|p| p == Path::new("/dev/null"))
        || std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// Whether `referenced` (an absolute path as seen on the system under
/// `root`) is the binary at `bbvirt`.
fn is_this_binary(root: &Path, referenced: &str, bbvirt: &Path) -> bool {
    if Path::new(referenced) == bbvirt {
        return true;
    }
    match (
        std::fs::canonicalize(under(root, referenced)),
        std::fs::canonicalize(bbvirt),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether `prog` is bbvirt's udev front (`bbvirt-event PROGRAM WORDS...`,
/// see [`crate::event`]).
fn is_front(prog: &str) -> bool {
    Path::new(prog)
        .file_name()
        .is_some_and(|n| n == "bbvirt-event")
}

/// The programs of the `RUN` assignments of a udev rules file: the first
/// word of each, and for bbvirt's front (`bbvirt-event PROGRAM ...`) its
/// PROGRAM after it.
pub fn rule_run_programs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with('#') {
            continue;
        }
        let mut from = 0;
        while let Some(pos) = code[from..].find("RUN") {
            let start = from + pos;
            from = start + 3;
            let before_ok = code[..start]
                .chars()
                .next_back()
                .is_none_or(|c| c == ',' || c.is_whitespace());
            if !before_ok {
                continue;
            }
            let mut rest = &code[start + 3..];
            if rest.starts_with('{') {
                match rest.find('}') {
                    Some(close) => rest = &rest[close + 1..],
                    None => continue,
                }
            }
            let rest = rest.trim_start();
            let rest = rest
                .strip_prefix("+=")
                .or_else(|| rest.strip_prefix(":="))
                .or_else(|| rest.strip_prefix('=').filter(|r| !r.starts_with('=')));
            let Some(value) = rest.and_then(|r| r.trim_start().strip_prefix('"')) else {
                continue;
            };
            let value = value.split('"').next().unwrap_or("");
            let mut words = value.split_whitespace();
            if let Some(prog) = words.next() {
                out.push(prog.to_string());
                if is_front(prog)
                    && let Some(then) = words.next()
                {
                    out.push(then.to_string());
                }
            }
        }
    }
    out
}

/// The bbvirt paths a hook script runs (absolute words ending in `/bbvirt`,
/// or assigned as a variable's value, outside comments).
pub fn hook_bbvirt_paths(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("");
        for word in code.split_whitespace() {
            // `bin=/usr/bin/bbvirt`: the value of an assignment
            let word = word.split_once('=').map_or(word, |(_, value)| value);
            let word = word.trim_matches(|c| c == '"' || c == '\'' || c == ';');
            if word.contains("/bbvirt") && is_bbvirt_path(word) && !out.iter().any(|w| w == word) {
                out.push(word.to_string());
            }
        }
    }
    out
}

fn is_bbvirt_path(p: &str) -> bool {
    (p.starts_with('/') || p.starts_with('@'))
        && Path::new(p).file_name().is_some_and(|n| n == "bbvirt")
}

/// The finding for a file that runs `referenced` where `bbvirt` is wanted.
fn other_binary(what: &str, referenced: &str, bbvirt: &Path) -> Finding {
    if referenced.contains('@') {
        return Finding::error(
            format!("{what} runs {referenced}: @BINDIR@ was never substituted"),
            "install it with `bbvirt install` (or `make install`)",
        );
    }
    Finding::error(
        format!(
            "{what} runs {referenced}, not this bbvirt ({})",
            bbvirt.display()
        ),
        format!(
            "reinstall it with `{} install`, or run `{referenced} check` if that is the one \
             meant",
            bbvirt.display()
        ),
    )
}

fn check_rule(root: &Path, bbvirt: Option<&Path>) -> Vec<Finding> {
    let copies = rule_copies(root, RULE_NAME);
    let Some((shown, real)) = copies.first() else {
        let places: Vec<String> = RULE_DIRS[..]
            .iter()
            .filter(|d| !d.starts_with("run"))
            .map(|d| format!("/{d}"))
            .collect();
        return vec![Finding::error(
            format!(
                "udev rule {RULE_NAME} is not installed (not in {}): devices are not passed \
                 to guests when plugged in",
                places.join(", ")
            ),
            "run `bbvirt install` (or `make install`)",
        )];
    };
    let overrides = if copies.len() > 1 {
        let rest: Vec<&str> = copies[1..].iter().map(|(s, _)| s.as_str()).collect();
        format!(" (overrides {})", rest.join(", "))
    } else {
        String::new()
    };
    if is_masked(real) {
        return vec![Finding::error(
            format!("udev rule {shown} is masked (empty or a link to /dev/null){overrides}"),
            format!("remove {shown} if bbvirt should run from udev"),
        )];
    }
    let text = match std::fs::read(real) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            return vec![Finding::error(
                format!("cannot read udev rule {shown}: {e}"),
                "make it a readable file (`bbvirt install` rewrites it)",
            )];
        }
    };
    let programs: Vec<String> = rule_run_programs(&text)
        .into_iter()
        .filter(|p| Path::new(p).file_name().is_some_and(|n| n == "bbvirt"))
        .collect();
    if programs.is_empty() {
        return vec![Finding::error(
            format!("udev rule {shown} never runs bbvirt"),
            "reinstall it with `bbvirt install`",
        )];
    }
    // The front, where the rule runs bbvirt through it, must be there.
    let mut found: Vec<Finding> = Vec::new();
    let mut fronts: Vec<String> = rule_run_programs(&text)
        .into_iter()
        .filter(|p| is_front(p))
        .collect();
    fronts.dedup();
    for front in fronts
        .iter()
        .filter(|f| !crate::install::is_executable(&under(root, f)))
    {
        found.push(Finding::error(
            format!("udev rule {shown} runs {front}, which is missing or not executable"),
            "reinstall bbvirt (its package, `make install` or `bbvirt install`)",
        ));
    }
    let Some(bbvirt) = bbvirt else {
        if found.is_empty() {
            found.push(Finding::ok(format!(
                "udev rule {shown} runs {}{overrides}",
                programs[0]
            )));
        }
        return found;
    };
    let mut reported: Vec<&str> = Vec::new();
    for p in &programs {
        if !is_this_binary(root, p, bbvirt) && !reported.contains(&p.as_str()) {
            reported.push(p);
            found.push(other_binary(&format!("udev rule {shown}"), p, bbvirt));
        }
    }
    if found.is_empty() {
        found.push(Finding::ok(format!(
            "udev rule {shown} runs this bbvirt ({}){overrides}",
            bbvirt.display()
        )));
    }
    found
}

/// Whether bbvirt's qemu hook is installed under `root` (present,
/// executable, running a bbvirt): what check reports as no error about it.
pub fn hook_in_place(root: &Path) -> bool {
    check_hook(root, None)
        .iter()
        .all(|f| f.severity != super::Severity::Error)
}

fn check_hook(root: &Path, bbvirt: Option<&Path>) -> Vec<Finding> {
    use std::os::unix::fs::PermissionsExt;
    let shown = format!("/{HOOK_PATH}");
    let real = under(root, HOOK_PATH);
    let meta = match std::fs::metadata(&real) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Finding::error(
                format!(
                    "libvirt hook {shown} is not installed: guests that start after their \
                     devices were plugged in do not get them"
                ),
                "run `bbvirt install` (or `make install`), then restart libvirtd",
            )];
        }
        Err(e) => {
            return vec![Finding::error(
                format!("cannot read libvirt hook {shown}: {e}"),
                "reinstall it with `bbvirt install`",
            )];
        }
    };
    if !meta.is_file() {
        return vec![Finding::error(
            format!("libvirt hook {shown} is not a regular file"),
            "remove it and run `bbvirt install`",
        )];
    }
    let mut found = Vec::new();
    if meta.permissions().mode() & 0o111 == 0 {
        found.push(Finding::error(
            format!(
                "libvirt hook {shown} is not executable (mode {:04o}): libvirt skips it",
                meta.permissions().mode() & 0o7777
            ),
            format!("chmod 0755 {shown}"),
        ));
    }
    let text = match std::fs::read(&real) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            found.push(Finding::error(
                format!("cannot read libvirt hook {shown}: {e}"),
                "reinstall it with `bbvirt install`",
            ));
            return found;
        }
    };
    let paths = hook_bbvirt_paths(&text);
    if paths.is_empty() {
        found.push(Finding::error(
            format!("libvirt hook {shown} never runs bbvirt"),
            "reinstall it with `bbvirt install`",
        ));
        return found;
    }
    let clean = found.is_empty();
    let mut mismatch = false;
    if let Some(bbvirt) = bbvirt {
        for p in &paths {
            if !is_this_binary(root, p, bbvirt) {
                mismatch = true;
                found.push(other_binary(&format!("libvirt hook {shown}"), p, bbvirt));
            }
        }
    }
    if clean && !mismatch {
        found.push(Finding::ok(format!(
            "libvirt hook {shown} is executable and runs {}",
            bbvirt.map_or_else(
                || paths[0].clone(),
                |b| format!("this bbvirt ({})", b.display())
            )
        )));
    }
    found
}

fn check_original_rule(root: &Path) -> Finding {
    let copies = rule_copies(root, ORIGINAL_RULE_NAME);
    let Some((shown, real)) = copies.first() else {
        // bbvirt's Debian package diverts it to a name udev does not read.
        if let Some((diverted, _)) = rule_copies(root, ORIGINAL_RULE_DIVERTED).first() {
            return Finding::ok(format!(
                "the bit-babbler package's {ORIGINAL_RULE_NAME} is diverted to {diverted} \
                 (by bbvirt's package), which udev does not read"
            ));
        }
        return Finding::ok(format!(
            "the bit-babbler package's {ORIGINAL_RULE_NAME} is not installed"
        ));
    };
    if is_masked(real) {
        return Finding::ok(format!(
            "the bit-babbler package's {ORIGINAL_RULE_NAME} is masked by {shown}"
        ));
    }
    // An admin's own copy in /etc that leaves bbvirt alone is not a second runner.
    let own_copy = shown.starts_with("/etc/") || shown.starts_with("/run/");
    if own_copy
        && std::fs::read(real).is_ok_and(|b| !String::from_utf8_lossy(&b).contains("bbvirt"))
    {
        return Finding::ok(format!(
            "{shown} overrides the bit-babbler package's rule and does not run bbvirt"
        ));
    }
    Finding::warning(
        format!(
            "udev rule {shown} of the bit-babbler package is active too: both it and \
             {RULE_NAME} would act on every BitBabbler"
        ),
        format!("mask it: ln -s /dev/null /etc/udev/rules.d/{ORIGINAL_RULE_NAME}"),
    )
}
