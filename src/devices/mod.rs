//! `bbvirt devices [--json]` (alias `bbvirt list`): every USB device of the
//! host, who has it now, and a `DOMAIN_USB_` element that selects exactly
//! it: the first step from "which device is that?" to a line in vm.conf.
//!
//! # Decisions
//!
//! - **Every USB device but root hubs**: whatever sysfs lists under
//!   `bus/usb/devices` with readable ids ([`crate::sysfs::Scan::usb`]),
//!   hubs included (a hub can be passed through too), by bus then ports.
//!   Root hubs belong to the host controller and are never passed through.
//!   A BitBabbler with garbage attributes is warned about on stderr, as by
//!   `status`; any other such entry is left out.
//! - **What a device is**: address `BBB:DDD`, port `BUS-PORT[.PORT...]`,
//!   vendor:product, the `manufacturer`, `product` and `serial` strings
//!   ([`crate::sysfs::Sysfs::details`]).
//! - **Who has it now**: a running guest, when its live XML holds a
//!   hostdev whose source address is the device's (whoever put it there:
//!   bbvirt, `virsh attach-device`, the domain's definition); else, when
//!   libvirt cannot tell, a guest whose QEMU holds the device node open
//!   (`-name guest=...`, [`crate::holders`]). Otherwise the host, with the
//!   kernel drivers bound to the device's interfaces and the processes that
//!   hold `/dev/bus/usb/BBB/DDD` open. A hostdev with bbvirt's alias for the
//!   device (the same alias `status` and `sync` use) at another address is
//!   listed as a stale entry: the guest does not have the device through it.
//!   The guests looked at are those `status` looks at (every configured
//!   guest on its URI, every other running guest of each daemon once).
//! - **The suggested element** is the shortest of `id=`, `id= serial=`,
//!   `id= port=` that selects exactly this device among those present,
//!   proven by the routing rule itself ([`suggest`]). It is shown as one
//!   bash word ([`crate::text::shell_quote`]) around the element's text,
//!   whose serial is quoted as the element splitter reads it back
//!   ([`crate::text::element_quote`]): pasted into `DOMAIN_USB_<id>=( ... )`
//!   it gives that guest exactly that device. When only the port tells a
//!   device apart, the suggestion says so and from which devices: moving
//!   the device to another port changes its element.
//! - **Untrusted strings**: descriptor strings are whatever the device
//!   sent. The JSON gives them as they are (serde escapes what JSON needs);
//!   the table escapes what could break a line or move text
//!   ([`crate::text::escape_controls`]) and cuts strings at
//!   [`table::MAX_CELL`] characters (the JSON and the element keep them
//!   whole); the element is quoted as above, one line whatever it holds.
//! - **Read only and forgiving**: no lock, no change. Without libvirt it
//!   says so and shows the host side. A vm.conf that cannot be used (the
//!   admin may be writing it) is reported, and the devices are listed
//!   without their assignments; a missing vm.conf is nothing wrong.
//!   `--connect` overrides every guest's URI, as for `status`; `--domain`
//!   is ignored.
//! - **Served devices**: on an exporting host, the device a `SERVE_USB_`
//!   element takes (chosen as `bbvirt serve` chooses it,
//!   [`crate::serve::device_for`]) is shown as served on its port, and each
//!   element with its client, as `status` shows them
//!   ([`crate::report::served`]).
//!
//! # Exit status
//!
//! 0 when the devices could be listed (whatever libvirt or vm.conf said:
//! the output says it); 1 when sysfs could not be read or the output not
//! written; 2 for a usage error.
//!
//! # JSON schema (`--json`), version 2
//!
//! One object; fields are only ever added within a schema version, never
//! renamed, removed or given another meaning (that bumps `schema`).
//! Version 2 (devices on another host): `served_on` and `served`; every
//! field of version 1 is there as it was.
//!
//! ```text
//! {
//!   "schema": 2,
//!   "devices": [{                     // every USB device but root hubs, by bus then ports
//!     "address": "BBB:DDD",           // logical address, e.g. "001:002"
//!     "bus": int, "dev": int,
//!     "port": string,                 // physical address, e.g. "3-1.4"
//!     "id": "vvvv:pppp",              // vendor:product, lower-case hex
//!     "manufacturer": string | null,  // the string descriptors as sysfs gives them
//!     "product": string | null,       // (lossy UTF-8, trailing newlines removed:
//!     "serial": string | null,        // untrusted); null: the device has none
//!     "bitbabbler": bool,             // id 0403:7840 (DOMAIN_RNG_ gives it by serial)
//!     "guest": string | null,         // the running guest that has it now: one whose live
//!                                     // XML holds a hostdev at its address, else one whose
//!                                     // QEMU holds its node open; null: the host has it
//!     "guest_uri": string | null,     // the URI that guest was seen at (null: the default,
//!                                     // or seen by its QEMU only)
//!     "hostdevs": [{                  // hostdevs in running guests' live XML naming it
//!       "domain": string, "uri": string | null,
//!       "alias": string | null,       // the hostdev's alias, whoever put it there
//!       "bus": int | null, "dev": int | null,  // its source address
//!       "found_by": "address" | "alias"
//!         // address: its source address is this device's
//!         // alias: bbvirt's alias for this device at another address (stale)
//!     }],
//!     "drivers": [string],            // kernel drivers bound to its interfaces, each once;
//!                                     // "usbfs": a program holds it through libusb
//!     "held_by": [{                   // processes with /dev/bus/usb/BBB/DDD open
//!       "pid": int, "name": string,   // name: /proc/PID/comm
//!       "guest": string | null        // the guest whose QEMU it is
//!     }],
//!     "assigned_to": string | null,   // the guest vm.conf gives it to (libvirt name)
//!     "matched_by": string | null,    // "DOMAIN_RNG_<id>" or "DOMAIN_USB_<id>[N]"
//!     "suggestion": {                 // an element that selects exactly this device
//!                                     // among those present; null: none does
//!       "element": string,            // its text, as vm.conf's elements are read:
//!                                     // "id=10c4:ea60 serial=\"A B\""
//!       "word": string,               // the same as one bash word, to paste into
//!                                     // DOMAIN_USB_<id>=( ... ): "'id=10c4:ea60 serial=\"A B\"'"
//!       "keys": "id" | "id_serial" | "id_port",
//!       "port_because": "same_serial" | "no_serial" | "unusable_serial" | null,
//!         // id_port only: another device has its id and serial (twins); it has no
//!         // serial; its serial cannot be written in vm.conf (a NUL byte)
//!       "twins": ["BBB:DDD"]          // id_port only: the other devices present that the
//!                                     // element without its port would select too
//!     } | null,
//!     "served_on": int | null         // (schema 2) the port of the SERVE_USB_<port> that
//!                                     // takes it on this exporting host; null: none
//!   }],
//!   "config": {
//!     "path": string,                 // the vm.conf read (--config, else the default)
//!     "exists": bool,
//!     "error": string | null          // why it could not be used: no assignments shown
//!   },
//!   "libvirt": { "reachable": bool, "error": string | null },  // as status's
//!   "sysfs": { "error": string | null },   // set when the USB devices could not be listed
//!   "processes": { "unreadable": int },    // processes whose open files could not be
//!                                          // looked at (without root): held_by may miss some
//!   "served": [...]                   // (schema 2) each SERVE_USB_<port>, as status's
//!                                     // "served" (schema 3 of status)
//! }
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::Opts;
use crate::config::Config;
use crate::context::Context;
use crate::exit::CommandError;
use crate::holders::HeldBy;
use crate::libvirt::Hypervisor;
use crate::report::{LibvirtStatus, Served, SysfsStatus};
use crate::sysfs::Sysfs;

mod collect;
pub mod suggest;
mod table;

pub use collect::collect;
pub use suggest::{Keys, PortBecause};
pub use table::render_table;

/// The version of the JSON schema documented above.
pub const SCHEMA: u32 = 2;

/// Everything `bbvirt devices` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub schema: u32,
    pub devices: Vec<Device>,
    pub config: ConfigStatus,
    pub libvirt: LibvirtStatus,
    pub sysfs: SysfsStatus,
    pub processes: ProcessesStatus,
    pub served: Vec<Served>,
    /// What sysfs showed that is not part of the report (BitBabblers with
    /// garbage attributes, a device's details unreadable): logged as
    /// warnings by [`run`].
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// One USB device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub address: String,
    pub bus: u32,
    pub dev: u32,
    pub port: String,
    pub id: String,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub bitbabbler: bool,
    pub guest: Option<String>,
    pub guest_uri: Option<String>,
    pub hostdevs: Vec<Hostdev>,
    pub drivers: Vec<String>,
    pub held_by: Vec<HeldBy>,
    pub assigned_to: Option<String>,
    pub matched_by: Option<String>,
    pub suggestion: Option<Suggested>,
    /// The `SERVE_USB_<port>` that takes it (schema 2).
    pub served_on: Option<u16>,
}

/// A hostdev in a running guest that names a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hostdev {
    pub domain: String,
    pub uri: Option<String>,
    pub alias: Option<String>,
    pub bus: Option<u32>,
    pub dev: Option<u32>,
    pub found_by: FoundBy,
}

/// How a hostdev names a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// Its source address is the device's.
    Address,
    /// It carries bbvirt's alias for the device, at another address.
    Alias,
}

/// The suggested element of a device ([`suggest::Suggestion`]) as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggested {
    pub element: String,
    pub word: String,
    pub keys: Keys,
    pub port_because: Option<PortBecause>,
    pub twins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigStatus {
    pub path: PathBuf,
    pub exists: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessesStatus {
    pub unreadable: usize,
}

/// The report as JSON (pretty-printed, with a final newline).
pub fn render_json(report: &Report) -> String {
    match serde_json::to_string_pretty(report) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        // Cannot happen with these types; still no panic.
        Err(e) => format!("{{\"schema\": {SCHEMA}, \"error\": {:?}}}\n", e.to_string()),
    }
}

/// vm.conf at `path`, or an empty config and why it could not be used
/// (see the module doc); the second value says whether the file exists.
pub fn load_config(path: &Path) -> (Config, bool, Option<String>) {
    let empty = || Config {
        path: path.to_path_buf(),
        ..Config::default()
    };
    crate::log::step(&format!("reading {}", path.display()));
    match Config::load(path) {
        Ok(Some(config)) => (config, true, None),
        Ok(None) => (empty(), false, None),
        Err(e) => (empty(), path.exists(), Some(crate::log::chain(&e))),
    }
}

/// Lists the devices (see the module documentation); an error only when
/// sysfs could not be read ([`CommandError::NotListed`]) or the output not
/// written.
pub fn run(
    config_path: &Path,
    opts: &Opts,
    sysfs: &Sysfs,
    hv: &dyn Hypervisor,
    json: bool,
) -> Result<(), CommandError> {
    let (config, exists, config_error) = load_config(config_path);
    let ctx = Context {
        config: &config,
        sysfs,
        hv,
        opts,
        lock_dir: None,
        readiness: None,
    };
    let report = collect(
        &ctx,
        &crate::holders::proc_root(),
        ConfigStatus {
            path: config_path.to_path_buf(),
            exists,
            error: config_error,
        },
    );
    for w in &report.warnings {
        crate::warn!("{w}");
    }
    let text = if json {
        render_json(&report)
    } else {
        render_table(&report)
    };
    crate::exit::print(&text, "device list")?;
    match report.sysfs.error {
        Some(_) => Err(CommandError::NotListed),
        None => Ok(()),
    }
}
