//! Looking at sysfs, `/proc` and libvirt for `bbvirt devices`, and building
//! the report from what was seen.

use std::path::Path;

use crate::context::Context;
use crate::holders::HeldBy;
use crate::holders::{Holders, device_node};
use crate::report::{
    LibvirtStatus, LiveDomain, Route, SysfsStatus, alias_of, look_at_libvirt, routes_of, served_of,
};
use crate::sysfs::{Scan, UsbDevice};

use super::suggest::suggest;
use super::{ConfigStatus, Device, FoundBy, Hostdev, ProcessesStatus, Report, SCHEMA, Suggested};

/// Looks at sysfs, `/proc` under `proc_root` and libvirt and builds the
/// report; `config` says which vm.conf `ctx` holds and whether it could be
/// used. Reads only; never panics.
pub fn collect(ctx: &Context, proc_root: &Path, config: ConfigStatus) -> Report {
    crate::log::step("listing the USB devices in sysfs");
    let (scan, sysfs_error) = match ctx.sysfs.scan() {
        Ok(scan) => (scan, None),
        Err(e) => (Scan::default(), Some(crate::log::chain(&e))),
    };
    let mut warnings = scan.warnings.clone();
    let routes = routes_of(ctx, &scan);
    crate::log::step("looking for processes that hold the device nodes");
    let nodes: Vec<String> = scan
        .usb
        .iter()
        .map(|d| device_node(d.busnum, d.devnum))
        .collect();
    let holders = crate::holders::scan(proc_root, &nodes);
    let seen = look_at_libvirt(ctx);
    // An exporting host's served devices and their clients.
    let tables = (!ctx.config.serve.is_empty()).then(|| {
        crate::log::step("reading the TCP socket tables");
        crate::sockets::read_tables(proc_root)
    });
    let served = served_of(ctx.config, &scan.usb, tables.as_ref());
    let devices = scan
        .usb
        .iter()
        .enumerate()
        .map(|(i, dev)| {
            let route = routes
                .iter()
                .find(|(d, _)| std::ptr::eq(*d, dev))
                .and_then(|(_, r)| r.as_ref());
            crate::log::step(&format!("reading the strings and drivers of {}", dev.name));
            let details = ctx.sysfs.details(dev).unwrap_or_else(|e| {
                warnings.push(format!("{}: {}", dev.describe(), crate::log::chain(&e)));
                Default::default()
            });
            let mut d = device(dev, route, &seen.domains, &holders);
            d.manufacturer = details.manufacturer;
            d.product = details.product;
            d.drivers = details.drivers;
            d.suggestion = suggested(&scan.usb, i);
            d.served_on = served
                .iter()
                .find(|s| {
                    s.device
                        .as_ref()
                        .is_some_and(|sd| (sd.bus, sd.dev) == (dev.busnum, dev.devnum))
                })
                .map(|s| s.port);
            d
        })
        .collect();
    Report {
        schema: SCHEMA,
        devices,
        config,
        libvirt: LibvirtStatus {
            reachable: seen.reachable,
            error: (!seen.errors.is_empty()).then(|| seen.errors.join("; ")),
        },
        sysfs: SysfsStatus { error: sysfs_error },
        processes: ProcessesStatus {
            unreadable: holders.unreadable,
        },
        served,
        warnings,
    }
}

/// A device with who has it and where vm.conf sends it (strings, drivers
/// and suggestion left empty).
fn device(
    dev: &UsbDevice,
    route: Option<&Route>,
    seen: &[LiveDomain],
    holders: &Holders,
) -> Device {
    let alias = alias_of(dev, route);
    let hostdevs: Vec<Hostdev> = seen
        .iter()
        .flat_map(|s| {
            let alias = alias.as_deref();
            s.hostdevs.iter().flatten().filter_map(move |h| {
                let found_by = if h.is_at(dev.busnum, dev.devnum) {
                    FoundBy::Address
                } else if alias.is_some() && h.alias.as_deref() == alias {
                    FoundBy::Alias
                } else {
                    return None;
                };
                Some(Hostdev {
                    domain: s.name.clone(),
                    uri: s.uri.clone(),
                    alias: h.alias.clone(),
                    bus: h.bus,
                    dev: h.device,
                    found_by,
                })
            })
        })
        .collect();
    let held_by = HeldBy::of_device(holders, dev.busnum, dev.devnum);
    let (guest, guest_uri) = match hostdevs.iter().find(|h| h.found_by == FoundBy::Address) {
        Some(h) => (Some(h.domain.clone()), h.uri.clone()),
        None => (held_by.iter().find_map(|h| h.guest.clone()), None),
    };
    Device {
        address: dev.address().to_string(),
        bus: dev.busnum,
        dev: dev.devnum,
        port: dev.physical().to_string(),
        id: dev.id.to_string(),
        manufacturer: None,
        product: None,
        serial: dev.serial.clone(),
        bitbabbler: dev.is_bitbabbler(),
        guest,
        guest_uri,
        hostdevs,
        drivers: Vec::new(),
        held_by,
        assigned_to: route.map(|r| r.domain.libvirt_name().to_string()),
        matched_by: route.map(|r| r.by.clone()),
        suggestion: None,
        served_on: None,
    }
}

/// The element suggested for `devices[i]`, as the report shows it.
fn suggested(devices: &[UsbDevice], i: usize) -> Option<Suggested> {
    let s = suggest(devices, i)?;
    Some(Suggested {
        word: crate::text::shell_quote(&s.element),
        element: s.element,
        keys: s.keys,
        port_because: s.port_because,
        twins: s
            .twins
            .iter()
            .map(|&t| devices[t].address().to_string())
            .collect(),
    })
}
