//! `bbvirt detach DEVICE` and `bbvirt detach-all [DOMAIN]`: find bbvirt's
//! hostdevs (and for detach-all its redirdevs) in the live XML and detach
//! them; a dry run that cannot ask
//! libvirt lists the detaches it would request.

use crate::context::{Context, Target};
use crate::device::{DeviceId, is_valid_serial};
use crate::hostdev::{UsbHostdev, alias_for, hostdev_xml};
use crate::libvirt::VirtError;
use crate::note;
use crate::sysfs::{UsbDevice, with_serial};

use super::{ActionError, Outcome, Steps};

impl Context<'_> {
    /// Detaches, from each target, the bbvirt hostdevs that `search`
    /// selects. A dry run that cannot ask libvirt lists the detaches of the
    /// present devices `search` plans for the target.
    fn detach_matching(&self, targets: &[Target], search: &Search) -> Result<Outcome, ActionError> {
        let mut conns = self.connections();
        let mut steps = Steps::default();
        // Whether libvirt answered for any guest (else nothing was looked at).
        let mut answered = false;
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
            answered = true;
            let hds = match self.live_hostdevs(conn, &target.name) {
                Ok(Some(hds)) => hds,
                Ok(None) => continue,
                Err(e) => {
                    steps.record(Err(e));
                    continue;
                }
            };
            for hd in hds.iter().filter(|h| h.is_bbvirts() && (search.wanted)(h)) {
                let alias = hd.alias.as_deref().unwrap_or_default();
                steps.record(self.detach_alias(conn, target, alias));
            }
            if search.remote {
                self.detach_remote(conn, &mut steps, target);
            }
        }
        if answered && steps.errors.is_empty() && steps.outcome != Some(Outcome::Done) {
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
            let xml = hostdev_xml(dev.id, dev.busnum, dev.devnum, &alias_for(&serial));
            self.plan(target, "detach-device", &dev, &xml);
        }
        true
    }

    /// `bbvirt detach DEVICE`. Works after the device has left sysfs: a
    /// serial is found by its alias, `BUS:DEV` by the address in the live XML.
    pub fn detach(&self, id: &DeviceId) -> Result<Outcome, ActionError> {
        let present = self.lookup(id)?;
        // The hostdev to look for: by serial when it is known, else by address.
        let (serial, addr) = match (&present, &id) {
            (Some(dev), _) => match dev.serial.as_deref().filter(|s| is_valid_serial(s)) {
                Some(s) => (Some(s.to_string()), None),
                None => (None, Some((dev.busnum, dev.devnum))),
            },
            (None, DeviceId::Serial(s)) if is_valid_serial(s) => (Some(s.clone()), None),
            // Another device's serial tells no alias once it is gone.
            (None, DeviceId::Serial(_)) => return Err(ActionError::NotFound(id.to_string())),
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
                remote: false,
            },
        )
    }

    /// `bbvirt detach-all [DOMAIN]`: every bbvirt hostdev (alias
    /// `ua-bbvirt-*` or `ua-bbusb-*`) and redirdev (`ua-bbnet-*`) in
    /// DOMAIN, or in every configured domain.
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
                remote: true,
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
    /// Whether bbvirt's redirdevs (remote devices) go too: detach-all.
    remote: bool,
}
