//! The libvirt qemu hook: `bbvirt hook DOMAIN OPERATION SUBOP EXTRA`.
//!
//! libvirt runs its hooks synchronously while it holds the guest's state, so
//! a hook that calls back into libvirt deadlocks. This one never does: on
//! `started` (a guest came up) and `reconnect` (libvirtd restarted and found
//! it running) it writes `change` to the sysfs `uevent` file of each of the
//! guest's devices that is plugged in (BitBabblers by their serials, any
//! USB device by the guest's `DOMAIN_USB_` elements). udev then runs its rule, which runs
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

/// The present devices of any kind that the `DOMAIN_USB_` elements of the
/// libvirt domain `domain` get ([`Config::element_devices`]), among `usb`.
pub fn usb_devices_for<'a>(
    config: &Config,
    domain: &str,
    usb: &'a [UsbDevice],
) -> Vec<&'a UsbDevice> {
    let Some(index) = config
        .domains
        .iter()
        .position(|d| d.libvirt_name() == domain)
    else {
        return Vec::new();
    };
    config
        .element_devices(index, usb)
        .into_iter()
        .map(|(dev, _)| dev)
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
    let scan = match sysfs.scan() {
        Ok(s) => s,
        Err(e) => {
            error!("hook: {}", crate::log::chain(&e));
            return;
        }
    };
    let mut devices = devices_for(config, domain, &scan.devices);
    for dev in usb_devices_for(config, domain, &scan.usb) {
        if !devices.iter().any(|d| d.name == dev.name) {
            devices.push(dev);
        }
    }
    if devices.is_empty() {
        note!("hook: {domain} {operation}: none of its devices is plugged in");
    }
    for dev in devices {
        match sysfs.trigger_change(dev) {
            Ok(()) => info!(
                "hook: {domain} {operation}: asked udev to re-announce {} ({:03}:{:03})",
                match &dev.serial {
                    Some(s) if dev.is_bitbabbler() => s.clone(),
                    _ => dev.describe(),
                },
                dev.busnum,
                dev.devnum
            ),
            Err(e) => error!("hook: {}", crate::log::chain(&e)),
        }
    }
}
