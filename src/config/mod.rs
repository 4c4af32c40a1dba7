//! vm.conf: which devices belong to which libvirt guest (BitBabblers by
//! serial, any USB device by `DOMAIN_USB_` elements).
//!
//! The file (by default [`DEFAULT_CONFIG`]) is, per the bit-babbler manual, a
//! bash fragment that the original `bbvirt` script simply sourced.  Per guest,
//! with `<id>` a shell identifier:
//!
//! - `DOMAIN_RNG_<id>=( SERIAL ... )`: the serials passed through to that guest;
//! - `DOMAIN_URI_<id>="URI"`: the libvirt connection URI (optional);
//! - `DOMAIN_NAME_<id>="name"`: the libvirt domain name when it is not a shell
//!   identifier (optional, e.g. `kbsd-unstable`);
//! - `DOMAIN_USB_<id>=( "MATCH" ... )`: USB devices of any kind, one element
//!   per device, each `id=VVVV:PPPP`, `serial=S`, `port=BUS-PORT[.PORT...]`
//!   words ([`crate::selector`]; the original script ignores this variable).
//!   A malformed element is an error at its line.
//!
//! # How the file is read
//!
//! 1. **Permissions first.**  The file decides which guest gets which
//!    device, and in bash mode it is executed, so before using it at all we
//!    refuse a file that someone other than root (or, when not running as
//!    root, the invoking user) could have written: see [`check_permissions`].
//! 2. **Native parse.**  Almost every real vm.conf is a list of plain
//!    assignments.  [`parse_native`] understands that subset of bash exactly
//!    (quoting, escapes, multi-line arrays, comments, `+=`, `declare`/`export`/
//!    `readonly` prefixes, concatenation, `;`) without executing anything: it
//!    is safe and fast, and gives `FILE:LINE: message` errors for mistakes it
//!    can be sure of (unterminated quote or array, DOS line endings, bad bytes).
//! 3. **Bash fallback.**  The manual lets admins build the file dynamically
//!    (loops, `$VAR`, command substitution...).  As soon as the native parser
//!    meets anything outside its subset it stops and the file is evaluated by
//!    `/bin/bash` instead ([`eval_with_bash`]), with a fixed script, an empty
//!    environment, no stdin and a timeout; the variables are read back through
//!    a NUL-separated dump, never by parsing `declare -p` output.
//! 4. **Validation, setting by setting.**  Either way the variables then
//!    become a [`Config`] one setting at a time ([`Validated`]): a wrong
//!    setting (a malformed `DOMAIN_USB_` element, a bad `BBVIRT_TIMEOUT`) is
//!    an error of its own and the rest is still known. Every action wants
//!    all or nothing ([`load_report`]: any error fails the run); `check`
//!    takes the rest with the errors ([`load_lenient`]) and checks it too.
//!
//! # Domains and their order
//!
//! A domain is every `<id>` that has any of these variables set (an
//! empty array `DOMAIN_RNG_x=()` counts; a bare `declare -a DOMAIN_RNG_x` does
//! not, as in bash).  Empty `DOMAIN_URI_`/`DOMAIN_NAME_` values mean "not set",
//! as in the original script.  With the native parser domains are in order of
//! the first assignment of any of their variables in the file; in bash mode
//! the order is alphabetical by id (bash cannot tell us the file order).  When
//! a serial is listed by two domains the first one in that order wins
//! ([`Config::domain_for_serial`], [`Config::duplicates`]).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::device::is_valid_serial;
use crate::remote::element::RemoteElement;
use crate::selector::Selector;

/// The configuration file used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/bit-babbler/vm.conf";

/// Where a bare `--config NAME` is looked up.
pub const CONFIG_DIR: &str = "/etc/bit-babbler";

/// The shell used for the fallback (absolute: never looked up in `PATH`).
pub const BASH: &str = "/bin/bash";

/// How long bash may take to evaluate the file before it is killed.
pub const BASH_TIMEOUT: Duration = Duration::from_secs(10);

/// The most output we accept from bash (per stream).
const MAX_BASH_OUTPUT: u64 = 16 << 20;

/// One guest as vm.conf describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConf {
    /// The shell identifier `<id>` of `DOMAIN_RNG_<id>`.
    pub id: String,
    /// `DOMAIN_NAME_<id>`: the libvirt domain name when it differs from `id`.
    pub name: Option<String>,
    /// `DOMAIN_URI_<id>`: the libvirt connection URI for this guest.
    pub uri: Option<String>,
    /// `DOMAIN_RNG_<id>`: the serial numbers assigned to this guest, in order.
    pub serials: Vec<String>,
    /// `DOMAIN_USB_<id>`: the USB devices of any kind assigned to this
    /// guest, one element per device ([`crate::selector`]).
    pub usb: Vec<Selector>,
    /// `DOMAIN_REMOTE_<id>`: the devices served by other hosts that this
    /// guest gets over the network, one `HOST:PORT [tls=yes|no]` element
    /// each ([`crate::remote`]).
    pub remote: Vec<RemoteElement>,
}

impl DomainConf {
    /// The libvirt domain name: `DOMAIN_NAME_<id>` if set, else the id.
    pub fn libvirt_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// The whole of vm.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Every id that has any DOMAIN_* variable: in order of first appearance
    /// in the file (native parse) or alphabetical by id (bash evaluation).
    pub domains: Vec<DomainConf>,
    /// `BBVIRT_TIMEOUT`: seconds allowed for libvirt's work (bbvirt's own
    /// setting; `--timeout` overrides it).
    pub timeout: Option<u64>,
    /// Where the variables are set, for messages (native parse only: empty
    /// when bash evaluated the file).
    pub lines: SourceLines,
    /// `SERVE_USB_<port>`: the devices this host serves to guests on other
    /// hosts, by TCP port, in port order ([`serve`]).
    pub serve: Vec<(
        crate::remote::endpoint::Port,
        crate::remote::element::ServeElement,
    )>,
    /// `DOMAIN_USB_` elements left out as malformed, as (guest id, index
    /// in the file's array): only in a config read leniently
    /// ([`load_lenient`], for `check`); empty in any config bbvirt acts on.
    pub usb_left_out: Vec<(String, usize)>,
}

/// The routes of the present USB devices ([`Config::usb_routes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbRoutes {
    /// Per device, in the order given: (guest index, element index).
    pub route: Vec<Option<(usize, usize)>>,
    /// The flat element list the overlaps index: (guest, element).
    pub elements: Vec<(usize, usize)>,
    /// Devices several elements match, elements that match several devices.
    pub overlaps: Vec<crate::selector::Overlap>,
}

/// Where the native parser found each variable set, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceLines {
    vars: BTreeMap<String, VarLines>,
}

/// Where one variable is set: its first assignment, and the line each of
/// its elements starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VarLines {
    first: usize,
    elements: Vec<usize>,
}

impl SourceLines {
    /// The 1-based line of the first assignment to `var`.
    pub fn first_assignment(&self, var: &str) -> Option<usize> {
        self.vars.get(var).map(|v| v.first)
    }

    /// The 1-based line element `index` of `var` starts on.
    pub fn element(&self, var: &str, index: usize) -> Option<usize> {
        self.vars.get(var)?.elements.get(index).copied()
    }
}

/// The variable that sets bbvirt's libvirt deadline in vm.conf.
pub const TIMEOUT_VAR: &str = "BBVIRT_TIMEOUT";

/// `BBVIRT_TIMEOUT` from the variables: whole seconds, 1 to 3600.
fn timeout_from_vars(path: &Path, vars: &[RawVar]) -> Result<Option<u64>, ConfigError> {
    let Some(var) = vars.iter().rev().find(|v| v.name == TIMEOUT_VAR) else {
        return Ok(None);
    };
    match var.first.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) && var.first.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(n))
        }
        _ => {
            let msg = format!(
                "{TIMEOUT_VAR}={:?} is not a whole number of seconds from 1 to 3600",
                var.first
            );
            Err(ConfigError::at(path, var.line, msg))
        }
    }
}

/// Errors reading vm.conf.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A mistake in the file, at a 1-based line.
    #[error("{path}:{line}: {msg}")]
    Syntax {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// The file exists but could not be read.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is a directory, device, FIFO...
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    /// Someone other than root (or the invoking user) could have written it.
    #[error("{path} {problem}: run {fix}")]
    Insecure {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    /// `/bin/bash` could not be started.
    #[error("evaluating {path}: cannot run {BASH}")]
    BashSpawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// bash failed while evaluating the file.
    #[error("evaluating {path} with bash failed ({status}): {detail}")]
    Bash {
        path: PathBuf,
        status: String,
        detail: String,
    },
    /// bash did not finish in time and was killed.
    #[error("evaluating {path} with bash timed out after {secs} s (killed)")]
    BashTimeout { path: PathBuf, secs: u64 },
    /// A setting has a value bbvirt cannot use.
    #[error("{path}: {msg}")]
    Value { path: PathBuf, msg: String },
    /// bash ran, but what it reported back is unusable.
    #[error("evaluating {path} with bash: {msg}")]
    BashOutput { path: PathBuf, msg: String },
    /// Several settings are wrong (every malformed `DOMAIN_USB_` element,
    /// not only the first): each error, one a line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// A wrong setting in `path`: at its line when the native parser knows
    /// it ([`ConfigError::Syntax`]), else named in `msg` alone (bash mode,
    /// [`ConfigError::Value`]).
    fn at(path: &Path, line: Option<usize>, msg: String) -> ConfigError {
        let path = path.to_path_buf();
        match line {
            Some(line) => ConfigError::Syntax { path, line, msg },
            None => ConfigError::Value { path, msg },
        }
    }
}

/// A config read setting by setting: every valid setting, and an error for
/// each one left out (a malformed `DOMAIN_USB_` element, a bad
/// `BBVIRT_TIMEOUT`). Such errors are validation errors: the rest of the
/// file is still known. A parse error (a syntax error, bash failing, an
/// unsafe file) leaves nothing known and is an `Err` instead.
#[derive(Debug)]
pub struct Validated {
    pub config: Config,
    pub errors: Vec<ConfigError>,
}

impl Validated {
    /// The config when every setting is valid, else the errors: one, or
    /// [`ConfigError::Several`]. What every action but `check` uses.
    pub fn strict(mut self) -> Result<Config, ConfigError> {
        match self.errors.len() {
            0 => Ok(self.config),
            1 => Err(self.errors.remove(0)),
            _ => Err(ConfigError::Several(self.errors)),
        }
    }
}

/// Checks the variables one setting at a time: the config of the valid
/// settings, with the errors of the others ([`Validated`]).
fn validate(path: &Path, vars: &[RawVar], lines: SourceLines) -> Validated {
    let mut errors = Vec::new();
    let (domains, usb_left_out) = domains_from_vars(path, vars, &mut errors);
    let timeout = timeout_from_vars(path, vars).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let serve = serve::serve_from_vars(path, vars, &mut errors);
    Validated {
        config: Config {
            path: path.to_path_buf(),
            domains,
            timeout,
            serve,
            lines,
            usb_left_out,
        },
        errors,
    }
}

/// Why [`parse_native`] did not produce a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The file uses something outside the native subset (at `line`):
    /// evaluate it with bash instead.
    #[error("line {line}: {reason} needs bash")]
    NeedsBash { line: usize, reason: String },
    /// The file is certainly wrong.
    #[error(transparent)]
    Invalid(ConfigError),
}

/// How [`load_report`] obtained the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The native parser understood the whole file.
    Native,
    /// The file was evaluated by bash, because of `reason` at `line`.
    Bash { line: usize, reason: String },
}

/// A loaded configuration and how it was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: Config,
    pub via: Via,
}

impl Config {
    /// Reads and parses `path`. `Ok(None)` when the file does not exist.
    ///
    /// Checks permissions, parses natively, falls back to bash when needed.
    pub fn load(path: &Path) -> Result<Option<Config>, ConfigError> {
        Ok(load_report(path)?.map(|l| l.config))
    }

    /// [`Config::load`], with a missing file taken as an empty config
    /// (noted): udev runs bbvirt on hosts that assign nothing.
    pub fn load_or_empty(path: &Path) -> Result<Config, ConfigError> {
        match Config::load(path)? {
            Some(c) => Ok(c),
            None => {
                crate::note!(
                    "{} does not exist: no device is assigned to a guest",
                    path.display()
                );
                Ok(Config {
                    path: path.to_path_buf(),
                    ..Config::default()
                })
            }
        }
    }

    /// The domain a serial is assigned to: the first in file order.
    pub fn domain_for_serial(&self, serial: &str) -> Option<&DomainConf> {
        self.domains
            .iter()
            .find(|d| d.serials.iter().any(|s| s == serial))
    }

    /// The guest that gets `serial`: None unless it is a BitBabbler serial
    /// (only those are ever routed), else the first domain that lists it
    /// ([`Config::domain_for_serial`]).
    pub fn owner_of(&self, serial: &str) -> Option<&DomainConf> {
        is_valid_serial(serial)
            .then(|| self.domain_for_serial(serial))
            .flatten()
    }

    /// Whether guest `d` gets `serial` ([`Config::owner_of`]).
    pub fn wins(&self, d: &DomainConf, serial: &str) -> bool {
        self.owner_of(serial).is_some_and(|f| f.id == d.id)
    }

    /// The serials guest `d` gets, in its list's order: the valid ones it
    /// wins ([`Config::wins`]).
    pub fn serials_of<'c>(&'c self, d: &'c DomainConf) -> impl Iterator<Item = &'c str> + 'c {
        d.serials
            .iter()
            .map(String::as_str)
            .filter(move |s| self.wins(d, s))
    }

    /// The line where `d` lists `serial` (its first listing), if known.
    pub fn serial_line(&self, d: &DomainConf, serial: &str) -> Option<usize> {
        let i = d.serials.iter().position(|s| s == serial)?;
        self.lines.element(&format!("DOMAIN_RNG_{}", d.id), i)
    }

    /// The index in the file's `DOMAIN_USB_<id>` array of `d.usb[e]`: `e`,
    /// unless malformed elements before it were left out
    /// ([`Config::usb_left_out`]).
    pub fn usb_index(&self, d: &DomainConf, e: usize) -> usize {
        let mut left: Vec<usize> = self
            .usb_left_out
            .iter()
            .filter(|(id, _)| *id == d.id)
            .map(|&(_, i)| i)
            .collect();
        left.sort_unstable();
        left.into_iter()
            .fold(e, |i, l| if l <= i { i + 1 } else { i })
    }

    /// The line of the first assignment to any of `d`'s variables, if known.
    pub fn domain_line(&self, d: &DomainConf) -> Option<usize> {
        [
            "DOMAIN_RNG_",
            "DOMAIN_URI_",
            "DOMAIN_NAME_",
            "DOMAIN_USB_",
            "DOMAIN_REMOTE_",
        ]
        .iter()
        .filter_map(|p| self.lines.first_assignment(&format!("{p}{}", d.id)))
        .min()
    }

    /// Who gets each of the present USB `devices` among the `DOMAIN_USB_`
    /// elements of all guests, in file order (guests in [`Config::domains`]
    /// order, then each guest's elements), by the rule of
    /// [`crate::selector`]: the most specific element, then the earlier one,
    /// one device per element. A device's route is Some((guest index,
    /// element index in that guest's list)).
    pub fn usb_routes(&self, devices: &[crate::selector::Candidate]) -> UsbRoutes {
        let elements: Vec<(usize, usize)> = self
            .domains
            .iter()
            .enumerate()
            .flat_map(|(d, dom)| (0..dom.usb.len()).map(move |e| (d, e)))
            .collect();
        let selectors: Vec<Selector> = elements
            .iter()
            .map(|&(d, e)| self.domains[d].usb[e].clone())
            .collect();
        let assignment = crate::selector::assign(&selectors, devices);
        UsbRoutes {
            route: assignment
                .owner
                .iter()
                .map(|o| o.map(|i| elements[i]))
                .collect(),
            elements,
            overlaps: assignment.overlaps,
        }
    }

    /// The present devices the `DOMAIN_USB_` elements share out, each with
    /// its route (guest index, element index; [`Config::usb_routes`]):
    /// every USB device in `usb` (sysfs order) except the BitBabblers that
    /// `DOMAIN_RNG_` gives a guest, which keep their serial's route. The one
    /// place that says which guest gets a device by an element.
    pub fn element_routes<'p>(
        &self,
        usb: &'p [crate::sysfs::UsbDevice],
    ) -> Vec<(&'p crate::sysfs::UsbDevice, Option<(usize, usize)>)> {
        let shared: Vec<&crate::sysfs::UsbDevice> = usb
            .iter()
            .filter(|d| {
                !(d.is_bitbabbler()
                    && d.serial
                        .as_deref()
                        .is_some_and(|s| self.owner_of(s).is_some()))
            })
            .collect();
        if self.domains.iter().all(|d| d.usb.is_empty()) {
            return shared.into_iter().map(|d| (d, None)).collect();
        }
        let candidates: Vec<_> = shared.iter().map(|d| d.candidate()).collect();
        let routes = self.usb_routes(&candidates);
        shared.into_iter().zip(routes.route).collect()
    }

    /// Whether some `DOMAIN_USB_` element matches `dev`. When none does,
    /// [`Config::element_routes`] gives `dev` no route whatever other
    /// devices are present: an element only ever takes a device it
    /// matches ([`crate::selector::assign`]).
    pub fn elements_may_take(&self, dev: &crate::sysfs::UsbDevice) -> bool {
        let candidate = dev.candidate();
        self.domains
            .iter()
            .flat_map(|d| &d.usb)
            .any(|e| e.matches(&candidate))
    }

    /// The present devices that guest `guest` (an index into `domains`)
    /// gets by its `DOMAIN_USB_` elements, each with the element's index:
    /// [`Config::element_routes`] for one guest. The hook and `sync` ask
    /// this.
    pub fn element_devices<'p>(
        &self,
        guest: usize,
        usb: &'p [crate::sysfs::UsbDevice],
    ) -> Vec<(&'p crate::sysfs::UsbDevice, usize)> {
        if self.domains.get(guest).is_none_or(|d| d.usb.is_empty()) {
            return Vec::new();
        }
        self.element_routes(usb)
            .into_iter()
            .filter_map(|(dev, route)| match route {
                Some((d, e)) if d == guest => Some((dev, e)),
                _ => None,
            })
            .collect()
    }

    /// Every present device guest `guest` (an index into `domains`) gets,
    /// with bbvirt's hostdev alias for it: the BitBabblers of its serials
    /// ([`Config::serials_of`], alias `ua-bbvirt-SERIAL`), then the devices
    /// its `DOMAIN_USB_` elements get ([`Config::element_devices`], alias
    /// [`crate::hostdev::usb_alias`]). The one answer to "which devices does
    /// this guest hold": sync, the hook and the saved-state rewrite ask it.
    pub fn guest_devices<'p>(
        &self,
        guest: usize,
        scan: &'p crate::sysfs::Scan,
    ) -> Vec<(String, &'p crate::sysfs::UsbDevice)> {
        let Some(d) = self.domains.get(guest) else {
            return Vec::new();
        };
        let mut out: Vec<(String, &crate::sysfs::UsbDevice)> = self
            .serials_of(d)
            .filter_map(|s| crate::sysfs::with_serial(&scan.devices, s))
            .map(|dev| {
                let serial = dev.serial.as_deref().unwrap_or_default();
                (crate::hostdev::alias_for(serial), dev)
            })
            .collect();
        for (dev, e) in self.element_devices(guest, &scan.usb) {
            if !out.iter().any(|(_, o)| o.name == dev.name) {
                out.push((
                    crate::hostdev::usb_alias(dev.id, &d.id, e, dev.serial.as_deref()),
                    dev,
                ));
            }
        }
        out
    }

    /// The index in `domains` of the guest libvirt calls `name` (its
    /// libvirt name, never a config id that maps to another name).
    pub fn guest_named(&self, name: &str) -> Option<usize> {
        self.domains.iter().position(|d| d.libvirt_name() == name)
    }

    /// The domain with config id or libvirt name `name`.
    pub fn find_domain(&self, name: &str) -> Option<&DomainConf> {
        self.domains
            .iter()
            .find(|d| d.id == name)
            .or_else(|| self.domains.iter().find(|d| d.libvirt_name() == name))
    }

    /// Serials listed by more than one domain, as
    /// `(serial, first_id, other_id)`: the first domain wins (see
    /// [`Config::domain_for_serial`]); the caller should warn about the rest.
    pub fn duplicates(&self) -> Vec<(String, String, String)> {
        let mut owner: HashMap<&str, &str> = HashMap::new();
        let mut out: Vec<(String, String, String)> = Vec::new();
        for d in &self.domains {
            for s in &d.serials {
                match owner.get(s.as_str()) {
                    None => {
                        owner.insert(s, &d.id);
                    }
                    Some(first) if *first != d.id => {
                        let dup = (s.clone(), first.to_string(), d.id.clone());
                        if !out.contains(&dup) {
                            out.push(dup);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        out
    }
}

/// The config file a run reads: `--config` ([`resolve_config_path`]), else
/// [`DEFAULT_CONFIG`].
pub fn config_path(arg: Option<&str>) -> PathBuf {
    arg.map_or_else(|| PathBuf::from(DEFAULT_CONFIG), resolve_config_path)
}

/// The path meant by `--config ARG`: with a `/` it is used as given; a bare
/// name is `/etc/bit-babbler/NAME.conf` (`vm` and `vm.conf` both give
/// `/etc/bit-babbler/vm.conf`), as in the original script.
pub fn resolve_config_path(arg: &str) -> PathBuf {
    if arg.contains('/') {
        return PathBuf::from(arg);
    }
    // Like `basename NAME .conf`: the suffix is not removed if it is all there is.
    let base = match arg.strip_suffix(".conf") {
        Some(b) if !b.is_empty() => b,
        _ => arg,
    };
    PathBuf::from(format!("{CONFIG_DIR}/{base}.conf"))
}

/// Checks, loads and parses `path` (native, else bash), and says how.
/// `Ok(None)` when the file does not exist; any error in it is an `Err`.
pub fn load_report(path: &Path) -> Result<Option<Loaded>, ConfigError> {
    let Some((validated, via)) = load_validated(path)? else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        config: validated.strict()?,
        via,
    }))
}

/// [`load_report`] for `check`: a file that parses but has wrong settings
/// comes with the rest of its settings (those left out named in
/// [`Config::usb_left_out`]) and the errors of the wrong ones. `Err` when
/// nothing of the file can be used (unsafe, unreadable, a syntax error,
/// bash failing).
pub fn load_lenient(path: &Path) -> Result<Option<(Loaded, Vec<ConfigError>)>, ConfigError> {
    let Some((validated, via)) = load_validated(path)? else {
        return Ok(None);
    };
    let Validated { config, errors } = validated;
    Ok(Some((Loaded { config, via }, errors)))
}

/// Checks, reads and parses `path` (native, else bash); validation is the
/// caller's choice ([`Validated`]).
fn load_validated(path: &Path) -> Result<Option<(Validated, Via)>, ConfigError> {
    let Some(bytes) = read_checked(path)? else {
        return Ok(None);
    };
    match parse_bytes_lenient(path, &bytes) {
        Ok(validated) => Ok(Some((validated, Via::Native))),
        Err(NativeError::NeedsBash { line, reason }) => {
            Ok(Some((run_bash(path)?, Via::Bash { line, reason })))
        }
        Err(NativeError::Invalid(e)) => Err(e),
    }
}

/// Evaluates `path` with bash, whatever it contains (after the permission
/// check).  Domains come out alphabetical by id.
pub fn eval_with_bash(path: &Path) -> Result<Config, ConfigError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    check_metadata(path, &meta)?;
    run_bash(path)?.strict()
}

/// One DOMAIN_* variable: its element 0 (`${!name}`) and all its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawVar {
    name: String,
    first: String,
    values: Vec<String>,
    /// The line of its last assignment (native parse only).
    line: Option<usize>,
    /// Where it is set (native parse only).
    lines: Option<VarLines>,
}

/// Which of the three per-guest variables `name` is, and for which id.
fn domain_var(name: &str) -> Option<(DomainVar, &str)> {
    let (kind, id) = if let Some(id) = name.strip_prefix("DOMAIN_RNG_") {
        (DomainVar::Rng, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_URI_") {
        (DomainVar::Uri, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_NAME_") {
        (DomainVar::Name, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_USB_") {
        (DomainVar::Usb, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_REMOTE_") {
        (DomainVar::Remote, id)
    } else {
        return None;
    };
    (!id.is_empty()).then_some((kind, id))
}

/// The per-guest variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DomainVar {
    Rng,
    Uri,
    Name,
    Usb,
    Remote,
}

/// Domains from variables, in the order the variables are given, and the
/// `DOMAIN_USB_` elements left out (guest id, index): each malformed
/// element is left out with its error in `errors`.
fn domains_from_vars(
    path: &Path,
    vars: &[RawVar],
    errors: &mut Vec<ConfigError>,
) -> (Vec<DomainConf>, Vec<(String, usize)>) {
    let mut domains: Vec<DomainConf> = Vec::new();
    let mut left_out: Vec<(String, usize)> = Vec::new();
    for var in vars {
        let Some((kind, id)) = domain_var(&var.name) else {
            continue;
        };
        let pos = match domains.iter().position(|d| d.id == id) {
            Some(p) => p,
            None => {
                domains.push(DomainConf {
                    id: id.to_string(),
                    name: None,
                    uri: None,
                    serials: Vec::new(),
                    usb: Vec::new(),
                    remote: Vec::new(),
                });
                domains.len() - 1
            }
        };
        let d = &mut domains[pos];
        let nonempty = (!var.first.is_empty()).then(|| var.first.clone());
        match kind {
            DomainVar::Rng => d.serials = var.values.clone(),
            DomainVar::Uri => d.uri = nonempty,
            DomainVar::Name => d.name = nonempty,
            DomainVar::Usb => {
                // A later assignment replaces the whole array.
                left_out.retain(|(lid, _)| lid != id);
                d.usb.clear();
                for (i, text) in var.values.iter().enumerate() {
                    match element::<Selector>(path, var, i, text) {
                        Ok(selector) => d.usb.push(selector),
                        Err(e) => {
                            errors.push(e);
                            left_out.push((id.to_string(), i));
                        }
                    }
                }
            }
            DomainVar::Remote => {
                // A later assignment replaces the whole array; a malformed
                // element is an error of its own and left out.
                d.remote.clear();
                for (i, text) in var.values.iter().enumerate() {
                    match element(path, var, i, text) {
                        Ok(e) => d.remote.push(e),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
    }
    (domains, left_out)
}

/// Element `i` of an array (`DOMAIN_USB_`, `DOMAIN_REMOTE_`) parsed as a
/// `T`; a malformed one is an error at its line (native parse), else named
/// by its index.
fn element<T>(path: &Path, var: &RawVar, i: usize, text: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse::<T>().map_err(|e| {
        let line = var.lines.as_ref().and_then(|l| l.elements.get(i).copied());
        let msg = format!(
            "{}[{i}] \"{}\": {e}",
            var.name,
            crate::text::escape_controls(text)
        );
        ConfigError::at(path, line, msg)
    })
}

mod bash;
mod native;
mod perms;
pub mod serve;

pub use native::{parse_bytes, parse_native};

use native::parse_bytes_lenient;
pub use perms::check_permissions;

use bash::run_bash;
use perms::{check_metadata, read_checked};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_first_wins() {
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_RNG_a=(S1 S2 S2)\nDOMAIN_RNG_b=(S2 S3)\nDOMAIN_RNG_c=(S1 S2)",
        )
        .unwrap();
        assert_eq!(
            c.duplicates(),
            vec![
                ("S2".into(), "a".into(), "b".into()),
                ("S1".into(), "a".into(), "c".into()),
                ("S2".into(), "a".into(), "c".into()),
            ]
        );
        assert_eq!(c.domain_for_serial("S2").map(|d| d.id.as_str()), Some("a"));
    }

    #[test]
    fn config_paths() {
        assert_eq!(resolve_config_path("vm"), Path::new(DEFAULT_CONFIG));
        assert_eq!(resolve_config_path("vm.conf"), Path::new(DEFAULT_CONFIG));
        assert_eq!(
            resolve_config_path("lab"),
            Path::new("/etc/bit-babbler/lab.conf")
        );
        assert_eq!(resolve_config_path("./vm"), Path::new("./vm"));
        assert_eq!(resolve_config_path("/tmp/x.cfg"), Path::new("/tmp/x.cfg"));
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Config::load(&dir.path().join("nope.conf")),
            Ok(None)
        ));
        assert!(matches!(
            Config::load(dir.path()),
            Err(ConfigError::NotAFile { .. }) | Err(ConfigError::Insecure { .. })
        ));
    }

    #[test]
    fn usb_elements_parse_with_their_lines() {
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_NAME_ha=\"home-assistant\"\n\
             DOMAIN_USB_ha=( \"id=10c4:ea60 port=1-5\"   # Zigbee\n\
             \x20              \"id=0658:0200\" )\n\
             DOMAIN_USB_vault=( \"id=1050:0407 serial='A B'\" )\n",
        )
        .unwrap();
        let ids: Vec<&str> = c.domains.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["ha", "vault"], "a domain with only USB elements");
        let ha = &c.domains[0];
        assert_eq!(ha.libvirt_name(), "home-assistant");
        assert_eq!(ha.usb.len(), 2);
        assert_eq!(ha.usb[0].port, Some((1, vec![5])));
        assert_eq!(c.domains[1].usb[0].serial.as_deref(), Some("A B"));
        assert_eq!(c.lines.element("DOMAIN_USB_ha", 1), Some(3));
    }

    #[test]
    fn remote_elements_parse_and_a_malformed_one_names_its_line() {
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_REMOTE_ha=( \"zigbee.lan:4000\"\n  \"[fd00::7]:4001 tls=no\" )\n",
        )
        .unwrap();
        let ha = &c.domains[0];
        assert_eq!(ha.id, "ha", "a domain with only remote devices");
        let shown: Vec<String> = ha.remote.iter().map(|r| r.endpoint.to_string()).collect();
        assert_eq!(shown, ["zigbee.lan:4000", "[fd00::7]:4001"]);
        assert_eq!(c.domain_line(ha), Some(1));
        let e = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_RNG_a=(ABC1234)\nDOMAIN_REMOTE_a=( \"h:1\"\n \"h:0 tls=no\" \"<x>:1\" )\n",
        )
        .unwrap_err();
        let NativeError::Invalid(ConfigError::Several(all)) = &e else {
            panic!("{e:?}");
        };
        let all: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert!(
            all[0].starts_with("/t/vm.conf:3: DOMAIN_REMOTE_a[1] \"h:0 tls=no\": "),
            "{all:?}"
        );
        assert!(
            all[1].starts_with("/t/vm.conf:3: DOMAIN_REMOTE_a[2] \"<x>:1\": "),
            "{all:?}"
        );
        // check reads the rest: the valid element stays
        let v = parse_bytes_lenient(
            Path::new("/t/vm.conf"),
            b"DOMAIN_REMOTE_a=( \"h:1\" \"h:x\" )\n",
        )
        .unwrap();
        assert_eq!(v.config.domains[0].remote.len(), 1);
        assert_eq!(v.errors.len(), 1);
    }

    #[test]
    fn a_malformed_usb_element_names_file_and_line() {
        let e = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_USB_a=( \"id=10c4:ea60\"\n  \"serial=0001\" )\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/t/vm.conf:2: DOMAIN_USB_a[1] \"serial=0001\": needs id= or port= (a serial \
             alone could be any device's)"
        );
        let e =
            parse_native(Path::new("/t/vm.conf"), "DOMAIN_USB_a=( \"id=zz:1\" )\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/t/vm.conf:1: DOMAIN_USB_a[0] \"id=zz:1\": "),
            "{e}"
        );
        // Every malformed element, not only the first.
        let e = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_USB_a=( \"id=zz:1\"\n \"id=10c4:ea60\"\n \"port=x\" )\nDOMAIN_USB_b=( \"nope\" )\n",
        )
        .unwrap_err();
        let NativeError::Invalid(ConfigError::Several(all)) = &e else {
            panic!("{e:?}");
        };
        let lines: Vec<String> = all
            .iter()
            .map(|e| e.to_string()[..16].to_string())
            .collect();
        assert_eq!(
            lines,
            ["/t/vm.conf:1: DO", "/t/vm.conf:3: DO", "/t/vm.conf:4: DO"]
        );
    }

    #[test]
    fn lenient_keeps_the_valid_settings_and_names_the_elements_left_out() {
        let text = "DOMAIN_USB_a=( \"id=zz:1\"\n \"id=10c4:ea60\"\n \"port=x\"\n \"port=1-5\" )\n\
                    DOMAIN_RNG_b=( KWIF4Q )\nBBVIRT_TIMEOUT=0\n";
        let v = native::parse_native_lenient(Path::new("/t/vm.conf"), text).unwrap();
        let lines: Vec<String> = v.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("/t/vm.conf:1: DOMAIN_USB_a[0] "),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("/t/vm.conf:3: DOMAIN_USB_a[2] "),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("/t/vm.conf:6: BBVIRT_TIMEOUT="),
            "{lines:?}"
        );
        let c = &v.config;
        assert_eq!(c.timeout, None);
        assert_eq!(c.domains[1].serials, ["KWIF4Q"]);
        let a = &c.domains[0];
        assert_eq!(a.usb.len(), 2);
        assert_eq!(c.usb_left_out, [("a".into(), 0), ("a".into(), 2)]);
        // The kept elements by their index in the file.
        assert_eq!((c.usb_index(a, 0), c.usb_index(a, 1)), (1, 3));
        assert_eq!(c.usb_index(&c.domains[1], 0), 0);
        // Strict: the errors, all of them.
        let e = parse_native(Path::new("/t/vm.conf"), text).unwrap_err();
        let NativeError::Invalid(ConfigError::Several(all)) = &e else {
            panic!("{e:?}");
        };
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn usb_routes_follow_specificity_then_file_order_one_device_each() {
        use crate::selector::{Candidate, UsbId};
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_USB_a=( \"id=10c4:ea60\" )\n\
             DOMAIN_USB_b=( \"id=10c4:ea60 port=1-5\" \"id=0658:0200\" )\n",
        )
        .unwrap();
        let cp = UsbId {
            vendor: 0x10c4,
            product: 0xea60,
        };
        let zw = UsbId {
            vendor: 0x0658,
            product: 0x0200,
        };
        let dev = |id, bus, ports: &'static [u32]| Candidate {
            id,
            serial: Some("0001"),
            bus,
            ports,
        };
        // Twins with serial 0001 at 1-4 and 1-5, a Z-Wave stick, a stranger.
        let other = UsbId {
            vendor: 0x046d,
            product: 0xc52b,
        };
        let devices = [
            dev(cp, 1, &[4]),
            dev(cp, 1, &[5]),
            dev(zw, 2, &[1]),
            dev(other, 2, &[2]),
        ];
        let r = c.usb_routes(&devices);
        // 1-5 goes to b's port element (more specific), 1-4 to a's.
        assert_eq!(r.route, [Some((0, 0)), Some((1, 0)), Some((1, 1)), None]);
        // a's id= element matches both twins: reported.
        assert!(!r.overlaps.is_empty());
        // Without the port element, a's element takes one twin (port
        // order) and the other stays with the host.
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_USB_a=( \"id=10c4:ea60\" )\n",
        )
        .unwrap();
        assert_eq!(
            c.usb_routes(&devices).route,
            [Some((0, 0)), None, None, None]
        );
    }
}
