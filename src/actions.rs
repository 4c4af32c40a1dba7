//! attach, detach, attach-all and detach-all: the decisions, on top of the
//! narrow [`Hypervisor`] trait, the [`Sysfs`] view and the parsed [`Config`].
//!
//! Every decision is taken from the truth, not from memory: the device's
//! presence and address come from sysfs, the guest's devices from its live
//! XML. bbvirt only ever touches hostdevs that carry its own
//! `ua-bbvirt-<serial>` alias.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::cli::Opts;
use crate::config::{Config, DomainConf};
use crate::device::{DeviceId, InvalidDeviceId, is_valid_serial};
use crate::hostdev::{UsbHostdev, XmlError, alias_for, hostdev_xml, usb_hostdevs};
use crate::libvirt::{Connection, Hypervisor, VirtError};
use crate::sysfs::{Sysfs, SysfsError, UsbDevice};
use crate::{debug, detail, info, note, warn};

/// How long a detach may take to show in the live XML.
const DETACH_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// What a successful run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A guest was changed (or would have been, in a dry run).
    Done,
    /// Nothing needed doing: device not assigned, already attached, guest not
    /// running... The reason has been logged at `-v`.
    NothingToDo,
}

impl Outcome {
    fn and(self, other: Outcome) -> Outcome {
        if self == Outcome::Done || other == Outcome::Done {
            Outcome::Done
        } else {
            Outcome::NothingToDo
        }
    }
}

/// Why an action failed. [`ActionError::exit_code`] maps each to the
/// documented exit status.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    InvalidDevice(#[from] InvalidDeviceId),
    #[error("device {0} is not present")]
    NotFound(String),
    #[error("device {device} has {what} {found}, but --{opt} says {hint}")]
    HintMismatch {
        device: String,
        what: &'static str,
        opt: &'static str,
        found: u32,
        hint: u32,
    },
    #[error("scanning USB devices")]
    Sysfs(#[from] SysfsError),
    #[error(
        "device {device} has no usable serial number ({serial}): bbvirt only handles serials of 6-7 characters A-Z, 0-9"
    )]
    UnusableSerial { device: String, serial: String },
    #[error("{action} {what} on domain '{domain}': {source}")]
    Virt {
        action: &'static str,
        what: String,
        domain: String,
        #[source]
        source: VirtError,
    },
    #[error("reading the live XML of domain '{domain}'")]
    Xml {
        domain: String,
        #[source]
        source: XmlError,
    },
    #[error("{alias} was still in domain '{domain}' {secs} s after libvirt accepted its detach")]
    DetachTimeout {
        alias: String,
        domain: String,
        secs: u64,
    },
    #[error("{failed} of {total} devices failed (see above)")]
    Partial { failed: usize, total: usize },
}

impl ActionError {
    pub fn exit_code(&self) -> i32 {
        use crate::cli::exit;
        match self {
            ActionError::InvalidDevice(_) => exit::USAGE,
            ActionError::NotFound(_) | ActionError::HintMismatch { .. } => exit::NOT_FOUND,
            _ => exit::FAILED,
        }
    }
}

/// Shell-quotes a word for the dry-run lines, so they can be pasted into
/// bash and stay on one line: bare when safe, `'...'` otherwise, and bash's
/// `$'...'` with escapes when the word holds control characters (a newline in
/// a domain name must not start a new output line).
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b))
    {
        return s.to_string();
    }
    if !s.chars().any(char::is_control) {
        return format!("'{}'", s.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            '\n' => out.push_str(r"\n"),
            '\t' => out.push_str(r"\t"),
            '\r' => out.push_str(r"\r"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn describe(dev: &UsbDevice) -> String {
    format!(
        "{} ({:03}:{:03}, {})",
        dev.serial.as_deref().unwrap_or("no serial").escape_debug(),
        dev.busnum,
        dev.devnum,
        dev.name
    )
}

/// A guest to act on: its libvirt name and the URI to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub uri: Option<String>,
}

impl Target {
    fn virsh(&self, args: &[&str]) -> String {
        let mut line = String::from("virsh");
        if let Some(uri) = &self.uri {
            line.push_str(" -c ");
            line.push_str(&shell_word(uri));
        }
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        line
    }
}

/// Everything an action needs.
pub struct Env<'a> {
    pub config: &'a Config,
    pub sysfs: &'a Sysfs,
    pub hv: &'a dyn Hypervisor,
    pub opts: &'a Opts,
    /// Where the host-wide lock lives ([`crate::lock`]); None: no locking.
    pub lock_dir: Option<&'a std::path::Path>,
    /// Whether the local daemon may be asked yet ([`crate::daemon`]); None
    /// where that gate does not apply.
    pub readiness: Option<&'a crate::daemon::Readiness>,
}

/// One connection per URI for the whole run; the host lock is taken before
/// the first one opens, and the readiness gate is asked before the lock (a
/// run told "not ready" never waits for it).
struct Connections<'a> {
    hv: &'a dyn Hypervisor,
    readiness: Option<&'a crate::daemon::Readiness>,
    lock_dir: Option<&'a std::path::Path>,
    lock: Option<crate::lock::HostLock>,
    open: HashMap<Option<String>, Box<dyn Connection>>,
    /// URIs found without a daemon (warned about once).
    down: std::collections::HashSet<Option<String>>,
}

impl<'a> Connections<'a> {
    fn new(env: &Env<'a>) -> Self {
        Connections {
            hv: env.hv,
            readiness: env.readiness,
            lock_dir: env.lock_dir,
            lock: None,
            open: HashMap::new(),
            down: Default::default(),
        }
    }

    fn get(&mut self, uri: Option<&str>) -> Result<&dyn Connection, VirtError> {
        let key = uri.map(str::to_string);
        if let (Some(gate), false) = (self.readiness, self.open.contains_key(&key))
            && let Err(e) = gate.check(uri)
        {
            if self.down.insert(key.clone()) {
                note!("{e}: nothing to do now");
            }
            return Err(e);
        }
        if let (Some(dir), None) = (self.lock_dir, &self.lock) {
            crate::log::step(&format!("waiting for the lock in {}", dir.display()));
            match crate::lock::acquire(dir) {
                Ok(l) => self.lock = Some(l),
                // Better unserialised than not at all (e.g. /run read-only).
                Err(e) => warn!(
                    "locking {}: {e}; carrying on without the lock",
                    dir.display()
                ),
            }
            self.lock_dir = None;
        }
        if !self.open.contains_key(&key) {
            crate::log::step(&format!(
                "connecting to libvirt at {}",
                uri.unwrap_or("the default URI")
            ));
            let conn = match self.hv.connect(uri) {
                Ok(c) => c,
                Err(e) if e.is_nothing_to_do() => {
                    if self.down.insert(key.clone()) {
                        warn!(
                            "{e}: nothing changed; the guest's start (or libvirtd's, \
                             through the qemu hook) brings its devices"
                        );
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if let Some(gate) = self.readiness {
                gate.record(uri);
            }
            self.open.insert(key.clone(), conn);
        }
        Ok(self.open[&key].as_ref())
    }
}

impl Env<'_> {
    fn target_for_conf(&self, d: &DomainConf) -> Target {
        Target {
            name: d.libvirt_name().to_string(),
            uri: self.opts.connect.clone().or_else(|| d.uri.clone()),
        }
    }

    /// The guest named by `--domain`: a config id or libvirt name, or else
    /// used verbatim as a libvirt name.
    fn explicit_target(&self, name: &str) -> Target {
        match self.config.find_domain(name) {
            Some(d) => self.target_for_conf(d),
            None => Target {
                name: name.to_string(),
                uri: self.opts.connect.clone(),
            },
        }
    }

    /// The guest a serial goes to: `--domain`, else the first configured
    /// domain that lists it.
    pub fn target_for_serial(&self, serial: &str) -> Option<Target> {
        if let Some(name) = &self.opts.domain {
            let t = self.explicit_target(name);
            debug!("{serial}: --domain {name} -> domain '{}'", t.name);
            return Some(t);
        }
        let d = self.config.domain_for_serial(serial)?;
        let others: Vec<&str> = self
            .config
            .domains
            .iter()
            .filter(|o| o.id != d.id && o.serials.iter().any(|s| s == serial))
            .map(|o| o.id.as_str())
            .collect();
        if !others.is_empty() {
            warn!(
                "{serial} is assigned to {} and also to {}: the first in {} wins",
                d.id,
                others.join(", "),
                self.config.path.display()
            );
        }
        let t = self.target_for_conf(d);
        debug!(
            "{serial}: DOMAIN_RNG_{} -> domain '{}' at {}",
            d.id,
            t.name,
            t.uri.as_deref().unwrap_or("the default URI")
        );
        Some(t)
    }

    /// Every guest to search when the device's own guest is not known.
    fn all_targets(&self) -> Vec<Target> {
        if let Some(name) = &self.opts.domain {
            return vec![self.explicit_target(name)];
        }
        let mut out: Vec<Target> = Vec::new();
        for d in &self.config.domains {
            let t = self.target_for_conf(d);
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    fn check_hints(&self, dev: &UsbDevice, shown: &str) -> Result<(), ActionError> {
        for (what, opt, found, hint) in [
            ("bus number", "busnum", dev.busnum, self.opts.busnum),
            ("device number", "devnum", dev.devnum, self.opts.devnum),
        ] {
            if let Some(hint) = hint
                && hint != found
            {
                return Err(ActionError::HintMismatch {
                    device: shown.to_string(),
                    what,
                    opt,
                    found,
                    hint,
                });
            }
        }
        Ok(())
    }

    /// Finds the device a DEVICE argument names; None when absent.
    fn lookup(&self, id: &DeviceId) -> Result<Option<UsbDevice>, ActionError> {
        let dev = self.sysfs.find(id)?;
        if let Some(dev) = &dev {
            debug!("{id} is {}", describe(dev));
            self.check_hints(dev, &id.to_string())?;
        }
        Ok(dev)
    }

    /// `bbvirt attach DEVICE`.
    pub fn attach(&self, device: &str) -> Result<Outcome, ActionError> {
        let id = DeviceId::parse(device)?;
        let dev = self
            .lookup(&id)?
            .ok_or_else(|| ActionError::NotFound(id.to_string()))?;
        let Some(serial) = dev.serial.as_deref().filter(|s| is_valid_serial(s)) else {
            let err = ActionError::UnusableSerial {
                device: format!("{:03}:{:03}", dev.busnum, dev.devnum),
                serial: format!("{:?}", dev.serial.as_deref().unwrap_or("none")),
            };
            if self.opts.domain.is_some() {
                return Err(err);
            }
            // udev runs bbvirt for every BitBabbler: such a device stays with
            // the host, and nothing it claims can route it anywhere.
            warn!("{err}; leaving it with the host");
            return Ok(Outcome::NothingToDo);
        };
        let Some(target) = self.target_for_serial(serial) else {
            note!("{serial} is not assigned to any domain: leaving it with the host");
            return Ok(Outcome::NothingToDo);
        };
        self.attach_to(&mut Connections::new(self), &dev, serial, &target)
    }

    /// Attaches a present device with a valid serial to `target`, replacing a
    /// stale entry of the same serial at another address.
    fn attach_to(
        &self,
        conns: &mut Connections,
        dev: &UsbDevice,
        serial: &str,
        target: &Target,
    ) -> Result<Outcome, ActionError> {
        let alias = alias_for(serial);
        let xml = hostdev_xml(dev.busnum, dev.devnum, &alias);
        if self.opts.dry_run {
            crate::log::dry_run(&target.virsh(&[
                "attach-device",
                &shell_word(&target.name),
                "<xml>",
                "--live",
            ]));
            detail!("hostdev XML for {}:\n{xml}", describe(dev));
            return Ok(Outcome::Done);
        }
        let virt_err = |action, source| ActionError::Virt {
            action,
            what: serial.to_string(),
            domain: target.name.clone(),
            source,
        };
        let conn = match conns.get(target.uri.as_deref()) {
            Ok(c) => c,
            Err(e) if e.is_nothing_to_do() => return Ok(Outcome::NothingToDo),
            Err(e) => return Err(virt_err("attaching", e)),
        };
        let Some(hds) = self.live_hostdevs(conn, &target.name)? else {
            return Ok(Outcome::NothingToDo);
        };
        if let Some(hd) = hds.iter().find(|h| h.alias.as_deref() == Some(&alias)) {
            if hd.is_at(dev.busnum, dev.devnum) {
                note!("{serial} is already attached to '{}'", target.name);
                return Ok(Outcome::NothingToDo);
            }
            warn!(
                "'{}' holds a stale entry for {serial} at {}: replacing it (a remove event was missed)",
                target.name,
                addr_of(hd)
            );
            self.detach_alias(conn, target, &alias)?;
        }
        detail!("hostdev XML for {}:\n{xml}", describe(dev));
        crate::log::step(&format!("attaching {serial} to '{}'", target.name));
        match conn.attach_live(&target.name, &xml) {
            Ok(()) => {
                info!("attached {} to '{}'", describe(dev), target.name);
                Ok(Outcome::Done)
            }
            Err(e) if e.is_nothing_to_do() => {
                note!("{e}: {serial} not attached");
                Ok(Outcome::NothingToDo)
            }
            Err(e) => Err(virt_err("attaching", e)),
        }
    }

    /// The USB hostdevs of a running domain; None (noted) when the domain is
    /// not running or not defined.
    fn live_hostdevs(
        &self,
        conn: &dyn Connection,
        domain: &str,
    ) -> Result<Option<Vec<UsbHostdev>>, ActionError> {
        crate::log::step(&format!("reading the live XML of '{domain}'"));
        match conn.live_xml(domain) {
            Ok(xml) => usb_hostdevs(&xml)
                .map(Some)
                .map_err(|source| ActionError::Xml {
                    domain: domain.to_string(),
                    source,
                }),
            Err(e) if e.is_nothing_to_do() => {
                note!("{e}: nothing to do there");
                Ok(None)
            }
            Err(source) => Err(ActionError::Virt {
                action: "reading",
                what: "the live XML".into(),
                domain: domain.to_string(),
                source,
            }),
        }
    }

    /// Detaches the hostdev with `alias` and waits until it has left the
    /// live XML (libvirt's detach is asynchronous).
    fn detach_alias(
        &self,
        conn: &dyn Connection,
        target: &Target,
        alias: &str,
    ) -> Result<Outcome, ActionError> {
        if self.opts.dry_run {
            crate::log::dry_run(&target.virsh(&[
                "detach-device-alias",
                &shell_word(&target.name),
                alias,
                "--live",
            ]));
            return Ok(Outcome::Done);
        }
        crate::log::step(&format!("detaching {alias} from '{}'", target.name));
        let requested = conn.detach_alias_live(&target.name, alias);
        let start = Instant::now();
        loop {
            let still_there = match self.live_hostdevs(conn, &target.name)? {
                None => false,
                Some(hds) => hds.iter().any(|h| h.alias.as_deref() == Some(alias)),
            };
            if !still_there {
                return match requested {
                    Ok(()) => {
                        info!("detached {alias} from '{}'", target.name);
                        Ok(Outcome::Done)
                    }
                    // Gone anyway (guest stopped, or the entry went away by
                    // itself): the truth is what counts.
                    Err(e) => {
                        note!("{alias} is not in '{}' ({e})", target.name);
                        Ok(Outcome::NothingToDo)
                    }
                };
            }
            if let Err(source) = requested {
                return Err(ActionError::Virt {
                    action: "detaching",
                    what: alias.to_string(),
                    domain: target.name.clone(),
                    source,
                });
            }
            if start.elapsed() >= DETACH_WAIT {
                return Err(ActionError::DetachTimeout {
                    alias: alias.to_string(),
                    domain: target.name.clone(),
                    secs: DETACH_WAIT.as_secs(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Detaches, from each target, the bbvirt hostdevs that `wanted` selects.
    fn detach_matching(
        &self,
        conns: &mut Connections,
        targets: &[Target],
        what: &str,
        wanted: &dyn Fn(&UsbHostdev) -> bool,
    ) -> Result<Outcome, ActionError> {
        let mut outcome = Outcome::NothingToDo;
        let mut failed = Vec::new();
        for target in targets {
            let conn = match conns.get(target.uri.as_deref()) {
                Ok(c) => c,
                Err(source) if source.is_nothing_to_do() => continue,
                Err(source) => {
                    failed.push(ActionError::Virt {
                        action: "detaching",
                        what: what.to_string(),
                        domain: target.name.clone(),
                        source,
                    });
                    continue;
                }
            };
            let hds = match self.live_hostdevs(conn, &target.name) {
                Ok(Some(hds)) => hds,
                Ok(None) => continue,
                Err(e) => {
                    failed.push(e);
                    continue;
                }
            };
            for hd in hds
                .iter()
                .filter(|h| h.bbvirt_serial().is_some() && wanted(h))
            {
                let alias = hd.alias.as_deref().unwrap_or_default();
                match self.detach_alias(conn, target, alias) {
                    Ok(o) => outcome = outcome.and(o),
                    Err(e) => failed.push(e),
                }
            }
        }
        match failed.len() {
            0 => {
                if outcome == Outcome::NothingToDo {
                    note!("{what} is not attached to any guest bbvirt looked at");
                }
                Ok(outcome)
            }
            1 => Err(failed.remove(0)),
            n => {
                for e in &failed {
                    crate::error!("{}", crate::log::chain(e));
                }
                Err(ActionError::Partial {
                    failed: n,
                    total: n,
                })
            }
        }
    }

    /// `bbvirt detach DEVICE`. Works after the device has left sysfs: a
    /// serial is found by its alias, `BUS:DEV` by the address in the live XML.
    pub fn detach(&self, device: &str) -> Result<Outcome, ActionError> {
        let id = DeviceId::parse(device)?;
        let present = self.lookup(&id)?;
        // The hostdev to look for: by serial when it is known, else by address.
        let (serial, addr) = match (&present, &id) {
            (Some(dev), _) => match dev.serial.as_deref().filter(|s| is_valid_serial(s)) {
                Some(s) => (Some(s.to_string()), None),
                None => (None, Some((dev.busnum, dev.devnum))),
            },
            (None, DeviceId::Serial(s)) => (Some(s.clone()), None),
            (None, DeviceId::Address { bus, dev }) => (None, Some((*bus, *dev))),
            (None, DeviceId::Physical { .. }) => return Err(ActionError::NotFound(id.to_string())),
        };
        // A hint narrows the search to a hostdev at that address.
        let (hint_bus, hint_dev) = match (&present, addr) {
            (None, None) => (self.opts.busnum, self.opts.devnum),
            (_, Some((b, d))) => (Some(b), Some(d)),
            (Some(_), None) => (None, None),
        };
        let targets = match serial.as_deref().and_then(|s| {
            self.opts
                .domain
                .is_none()
                .then(|| self.target_for_serial(s))
                .flatten()
        }) {
            Some(t) => vec![t],
            None => self.all_targets(),
        };
        if targets.is_empty() {
            note!("no domain is configured: nothing to detach {id} from");
            return Ok(Outcome::NothingToDo);
        }
        let alias = serial.as_deref().map(alias_for);
        let wanted = |h: &UsbHostdev| {
            alias
                .as_deref()
                .is_none_or(|a| h.alias.as_deref() == Some(a))
                && hint_bus.is_none_or(|b| h.bus == Some(b))
                && hint_dev.is_none_or(|d| h.device == Some(d))
        };
        self.detach_matching(
            &mut Connections::new(self),
            &targets,
            &id.to_string(),
            &wanted,
        )
    }

    /// The configured domains an -all action covers: DOMAIN (or `--domain`),
    /// or all of them. None when DOMAIN is not configured.
    fn selected_domains(&self, domain: Option<&str>) -> Option<Vec<&DomainConf>> {
        match domain.or(self.opts.domain.as_deref()) {
            Some(name) => self.config.find_domain(name).map(|d| vec![d]),
            None => Some(self.config.domains.iter().collect()),
        }
    }

    /// The present devices a configured guest should have: its valid
    /// serials that it wins routing for and that are plugged in. Problems
    /// with the list are logged.
    fn wanted_devices<'p>(
        &self,
        d: &DomainConf,
        present: &'p [UsbDevice],
    ) -> (Vec<&'p UsbDevice>, Vec<String>) {
        let mut devices = Vec::new();
        let mut serials = Vec::new();
        for serial in &d.serials {
            if !is_valid_serial(serial) {
                warn!(
                    "{}: DOMAIN_RNG_{} lists {:?}, which is not a BitBabbler serial: skipped",
                    self.config.path.display(),
                    d.id,
                    serial
                );
                continue;
            }
            if let Some(first) = self.config.domain_for_serial(serial)
                && first.id != d.id
            {
                warn!(
                    "{serial} is assigned to {} first: not giving it to {}",
                    first.id, d.id
                );
                continue;
            }
            serials.push(serial.clone());
            match present.iter().find(|p| p.serial.as_deref() == Some(serial)) {
                Some(dev) => devices.push(dev),
                None => note!("{serial} (for '{}') is not plugged in", d.libvirt_name()),
            }
        }
        (devices, serials)
    }

    /// `bbvirt sync [DOMAIN]` and `bbvirt attach-all [DOMAIN]`: makes each
    /// running configured guest (or DOMAIN) hold exactly its present devices,
    /// each once at its current address, and no stale bbvirt entry (device
    /// absent, moved, or not assigned to it). One connection per URI.
    ///
    /// A dry run reads the live XML to say what would change; when libvirt
    /// cannot be reached it says which devices it would ask to attach.
    pub fn sync(&self, domain: Option<&str>) -> Result<Outcome, ActionError> {
        let Some(domains) = self.selected_domains(domain) else {
            note!(
                "domain {} is not configured in {}: nothing to do",
                domain.or(self.opts.domain.as_deref()).unwrap_or_default(),
                self.config.path.display()
            );
            return Ok(Outcome::NothingToDo);
        };
        let mut conns = Connections::new(self);
        // The local daemon first, then the devices: this run may be the one
        // that records the daemon as ready (crate::daemon), and udev's runs
        // told "not ready" until then rely on this scan seeing their device.
        if self.readiness.is_some() {
            for d in &domains {
                let uri = self.target_for_conf(d).uri;
                if crate::daemon::served_by_local_qemu_daemon(uri.as_deref()) {
                    let _ = conns.get(uri.as_deref());
                }
            }
        }
        let present = self.sysfs.bitbabblers()?;
        let mut outcome = Outcome::NothingToDo;
        let mut failures: Vec<ActionError> = Vec::new();
        let mut total = 0;
        for d in domains {
            let target = self.target_for_conf(d);
            let (devices, serials) = self.wanted_devices(d, &present);
            let wanted: Vec<&str> = serials.iter().map(String::as_str).collect();
            let live = match conns.get(target.uri.as_deref()) {
                Ok(conn) => match self.live_hostdevs(conn, &target.name) {
                    Ok(Some(live)) => Some(live),
                    Ok(None) => continue,
                    Err(e) if self.opts.dry_run => {
                        note!(
                            "{}: showing the attach requests only",
                            crate::log::chain(&e)
                        );
                        None
                    }
                    Err(e) => {
                        failures.push(e);
                        continue;
                    }
                },
                Err(e) if self.opts.dry_run => {
                    note!("{e}: showing the attach requests only");
                    None
                }
                Err(e) if e.is_nothing_to_do() => continue,
                Err(source) => {
                    failures.push(ActionError::Virt {
                        action: "syncing",
                        what: "devices".into(),
                        domain: target.name.clone(),
                        source,
                    });
                    continue;
                }
            };
            let live = live.unwrap_or_default();
            for stale in crate::reconcile::stale_entries(&live, &wanted, &present) {
                total += 1;
                warn!(
                    "'{}' holds a stale entry for {} ({}): removing it",
                    target.name, stale.serial, stale.reason
                );
                match conns
                    .get(target.uri.as_deref())
                    .map_err(|source| ActionError::Virt {
                        action: "detaching",
                        what: stale.alias.clone(),
                        domain: target.name.clone(),
                        source,
                    })
                    .and_then(|conn| self.detach_alias(conn, &target, &stale.alias))
                {
                    Ok(o) => outcome = outcome.and(o),
                    Err(e) => failures.push(e),
                }
            }
            for dev in devices {
                let serial = dev.serial.as_deref().unwrap_or_default();
                if crate::reconcile::is_attached(&live, serial, dev) {
                    note!("{serial} is already attached to '{}'", target.name);
                    continue;
                }
                total += 1;
                match self.attach_to(&mut conns, dev, serial, &target) {
                    Ok(o) => outcome = outcome.and(o),
                    Err(e) => failures.push(e),
                }
            }
        }
        match failures.len() {
            0 => Ok(outcome),
            1 if total <= 1 => Err(failures.remove(0)),
            failed => {
                for e in &failures {
                    crate::error!("{}", crate::log::chain(e));
                }
                Err(ActionError::Partial { failed, total })
            }
        }
    }

    /// `bbvirt detach-all [DOMAIN]`: every bbvirt hostdev (alias
    /// `ua-bbvirt-*`) in DOMAIN, or in every configured domain.
    pub fn detach_all(&self, domain: Option<&str>) -> Result<Outcome, ActionError> {
        let Some(domains) = self.selected_domains(domain) else {
            let name = domain.or(self.opts.domain.as_deref()).unwrap_or_default();
            // An unconfigured name is still a libvirt domain the admin may mean.
            let t = self.explicit_target(name);
            return self.detach_matching(
                &mut Connections::new(self),
                &[t],
                "bbvirt devices",
                &|_| true,
            );
        };
        let mut targets: Vec<Target> = Vec::new();
        for d in domains {
            let t = self.target_for_conf(d);
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        self.detach_matching(
            &mut Connections::new(self),
            &targets,
            "bbvirt devices",
            &|_| true,
        )
    }
}

fn addr_of(h: &UsbHostdev) -> String {
    match (h.bus, h.device) {
        (Some(b), Some(d)) => format!("{b:03}:{d:03}"),
        _ => "an unknown address".into(),
    }
}
