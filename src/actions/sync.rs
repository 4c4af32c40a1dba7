//! `bbvirt sync [DOMAIN]` (and `attach-all`): each running configured
//! guest holds exactly its present devices, each once at its current
//! address, and no stale bbvirt entry; and its remote devices
//! (`DOMAIN_REMOTE_`, [`super::remote`]).

use crate::config::DomainConf;
use crate::context::{Connections, Context, Target};
use crate::device::is_valid_serial;
use crate::hostdev::UsbHostdev;
use crate::reconcile::{Placement, placement, stale_entries, stale_usb_entries};
use crate::sysfs::{Scan, UsbDevice, with_serial};
use crate::{note, warn};

use super::{ActionError, Outcome, Steps};

impl Context<'_> {
    /// The configured domains an -all action covers: DOMAIN (or `--domain`),
    /// or all of them. None when DOMAIN is not configured.
    pub(super) fn selected_domains(&self, domain: Option<&str>) -> Option<Vec<&DomainConf>> {
        match domain.or(self.opts.domain.as_deref()) {
            Some(name) => self.config.find_domain(name).map(|d| vec![d]),
            None => Some(self.config.domains.iter().collect()),
        }
    }

    /// The present devices a configured guest should have by its serials
    /// ([`crate::config::Config::serials_of`]), and those serials (plugged
    /// in or not). Problems with the list are logged.
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
            } else if !self.config.wins(d, serial)
                && let Some(first) = self.config.owner_of(serial)
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
        let scan = self.sysfs.scan()?;
        let mut steps = Steps::default();
        for d in domains {
            self.sync_one(&mut conns, &mut steps, d, &scan);
        }
        steps.finish()
    }

    /// Syncs one configured guest: removes its stale entries, then attaches
    /// its missing devices. Each change is a step of `steps`.
    pub(super) fn sync_one(
        &self,
        conns: &mut Connections,
        steps: &mut Steps,
        d: &DomainConf,
        scan: &Scan,
    ) {
        let present = &scan.devices;
        let target = self.target_for_conf(d);
        let (_, serials) = self.wanted_devices(d, present);
        let wanted: Vec<&str> = serials.iter().map(String::as_str).collect();
        let devices = match self.config.domains.iter().position(|c| c.id == d.id) {
            Some(i) => self.config.guest_devices(i, scan),
            None => Vec::new(),
        };
        let by_element: Vec<(String, &UsbDevice)> = devices
            .iter()
            .filter(|(alias, _)| alias.starts_with(crate::hostdev::USB_ALIAS_PREFIX))
            .cloned()
            .collect();
        let Some(live) = self.live_for_sync(conns, steps, &target) else {
            return;
        };
        let stale = stale_entries(&live, &wanted, present)
            .into_iter()
            .chain(stale_usb_entries(&live, &by_element));
        for stale in stale {
            if stale.dev.is_some_and(|d| d > crate::hostdev::MAX_DEVNUM) {
                note!(
                    "'{}' holds an empty entry for {} (parked when it was restored or migrated \
                     in): removing it",
                    target.name,
                    stale.serial
                );
            } else {
                warn!(
                    "'{}' holds a stale entry for {} ({}): removing it",
                    target.name, stale.serial, stale.reason
                );
            }
            let result = self
                .connect(conns, &target)
                .map_err(|source| ActionError::Virt {
                    action: "detaching",
                    what: stale.alias.clone(),
                    domain: target.name.clone(),
                    source,
                })
                .and_then(|conn| self.detach_alias(conn, &target, &stale.alias));
            steps.record(result);
            conns.release_lock();
        }
        for (alias, dev) in &devices {
            // A BitBabbler routed by its serial is named by it; any other
            // device as UsbDevice::describe says.
            let what = match alias.strip_prefix(crate::hostdev::ALIAS_PREFIX) {
                Some(serial) => serial.to_string(),
                None => dev.describe(),
            };
            if placement(&live, alias, dev) == Placement::Attached {
                note!("{what} is already attached to '{}'", target.name);
                continue;
            }
            steps.record(self.attach_to(conns, dev, &what, alias, &target));
            conns.release_lock();
        }
        self.sync_remote(conns, steps, &target, &d.remote);
    }

    /// The guest's USB hostdevs; None when there is nothing to do there
    /// (not running, not defined, libvirt not running) or it failed (a
    /// step of `steps`). A dry run that cannot read them goes on with none,
    /// to show the attach requests.
    fn live_for_sync(
        &self,
        conns: &mut Connections,
        steps: &mut Steps,
        target: &Target,
    ) -> Option<Vec<UsbHostdev>> {
        match self.connect(conns, target) {
            Ok(conn) => match self.live_hostdevs(conn, &target.name) {
                Ok(Some(live)) => Some(live),
                Ok(None) => None,
                Err(e) if self.opts.dry_run => {
                    note!(
                        "{}: showing the attach requests only",
                        crate::log::chain(&e)
                    );
                    Some(Vec::new())
                }
                Err(e) => {
                    steps.record(Err(e));
                    None
                }
            },
            Err(e) if self.opts.dry_run => {
                note!("{e}: showing the attach requests only");
                Some(Vec::new())
            }
            Err(e) if e.is_nothing_to_do() => None,
            Err(source) => {
                steps.record(Err(ActionError::Virt {
                    action: "syncing",
                    what: "devices".into(),
                    domain: target.name.clone(),
                    source,
                }));
                None
            }
        }
    }
}
