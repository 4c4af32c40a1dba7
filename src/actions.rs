//! attach, detach, sync (= attach-all) and detach-all: the decisions, on top
//! of the shared [`Context`] (config, sysfs, the narrow
//! [`crate::libvirt::Hypervisor`] trait, targets and connections).
//!
//! Every decision is taken from the truth, not from memory: the device's
//! presence and address come from sysfs, the guest's devices from its live
//! XML. bbvirt only ever touches hostdevs that carry its own
//! `ua-bbvirt-<serial>` alias.

use std::time::{Duration, Instant};

use crate::config::DomainConf;
use crate::context::{Connections, Context, Target};
use crate::device::{DeviceId, InvalidDeviceId, is_valid_serial};
use crate::hostdev::{UsbHostdev, XmlError, alias_for, hostdev_xml, usb_hostdevs};
use crate::libvirt::{Connection, VirtError};
use crate::reconcile::{Placement, placement, stale_entries};
use crate::sysfs::{SysfsError, UsbDevice, with_serial};
use crate::text::shell_quote;
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
    /// Done when either is Done: what several steps did together.
    pub fn or(self, other: Outcome) -> Outcome {
        if self == Outcome::Done || other == Outcome::Done {
            Outcome::Done
        } else {
            Outcome::NothingToDo
        }
    }
}

/// Why an action failed ([`crate::exit::CommandError::exit_code`] maps
/// each to the documented exit status).
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
    /// Several of the steps of one action failed; `errors` are the
    /// failures (shown before this line), `total` how many steps were tried.
    #[error("{} of {total} devices failed (see above)", .errors.len())]
    Partial {
        errors: Vec<ActionError>,
        total: usize,
    },
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

/// Collects the failures of the steps of one action.
#[derive(Default)]
struct Steps {
    outcome: Option<Outcome>,
    errors: Vec<ActionError>,
    total: usize,
}

impl Steps {
    /// Counts one step and its result.
    fn record(&mut self, result: Result<Outcome, ActionError>) {
        self.total += 1;
        match result {
            Ok(o) => self.outcome = Some(self.outcome.map_or(o, |before| before.or(o))),
            Err(e) => self.errors.push(e),
        }
    }

    /// One failure of one step is that failure; several are a
    /// [`ActionError::Partial`] that keeps them all.
    fn finish(mut self) -> Result<Outcome, ActionError> {
        match self.errors.len() {
            0 => Ok(self.outcome.unwrap_or(Outcome::NothingToDo)),
            1 if self.total <= 1 => Err(self.errors.remove(0)),
            _ => Err(ActionError::Partial {
                errors: self.errors,
                total: self.total,
            }),
        }
    }
}

impl Context<'_> {
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

    /// The connection to a guest's URI for a change: the host lock is taken
    /// first ([`Connections::lock_host`]).
    fn connect<'c>(
        &self,
        conns: &'c mut Connections,
        target: &Target,
    ) -> Result<&'c dyn Connection, VirtError> {
        conns.lock_host(target.uri.as_deref())?;
        conns.get(target.uri.as_deref())
    }

    /// `bbvirt attach DEVICE`.
    pub fn attach(&self, device: &str) -> Result<Outcome, ActionError> {
        let id: DeviceId = device.parse()?;
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
        self.attach_to(&mut self.connections(), &dev, serial, &target)
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
        let xml = hostdev_xml(dev.busnum, dev.devnum, &alias_for(serial));
        if self.opts.dry_run {
            self.plan(target, "attach-device", dev, &xml);
            return Ok(Outcome::Done);
        }
        let virt_err = |action, source| ActionError::Virt {
            action,
            what: serial.to_string(),
            domain: target.name.clone(),
            source,
        };
        let conn = match self.connect(conns, target) {
            Ok(c) => c,
            Err(e) if e.is_nothing_to_do() => return Ok(Outcome::NothingToDo),
            Err(e) => return Err(virt_err("attaching", e)),
        };
        let Some(hds) = self.live_hostdevs(conn, &target.name)? else {
            return Ok(Outcome::NothingToDo);
        };
        match placement(&hds, serial, dev) {
            Placement::Attached => {
                note!("{serial} is already attached to '{}'", target.name);
                return Ok(Outcome::NothingToDo);
            }
            Placement::StaleAt(hd) => {
                warn!(
                    "'{}' holds a stale entry for {serial} at {}: replacing it (a remove event was missed)",
                    target.name,
                    addr_of(hd)
                );
                let alias = hd.alias.clone().unwrap_or_default();
                self.detach_alias(conn, target, &alias)?;
            }
            Placement::Missing => {}
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

    /// A dry run's line for a device change libvirt is not asked about:
    /// `virsh [-c URI] VERB DOMAIN <xml> --live`, and the XML at `-vv`.
    fn plan(&self, target: &Target, verb: &str, dev: &UsbDevice, xml: &str) {
        crate::log::dry_run(&target.virsh(&[verb, &shell_quote(&target.name), "<xml>", "--live"]));
        detail!("hostdev XML for {}:\n{xml}", describe(dev));
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
                &shell_quote(&target.name),
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

    /// Detaches, from each target, the bbvirt hostdevs that `search`
    /// selects. A dry run that cannot ask libvirt lists the detaches of the
    /// present devices `search` plans for the target.
    fn detach_matching(&self, targets: &[Target], search: &Search) -> Result<Outcome, ActionError> {
        let mut conns = self.connections();
        let mut steps = Steps::default();
        for target in targets {
            let conn = match self.connect(&mut conns, target) {
                Ok(c) => c,
                Err(e) if self.opts.dry_run => {
                    if self.plan_detaches(target, search, &e) {
                        steps.outcome = Some(Outcome::Done);
                    }
                    continue;
                }
                Err(source) if source.is_nothing_to_do() => continue,
                Err(source) => {
                    steps.record(Err(ActionError::Virt {
                        action: "detaching",
                        what: search.what.clone(),
                        domain: target.name.clone(),
                        source,
                    }));
                    continue;
                }
            };
            let hds = match self.live_hostdevs(conn, &target.name) {
                Ok(Some(hds)) => hds,
                Ok(None) => continue,
                Err(e) => {
                    steps.record(Err(e));
                    continue;
                }
            };
            for hd in hds
                .iter()
                .filter(|h| h.bbvirt_serial().is_some() && (search.wanted)(h))
            {
                let alias = hd.alias.as_deref().unwrap_or_default();
                steps.record(self.detach_alias(conn, target, alias));
            }
        }
        if steps.errors.is_empty() && steps.outcome != Some(Outcome::Done) {
            note!("{}", search.none_found);
        }
        steps.finish()
    }

    /// The dry-run lines for the detaches libvirt could not be asked about;
    /// false when there is none.
    fn plan_detaches(&self, target: &Target, search: &Search, e: &VirtError) -> bool {
        let planned = (search.planned)(target);
        if planned.is_empty() {
            note!(
                "{e}: libvirt could not be asked what '{}' holds, and none of its devices \
                 is plugged in: no detach request to show",
                target.name
            );
            return false;
        }
        note!(
            "{e}: libvirt could not be asked whether these are attached to '{}': showing \
             the detach requests only",
            target.name
        );
        for (dev, serial) in planned {
            let xml = hostdev_xml(dev.busnum, dev.devnum, &alias_for(&serial));
            self.plan(target, "detach-device", &dev, &xml);
        }
        true
    }

    /// `bbvirt detach DEVICE`. Works after the device has left sysfs: a
    /// serial is found by its alias, `BUS:DEV` by the address in the live XML.
    pub fn detach(&self, device: &str) -> Result<Outcome, ActionError> {
        let id: DeviceId = device.parse()?;
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
        // A present device with a usable serial is what a dry run plans for.
        let planned: Vec<(UsbDevice, String)> = match (&present, &serial) {
            (Some(dev), Some(s)) => vec![(dev.clone(), s.clone())],
            _ => Vec::new(),
        };
        self.detach_matching(
            &targets,
            &Search {
                what: id.to_string(),
                none_found: format!("{id} is not attached to any guest bbvirt looked at"),
                wanted: Box::new(move |h: &UsbHostdev| {
                    alias
                        .as_deref()
                        .is_none_or(|a| h.alias.as_deref() == Some(a))
                        && hint_bus.is_none_or(|b| h.bus == Some(b))
                        && hint_dev.is_none_or(|d| h.device == Some(d))
                }),
                planned: Box::new(move |_| planned.clone()),
            },
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

    /// The present devices a configured guest should have: the serials it
    /// gets ([`crate::config::Config::serials_of`]) that are plugged in, and
    /// those serials. Problems with the list are logged.
    fn wanted_devices<'p>(
        &self,
        d: &DomainConf,
        present: &'p [UsbDevice],
    ) -> (Vec<&'p UsbDevice>, Vec<String>) {
        for serial in &d.serials {
            if !is_valid_serial(serial) {
                warn!(
                    "{}: DOMAIN_RNG_{} lists {:?}, which is not a BitBabbler serial: skipped",
                    self.config.path.display(),
                    d.id,
                    serial
                );
            } else if let Some(first) = self.config.domain_for_serial(serial)
                && first.id != d.id
            {
                warn!(
                    "{serial} is assigned to {} first: not giving it to {}",
                    first.id, d.id
                );
            }
        }
        let mut devices = Vec::new();
        let mut serials = Vec::new();
        for serial in self.config.serials_of(d) {
            serials.push(serial.to_string());
            match with_serial(present, serial) {
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
        let mut conns = self.connections();
        // The local daemon first, then the devices: this run may be the one
        // that records the daemon as ready (crate::daemon), and udev's runs
        // told "not ready" until then rely on this scan seeing their device.
        if self.readiness.is_some() {
            for d in &domains {
                let target = self.target_for_conf(d);
                if crate::daemon::served_by_local_qemu_daemon(target.uri.as_deref()) {
                    let _ = self.connect(&mut conns, &target);
                }
            }
        }
        let present = self.sysfs.bitbabblers()?;
        let mut steps = Steps::default();
        for d in domains {
            let target = self.target_for_conf(d);
            let (devices, serials) = self.wanted_devices(d, &present);
            let wanted: Vec<&str> = serials.iter().map(String::as_str).collect();
            let live = match self.connect(&mut conns, &target) {
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
                        steps.record(Err(e));
                        continue;
                    }
                },
                Err(e) if self.opts.dry_run => {
                    note!("{e}: showing the attach requests only");
                    None
                }
                Err(e) if e.is_nothing_to_do() => continue,
                Err(source) => {
                    steps.record(Err(ActionError::Virt {
                        action: "syncing",
                        what: "devices".into(),
                        domain: target.name.clone(),
                        source,
                    }));
                    continue;
                }
            };
            let live = live.unwrap_or_default();
            for stale in stale_entries(&live, &wanted, &present) {
                warn!(
                    "'{}' holds a stale entry for {} ({}): removing it",
                    target.name, stale.serial, stale.reason
                );
                let result = self
                    .connect(&mut conns, &target)
                    .map_err(|source| ActionError::Virt {
                        action: "detaching",
                        what: stale.alias.clone(),
                        domain: target.name.clone(),
                        source,
                    })
                    .and_then(|conn| self.detach_alias(conn, &target, &stale.alias));
                steps.record(result);
            }
            for dev in devices {
                let serial = dev.serial.as_deref().unwrap_or_default();
                if placement(&live, serial, dev) == Placement::Attached {
                    note!("{serial} is already attached to '{}'", target.name);
                    continue;
                }
                steps.record(self.attach_to(&mut conns, dev, serial, &target));
            }
        }
        steps.finish()
    }

    /// `bbvirt detach-all [DOMAIN]`: every bbvirt hostdev (alias
    /// `ua-bbvirt-*`) in DOMAIN, or in every configured domain.
    pub fn detach_all(&self, domain: Option<&str>) -> Result<Outcome, ActionError> {
        let targets = match self.selected_domains(domain) {
            Some(domains) => self.targets_of(domains),
            // An unconfigured name is still a libvirt domain the admin may mean.
            None => vec![
                self.explicit_target(domain.or(self.opts.domain.as_deref()).unwrap_or_default()),
            ],
        };
        self.detach_matching(
            &targets,
            &Search {
                what: "bbvirt devices".into(),
                none_found: "no bbvirt device is attached to any guest bbvirt looked at".into(),
                wanted: Box::new(|_| true),
                planned: Box::new(|t| self.present_devices_of(t)),
            },
        )
    }

    /// The present devices the configured guests reached as `target` get,
    /// with their serials (for a dry run that cannot ask libvirt).
    fn present_devices_of(&self, target: &Target) -> Vec<(UsbDevice, String)> {
        let present = self.sysfs.bitbabblers().unwrap_or_default();
        let mut out: Vec<(UsbDevice, String)> = Vec::new();
        for d in &self.config.domains {
            if self.target_for_conf(d) != *target {
                continue;
            }
            for serial in self.config.serials_of(d) {
                if let Some(dev) = with_serial(&present, serial)
                    && !out.iter().any(|(_, s)| s == serial)
                {
                    out.push((dev.clone(), serial.to_string()));
                }
            }
        }
        out
    }
}

/// Present devices with their serials.
type Planned = Vec<(UsbDevice, String)>;

/// What a detach looks for.
struct Search<'s> {
    /// The device (or "bbvirt devices") for messages.
    what: String,
    /// The note when nothing was found.
    none_found: String,
    /// Which bbvirt hostdevs of a guest to detach.
    wanted: Box<dyn Fn(&UsbHostdev) -> bool + 's>,
    /// The present devices a dry run plans to detach from a guest when
    /// libvirt cannot be asked, with their serials.
    planned: Box<dyn Fn(&Target) -> Planned + 's>,
}

fn addr_of(h: &UsbHostdev) -> String {
    match (h.bus, h.device) {
        (Some(b), Some(d)) => format!("{b:03}:{d:03}"),
        _ => "an unknown address".into(),
    }
}
