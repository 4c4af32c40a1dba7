//! `bbvirt check [--config FILE]`: checks vm.conf and the installation and
//! prints one line per finding, `error|warning|ok: what: fix` (`ok` lines only
//! with `-v`).
//!
//! What is checked:
//! - vm.conf: that it exists (missing is a warning: nothing is assigned), is
//!   safe to use (owner, mode), parses (`FILE:LINE` errors), lists only
//!   BitBabbler serials (6-7 of `A-Z0-9`) in `DOMAIN_RNG_`, gives no serial to
//!   two guests, has well-formed `DOMAIN_USB_` elements (two that can match
//!   the same device are a warning), gives each guest a device, and has no
//!   `DOMAIN_NAME_` clash (two ids naming the same libvirt domain, or a
//!   libvirt name that is also another guest's id);
//! - sysfs: BitBabblers that bbvirt leaves alone (garbage attributes, a
//!   serial shared by several devices) are warnings, and so is a
//!   `DOMAIN_USB_` element that matches several present devices;
//! - seedd.conf (`--seedd-config`): a `[Device:ID]` section naming a guest's
//!   device is an error, none at all while guests have devices a warning
//!   ([`seedd`]);
//! - libvirt: every configured guest is defined (connecting per URI:
//!   `--connect`, else `DOMAIN_URI_<id>`, else libvirt's default); when
//!   libvirt does not answer, one warning per URI and no domain checks;
//! - the installation: the udev rule `60-bbvirt.rules` is installed, not
//!   masked, and runs this binary; the qemu hook
//!   `/etc/libvirt/hooks/qemu.d/bbvirt` is installed, executable and runs this
//!   binary, and runs when the daemon runs it: `check` runs it with a probe
//!   operation, confined by the daemon's AppArmor profile when one is
//!   loaded ([`hook_probe`]: a profile that denies the binary, a missing or
//!   crashing binary are errors); libvirt is at least 6.5 (older versions ignore `qemu.d`); the
//!   original bit-babbler package's rule is not active as well (masked,
//!   or diverted by bbvirt's Debian package, it is not).
//!
//! Exit status: 0 when there is no error (warnings allowed), 1 otherwise
//! ([`verdict`]). Config problems are findings, not exit 3.
//!
//! Everything that can be checked is, in one run. vm.conf is read leniently
//! ([`crate::config::load_lenient`]): a wrong setting (a malformed
//! `DOMAIN_USB_` element, a bad `BBVIRT_TIMEOUT`) is an error and is left
//! out, and the rest of the file goes through every check; a file that
//! cannot be used at all (unsafe, a syntax error, bash failing) skips the
//! checks that need it. Either way one warning names what the errors kept
//! from being checked.
//!
//! The filesystem root of the installation checks is `/`, or the directory in
//! the environment variable [`ROOT_ENV`] (for tests). The config path is used
//! as given, whatever the root.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cli::Opts;
use crate::exit::CommandError;
use crate::libvirt::Hypervisor;
use crate::sysfs::{Scan, Sysfs, SysfsError};

mod config;
pub mod hook_probe;
mod installation;
mod libvirt;
mod remote;
mod saved;
mod seedd;

pub use config::{check_config, check_config_file, config_error_finding, present_element_findings};
pub use installation::{check_installation, hook_bbvirt_paths, hook_in_place, rule_run_programs};
pub use libvirt::{MIN_LIBVIRT_VERSION, check_domains, check_libvirt_version};
pub use saved::check_saved;
pub use seedd::check_seedd;

/// Environment variable naming the root directory the installation checks
/// look under instead of `/`.
pub const ROOT_ENV: &str = "BBVIRT_ROOT";

/// Where installed files are looked for: `/`, or [`ROOT_ENV`].
pub fn install_root() -> PathBuf {
    std::env::var_os(ROOT_ENV)
        .filter(|r| !r.is_empty())
        .map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

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
    seedd_config: &Path,
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

    if let Some(cfg) = &cfg {
        crate::log::step("checking the devices on other hosts");
        let tls =
            crate::remote::tunnel::TlsFiles::in_dir(Path::new(crate::remote::tunnel::TLS_DIR));
        emit(remote::check_remote(
            cfg,
            &tls,
            &crate::holders::proc_root(),
        ));
    }

    crate::log::step("listing the USB devices in sysfs");
    let scan = sysfs.scan();
    emit(scan_findings(&scan));
    if let (Some(cfg), Ok(scan)) = (&cfg, &scan) {
        emit(config::present_element_findings(cfg, &scan.usb));
    }

    crate::log::step(&format!("checking {}", seedd_config.display()));
    let present = scan.as_ref().map_or(&[][..], |s| s.devices.as_slice());
    emit(check_seedd(seedd_config, cfg.as_ref(), present));

    if let (Some(cfg), Ok(scan)) = (&cfg, &scan) {
        crate::log::step("looking for managed save images");
        emit(check_saved(
            cfg,
            opts.connect.as_deref(),
            hv,
            scan,
            &install_root(),
        ));
    }

    crate::log::step("checking the installation");
    let root = install_root();
    match std::env::current_exe() {
        Ok(exe) => emit(check_installation(&root, &exe)),
        Err(e) => {
            emit(vec![Finding::warning(
                format!("cannot tell where this bbvirt binary is ({e})"),
                "the udev rule and hook were not compared with it",
            )]);
            emit(installation::installation_findings(&root, None));
        }
    }
    if root == Path::new("/") && installation::hook_in_place(&root) {
        crate::log::step("running the libvirt hook as the daemon would");
        let hook = root.join(crate::install::paths::HOOK_PATH);
        let text = std::fs::read_to_string(&hook).unwrap_or_default();
        if let Some(binary) = hook_bbvirt_paths(&text).first() {
            emit(vec![hook_probe::check(&hook, binary)]);
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
// sysfs

/// The BitBabblers sysfs shows that bbvirt leaves alone (garbage
/// attributes, a serial shared by several devices), one warning each; so
/// is an unreadable device list.
pub fn check_sysfs(sysfs: &Sysfs) -> Vec<Finding> {
    scan_findings(&sysfs.scan())
}

/// [`check_sysfs`] on a scan already made.
fn scan_findings(scan: &Result<Scan, SysfsError>) -> Vec<Finding> {
    match scan {
        Ok(scan) => scan
            .warnings
            .iter()
            .map(|w| {
                Finding::warning(
                    format!("sysfs: {w}"),
                    "bbvirt leaves such a device with the host; replug it, or unplug the \
                     duplicate",
                )
            })
            .collect(),
        Err(e) => vec![Finding::warning(
            format!("sysfs: cannot list USB devices: {}", crate::log::chain(e)),
            "make /sys/bus/usb/devices readable by root",
        )],
    }
}
