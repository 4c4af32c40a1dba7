//! Looking at sysfs and libvirt for `bbvirt status`: every configured
//! domain on its URI, then the other running domains of each daemon once,
//! then the report built from what was seen.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::DomainConf;
use crate::context::{Connections, Context};
use crate::device::{DeviceId, is_valid_serial};
use crate::holders::{Holders, device_node};
use crate::hostdev::{UsbHostdev, alias_for, usb_alias, usb_hostdevs};
use crate::libvirt::{Connection, VirtError, uri_label};
use crate::reconcile::{Placement, StaleReason, placement, stale_entries, stale_usb_entries};
use crate::remote::redirdev::{Redirdev, redirdevs_in};
use crate::sysfs::{Scan, UsbDevice, with_serial};

use super::{
    Absent, Attachment, DeviceState, DeviceStatus, DomainState, DomainStatus, HeldBy,
    LibvirtStatus, ManagedSave, RemoteState, Report, SCHEMA, SavedHostdev, SavedVerdict,
    StaleEntry, StaleKind, SysfsStatus,
};

/// One domain whose live XML was looked at (or tried); `bbvirt devices`
/// looks at the same ones.
pub(crate) struct LiveDomain {
    pub(crate) uri: Option<String>,
    pub(crate) name: String,
    pub(crate) configured: bool,
    pub(crate) state: DomainState,
    /// The USB hostdevs, when the domain runs and its XML could be read.
    pub(crate) hostdevs: Option<Vec<UsbHostdev>>,
    /// bbvirt's redirdevs (remote devices), from the same XML.
    pub(crate) redirdevs: Option<Vec<Redirdev>>,
    /// Its USB controllers' models by index (from the same XML), for where
    /// its hostdevs sit in the guest.
    controller_models: BTreeMap<String, String>,
    /// A shut-off domain's managed save image's XML, if it has one.
    managed_save: Option<String>,
    pub(crate) error: Option<String>,
}

impl LiveDomain {
    pub(super) fn is(&self, uri: &Option<String>, name: &str) -> bool {
        self.uri == *uri && self.name == name
    }
}

pub(super) fn uri_of(ctx: &Context, d: &DomainConf) -> Option<String> {
    ctx.target_for_conf(d).uri
}

/// Reads one domain's live XML and classifies the answer.
fn scan_domain(
    conn: &dyn Connection,
    uri: &Option<String>,
    name: &str,
    configured: bool,
) -> LiveDomain {
    crate::log::step(&format!("reading the live XML of '{name}'"));
    let mut controller_models = BTreeMap::new();
    let mut managed_save = None;
    let mut redirdevs = None;
    let (state, hostdevs, error) = match conn.live_xml(name) {
        Ok(xml) => match usb_hostdevs(&xml) {
            Ok(h) => {
                controller_models = crate::controllers::controller_models(&xml).unwrap_or_default();
                redirdevs = redirdevs_in(&xml).ok();
                (DomainState::Running, Some(h), None)
            }
            Err(e) => (
                DomainState::Running,
                None,
                Some(format!("reading the live XML: {}", crate::log::chain(&e))),
            ),
        },
        Err(VirtError::NotRunning(_)) => {
            crate::log::step(&format!("looking for a managed save image of '{name}'"));
            managed_save = conn.managed_save_xml(name).ok().flatten();
            (DomainState::ShutOff, None, None)
        }
        Err(VirtError::NoDomain(_)) => (DomainState::Undefined, None, None),
        Err(e) => (DomainState::Unknown, None, Some(e.to_string())),
    };
    LiveDomain {
        uri: uri.clone(),
        name: name.to_string(),
        configured,
        state,
        hostdevs,
        redirdevs,
        controller_models,
        managed_save,
        error,
    }
}

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
    let served = super::remote::served_of(ctx.config, &scan.usb, net.tables.as_ref());
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

/// Where vm.conf sends a device: its guest, bbvirt's alias for it, and
/// the setting that does (`DOMAIN_RNG_g1`, `DOMAIN_USB_ha[0]`).
pub(crate) struct Route<'c> {
    pub(crate) domain: &'c DomainConf,
    pub(crate) alias: String,
    pub(crate) by: String,
}

/// bbvirt's hostdev alias for a device: its route's, or (a BitBabbler with
/// a valid serial, assigned to no guest) its serial's, as when attached by
/// hand; None for any other device no guest gets.
pub(crate) fn alias_of(dev: &UsbDevice, route: Option<&Route>) -> Option<String> {
    match route {
        Some(r) => Some(r.alias.clone()),
        None => dev
            .serial
            .as_deref()
            .filter(|s| dev.is_bitbabbler() && is_valid_serial(s))
            .map(alias_for),
    }
}

/// The devices status shows, in sysfs order, with their routes: every
/// BitBabbler, and every other USB device a `DOMAIN_USB_` element gets.
pub(crate) fn routes_of<'s, 'c>(
    ctx: &Context<'c>,
    scan: &'s Scan,
) -> Vec<(&'s UsbDevice, Option<Route<'c>>)> {
    let config = ctx.config;
    let by_element = config.element_routes(&scan.usb);
    scan.usb
        .iter()
        .filter_map(|dev| {
            let rng = dev
                .serial
                .as_deref()
                .filter(|_| dev.is_bitbabbler())
                .and_then(|s| Some((s, config.owner_of(s)?)));
            if let Some((serial, d)) = rng {
                let by = format!("DOMAIN_RNG_{}", d.id);
                return Some((
                    dev,
                    Some(Route {
                        domain: d,
                        alias: alias_for(serial),
                        by,
                    }),
                ));
            }
            let element = by_element
                .iter()
                .find(|(d, _)| *d == dev)
                .and_then(|(_, r)| *r)
                .map(|(d, e)| {
                    let domain = &config.domains[d];
                    Route {
                        domain,
                        alias: usb_alias(dev.id, &domain.id, e, dev.serial.as_deref()),
                        by: format!("DOMAIN_USB_{}[{e}]", domain.id),
                    }
                });
            (element.is_some() || dev.is_bitbabbler()).then_some((dev, element))
        })
        .collect()
}

/// What libvirt showed.
pub(crate) struct Seen {
    /// Every domain looked at: the configured ones, then the others that run.
    pub(crate) domains: Vec<LiveDomain>,
    /// False when a connection could not be opened.
    pub(crate) reachable: bool,
    /// Connection and listing errors, and errors reading other domains.
    pub(crate) errors: Vec<String>,
}

/// First every configured domain on every URI, then the other running
/// domains of each daemon once: two URIs may reach the same daemon
/// (`qemu:///system` and root's default), and a configured guest seen
/// through the other URI is still the configured guest.
pub(crate) fn look_at_libvirt(ctx: &Context) -> Seen {
    let mut seen = Seen {
        domains: Vec::new(),
        reachable: true,
        errors: Vec::new(),
    };
    let mut conns = Connections::read_only(ctx.hv);
    let open = look_at_configured(ctx, &mut conns, &mut seen);
    look_at_others(&mut conns, &open, &mut seen);
    // Errors reading other (unconfigured) domains count as libvirt errors.
    let others: Vec<String> = seen
        .domains
        .iter()
        .filter(|s| !s.configured)
        .filter_map(|s| Some(format!("domain '{}': {}", s.name, s.error.as_ref()?)))
        .collect();
    seen.errors.extend(others);
    seen
}

/// Reads the configured domains, URI by URI in config order; returns the
/// URIs whose connection opened, in order.
fn look_at_configured(
    ctx: &Context,
    conns: &mut Connections,
    seen: &mut Seen,
) -> Vec<Option<String>> {
    let mut open: Vec<Option<String>> = Vec::new();
    for uri in ctx.uris() {
        let names: Vec<&str> = ctx
            .config
            .domains
            .iter()
            .filter(|d| uri_of(ctx, d) == uri)
            .map(DomainConf::libvirt_name)
            .collect();
        let conn = match conns.get(uri.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                seen.reachable = false;
                let msg = e.to_string();
                for name in names {
                    if !seen.domains.iter().any(|s| s.is(&uri, name)) {
                        seen.domains.push(LiveDomain {
                            uri: uri.clone(),
                            name: name.to_string(),
                            configured: true,
                            state: DomainState::Unknown,
                            hostdevs: None,
                            redirdevs: None,
                            controller_models: BTreeMap::new(),
                            managed_save: None,
                            error: Some(msg.clone()),
                        });
                    }
                }
                seen.errors.push(msg);
                continue;
            }
        };
        for name in &names {
            if !seen.domains.iter().any(|s| s.is(&uri, name)) {
                seen.domains.push(scan_domain(conn, &uri, name, true));
            }
        }
        open.push(uri);
    }
    open
}

/// Reads the running domains vm.conf does not name, once per daemon.
fn look_at_others(conns: &mut Connections, open: &[Option<String>], seen: &mut Seen) {
    // The daemon each URI reached, as libvirt names it (else the URI itself).
    let daemon: Vec<Option<String>> = open
        .iter()
        .map(|uri| {
            conns
                .get(uri.as_deref())
                .ok()
                .and_then(|c| c.canonical_uri())
                .or_else(|| uri.clone())
        })
        .collect();
    let daemon_of = |uri: &Option<String>| -> Option<Option<String>> {
        open.iter()
            .position(|u| u == uri)
            .map(|i| daemon[i].clone())
    };
    for (i, uri) in open.iter().enumerate() {
        if daemon[..i].contains(&daemon[i]) {
            continue;
        }
        let Ok(conn) = conns.get(uri.as_deref()) else {
            continue;
        };
        crate::log::step(&format!(
            "listing the running domains at {}",
            uri_label(uri.as_deref())
        ));
        match conn.running_domains() {
            Ok(running) => {
                for name in running {
                    let known = seen
                        .domains
                        .iter()
                        .any(|s| s.name == name && daemon_of(&s.uri) == Some(daemon[i].clone()));
                    if known {
                        continue;
                    }
                    let s = scan_domain(conn, uri, &name, false);
                    // Stopped or undefined since it was listed: nothing in it.
                    if s.state == DomainState::Running || s.error.is_some() {
                        seen.domains.push(s);
                    }
                }
            }
            Err(e) => seen.errors.push(format!(
                "listing the running domains at {}: {e}",
                uri_label(uri.as_deref())
            )),
        }
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
