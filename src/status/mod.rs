//! `bbvirt status [--json]`: every BitBabbler on the host and every USB
//! device a `DOMAIN_USB_` element selects, where vm.conf assigns each and
//! where it is attached, the configured serials and elements that have no
//! device plugged in, the stale bbvirt hostdevs (`ua-bbvirt-*`,
//! `ua-bbusb-*`, and `ua-bbnet-*` redirdevs), and each configured guest's
//! state; with devices on another host ([`crate::remote`]), each guest's
//! remote devices and whether their streams are up (hypervisor), and each
//! `SERVE_USB_` device and its client (exporting host): how these are told
//! without QMP is in its `remote` part. A USB device that nothing in vm.conf
//! selects is not shown.
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
//! A redirdev tagged `ua-bbnet-...` is stale, in a configured domain, when
//! its `DOMAIN_REMOTE_` does not give it that device (`not_assigned`) or
//! it connects elsewhere than the element says (`wrong_source`); in
//! another running domain, when vm.conf gives that device to a configured
//! guest (`not_assigned`).
//!
//! In configured domains these are exactly the entries `bbvirt sync`
//! removes; in other domains `bbvirt detach-all GUEST`,
//! `bbvirt detach SERIAL -D GUEST` or `bbvirt detach HOST:PORT -D GUEST`
//! removes them.
//!
//! # Exit status
//!
//! - 0 (healthy): nothing below is wrong.
//! - 1 (not healthy): a stale entry (including a device in the wrong guest);
//!   a device assigned to a running guest that a host process holds open
//!   (`held_on_host`: seedd, say);
//!   a running guest lacks a present device assigned to it (state
//!   `missing`: `bbvirt sync` attaches it), or a remote device vm.conf
//!   gives it (remote state `missing`); libvirt could not be reached or
//!   answered with an error, or a domain's live XML could not be read (a
//!   health check that cannot look cannot confirm); sysfs could not be read.
//!
//! - a shut-off guest's managed save image whose bbvirt hostdevs would not
//!   restore cleanly as they are ([`crate::saved::judge`]), while bbvirt's
//!   hook, which rewrites them on start, is not installed.
//!
//! Not problems: an unplugged configured serial (`absent`), a guest that is
//! shut off or not defined, a device assigned to no guest, a device whose
//! serial bbvirt cannot use, a remote device whose exporting host does not
//! answer (`waiting`: QEMU keeps trying), a served device without a client
//! or not plugged in. A vm.conf that cannot be read exits 3 before
//! anything is shown (see `bbvirt check`).
//!
//! # JSON schema (`--json`), version 3
//!
//! One object; fields are only ever added within a schema version, never
//! renamed, removed or given another meaning (that bumps `schema`).
//! Version 2 (DOMAIN_USB_): `devices` also lists the other USB devices an
//! element matches (so not only BitBabblers), with `id`, `alias` and
//! `matched_by`; `absent` entries may be an element (`serial` null,
//! `element` set); `stale` entries of such devices have `serial` null.
//! Version 3 (devices on another host): `remote`, `served`, `endpoint` of
//! `stale` entries, and the stale reason `wrong_source`; every field of
//! version 2 is there as it was.
//!
//! ```text
//! {
//!   "schema": 3,
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
//!     "reason": "absent" | "moved" | "not_assigned" | "wrong_source",
//!                                     // wrong_source (schema 3): a ua-bbnet- redirdev
//!                                     // connecting elsewhere than vm.conf says
//!     "assigned_to": string | null,   // where vm.conf gives the serial (for not_assigned),
//!                                     // or a redirdev's remote device
//!     "endpoint": "HOST:PORT" | null  // (schema 3) a ua-bbnet- redirdev's exporting host
//!                                     // and port, from its alias; null for a hostdev
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
//!   "sysfs": { "error": string | null },  // set when the USB devices could not be listed
//!   "remote": [{                      // (schema 3) each configured guest's DOMAIN_REMOTE_
//!                                     // devices, in vm.conf order, one per host and port
//!     "domain": string, "uri": string | null,
//!     "endpoint": "HOST:PORT",        // the exporting host and port ([IPV6]:PORT)
//!     "tls": bool,                    // false for tls=no
//!     "alias": string,                // its redirdev's, "ua-bbnet-..."
//!     "connects_to": "HOST:PORT",     // where QEMU connects: 127.0.0.1:PORT (the local
//!                                     // end of the TLS tunnel) or, plain, the endpoint
//!     "state": "connected" | "waiting" | "attached" | "missing" | "inactive" | "unknown",
//!       // connected: the redirdev is there and the guest's QEMU has an ESTABLISHED
//!       //   connection to connects_to; waiting: the redirdev is there, no connection
//!       //   (exporting host down, device unplugged, serve or tunnel down; QEMU keeps
//!       //   trying); attached: the redirdev is there, the connection could not be
//!       //   looked at (reason says why); missing: its guest runs without it (a problem);
//!       // inactive: its guest is shut off or not defined; unknown: its guest's state
//!       //   could not be read (a problem)
//!     "qemu_pid": int | null,         // the QEMU process holding the connection
//!     "reason": string | null         // why waiting, attached or unknown
//!   }],
//!   "served": [{                      // (schema 3) each SERVE_USB_<port> of this host,
//!                                     // in port order
//!     "port": int, "tls": bool,
//!     "listen": "ADDR:PORT" | null,   // where usbredirect listens: 127.0.0.1:PORT+10000
//!                                     // behind the tunnel, 0.0.0.0:PORT for tls=no
//!     "device": {                     // the device the element selects now, as
//!                                     // `bbvirt serve` picks it; null: none plugged in
//!       "address": "BBB:DDD", "bus": int, "dev": int, "port": string,
//!       "id": "vvvv:pppp", "serial": string | null
//!     } | null,
//!     "client": "connected" | "waiting" | "none" | "unknown",
//!       // connected: a connection is ESTABLISHED on usbredirect's port; waiting: it
//!       // listens there, no client; none: nothing listens (device unplugged, serve
//!       // not running); unknown: the socket tables could not be read
//!     "peer": "ADDR:PORT" | null,     // the client (with TLS: the far end of stunnel's
//!                                     // connection on PORT), when known
//!     "reason": string | null         // why there is no client, when it can be told
//!   }]
//! }
//! ```

use serde::Serialize;

use crate::context::Context;
use crate::exit::CommandError;

mod collect;
mod remote;
mod table;

pub use collect::collect;
pub use table::render_table;

pub use crate::holders::HeldBy;
pub use crate::report::{
    ClientState, DomainState, LibvirtStatus, Served, ServedDevice, SysfsStatus,
};

/// The version of the JSON schema documented above.
pub const SCHEMA: u32 = 3;

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
    pub remote: Vec<RemoteStatus>,
    pub served: Vec<Served>,
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
    /// The exporting host and port of a stale `ua-bbnet-` redirdev.
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleKind {
    Absent,
    Moved,
    NotAssigned,
    /// A redirdev with bbvirt's alias for a remote device vm.conf gives
    /// the guest, connecting elsewhere than vm.conf says.
    WrongSource,
}

/// A remote device (`DOMAIN_REMOTE_`) of a configured guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteStatus {
    pub domain: String,
    pub uri: Option<String>,
    pub endpoint: String,
    pub tls: bool,
    pub alias: String,
    pub connects_to: String,
    pub state: RemoteState,
    pub qemu_pid: Option<u32>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteState {
    /// Its redirdev is there and the guest's QEMU has its stream up.
    Connected,
    /// Its redirdev is there, no stream: QEMU is trying again.
    Waiting,
    /// Its redirdev is there; whether the stream is up could not be told.
    Attached,
    /// The guest runs without it (a problem: `bbvirt sync` attaches it).
    Missing,
    /// The guest is shut off or not defined.
    Inactive,
    /// The guest's state or XML could not be read.
    Unknown,
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
