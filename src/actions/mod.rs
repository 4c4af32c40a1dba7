//! attach, detach, sync (= attach-all) and detach-all: the decisions, on top
//! of the shared [`Context`] (config, sysfs, the narrow
//! [`crate::libvirt::Hypervisor`] trait, targets and connections).
//!
//! Every decision is taken from the truth, not from memory: the device's
//! presence and address come from sysfs, the guest's devices from its live
//! XML. bbvirt only ever touches hostdevs that carry one of its own
//! aliases: `ua-bbvirt-<serial>` (a BitBabbler by `DOMAIN_RNG_`) or
//! `ua-bbusb-...` (a device a `DOMAIN_USB_` element routes), and redirdevs
//! aliased `ua-bbnet-...` (a remote device of `DOMAIN_REMOTE_`, `actions::remote`).

use std::time::{Duration, Instant};

use crate::context::{Connections, Context, Target};
use crate::device::{DeviceId, is_valid_serial};
use crate::hostdev::{UsbHostdev, XmlError, alias_for, hostdev_xml, usb_hostdevs};
use crate::libvirt::{Connection, VirtError};
use crate::reconcile::{Placement, placement};
use crate::sysfs::{AtDevpath, Scan, SysfsError, UsbDevice};
use crate::text::shell_quote;
use crate::{debug, detail, info, note, warn};

mod after_job;
mod detach;
mod remote;
mod sync;

pub use after_job::{Bounds, NOT_RUNNING};

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
        "serial {} is carried by several devices ({devices}): name one by BUS:DEV or BUS-PORT",
        crate::text::escape_controls(.serial)
    )]
    AmbiguousSerial { serial: String, devices: String },
    #[error(
        "device {device} has no usable serial number ({serial}): a BitBabbler goes by its serial only when that is 6-7 characters A-Z, 0-9 (else only a DOMAIN_USB_ element can select it)"
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
    /// libvirt refused the attach and the guest has no USB controller: the
    /// one-line reason, instead of libvirt's message.
    #[error(
        "cannot attach {device} to '{domain}': the guest has no USB controller; add {} with `virsh edit {}`, then restart it",
        crate::controllers::XHCI_FIX,
        crate::text::shell_quote(.domain)
    )]
    NoUsbController { device: String, domain: String },
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

/// An attach's result under udev (ACTION and DEVPATH in the environment,
/// [`crate::daemon::run_by_udev`]): a device that is not present is nothing
/// to do, noted. It was unplugged before bbvirt looked (its remove event
/// follows), or it is a root hub (`usbN`, no port to pass). By hand it
/// stays an error. `nothing` is the caller's "nothing to do".
pub fn absent_under_udev<T>(result: Result<T, ActionError>, nothing: T) -> Result<T, ActionError> {
    match result {
        Err(ActionError::NotFound(dev)) if crate::daemon::run_by_udev() => {
            note!("device {dev} is gone already (unplugged) or a root hub: nothing to attach");
            Ok(nothing)
        }
        other => other,
    }
}

/// Where an attach goes ([`Context::route_attach`]).
#[derive(Debug)]
pub enum AttachRoute {
    /// The device stays with the host (not assigned, or no usable serial).
    Stays,
    /// To this guest: `what` names the device in messages (its serial, for
    /// a BitBabbler), `alias` is bbvirt's hostdev alias for it.
    To {
        device: Box<UsbDevice>,
        what: String,
        alias: String,
        target: Target,
    },
}

/// A device in the lines that say what was done to it: `SERIAL (BBB:DDD,
/// BUS-PORT)`, or `no serial (...)` (the lab and admins grep the attached
/// lines for the serial first; [`UsbDevice::describe`] is the routing form).
fn with_address(dev: &UsbDevice) -> String {
    format!(
        "{} ({:03}:{:03}, {})",
        dev.serial.as_deref().unwrap_or("no serial").escape_debug(),
        dev.busnum,
        dev.devnum,
        dev.name
    )
}

/// Whether libvirt refused because its driver has no device attach at all
/// (`VIR_ERR_NO_SUPPORT`): then no controller is to blame.
fn driver_lacks_attach(e: &VirtError) -> bool {
    matches!(e, VirtError::Failed { code, .. } if *code == virt::sys::VIR_ERR_NO_SUPPORT as i32)
}

/// After a refused attach: whether the guest's live XML shows a USB
/// controller ([`crate::controllers`]); true when that cannot be told, so
/// that libvirt's own message is shown then.
fn can_take_usb(conn: &dyn Connection, domain: &str) -> bool {
    conn.live_xml(domain)
        .ok()
        .and_then(|xml| crate::controllers::usb_support(&xml).ok())
        .is_none_or(|s| s.can_attach())
}

/// Collects the failures of the steps of one action.
#[derive(Default)]
struct Steps {
    outcome: Option<Outcome>,
    errors: Vec<ActionError>,
    total: usize,
}

/// A dry run's line for the detach of `alias` from `target`.
fn plan_detach_alias(target: &Target, alias: &str) {
    crate::log::dry_run(&target.virsh(&[
        "detach-device-alias",
        &shell_quote(&target.name),
        &shell_quote(alias),
        "--live",
    ]));
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

    /// Finds the device a DEVICE argument names ([`Context::find_present`]);
    /// None when absent.
    fn lookup(&self, id: &DeviceId) -> Result<Option<UsbDevice>, ActionError> {
        let scan = self.sysfs.scan()?;
        Ok(self.find_present(&scan, id)?.cloned())
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
    pub fn attach(&self, id: &DeviceId) -> Result<Outcome, ActionError> {
        match self.route_attach(id)? {
            AttachRoute::Stays => Ok(Outcome::NothingToDo),
            AttachRoute::To {
                device,
                what,
                alias,
                target,
            } => self.attach_to(&mut self.connections(), &device, &what, &alias, &target),
        }
    }

    /// Where `bbvirt attach DEVICE` sends the device, decided from vm.conf
    /// and sysfs alone, before anything asks libvirt (the udev front,
    /// [`crate::event`], stops here when the device stays with the host).
    /// Logs why a device stays.
    pub fn route_attach(&self, id: &DeviceId) -> Result<AttachRoute, ActionError> {
        let scan = self.sysfs.scan()?;
        let dev = self
            .find_present(&scan, id)?
            .ok_or_else(|| ActionError::NotFound(id.to_string()))?;
        self.route_present(dev, self.element_route(&scan, dev))
    }

    /// [`Context::route_attach`] for `id` = `BUS:DEV` from `at`, the root
    /// hub or device found without a scan (the udev front reads its
    /// event's own directory, [`crate::sysfs::Sysfs::at_devpath`]), when
    /// that route does not depend on the other present devices. The kernel
    /// gives each present device its own `BUS:DEV`, so a scan finds `at`
    /// for `id` (a root hub: nothing, it is never in a scan); and the route
    /// of a device that no `DOMAIN_USB_` element matches follows from the
    /// device alone: its serial, else the host
    /// ([`crate::config::Config::elements_may_take`]). None when `id` is
    /// not `at`'s `BUS:DEV`, or some element matches the device (which one
    /// takes it, if any, depends on the other devices: each element takes
    /// one, the first in port order): then only the scan can tell.
    pub fn route_alone(
        &self,
        at: &AtDevpath,
        id: &DeviceId,
    ) -> Option<Result<AttachRoute, ActionError>> {
        let &DeviceId::Address { bus, dev: devnum } = id else {
            return None;
        };
        match at {
            // Never in a scan (no port to pass): not found, as for bbvirt.
            AtDevpath::RootHub { busnum, devnum: d } => {
                (*busnum == bus && *d == devnum).then(|| Err(ActionError::NotFound(id.to_string())))
            }
            AtDevpath::Device(dev) => {
                if !dev.matches(id) || self.config.elements_may_take(dev) {
                    return None;
                }
                Some(
                    self.found(dev, id)
                        .and_then(|()| self.route_present(dev, None)),
                )
            }
        }
    }

    /// [`Context::route_attach`] once the device is found.
    fn route_present(
        &self,
        dev: &UsbDevice,
        by_element: Option<(usize, usize)>,
    ) -> Result<AttachRoute, ActionError> {
        if !dev.is_bitbabbler() {
            let Some(route) = by_element else {
                note!(
                    "{} matches no DOMAIN_USB_ element: leaving it with the host",
                    dev.describe()
                );
                return Ok(AttachRoute::Stays);
            };
            return Ok(self.route_by_element(dev, route));
        }
        let Some(serial) = dev.serial.as_deref().filter(|s| is_valid_serial(s)) else {
            let err = ActionError::UnusableSerial {
                device: format!("{:03}:{:03}", dev.busnum, dev.devnum),
                serial: format!("{:?}", dev.serial.as_deref().unwrap_or("none")),
            };
            if self.opts.domain.is_some() {
                return Err(err);
            }
            if let Some(route) = by_element {
                return Ok(self.route_by_element(dev, route));
            }
            // udev runs bbvirt for every BitBabbler: such a device stays with
            // the host, and nothing it claims can route it anywhere.
            warn!("{err}; leaving it with the host");
            return Ok(AttachRoute::Stays);
        };
        let Some(target) = self.target_for_serial(serial) else {
            if let Some(route) = by_element {
                return Ok(self.route_by_element(dev, route));
            }
            note!("{serial} is not assigned to any domain: leaving it with the host");
            return Ok(AttachRoute::Stays);
        };
        Ok(AttachRoute::To {
            device: Box::new(dev.clone()),
            what: serial.to_string(),
            alias: alias_for(serial),
            target,
        })
    }

    /// The present device `id` names: a serial among the BitBabblers (as
    /// before `DOMAIN_USB_`), `BUS:DEV` and `BUS-PORT` among every USB
    /// device; the `--busnum`/`--devnum` hints must hold.
    fn find_present<'s>(
        &self,
        scan: &'s Scan,
        id: &DeviceId,
    ) -> Result<Option<&'s UsbDevice>, ActionError> {
        let dev = match id {
            // A BitBabbler serial among the BitBabblers only, as before (an
            // FTDI device that carries the same serial is not a BitBabbler).
            DeviceId::Serial(s) if is_valid_serial(s) => crate::sysfs::find_in(&scan.devices, id),
            // Any other serial among every device: it must name one.
            DeviceId::Serial(s) => {
                let all: Vec<&UsbDevice> = scan.usb.iter().filter(|d| d.matches(id)).collect();
                if all.len() > 1 {
                    return Err(ActionError::AmbiguousSerial {
                        serial: s.clone(),
                        devices: all
                            .iter()
                            .map(|d| d.name.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                all.first().copied()
            }
            _ => crate::sysfs::find_in(&scan.usb, id),
        };
        if let Some(dev) = dev {
            self.found(dev, id)?;
        }
        Ok(dev)
    }

    /// What is said and checked of the device `id` found: its address
    /// (`-vvv`) and the `--busnum`/`--devnum` hints.
    fn found(&self, dev: &UsbDevice, id: &DeviceId) -> Result<(), ActionError> {
        debug!("{id} is {}", with_address(dev));
        self.check_hints(dev, &id.to_string())
    }

    /// The `DOMAIN_USB_` element that gets `dev` among the present devices:
    /// (guest index, element index) ([`crate::config::Config::usb_routes`]).
    fn element_route(&self, scan: &Scan, dev: &UsbDevice) -> Option<(usize, usize)> {
        self.config
            .element_routes(&scan.usb)
            .into_iter()
            .find(|(d, _)| *d == dev)
            .and_then(|(_, route)| route)
    }

    /// The route of a device that element `e` of guest `d` gets
    /// ([`Context::element_route`]).
    fn route_by_element(&self, dev: &UsbDevice, (d, e): (usize, usize)) -> AttachRoute {
        let conf = &self.config.domains[d];
        let target = self.target_for_conf(conf);
        debug!(
            "{} matches DOMAIN_USB_{}[{e}]: domain '{}'",
            dev.describe(),
            conf.id,
            target.name
        );
        AttachRoute::To {
            device: Box::new(dev.clone()),
            what: dev.describe(),
            alias: crate::hostdev::usb_alias(dev.id, &conf.id, e, dev.serial.as_deref()),
            target,
        }
    }

    /// Attaches a present device with a valid serial to `target`, replacing a
    /// stale entry of the same serial at another address.
    fn attach_to(
        &self,
        conns: &mut Connections,
        dev: &UsbDevice,
        serial: &str,
        alias: &str,
        target: &Target,
    ) -> Result<Outcome, ActionError> {
        let xml = hostdev_xml(dev.id, dev.busnum, dev.devnum, alias);
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
        match placement(&hds, alias, dev) {
            Placement::Attached => {
                note!("{serial} is already attached to '{}'", target.name);
                return Ok(Outcome::NothingToDo);
            }
            Placement::StaleAt(hd) if hd.is_parked() => {
                note!(
                    "'{}' holds an empty entry for {serial} (parked when it was restored or \
                     migrated in): replacing it",
                    target.name
                );
                let alias = hd.alias.clone().unwrap_or_default();
                self.detach_alias(conn, target, &alias)?;
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
        detail!("hostdev XML for {}:\n{xml}", with_address(dev));
        crate::log::step(&format!("attaching {serial} to '{}'", target.name));
        match conn.attach_live(&target.name, &xml) {
            Ok(()) => {
                info!("attached {} to '{}'", with_address(dev), target.name);
                Ok(Outcome::Done)
            }
            Err(e) if e.is_nothing_to_do() => {
                note!("{e}: {serial} not attached");
                Ok(Outcome::NothingToDo)
            }
            Err(e) if !driver_lacks_attach(&e) && !can_take_usb(conn, &target.name) => {
                debug!("libvirt said: {e}");
                Err(ActionError::NoUsbController {
                    device: serial.to_string(),
                    domain: target.name.clone(),
                })
            }
            Err(e) => Err(virt_err("attaching", e)),
        }
    }

    /// A dry run's line for a device change libvirt is not asked about:
    /// `virsh [-c URI] VERB DOMAIN <xml> --live`, and the XML at `-vv`.
    fn plan(&self, target: &Target, verb: &str, dev: &UsbDevice, xml: &str) {
        crate::log::dry_run(&target.virsh(&[verb, &shell_quote(&target.name), "<xml>", "--live"]));
        detail!("hostdev XML for {}:\n{xml}", with_address(dev));
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
            plan_detach_alias(target, alias);
            return Ok(Outcome::Done);
        }
        crate::log::step(&format!("detaching {alias} from '{}'", target.name));
        let requested = conn.detach_alias_live(&target.name, alias);
        let start = Instant::now();
        loop {
            let still_there = if crate::remote::redirdev::is_ours(alias) {
                self.live_redirdevs(conn, &target.name)?
                    .is_some_and(|rds| rds.iter().any(|r| r.alias == alias))
            } else {
                self.live_hostdevs(conn, &target.name)?
                    .is_some_and(|hds| hds.iter().any(|h| h.alias.as_deref() == Some(alias)))
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
}

fn addr_of(h: &UsbHostdev) -> String {
    match (h.bus, h.device) {
        (Some(b), Some(d)) => format!("{b:03}:{d:03}"),
        _ => "an unknown address".into(),
    }
}
