//! `bbvirt status [--json]`: every BitBabbler on the host, where vm.conf
//! assigns it and where it is attached, the configured serials that are not
//! plugged in, the stale `ua-bbvirt-*` hostdevs, and each configured guest's
//! state.
//!
//! Read-only: status never changes a guest, never takes the host lock, and
//! works without libvirt (it then shows the host side and says libvirt could
//! not be reached). `-c URI` overrides every domain's URI, as for the other
//! actions; `--domain` is ignored (status always shows everything).
//!
//! # What is looked at
//!
//! One connection per URI: each configured domain's URI (`-c`, else
//! `DOMAIN_URI_<id>`, else libvirt's default), or libvirt's default (or
//! `-c`) when no domain is configured. On each, the live XML of every
//! configured domain and of every other running domain is read, so that a
//! bbvirt hostdev in a guest vm.conf does not name is found too.
//!
//! A hostdev tagged `ua-bbvirt-<serial>` is **stale** when:
//! - `absent`: no device with that serial is plugged in;
//! - `moved`: the device is present at another `BUS:DEV` now;
//! - `not_assigned`: in a configured domain, the serial is not assigned to
//!   that domain (it belongs to another guest, or to the host). In a domain
//!   vm.conf does not name, only a serial that vm.conf assigns to some guest
//!   counts (the device is in the wrong guest); an unassigned device
//!   attached there by hand (`bbvirt attach SERIAL -D GUEST`) is fine.
//!
//! In configured domains these are exactly the entries `bbvirt sync`
//! removes; in other domains `bbvirt detach-all GUEST` or
//! `bbvirt detach SERIAL -D GUEST` removes them.
//!
//! # Exit status
//!
//! - 0 (healthy): nothing below is wrong.
//! - 1 (not healthy): a stale entry (including a device in the wrong guest);
//!   a running guest lacks a present device assigned to it (state
//!   `missing`: `bbvirt sync` attaches it); libvirt could not be reached or
//!   answered with an error, or a domain's live XML could not be read (a
//!   health check that cannot look cannot confirm); sysfs could not be read.
//!
//! Not problems: an unplugged configured serial (`absent`), a guest that is
//! shut off or not defined, a device assigned to no guest, a device whose
//! serial bbvirt cannot use. A vm.conf that cannot be read exits 3 before
//! anything is shown (see `bbvirt check`).
//!
//! # JSON schema (`--json`), version 1
//!
//! One object; fields are only ever added within a schema version, never
//! renamed, removed or given another meaning (that bumps `schema`).
//!
//! ```text
//! {
//!   "schema": 1,
//!   "healthy": bool,                  // exit status 0 iff true
//!   "devices": [{                     // every BitBabbler plugged in, by bus then ports
//!     "serial": string | null,        // as sysfs gives it (lossy UTF-8), null if none
//!     "valid_serial": bool,           // 6-7 of A-Z0-9: only these are ever routed
//!     "bus": int, "dev": int,
//!     "address": "BUS:DEV",           // e.g. "003:012"
//!     "port": string,                 // physical address, e.g. "3-1.4.2"
//!     "assigned_to": string | null,   // libvirt name of the guest vm.conf gives it to; null: the host
//!     "attached_to": [{               // every guest holding its ua-bbvirt-<serial> hostdev
//!       "domain": string, "uri": string | null,
//!       "bus": int | null, "dev": int | null   // the address in that hostdev
//!     }],
//!     "state": "host" | "attached" | "missing" | "inactive" | "unknown"
//!       // host: assigned to no guest (or unusable serial)
//!       // attached: in its running guest at its current address
//!       // missing: its guest runs but does not hold it at its current address (a problem)
//!       // inactive: its guest is shut off or not defined
//!       // unknown: its guest's state could not be read
//!   }],
//!   "absent": [{                      // valid serials vm.conf assigns that are not plugged in
//!     "serial": string, "assigned_to": string
//!   }],
//!   "stale": [{                       // bbvirt hostdevs that should not be there (problems)
//!     "domain": string, "uri": string | null,
//!     "alias": string,                // "ua-bbvirt-<serial>"
//!     "serial": string,               // taken from the alias
//!     "bus": int | null, "dev": int | null,   // the address in the hostdev
//!     "reason": "absent" | "moved" | "not_assigned",
//!     "assigned_to": string | null    // where vm.conf gives the serial (for not_assigned)
//!   }],
//!   "domains": [{                     // every configured domain, in vm.conf order
//!     "id": string,                   // the <id> of DOMAIN_RNG_<id>
//!     "name": string,                 // libvirt name (DOMAIN_NAME_<id>, else id)
//!     "uri": string | null,           // the URI used; null: libvirt's default
//!     "state": "running" | "shut_off" | "undefined" | "unknown",
//!     "error": string | null          // why the state is unknown or the XML unreadable
//!   }],
//!   "libvirt": {
//!     "reachable": bool,              // false when a connection could not be opened
//!     "error": string | null          // connection or listing errors, "; "-separated
//!   },
//!   "sysfs": { "error": string | null }   // set when the USB devices could not be listed
//! }
//! ```

use std::io::Write;

use serde::Serialize;

use crate::config::DomainConf;
use crate::context::{Connections, Context};
use crate::device::{DeviceId, is_valid_serial};
use crate::exit::CommandError;
use crate::hostdev::{UsbHostdev, usb_hostdevs};
use crate::libvirt::{Connection, VirtError, uri_label};
use crate::reconcile::{Placement, StaleReason, placement, stale_entries};
use crate::sysfs::{UsbDevice, with_serial};

/// The version of the JSON schema documented above.
pub const SCHEMA: u32 = 1;

/// Everything `bbvirt status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub schema: u32,
    pub healthy: bool,
    pub devices: Vec<DeviceStatus>,
    pub absent: Vec<Absent>,
    pub stale: Vec<StaleEntry>,
    pub domains: Vec<DomainStatus>,
    pub libvirt: LibvirtStatus,
    pub sysfs: SysfsStatus,
    /// BitBabblers sysfs shows that bbvirt leaves alone (garbage
    /// attributes, a serial shared by several devices): logged as warnings
    /// by [`run`], not part of the JSON schema.
    #[serde(skip)]
    pub sysfs_warnings: Vec<String>,
}

/// A BitBabbler that is plugged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    pub serial: Option<String>,
    pub valid_serial: bool,
    pub bus: u32,
    pub dev: u32,
    pub address: String,
    pub port: String,
    pub assigned_to: Option<String>,
    pub attached_to: Vec<Attachment>,
    pub state: DeviceState,
}

/// A guest holding a device's bbvirt hostdev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub domain: String,
    pub uri: Option<String>,
    pub bus: Option<u32>,
    pub dev: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Host,
    Attached,
    Missing,
    Inactive,
    Unknown,
}

/// A configured serial that is not plugged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Absent {
    pub serial: String,
    pub assigned_to: String,
}

/// A bbvirt hostdev that should not be where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleEntry {
    pub domain: String,
    pub uri: Option<String>,
    pub alias: String,
    pub serial: String,
    pub bus: Option<u32>,
    pub dev: Option<u32>,
    pub reason: StaleKind,
    pub assigned_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleKind {
    Absent,
    Moved,
    NotAssigned,
}

/// A configured domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainStatus {
    pub id: String,
    pub name: String,
    pub uri: Option<String>,
    pub state: DomainState,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    Running,
    ShutOff,
    Undefined,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LibvirtStatus {
    pub reachable: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysfsStatus {
    pub error: Option<String>,
}

/// One domain whose live XML was looked at (or tried).
struct LiveDomain {
    uri: Option<String>,
    name: String,
    configured: bool,
    state: DomainState,
    /// The USB hostdevs, when the domain runs and its XML could be read.
    hostdevs: Option<Vec<UsbHostdev>>,
    error: Option<String>,
}

impl LiveDomain {
    fn is(&self, uri: &Option<String>, name: &str) -> bool {
        self.uri == *uri && self.name == name
    }
}

fn uri_of(ctx: &Context, d: &DomainConf) -> Option<String> {
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
    let (state, hostdevs, error) = match conn.live_xml(name) {
        Ok(xml) => match usb_hostdevs(&xml) {
            Ok(h) => (DomainState::Running, Some(h), None),
            Err(e) => (
                DomainState::Running,
                None,
                Some(format!("reading the live XML: {}", crate::log::chain(&e))),
            ),
        },
        Err(VirtError::NotRunning(_)) => (DomainState::ShutOff, None, None),
        Err(VirtError::NoDomain(_)) => (DomainState::Undefined, None, None),
        Err(e) => (DomainState::Unknown, None, Some(e.to_string())),
    };
    LiveDomain {
        uri: uri.clone(),
        name: name.to_string(),
        configured,
        state,
        hostdevs,
        error,
    }
}

/// Looks at sysfs and libvirt and builds the report. Reads only; logs
/// nothing but `-vvvv` steps (the sysfs warnings are kept in the report);
/// never panics.
pub fn collect(ctx: &Context) -> Report {
    let config = ctx.config;
    crate::log::step("listing the BitBabblers in sysfs");
    let (present, sysfs_warnings, sysfs_error) = match ctx.sysfs.scan() {
        Ok(scan) => (scan.devices, scan.warnings, None),
        Err(e) => (Vec::new(), Vec::new(), Some(crate::log::chain(&e))),
    };

    // The URIs to look at, in config order.
    let uris = ctx.uris();

    let mut scanned: Vec<LiveDomain> = Vec::new();
    let mut reachable = true;
    let mut libvirt_errors: Vec<String> = Vec::new();
    // First every configured domain on every URI, then the other running
    // domains of each daemon once: two URIs may reach the same daemon
    // (`qemu:///system` and root's default), and a configured guest seen
    // through the other URI is still the configured guest.
    let mut conns = Connections::read_only(ctx.hv);
    // The URIs whose connection opened, in order.
    let mut open: Vec<Option<String>> = Vec::new();
    for uri in &uris {
        let names: Vec<&str> = config
            .domains
            .iter()
            .filter(|d| uri_of(ctx, d) == *uri)
            .map(DomainConf::libvirt_name)
            .collect();
        let conn = match conns.get(uri.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                reachable = false;
                let msg = e.to_string();
                for name in names {
                    if !scanned.iter().any(|s| s.is(uri, name)) {
                        scanned.push(LiveDomain {
                            uri: uri.clone(),
                            name: name.to_string(),
                            configured: true,
                            state: DomainState::Unknown,
                            hostdevs: None,
                            error: Some(msg.clone()),
                        });
                    }
                }
                libvirt_errors.push(msg);
                continue;
            }
        };
        for name in &names {
            if !scanned.iter().any(|s| s.is(uri, name)) {
                scanned.push(scan_domain(conn, uri, name, true));
            }
        }
        open.push(uri.clone());
    }
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
                    let known = scanned
                        .iter()
                        .any(|s| s.name == name && daemon_of(&s.uri) == Some(daemon[i].clone()));
                    if known {
                        continue;
                    }
                    let s = scan_domain(conn, uri, &name, false);
                    // Stopped or undefined since it was listed: nothing in it.
                    if s.state == DomainState::Running || s.error.is_some() {
                        scanned.push(s);
                    }
                }
            }
            Err(e) => libvirt_errors.push(format!(
                "listing the running domains at {}: {e}",
                uri_label(uri.as_deref())
            )),
        }
    }
    // Errors reading other (unconfigured) domains count as libvirt errors.
    for s in scanned.iter().filter(|s| !s.configured) {
        if let Some(e) = &s.error {
            libvirt_errors.push(format!("domain '{}': {e}", s.name));
        }
    }

    let assigned_name = |serial: &str| -> Option<String> {
        if !is_valid_serial(serial) {
            return None;
        }
        config
            .domain_for_serial(serial)
            .map(|d| d.libvirt_name().to_string())
    };

    // Stale entries, per domain that runs.
    let mut stale = Vec::new();
    for s in &scanned {
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
                .filter(|serial| assigned_name(serial).is_none())
                .collect()
        };
        for e in stale_entries(live, &wanted, &present) {
            stale.push(StaleEntry {
                domain: s.name.clone(),
                uri: s.uri.clone(),
                assigned_to: assigned_name(&e.serial),
                alias: e.alias,
                serial: e.serial,
                bus: e.bus,
                dev: e.dev,
                reason: match e.reason {
                    StaleReason::Absent => StaleKind::Absent,
                    StaleReason::Moved { .. } => StaleKind::Moved,
                    StaleReason::NotAssigned => StaleKind::NotAssigned,
                },
            });
        }
    }

    let devices: Vec<DeviceStatus> = present
        .iter()
        .map(|p| device_status(ctx, p, &scanned))
        .collect();

    let mut absent: Vec<Absent> = Vec::new();
    for d in &config.domains {
        for serial in config.serials_of(d) {
            if with_serial(&present, serial).is_none() && !absent.iter().any(|a| a.serial == serial)
            {
                absent.push(Absent {
                    serial: serial.to_string(),
                    assigned_to: d.libvirt_name().to_string(),
                });
            }
        }
    }

    let domains: Vec<DomainStatus> = config
        .domains
        .iter()
        .map(|d| {
            let uri = uri_of(ctx, d);
            let s = scanned.iter().find(|s| s.is(&uri, d.libvirt_name()));
            DomainStatus {
                id: d.id.clone(),
                name: d.libvirt_name().to_string(),
                uri,
                state: s.map_or(DomainState::Unknown, |s| s.state),
                error: s.and_then(|s| s.error.clone()),
            }
        })
        .collect();

    let libvirt = LibvirtStatus {
        reachable,
        error: (!libvirt_errors.is_empty()).then(|| libvirt_errors.join("; ")),
    };
    let healthy = sysfs_error.is_none()
        && libvirt.error.is_none()
        && stale.is_empty()
        && domains
            .iter()
            .all(|d| d.error.is_none() && d.state != DomainState::Unknown)
        && devices
            .iter()
            .all(|d| !matches!(d.state, DeviceState::Missing | DeviceState::Unknown));
    Report {
        schema: SCHEMA,
        healthy,
        devices,
        absent,
        stale,
        domains,
        libvirt,
        sysfs: SysfsStatus { error: sysfs_error },
        sysfs_warnings,
    }
}

fn device_status(ctx: &Context, p: &UsbDevice, scanned: &[LiveDomain]) -> DeviceStatus {
    let serial = p.serial.as_deref();
    let valid_serial = serial.is_some_and(is_valid_serial);
    let assigned = serial
        .filter(|_| valid_serial)
        .and_then(|s| ctx.config.domain_for_serial(s));
    let attached_to = match serial {
        Some(serial) => scanned
            .iter()
            .flat_map(|s| {
                s.hostdevs
                    .iter()
                    .flatten()
                    .filter(move |h| h.bbvirt_serial() == Some(serial))
                    .map(move |h| Attachment {
                        domain: s.name.clone(),
                        uri: s.uri.clone(),
                        bus: h.bus,
                        dev: h.device,
                    })
            })
            .collect(),
        None => Vec::new(),
    };
    let state = match (assigned, serial) {
        (Some(d), Some(serial)) => {
            let uri = uri_of(ctx, d);
            match scanned.iter().find(|s| s.is(&uri, d.libvirt_name())) {
                Some(s) => match (s.state, &s.hostdevs) {
                    (DomainState::Running, Some(live))
                        if placement(live, serial, p) == Placement::Attached =>
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
    DeviceStatus {
        serial: p.serial.clone(),
        valid_serial,
        bus: p.busnum,
        dev: p.devnum,
        address: p.address().to_string(),
        port: p.physical().to_string(),
        assigned_to: assigned.map(|d| d.libvirt_name().to_string()),
        attached_to,
        state,
    }
}

/// The report as JSON (pretty-printed, with a final newline).
pub fn render_json(report: &Report) -> String {
    match serde_json::to_string_pretty(report) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        // Cannot happen with these types; still no panic.
        Err(e) => format!(
            "{{\"schema\": {SCHEMA}, \"healthy\": false, \"error\": {:?}}}\n",
            e.to_string()
        ),
    }
}

/// Text from sysfs, vm.conf or libvirt, made safe for a terminal: control
/// characters escaped (quotes stay as they are, for readability).
fn esc(s: &str) -> String {
    crate::text::escape_controls(s)
}

/// A serial for the table: valid ones as they are, anything else quoted.
fn show_serial(serial: Option<&str>) -> String {
    match serial {
        Some(s) if is_valid_serial(s) => s.to_string(),
        Some(s) => format!("{s:?}"),
        None => "(none)".to_string(),
    }
}

fn show_addr(bus: Option<u32>, dev: Option<u32>) -> String {
    match (bus, dev) {
        (Some(b), Some(d)) => DeviceId::Address { bus: b, dev: d }.to_string(),
        _ => "?".to_string(),
    }
}

fn show_uri(uri: Option<&str>) -> String {
    uri.map_or_else(|| "(default)".to_string(), esc)
}

/// Appends an aligned table: two spaces of indent and between columns.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(header.len()) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::from(" ");
        for (cell, w) in row.iter().zip(&widths) {
            line.push(' ');
            line.push_str(cell);
            let pad = w.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad + 1));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The report as the human-readable table.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    if let Some(e) = &report.sysfs.error {
        out.push_str(&format!("sysfs: cannot list USB devices: {}\n\n", esc(e)));
    }
    if let Some(e) = &report.libvirt.error {
        let what = if report.libvirt.reachable {
            "error"
        } else {
            "unreachable, showing the host side only"
        };
        out.push_str(&format!("libvirt: {what}: {}\n\n", esc(e)));
    }

    if report.devices.is_empty() {
        out.push_str("Devices: none plugged in\n");
    } else {
        out.push_str("Devices:\n");
        let rows: Vec<Vec<String>> = report
            .devices
            .iter()
            .map(|d| {
                let assigned = match (&d.assigned_to, d.valid_serial) {
                    (Some(a), _) => esc(a),
                    (None, true) => "(host)".to_string(),
                    (None, false) => "(host: unusable serial)".to_string(),
                };
                let state = match d.state {
                    DeviceState::Host => "host",
                    DeviceState::Attached => "attached",
                    DeviceState::Missing => "NOT ATTACHED",
                    DeviceState::Inactive => "guest down",
                    DeviceState::Unknown => "unknown",
                };
                let attached = if d.attached_to.is_empty() {
                    "-".to_string()
                } else {
                    d.attached_to
                        .iter()
                        .map(|a| {
                            let wrong = report.stale.iter().any(|s| {
                                s.domain == a.domain
                                    && s.uri == a.uri
                                    && Some(s.serial.as_str()) == d.serial.as_deref()
                            });
                            format!(
                                "{} at {}{}",
                                esc(&a.domain),
                                show_addr(a.bus, a.dev),
                                if wrong { " (stale)" } else { "" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                vec![
                    show_serial(d.serial.as_deref()),
                    d.address.clone(),
                    d.port.clone(),
                    assigned,
                    state.to_string(),
                    attached,
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "SERIAL",
                "ADDRESS",
                "PORT",
                "ASSIGNED TO",
                "STATE",
                "ATTACHED IN",
            ],
            &rows,
        );
    }

    out.push('\n');
    if report.absent.is_empty() {
        out.push_str("Absent: none (every configured serial is plugged in)\n");
    } else {
        out.push_str("Absent (configured, not plugged in):\n");
        let rows: Vec<Vec<String>> = report
            .absent
            .iter()
            .map(|a| vec![show_serial(Some(&a.serial)), esc(&a.assigned_to)])
            .collect();
        table(&mut out, &["SERIAL", "ASSIGNED TO"], &rows);
    }

    out.push('\n');
    if report.stale.is_empty() {
        out.push_str("Stale: none\n");
    } else {
        out.push_str("Stale (bbvirt entries that should not be there):\n");
        let rows: Vec<Vec<String>> = report
            .stale
            .iter()
            .map(|s| {
                let reason = match s.reason {
                    StaleKind::Absent => "device not plugged in".to_string(),
                    StaleKind::Moved => {
                        let now = report
                            .devices
                            .iter()
                            .find(|d| d.serial.as_deref() == Some(s.serial.as_str()));
                        match now {
                            Some(d) => format!("device now at {}", d.address),
                            None => "device moved".to_string(),
                        }
                    }
                    StaleKind::NotAssigned => match &s.assigned_to {
                        Some(a) => format!("wrong guest: assigned to {}", esc(a)),
                        None => "not assigned to this guest".to_string(),
                    },
                };
                vec![
                    esc(&s.domain),
                    show_serial(Some(&s.serial)),
                    show_addr(s.bus, s.dev),
                    reason,
                ]
            })
            .collect();
        table(&mut out, &["DOMAIN", "SERIAL", "ADDRESS", "REASON"], &rows);
    }

    out.push('\n');
    if report.domains.is_empty() {
        out.push_str("Domains: none configured\n");
    } else {
        out.push_str("Domains:\n");
        let rows: Vec<Vec<String>> = report
            .domains
            .iter()
            .map(|d| {
                let state = match d.state {
                    DomainState::Running => "running",
                    DomainState::ShutOff => "shut off",
                    DomainState::Undefined => "not defined",
                    DomainState::Unknown => "unknown",
                };
                let mut row = vec![
                    esc(&d.id),
                    esc(&d.name),
                    show_uri(d.uri.as_deref()),
                    state.to_string(),
                ];
                row.push(d.error.as_deref().map(esc).unwrap_or_default());
                row
            })
            .collect();
        let header: &[&str] = if report.domains.iter().any(|d| d.error.is_some()) {
            &["ID", "NAME", "URI", "STATE", "ERROR"]
        } else {
            &["ID", "NAME", "URI", "STATE"]
        };
        table(&mut out, header, &rows);
    }

    out.push('\n');
    out.push_str(&summary(report));
    out.push('\n');
    out
}

/// The last line of the table: "healthy", or what is wrong.
fn summary(report: &Report) -> String {
    if report.healthy {
        return "Status: healthy".to_string();
    }
    let mut problems: Vec<String> = Vec::new();
    let count =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if !report.stale.is_empty() {
        problems.push(count(report.stale.len(), "stale entry", "stale entries"));
    }
    let missing = report
        .devices
        .iter()
        .filter(|d| d.state == DeviceState::Missing)
        .count();
    if missing > 0 {
        problems.push(count(
            missing,
            "device not attached to its running guest",
            "devices not attached to their running guests",
        ));
    }
    if !report.libvirt.reachable {
        problems.push("libvirt unreachable".to_string());
    } else if report.libvirt.error.is_some() || report.domains.iter().any(|d| d.error.is_some()) {
        problems.push("libvirt errors".to_string());
    }
    if report.sysfs.error.is_some() {
        problems.push("sysfs unreadable".to_string());
    }
    if problems.is_empty() {
        problems.push("state unknown".to_string());
    }
    let fix = if missing > 0 || !report.stale.is_empty() {
        " (bbvirt sync fixes stale and missing entries in configured guests)"
    } else {
        ""
    };
    format!("Status: NOT HEALTHY: {}{fix}", problems.join(", "))
}

/// Prints the status; [`CommandError::Unhealthy`] when it is not healthy
/// (see the module documentation).
pub fn run(ctx: &Context, json: bool) -> Result<(), CommandError> {
    let report = collect(ctx);
    for w in &report.sysfs_warnings {
        crate::warn!("{w}");
    }
    let text = if json {
        render_json(&report)
    } else {
        render_table(&report)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
        .map_err(|source| CommandError::Output {
            what: "status",
            source,
        })?;
    if report.healthy {
        Ok(())
    } else {
        Err(CommandError::Unhealthy)
    }
}
