//! `bbvirt status [--json]`: every BitBabbler on the host and every USB
//! device a `DOMAIN_USB_` element selects, where vm.conf assigns each and
//! where it is attached, the configured serials and elements that have no
//! device plugged in, the stale bbvirt hostdevs (`ua-bbvirt-*`,
//! `ua-bbusb-*`), and each configured guest's state. A USB device that
//! nothing in vm.conf selects is not shown.
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
//! A hostdev tagged `ua-bbvirt-<serial>` is **stale** when (a `ua-bbusb-`
//! one: [`crate::reconcile::stale_usb_entries`]):
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
//!   a device assigned to a running guest that a host process holds open
//!   (`held_on_host`: seedd, say);
//!   a running guest lacks a present device assigned to it (state
//!   `missing`: `bbvirt sync` attaches it); libvirt could not be reached or
//!   answered with an error, or a domain's live XML could not be read (a
//!   health check that cannot look cannot confirm); sysfs could not be read.
//!
//! - a shut-off guest's managed save image whose bbvirt hostdevs would not
//!   restore cleanly as they are ([`crate::saved::judge`]), while bbvirt's
//!   hook, which rewrites them on start, is not installed.
//!
//! Not problems: an unplugged configured serial (`absent`), a guest that is
//! shut off or not defined, a device assigned to no guest, a device whose
//! serial bbvirt cannot use. A vm.conf that cannot be read exits 3 before
//! anything is shown (see `bbvirt check`).
//!
//! # JSON schema (`--json`), version 2
//!
//! One object; fields are only ever added within a schema version, never
//! renamed, removed or given another meaning (that bumps `schema`).
//! Version 2 (DOMAIN_USB_): `devices` also lists the other USB devices an
//! element matches (so not only BitBabblers), with `id`, `alias` and
//! `matched_by`; `absent` entries may be an element (`serial` null,
//! `element` set); `stale` entries of such devices have `serial` null.
//!
//! ```text
//! {
//!   "schema": 2,
//!   "healthy": bool,                  // exit status 0 iff true
//!   "devices": [{                     // every BitBabbler plugged in, and every other USB
//!                                     // device a DOMAIN_USB_ element gets; by bus then ports
//!     "serial": string | null,        // as sysfs gives it (lossy UTF-8), null if none
//!     "id": "VVVV:PPPP",              // vendor:product, "0403:7840" for a BitBabbler
//!     "valid_serial": bool,           // a BitBabbler with 6-7 of A-Z0-9: only these are
//!                                     // routed by DOMAIN_RNG_
//!     "alias": string | null,         // bbvirt's hostdev alias for it: "ua-bbvirt-<serial>",
//!                                     // "ua-bbusb-VVVVPPPP-<id>-e<N>-<tag>"; null: none
//!     "matched_by": string | null,    // "DOMAIN_RNG_<id>" or "DOMAIN_USB_<id>[N]"; null: the host
//!     "bus": int, "dev": int,
//!     "address": "BUS:DEV",           // e.g. "003:012"
//!     "port": string,                 // physical address, e.g. "3-1.4.2"
//!     "assigned_to": string | null,   // libvirt name of the guest vm.conf gives it to; null: the host
//!     "attached_to": [{               // every guest holding its hostdev (by alias)
//!       "domain": string, "uri": string | null,
//!       "bus": int | null, "dev": int | null,  // the address in that hostdev
//!       "guest_port": string | null,  // where it sits in the guest, "BUS-PORT" ("0-1"),
//!                                     // from the hostdev's guest-side <address type='usb'>
//!       "controller": string | null   // the model of the guest's controller on that bus
//!     }],
//!     "held_by": [{                   // processes with its /dev/bus/usb/BBB/DDD open
//!       "pid": int, "name": string,   // name: /proc/PID/comm
//!       "guest": string | null        // the guest whose QEMU it is (-name guest=...)
//!     }],
//!     "held_on_host": bool,           // its guest runs and a process other than that
//!                                     // guest's QEMU holds it (a problem)
//!     "state": "host" | "attached" | "missing" | "inactive" | "unknown"
//!       // host: assigned to no guest (or unusable serial)
//!       // attached: in its running guest at its current address
//!       // missing: its guest runs but does not hold it at its current address (a problem)
//!       // inactive: its guest is shut off or not defined
//!       // unknown: its guest's state could not be read
//!   }],
//!   "absent": [{                      // valid serials vm.conf assigns that are not plugged in,
//!                                     // and DOMAIN_USB_ elements that got no device
//!     "serial": string | null, "element": string | null,  // "DOMAIN_USB_<id>[N]"
//!     "assigned_to": string
//!   }],
//!   "stale": [{                       // bbvirt hostdevs that should not be there (problems)
//!     "domain": string, "uri": string | null,
//!     "alias": string,                // "ua-bbvirt-<serial>" or "ua-bbusb-..."
//!     "serial": string | null,        // taken from a ua-bbvirt- alias; null for ua-bbusb-
//!     "bus": int | null, "dev": int | null,   // the address in the hostdev
//!     "reason": "absent" | "moved" | "not_assigned",
//!     "assigned_to": string | null    // where vm.conf gives the serial (for not_assigned)
//!   }],
//!   "domains": [{                     // every configured domain, in vm.conf order
//!     "id": string,                   // the <id> of DOMAIN_RNG_<id> / DOMAIN_USB_<id>
//!     "name": string,                 // libvirt name (DOMAIN_NAME_<id>, else id)
//!     "uri": string | null,           // the URI used; null: libvirt's default
//!     "state": "running" | "shut_off" | "undefined" | "unknown",
//!     "error": string | null,         // why the state is unknown or the XML unreadable
//!     "managed_save": null | {        // a shut-off guest's managed save image (schema 2, added)
//!       "restores_cleanly": bool,     // as it is, each bbvirt hostdev takes its own device
//!                                     // (or none, when its device is not here)
//!       "rewritten_by_hook": bool,    // bbvirt's hook is installed: it rewrites them on start
//!       "fix": string | null,         // what to do when it does not restore cleanly
//!       "hostdevs": [{                // bbvirt's hostdevs in it
//!         "alias": string, "bus": int | null, "dev": int | null,  // as saved
//!         "verdict": "own" | "dropped" | "fails" | "wrong_device",
//!           // own: libvirt takes the guest's own device there; dropped: nothing
//!           // there it would take, startupPolicy optional (or parked); fails: nothing
//!           // there, the start fails; wrong_device: another device sits there
//!         "now_at": "BUS:DEV" | null, // where the guest's device is now
//!         "what": string              // the same in words
//!       }]
//!     }
//!   }],
//!   "libvirt": {
//!     "reachable": bool,              // false when a connection could not be opened
//!     "error": string | null          // connection or listing errors, "; "-separated
//!   },
//!   "sysfs": { "error": string | null }   // set when the USB devices could not be listed
//! }
//! ```

use serde::Serialize;

use crate::context::Context;
use crate::exit::CommandError;

mod collect;
mod table;

pub use collect::collect;
pub(crate) use collect::{LiveDomain, Route, alias_of, look_at_libvirt, routes_of};
pub use table::render_table;
pub(crate) use table::table as aligned_table;

/// The version of the JSON schema documented above.
pub const SCHEMA: u32 = 2;

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

/// A device that is plugged in: a BitBabbler, or a device a `DOMAIN_USB_`
/// element selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    pub serial: Option<String>,
    pub id: String,
    pub valid_serial: bool,
    pub alias: Option<String>,
    pub matched_by: Option<String>,
    pub bus: u32,
    pub dev: u32,
    pub address: String,
    pub port: String,
    pub assigned_to: Option<String>,
    pub attached_to: Vec<Attachment>,
    pub state: DeviceState,
    pub held_by: Vec<HeldBy>,
    pub held_on_host: bool,
}

/// A process that has a device's node open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldBy {
    pub pid: u32,
    pub name: String,
    /// The guest whose QEMU this is, if it is one.
    pub guest: Option<String>,
}

impl HeldBy {
    /// Every process that holds the node of the device at `bus`:`dev`
    /// ([`crate::holders`]): status and devices both show them.
    pub fn of_device(holders: &crate::holders::Holders, bus: u32, dev: u32) -> Vec<HeldBy> {
        holders
            .of(&crate::holders::device_node(bus, dev))
            .iter()
            .map(|h| HeldBy {
                pid: h.pid,
                name: h.name.clone(),
                guest: h.guest.clone(),
            })
            .collect()
    }
}

/// A guest holding a device's bbvirt hostdev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub domain: String,
    pub uri: Option<String>,
    pub bus: Option<u32>,
    pub dev: Option<u32>,
    pub guest_port: Option<String>,
    pub controller: Option<String>,
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
    pub serial: Option<String>,
    pub element: Option<String>,
    pub assigned_to: String,
}

/// A bbvirt hostdev that should not be where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleEntry {
    pub domain: String,
    pub uri: Option<String>,
    pub alias: String,
    pub serial: Option<String>,
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
    pub managed_save: Option<ManagedSave>,
}

/// A shut-off guest's managed save image and bbvirt's hostdevs in it
/// ([`crate::saved`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedSave {
    pub restores_cleanly: bool,
    pub rewritten_by_hook: bool,
    pub fix: Option<String>,
    pub hostdevs: Vec<SavedHostdev>,
}

/// One of bbvirt's hostdevs in a managed save image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavedHostdev {
    pub alias: String,
    pub bus: Option<u32>,
    pub dev: Option<u32>,
    pub verdict: SavedVerdict,
    pub now_at: Option<String>,
    pub what: String,
}

/// What libvirt would do with a saved hostdev as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedVerdict {
    Own,
    Dropped,
    Fails,
    WrongDevice,
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

/// Prints the status; [`CommandError::Unhealthy`] when it is not healthy
/// (see the module documentation).
pub fn run(ctx: &Context, json: bool) -> Result<(), CommandError> {
    let report = collect(
        ctx,
        &crate::holders::proc_root(),
        &crate::check::install_root(),
    );
    for w in &report.sysfs_warnings {
        crate::warn!("{w}");
    }
    let text = if json {
        render_json(&report)
    } else {
        render_table(&report)
    };
    crate::exit::print(&text, "status")?;
    if report.healthy {
        Ok(())
    } else {
        Err(CommandError::Unhealthy)
    }
}
