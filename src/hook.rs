//! The libvirt qemu hook: `bbvirt hook DOMAIN OPERATION SUBOP EXTRA`.
//!
//! libvirt runs its hooks synchronously while it holds the guest's state, so
//! a hook that calls back into libvirt deadlocks. This one never does: on
//! `started` (a guest came up) and `reconnect` (libvirtd restarted and found
//! it running) it writes `change` to the sysfs `uevent` file of each of the
//! guest's BitBabblers that is plugged in. udev then runs its rule, which runs
//! `bbvirt attach` outside libvirt's hook, and that attaches the device.
//! The hook always exits 0, so it can never stop a guest from starting.

use crate::config::Config;
use crate::sysfs::{Sysfs, UsbDevice, with_serial};
use crate::{debug, error, info, note};

/// The operations after which the guest's devices are re-announced.
pub fn wants_devices(operation: &str) -> bool {
    matches!(operation, "started" | "reconnect")
}

/// The present devices that belong to the libvirt domain `domain`: the
/// serials it gets ([`Config::serials_of`]), found among `present`.
pub fn devices_for<'a>(
    config: &Config,
    domain: &str,
    present: &'a [UsbDevice],
) -> Vec<&'a UsbDevice> {
    // libvirt names the domain by its libvirt name, never by a config id
    // that maps to another name.
    let Some(d) = config.domains.iter().find(|d| d.libvirt_name() == domain) else {
        return Vec::new();
    };
    config
        .serials_of(d)
        .filter_map(|s| with_serial(present, s))
        .collect()
}

/// Runs the hook. Every problem is logged; nothing is returned because the
/// hook's exit status is always 0.
pub fn run(args: &[String], config: Option<&Config>, sysfs: &Sysfs) {
    let (Some(domain), Some(operation)) = (args.first(), args.get(1)) else {
        error!("hook: expected DOMAIN OPERATION SUBOP EXTRA, got {args:?}");
        return;
    };
    if !wants_devices(operation) {
        debug!("hook: {domain} {operation}: nothing to do");
        return;
    }
    let Some(config) = config else {
        note!("hook: no config: no devices for {domain}");
        return;
    };
    let present = match sysfs.bitbabblers() {
        Ok(p) => p,
        Err(e) => {
            error!("hook: {}", crate::log::chain(&e));
            return;
        }
    };
    let devices = devices_for(config, domain, &present);
    if devices.is_empty() {
        note!("hook: {domain} {operation}: none of its devices is plugged in");
    }
    for dev in devices {
        match sysfs.trigger_change(dev) {
            Ok(()) => info!(
                "hook: {domain} {operation}: asked udev to re-announce {} ({:03}:{:03})",
                dev.serial.as_deref().unwrap_or_default(),
                dev.busnum,
                dev.devnum
            ),
            Err(e) => error!("hook: {}", crate::log::chain(&e)),
        }
    }
}
