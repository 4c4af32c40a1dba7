//! Looking at sysfs, `/proc` and libvirt for `bbvirt status` (libvirt's
//! domains as [`crate::report::live`] looks at them, for `devices` too),
//! then the report built from what was seen.

use std::path::Path;

use crate::config::DomainConf;
use crate::context::Context;
use crate::device::{DeviceId, is_valid_serial};
use crate::holders::{Holders, device_node};
use crate::hostdev::UsbHostdev;
use crate::reconcile::{Placement, StaleReason, placement, stale_entries, stale_usb_entries};
use crate::report::{LiveDomain, Route, alias_of, look_at_libvirt, routes_of, served_of, uri_of};
use crate::sysfs::{Scan, UsbDevice, with_serial};

use super::{
    Absent, Attachment, DeviceState, DeviceStatus, DomainState, DomainStatus, HeldBy,
    LibvirtStatus, ManagedSave, RemoteState, Report, SCHEMA, SavedHostdev, SavedVerdict,
    StaleEntry, StaleKind, SysfsStatus,
};

/// Looks at sysfs, `/proc` under `proc_root` (who holds the device nodes,
/// [`crate::holders`]), libvirt, and whether bbvirt's hook is installed
/// under `install_root` ([`crate::check::hook_in_place`]), and builds the
/// report. Reads only; logs nothing but `-vvvv` steps (the sysfs warnings
/// are kept in the report); never panics.
pub fn collect(ctx: &Context, proc_root: &Path, install_root: &Path) -> Report {
    crate::log::step("listing the USB devices in sysfs");
    let (scan, sysfs_error) = match ctx.sysfs.scan() {
        Ok(scan) => (scan, None),
        Err(e) => (Scan::default(), Some(crate::log::chain(&e))),
    };
    let sysfs_warnings = scan.warnings.clone();
    let present = &scan.devices;
    let routes = routes_of(ctx, &scan);
    crate::log::step("looking for processes that hold the device nodes");
    let nodes: Vec<String> = routes
        .iter()
        .map(|(p, _)| device_node(p.busnum, p.devnum))
        .collect();
    let holders = crate::holders::scan(proc_root, &nodes);
    let seen = look_at_libvirt(ctx);
    let mut stale = stale_of(ctx, &seen.domains, present, &routes);
    stale.extend(super::remote::stale_redirdevs(ctx, &seen.domains));
    let net = super::remote::Net::look(ctx, &seen.domains, proc_root);
    let remote = super::remote::remote_of(ctx, &seen.domains, &net);
    let served = served_of(ctx.config, &scan.usb, net.tables.as_ref());
    let devices: Vec<DeviceStatus> = routes
        .iter()
        .map(|(p, route)| device_status(ctx, p, route.as_ref(), &seen.domains, &holders))
        .collect();
    let absent = absent_of(ctx, present, &routes);
    let hook_in_place = crate::check::hook_in_place(install_root);
    let domains = configured_domains(ctx, &seen.domains, &scan, hook_in_place);
    let libvirt = LibvirtStatus {
        reachable: seen.reachable,
        error: (!seen.errors.is_empty()).then(|| seen.errors.join("; ")),
    };
    let healthy = sysfs_error.is_none()
        && libvirt.error.is_none()
        && stale.is_empty()
        && domains
            .iter()
            .all(|d| d.error.is_none() && d.state != DomainState::Unknown)
        && devices
            .iter()
            .all(|d| !matches!(d.state, DeviceState::Missing | DeviceState::Unknown))
        && devices.iter().all(|d| !d.held_on_host)
        && remote
            .iter()
            .all(|r| !matches!(r.state, RemoteState::Missing | RemoteState::Unknown))
        && domains
            .iter()
            .filter_map(|d| d.managed_save.as_ref())
            .all(|m| m.restores_cleanly || m.rewritten_by_hook);
    Report {
        schema: SCHEMA,
        healthy,
        devices,
        absent,
        stale,
        domains,
        libvirt,
        sysfs: SysfsStatus { error: sysfs_error },
        remote,
        served,
        sysfs_warnings,
    }
}

/// The libvirt name of the guest vm.conf gives a valid serial to.
fn assigned_name(ctx: &Context, serial: &str) -> Option<String> {
    ctx.config
        .owner_of(serial)
        .map(|d| d.libvirt_name().to_string())
}

/// The stale bbvirt hostdevs, per domain that runs.
fn stale_of(
    ctx: &Context,
    seen: &[LiveDomain],
    present: &[UsbDevice],
    routes: &[(&UsbDevice, Option<Route>)],
) -> Vec<StaleEntry> {
    let config = ctx.config;
    let mut stale = Vec::new();
    for s in seen {
        let Some(live) = &s.hostdevs else { continue };
        let wanted: Vec<&str> = if s.configured {
            config
                .domains
                .iter()
                .filter(|d| uri_of(ctx, d) == s.uri && d.libvirt_name() == s.name)
                .flat_map(|d| config.serials_of(d))
                .collect()
        } else {
            // Unassigned devices may be attached anywhere by hand.
            live.iter()
                .filter_map(UsbHostdev::bbvirt_serial)
                .filter(|serial| assigned_name(ctx, serial).is_none())
                .collect()
        };
        // The devices DOMAIN_USB_ elements give this (configured) guest;
        // bbvirt's ua-bbusb- entries elsewhere are not judged.
        let by_element: Vec<(String, &UsbDevice)> = routes
            .iter()
            .filter_map(|(dev, r)| {
                let r = r.as_ref()?;
                (r.by.starts_with("DOMAIN_USB_")
                    && uri_of(ctx, r.domain) == s.uri
                    && r.domain.libvirt_name() == s.name)
                    .then(|| (r.alias.clone(), *dev))
            })
            .collect();
        let usb_stale = if s.configured {
            stale_usb_entries(live, &by_element)
        } else {
            Vec::new()
        };
        for e in stale_entries(live, &wanted, present) {
            stale.push(StaleEntry {
                domain: s.name.clone(),
                uri: s.uri.clone(),
                assigned_to: assigned_name(ctx, &e.serial),
                alias: e.alias,
                serial: Some(e.serial),
                bus: e.bus,
                dev: e.dev,
                reason: stale_kind(&e.reason),
                endpoint: None,
            });
        }
        for e in usb_stale {
            stale.push(StaleEntry {
                domain: s.name.clone(),
                uri: s.uri.clone(),
                assigned_to: None,
                reason: stale_kind(&e.reason),
                alias: e.alias,
                serial: None,
                bus: e.bus,
                dev: e.dev,
                endpoint: None,
            });
        }
    }
    stale
}

fn stale_kind(r: &StaleReason) -> StaleKind {
    match r {
        StaleReason::Absent => StaleKind::Absent,
        StaleReason::Moved { .. } => StaleKind::Moved,
        StaleReason::NotAssigned => StaleKind::NotAssigned,
    }
}

/// The valid serials vm.conf assigns that are not plugged in, each once.
fn absent_of(
    ctx: &Context,
    present: &[UsbDevice],
    routes: &[(&UsbDevice, Option<Route>)],
) -> Vec<Absent> {
    let config = ctx.config;
    let mut absent: Vec<Absent> = Vec::new();
    for d in &config.domains {
        for serial in config.serials_of(d) {
            if with_serial(present, serial).is_none()
                && !absent.iter().any(|a| a.serial.as_deref() == Some(serial))
            {
                absent.push(Absent {
                    serial: Some(serial.to_string()),
                    element: None,
                    assigned_to: d.libvirt_name().to_string(),
                });
            }
        }
        for e in 0..d.usb.len() {
            let by = format!("DOMAIN_USB_{}[{e}]", d.id);
            if !routes
                .iter()
                .any(|(_, r)| r.as_ref().is_some_and(|r| r.by == by))
            {
                absent.push(Absent {
                    serial: None,
                    element: Some(by),
                    assigned_to: d.libvirt_name().to_string(),
                });
            }
        }
    }
    absent
}

/// Every configured domain with the state it was seen in, and its managed
/// save image judged ([`crate::saved::judge`]) when it has one.
fn configured_domains(
    ctx: &Context,
    seen: &[LiveDomain],
    scan: &Scan,
    hook_in_place: bool,
) -> Vec<DomainStatus> {
    ctx.config
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let uri = uri_of(ctx, d);
            let s = seen.iter().find(|s| s.is(&uri, d.libvirt_name()));
            let managed_save = s
                .and_then(|s| s.managed_save.as_deref())
                .map(|xml| managed_save_status(ctx, i, d, xml, scan, hook_in_place));
            DomainStatus {
                id: d.id.clone(),
                name: d.libvirt_name().to_string(),
                uri,
                state: s.map_or(DomainState::Unknown, |s| s.state),
                error: s.and_then(|s| s.error.clone()),
                managed_save,
            }
        })
        .collect()
}

fn managed_save_status(
    ctx: &Context,
    index: usize,
    d: &DomainConf,
    xml: &str,
    scan: &Scan,
    hook_in_place: bool,
) -> ManagedSave {
    let assigned = ctx.config.guest_devices(index, scan);
    let judged = crate::saved::judge(xml, &assigned, &scan.usb).unwrap_or_default();
    let image = crate::saved::SavedImage { judged };
    let restores_cleanly = image.restores_cleanly();
    ManagedSave {
        restores_cleanly,
        rewritten_by_hook: hook_in_place,
        fix: (!restores_cleanly).then(|| image.fix(d.libvirt_name(), hook_in_place)),
        hostdevs: image
            .judged
            .iter()
            .map(|j| SavedHostdev {
                alias: j.alias.clone(),
                bus: j.bus,
                dev: j.dev,
                verdict: match j.verdict {
                    crate::saved::Verdict::Own => SavedVerdict::Own,
                    crate::saved::Verdict::Dropped => SavedVerdict::Dropped,
                    crate::saved::Verdict::Fails => SavedVerdict::Fails,
                    crate::saved::Verdict::Wrong { .. } => SavedVerdict::WrongDevice,
                },
                now_at: j
                    .now_at
                    .map(|(b, d)| DeviceId::Address { bus: b, dev: d }.to_string()),
                what: j.describe(),
            })
            .collect(),
    }
}

fn device_status(
    ctx: &Context,
    p: &UsbDevice,
    route: Option<&Route>,
    scanned: &[LiveDomain],
    holders: &Holders,
) -> DeviceStatus {
    let serial = p.serial.as_deref();
    let valid_serial = p.is_bitbabbler() && serial.is_some_and(is_valid_serial);
    let assigned = route.map(|r| r.domain);
    let alias = alias_of(p, route);
    let attached_to = match alias.as_deref() {
        Some(alias) => scanned
            .iter()
            .flat_map(|s| {
                s.hostdevs
                    .iter()
                    .flatten()
                    .filter(move |h| h.alias.as_deref() == Some(alias))
                    .map(move |h| {
                        // The guest bus is the part of BUS-PORT before '-'.
                        let bus = h.guest_port.as_deref().and_then(|p| p.split_once('-'));
                        Attachment {
                            domain: s.name.clone(),
                            uri: s.uri.clone(),
                            bus: h.bus,
                            dev: h.device,
                            guest_port: h.guest_port.clone(),
                            controller: bus.and_then(|(b, _)| s.controller_models.get(b).cloned()),
                        }
                    })
            })
            .collect(),
        None => Vec::new(),
    };
    let state = match (assigned, route) {
        (Some(d), Some(r)) => {
            let uri = uri_of(ctx, d);
            match scanned.iter().find(|s| s.is(&uri, d.libvirt_name())) {
                Some(s) => match (s.state, &s.hostdevs) {
                    (DomainState::Running, Some(live))
                        if placement(live, &r.alias, p) == Placement::Attached =>
                    {
                        DeviceState::Attached
                    }
                    (DomainState::Running, Some(_)) => DeviceState::Missing,
                    (DomainState::ShutOff | DomainState::Undefined, _) => DeviceState::Inactive,
                    _ => DeviceState::Unknown,
                },
                None => DeviceState::Unknown,
            }
        }
        _ => DeviceState::Host,
    };
    let assigned_to = assigned.map(|d| d.libvirt_name().to_string());
    let held_by = HeldBy::of_device(holders, p.busnum, p.devnum);
    // Its guest runs (it is in it, or should be), and something other than
    // that guest's QEMU has the device open: QEMU cannot take it cleanly.
    let held_on_host = matches!(state, DeviceState::Attached | DeviceState::Missing)
        && held_by
            .iter()
            .any(|h| h.guest.is_none() || h.guest != assigned_to);
    DeviceStatus {
        serial: p.serial.clone(),
        id: p.id.to_string(),
        valid_serial,
        alias,
        matched_by: route.map(|r| r.by.clone()),
        bus: p.busnum,
        dev: p.devnum,
        address: p.address().to_string(),
        port: p.physical().to_string(),
        assigned_to,
        attached_to,
        state,
        held_by,
        held_on_host,
    }
}
