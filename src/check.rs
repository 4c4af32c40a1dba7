//! `bbvirt check [--config FILE]`: checks vm.conf and the installation and
//! prints one line per finding, `error|warning|ok: what: fix` (`ok` lines only
//! with `-v`).
//!
//! What is checked:
//! - vm.conf: that it exists (missing is a warning: nothing is assigned), is
//!   safe to use (owner, mode), parses (`FILE:LINE` errors), lists only
//!   BitBabbler serials (6-7 of `A-Z0-9`), gives no serial to two guests, and
//!   has no `DOMAIN_NAME_` clash (two ids naming the same libvirt domain, or a
//!   libvirt name that is also another guest's id);
//! - sysfs: BitBabblers that bbvirt leaves alone (garbage attributes, a
//!   serial shared by several devices) are warnings;
//! - libvirt: every configured guest is defined (connecting per URI:
//!   `--connect`, else `DOMAIN_URI_<id>`, else libvirt's default); when
//!   libvirt does not answer, one warning per URI and no domain checks;
//! - the installation: the udev rule `60-bbvirt.rules` is installed, not
//!   masked, and runs this binary; the qemu hook
//!   `/etc/libvirt/hooks/qemu.d/bbvirt` is installed, executable and runs this
//!   binary; libvirt is at least 6.5 (older versions ignore `qemu.d`); the
//!   original bit-babbler package's rule is not active as well.
//!
//! Exit status: 0 when there is no error (warnings allowed), 1 otherwise
//! ([`verdict`]). Config problems are findings, not exit 3.
//!
//! The filesystem root of the installation checks is `/`, or the directory in
//! the environment variable [`ROOT_ENV`] (for tests). The config path is used
//! as given, whatever the root.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::cli::Opts;
use crate::config::{Config, ConfigError, Via};
use crate::context::{Connections, Target};
use crate::device::is_valid_serial;
use crate::exit::CommandError;
use crate::libvirt::{Hypervisor, VirtError};
use crate::sysfs::Sysfs;

/// Environment variable naming the root directory the installation checks
/// look under instead of `/`.
pub const ROOT_ENV: &str = "BBVIRT_ROOT";

/// The udev rule bbvirt installs.
pub const RULE_NAME: &str = "60-bbvirt.rules";
/// The udev rule of the original bit-babbler package.
pub const ORIGINAL_RULE_NAME: &str = "60-bit-babbler.rules";
/// Where udev looks for rules, highest precedence first (relative to root).
pub const RULE_DIRS: [&str; 5] = [
    "etc/udev/rules.d",
    "run/udev/rules.d",
    "usr/local/lib/udev/rules.d",
    "usr/lib/udev/rules.d",
    "lib/udev/rules.d",
];
/// The libvirt qemu hook bbvirt installs (relative to root).
pub const HOOK_PATH: &str = "etc/libvirt/hooks/qemu.d/bbvirt";
/// The first libvirt that runs hooks from `qemu.d` (6.5.0, libvirt's encoding).
pub const MIN_LIBVIRT_VERSION: u32 = 6_005_000;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Ok,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// What was found.
    pub what: String,
    /// How to fix it (empty for `ok`).
    pub fix: String,
}

impl Finding {
    pub fn ok(what: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Ok,
            what: what.into(),
            fix: String::new(),
        }
    }

    pub fn warning(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            what: what.into(),
            fix: fix.into(),
        }
    }

    pub fn error(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            what: what.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Finding {
    /// `severity: what: fix`, or `severity: what` without a fix. Line breaks
    /// in the parts are shown as `\n` so that a finding stays one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one_line = crate::text::escape_controls;
        write!(f, "{}: {}", self.severity, one_line(&self.what))?;
        if !self.fix.is_empty() {
            write!(f, ": {}", one_line(&self.fix))?;
        }
        Ok(())
    }
}

/// The verdict on these findings: [`CommandError::ErrorsFound`] if any is
/// an error (exit 1), else Ok (warnings allowed).
pub fn verdict(findings: &[Finding]) -> Result<(), CommandError> {
    match findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count()
    {
        0 => Ok(()),
        errors => Err(CommandError::ErrorsFound { errors }),
    }
}

/// Checks the config and the installation, printing the findings.
pub fn run(
    config: &Path,
    opts: &Opts,
    sysfs: &Sysfs,
    hv: &dyn Hypervisor,
) -> Result<(), CommandError> {
    let show_ok = opts.verbosity() >= 1;
    let mut all: Vec<Finding> = Vec::new();
    // Printed stage by stage: if libvirt hangs until the deadline, what was
    // found before is already out.
    let mut emit = |found: Vec<Finding>| {
        for f in &found {
            if show_ok || f.severity != Severity::Ok {
                println!("{f}");
            }
        }
        all.extend(found);
    };

    crate::log::step(&format!("checking {}", config.display()));
    let (cfg, found) = check_config_file(config);
    emit(found);
    if let Some(cfg) = &cfg {
        emit(check_domains(cfg, opts.connect.as_deref(), hv));
    }

    crate::log::step("listing the BitBabblers in sysfs");
    emit(check_sysfs(sysfs));

    crate::log::step("checking the installation");
    let root = std::env::var_os(ROOT_ENV)
        .filter(|r| !r.is_empty())
        .map_or_else(|| PathBuf::from("/"), PathBuf::from);
    match std::env::current_exe() {
        Ok(exe) => emit(check_installation(&root, &exe)),
        Err(e) => {
            emit(vec![Finding::warning(
                format!("cannot tell where this bbvirt binary is ({e})"),
                "the udev rule and hook were not compared with it",
            )]);
            emit(installation_findings(&root, None));
        }
    }
    emit(vec![check_libvirt_version(hv.version())]);

    let count = |s| all.iter().filter(|f| f.severity == s).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    crate::info!(
        "check: {errors} error{}, {warnings} warning{}",
        plural(errors),
        plural(warnings)
    );
    verdict(&all)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

// ---------------------------------------------------------------------------
// vm.conf

/// Loads `path` and checks it: the config (when it could be loaded) and the
/// findings. A missing file is a warning; a file that cannot be used is an
/// error finding.
pub fn check_config_file(path: &Path) -> (Option<Config>, Vec<Finding>) {
    let loaded = match crate::config::load_report(path) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return (
                None,
                vec![Finding::warning(
                    format!(
                        "{} does not exist: no BitBabbler is assigned to a guest",
                        path.display()
                    ),
                    "create it if guests should get some (`bbvirt install` puts a commented \
                     example there; the format is in bbvirt(1))",
                )],
            );
        }
        Err(e) => return (None, vec![config_error_finding(&e)]),
    };
    let mut found = vec![Finding::ok(match &loaded.via {
        Via::Native => format!(
            "{}: read, {} guest{}",
            path.display(),
            loaded.config.domains.len(),
            plural(loaded.config.domains.len())
        ),
        Via::Bash { line, reason } => format!(
            "{}: evaluated by bash ({reason} at line {line}), {} guest{}",
            path.display(),
            loaded.config.domains.len(),
            plural(loaded.config.domains.len())
        ),
    })];
    // Only to point at lines; the config itself came from load_report.
    let text = std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    found.extend(check_config(&loaded.config, text.as_deref()));
    (Some(loaded.config), found)
}

/// A config that cannot be used, as an error finding with its fix.
pub fn config_error_finding(e: &ConfigError) -> Finding {
    let p = |path: &Path| path.display().to_string();
    match e {
        ConfigError::Insecure { path, problem, fix } => {
            Finding::error(format!("{} {problem}", p(path)), format!("run {fix}"))
        }
        ConfigError::Syntax { .. } => Finding::error(
            e.to_string(),
            "correct that line (vm.conf is bash syntax; see bbvirt(1))",
        ),
        ConfigError::Value { .. } => {
            Finding::error(e.to_string(), "correct that setting (see bbvirt(1))")
        }
        ConfigError::NotAFile { path } => Finding::error(
            e.to_string(),
            format!("replace {} with a regular file", p(path)),
        ),
        ConfigError::Read { path, .. } => Finding::error(
            crate::log::chain(e),
            format!("make {} readable by root", p(path)),
        ),
        ConfigError::BashSpawn { .. } => Finding::error(
            crate::log::chain(e),
            "install bash, or write the file as plain assignments",
        ),
        ConfigError::BashTimeout { path, .. } => Finding::error(
            e.to_string(),
            format!("make {} evaluate quickly (no waiting commands)", p(path)),
        ),
        ConfigError::Bash { path, .. } | ConfigError::BashOutput { path, .. } => Finding::error(
            crate::log::chain(e),
            format!("make `bash {}` run cleanly", p(path)),
        ),
    }
}

/// Checks a loaded config: serial syntax, serials given to two guests, a
/// serial listed twice, guests with no serial, `DOMAIN_NAME_` clashes. `text`
/// (the file's contents) is only used to give line numbers.
pub fn check_config(config: &Config, text: Option<&str>) -> Vec<Finding> {
    let path = config.path.display().to_string();
    let at = |line: Option<usize>| match line {
        Some(l) => format!("{path}:{l}"),
        None => path.clone(),
    };
    let serial_line = |id: &str, serial: &str| text.and_then(|t| locate_serial(t, id, serial));
    let mut found = Vec::new();
    let mut clean = true;

    for d in &config.domains {
        if d.serials.is_empty() {
            clean = false;
            found.push(Finding::warning(
                format!(
                    "{}: guest {} has no serial in DOMAIN_RNG_{}: nothing is passed to '{}'",
                    at(text.and_then(|t| locate_any(t, &d.id))),
                    d.id,
                    d.id,
                    d.libvirt_name()
                ),
                format!(
                    "list its serials in DOMAIN_RNG_{}=( ... ), or remove its DOMAIN_*_{} \
                     lines (is the id misspelt?)",
                    d.id, d.id
                ),
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for s in &d.serials {
            if !is_valid_serial(s) {
                clean = false;
                let upper = s.trim().to_ascii_uppercase();
                let hint = if is_valid_serial(&upper) {
                    format!(" (\"{upper}\"?)")
                } else {
                    String::new()
                };
                found.push(Finding::error(
                    format!(
                        "{}: DOMAIN_RNG_{} lists {s:?}, not a BitBabbler serial",
                        at(serial_line(&d.id, s)),
                        d.id
                    ),
                    format!("use 6-7 characters A-Z, 0-9{hint}"),
                ));
            } else if seen.contains(&s.as_str()) {
                clean = false;
                found.push(Finding::warning(
                    format!(
                        "{}: DOMAIN_RNG_{} lists {s:?} twice",
                        at(serial_line(&d.id, s)),
                        d.id
                    ),
                    "remove one",
                ));
            }
            seen.push(s);
        }
    }

    for (serial, first, other) in config.duplicates() {
        clean = false;
        found.push(Finding::error(
            format!(
                "{}: {serial:?} is listed for guests {first} and {other} ({first} gets it, \
                 {other} never does)",
                at(serial_line(&other, &serial))
            ),
            format!("remove it from DOMAIN_RNG_{first} or DOMAIN_RNG_{other}"),
        ));
    }

    let name_line = |id: &str| text.and_then(|t| locate_var(t, &format!("DOMAIN_NAME_{id}")));
    // Two ids naming the same libvirt domain (at the same configured URI).
    let mut by_name: HashMap<(Option<&str>, &str), &str> = HashMap::new();
    for d in &config.domains {
        let key = (d.uri.as_deref(), d.libvirt_name());
        match by_name.get(&key) {
            None => {
                by_name.insert(key, &d.id);
            }
            Some(first) => {
                clean = false;
                let line = name_line(&d.id).or_else(|| name_line(first));
                found.push(Finding::error(
                    format!(
                        "{}: guests {first} and {} both name libvirt domain '{}'{}",
                        at(line),
                        d.id,
                        d.libvirt_name(),
                        d.uri
                            .as_deref()
                            .map(|u| format!(" at {u}"))
                            .unwrap_or_default()
                    ),
                    format!(
                        "give each its own DOMAIN_NAME_, or merge DOMAIN_RNG_{} into \
                         DOMAIN_RNG_{first}",
                        d.id
                    ),
                ));
            }
        }
    }
    // A libvirt name that is another guest's id: `--domain X` and
    // `attach-all X` take X as the id.
    for d in &config.domains {
        let Some(name) = d.name.as_deref() else {
            continue;
        };
        if let Some(o) = config
            .domains
            .iter()
            .find(|o| o.id == name && o.id != d.id && o.libvirt_name() != name)
        {
            clean = false;
            found.push(Finding::warning(
                format!(
                    "{}: DOMAIN_NAME_{} is '{name}', also the id of guest {name} (libvirt \
                     domain '{}'): `--domain {name}` and `attach-all {name}` mean guest {name}",
                    at(name_line(&d.id)),
                    d.id,
                    o.libvirt_name()
                ),
                format!("rename the id {name} (its DOMAIN_*_{name} variables)"),
            ));
        }
    }

    if clean && !config.domains.is_empty() {
        let serials: usize = config.domains.iter().map(|d| d.serials.len()).sum();
        found.push(Finding::ok(format!(
            "{path}: {serials} serial{} for {} guest{}, no clash",
            plural(serials),
            config.domains.len(),
            plural(config.domains.len())
        )));
    }
    found
}

/// Whether `line` assigns the variable `var` (`var=`, `var+=`), possibly
/// after `declare ...` or on a line with other assignments.
fn assigns(line: &str, var: &str) -> bool {
    let code = line.trim_start();
    if code.starts_with('#') {
        return false;
    }
    let mut from = 0;
    while let Some(pos) = code[from..].find(var) {
        let start = from + pos;
        let end = start + var.len();
        let before_ok = code[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let rest = &code[end..];
        if before_ok && (rest.starts_with('=') || rest.starts_with("+=")) {
            return true;
        }
        from = end;
    }
    false
}

/// 1-based line of the first assignment to `var`.
fn locate_var(text: &str, var: &str) -> Option<usize> {
    text.lines().position(|l| assigns(l, var)).map(|i| i + 1)
}

/// 1-based line of the first assignment to any of the id's variables.
fn locate_any(text: &str, id: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            ["DOMAIN_RNG_", "DOMAIN_URI_", "DOMAIN_NAME_"]
                .iter()
                .any(|p| assigns(l, &format!("{p}{id}")))
        })
        .map(|i| i + 1)
}

/// 1-based line where `DOMAIN_RNG_<id>` lists `serial`: the first line
/// holding it from the first assignment on (arrays may span lines). Best
/// effort; None when not found (e.g. a serial built by bash).
fn locate_serial(text: &str, id: &str, serial: &str) -> Option<usize> {
    let start = locate_var(text, &format!("DOMAIN_RNG_{id}"))?;
    if serial.trim().is_empty() {
        return Some(start);
    }
    text.lines()
        .enumerate()
        .skip(start - 1)
        .find(|(_, l)| {
            let code = l.trim_start();
            !code.starts_with('#') && code.contains(serial)
        })
        .map(|(i, _)| i + 1)
}

// ---------------------------------------------------------------------------
// sysfs

/// The BitBabblers sysfs shows that bbvirt leaves alone (garbage
/// attributes, a serial shared by several devices), one warning each; so
/// is an unreadable device list.
pub fn check_sysfs(sysfs: &Sysfs) -> Vec<Finding> {
    match sysfs.scan() {
        Ok(scan) => scan
            .warnings
            .into_iter()
            .map(|w| {
                Finding::warning(
                    format!("sysfs: {w}"),
                    "bbvirt leaves such a device with the host; replug it, or unplug the \
                     duplicate",
                )
            })
            .collect(),
        Err(e) => vec![Finding::warning(
            format!("sysfs: cannot list USB devices: {}", crate::log::chain(&e)),
            "make /sys/bus/usb/devices readable by root",
        )],
    }
}

// ---------------------------------------------------------------------------
// libvirt

/// Checks that every configured guest is defined in libvirt. Each guest is
/// looked up at `connect` (`--connect`), else its `DOMAIN_URI_`, else the
/// default URI; one connection per URI. A URI where libvirt does not answer
/// gives one warning and no domain findings.
pub fn check_domains(config: &Config, connect: Option<&str>, hv: &dyn Hypervisor) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut conns = Connections::read_only(hv);
    // URIs already warned about.
    let mut unreachable: Vec<Option<String>> = Vec::new();
    for d in &config.domains {
        let target = Target::of(d, connect);
        let label = target.uri_label();
        let conn = match conns.get(target.uri.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                if !unreachable.contains(&target.uri) {
                    unreachable.push(target.uri.clone());
                    let why = match &e {
                        VirtError::Connect { message, .. } | VirtError::Down { message, .. } => {
                            message.clone()
                        }
                        other => other.to_string(),
                    };
                    found.push(Finding::warning(
                        format!("libvirt not reachable at {label}: {why} (skipped domain checks)"),
                        "start libvirtd (or virtqemud), or correct DOMAIN_URI_/--connect",
                    ));
                }
                continue;
            }
        };
        let name = &target.name;
        crate::log::step(&format!("looking up domain '{name}' at {label}"));
        match conn.live_xml(name) {
            Ok(_) => found.push(Finding::ok(format!(
                "guest {}: domain '{name}' at {label} is defined and running",
                d.id
            ))),
            Err(VirtError::NotRunning(_)) => found.push(Finding::ok(format!(
                "guest {}: domain '{name}' at {label} is defined (not running)",
                d.id
            ))),
            Err(VirtError::NoDomain(_)) => found.push(Finding::error(
                format!("guest {}: libvirt at {label} has no domain '{name}'", d.id),
                format!(
                    "define it, or set DOMAIN_NAME_{} (or DOMAIN_URI_{}) to where it is \
                     (virsh{} list --all)",
                    d.id,
                    d.id,
                    target
                        .uri
                        .as_deref()
                        .map(|u| format!(" -c {u}"))
                        .unwrap_or_default()
                ),
            )),
            Err(e) => found.push(Finding::warning(
                format!("guest {}: looking up domain '{name}' at {label}: {e}", d.id),
                "see libvirt's log; the domain was not checked",
            )),
        }
    }
    found
}

/// libvirt's version (`major * 1_000_000 + minor * 1000 + release`) against
/// the 6.5 that `qemu.d` hooks need. `Err` is why it is unknown.
pub fn check_libvirt_version(version: Result<u32, String>) -> Finding {
    let v = match version {
        Ok(v) => v,
        Err(why) => {
            return Finding::warning(
                format!("cannot read libvirt's version ({why})"),
                "make sure libvirt is 6.5 or later: older versions ignore hooks in qemu.d",
            );
        }
    };
    let shown = format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000);
    if v >= MIN_LIBVIRT_VERSION {
        Finding::ok(format!("libvirt {shown} runs hooks from qemu.d"))
    } else {
        Finding::error(
            format!("libvirt {shown} is older than 6.5 and ignores /{HOOK_PATH}"),
            "upgrade libvirt, or run `bbvirt hook \"$@\"` from /etc/libvirt/hooks/qemu",
        )
    }
}

// ---------------------------------------------------------------------------
// The installation

/// Checks, under `root`, the udev rule, the qemu hook and the original
/// package's rule; `bbvirt_path` is this binary, which the rule and the hook
/// must run.
pub fn check_installation(root: &Path, bbvirt_path: &Path) -> Vec<Finding> {
    installation_findings(root, Some(bbvirt_path))
}

fn installation_findings(root: &Path, bbvirt: Option<&Path>) -> Vec<Finding> {
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

/// The programs of the `RUN` assignments of a udev rules file.
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
            if let Some(prog) = value.split_whitespace().next() {
                out.push(prog.to_string());
            }
        }
    }
    out
}

/// The bbvirt paths a hook script runs (absolute words ending in `/bbvirt`,
/// outside comments).
pub fn hook_bbvirt_paths(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("");
        for word in code.split_whitespace() {
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
    let Some(bbvirt) = bbvirt else {
        return vec![Finding::ok(format!(
            "udev rule {shown} runs {}{overrides}",
            programs[0]
        ))];
    };
    let mut found = Vec::new();
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
                     BitBabblers were plugged in do not get them"
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
