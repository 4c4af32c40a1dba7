//! Saved guest state: what bbvirt's hostdevs in a saved domain XML become
//! when the guest runs again on this host.
//!
//! libvirt carries a running guest's live XML, bbvirt's hostdevs with their
//! bus/device addresses included, into every saved state: `virsh save`,
//! `virsh managedsave` (and `libvirt-guests` suspending at shutdown), an
//! incoming live migration, a snapshot that keeps memory. When the guest
//! runs again libvirt opens whatever sits at the old address: nothing (the
//! restore fails, "Did not find USB device", and a managed save then blocks
//! every start), or another device that took the number since (device
//! numbers are reused: they wrap at 127 per bus and start over at boot).
//!
//! # Decisions
//!
//! - **Rewrite, never remove.** libvirt refuses a restore or migration XML
//!   whose device count differs from the saved one, so [`rewrite`] keeps
//!   every hostdev and changes only the `<source>` of bbvirt's own
//!   (`ua-bbvirt-`, `ua-bbusb-` aliases; anyone else's hostdev and every
//!   other byte of the XML stay as they were).
//! - **This host decides.** A hostdev whose alias names a device this host
//!   gives the guest now ([`crate::config::Config::guest_devices`]) points
//!   at that device's current address. Any other (the device is absent, or
//!   vm.conf gives it elsewhere or to nobody, or the guest is not in
//!   vm.conf, or a process on the host holds the device open) is **parked**
//!   ([`crate::hostdev::parked_source_xml`]): libvirt drops it and the
//!   guest runs without it until bbvirt's follow-up removes the empty entry
//!   and attaches whatever this host assigns. So a migrated guest arrives
//!   holding the destination's devices, not the source's, and a restored one
//!   never a device that took its device's old number.
//! - **Not knowing is parking.** With vm.conf unusable or sysfs unreadable
//!   bbvirt cannot tell which device is which: every bbvirt hostdev is
//!   parked (the restore goes on, the guest gets no device it should not).
//! - **Judging without rewriting** ([`judge`]): what libvirt would do with a
//!   saved XML as it is, by the rules of its `virHostdevFindUSBDevice`: a
//!   hostdev with vendor:product and an address takes only a device of that
//!   vendor:product at that address, one with an address only takes any
//!   device there; a device not found fails the start unless the source is
//!   `startupPolicy='optional'`. The hook refuses a start (a snapshot revert
//!   has no XML filter) that would hand a guest a device that is not its
//!   own; `status` and `check` report managed save images that would not
//!   restore cleanly without the rewrite.
//!
//! - **Remote devices the same way** ([`rewrite_remote`]): a saved state
//!   carries bbvirt's redirdevs (`ua-bbnet-`, [`crate::remote`]) with the
//!   address QEMU connected to. One this host gives the guest connects
//!   where this host's vm.conf says (the same XML on every host whose
//!   tunnel serves it: a migration's destination connects as soon as the
//!   exporting host lets it, which is when the source's connection is
//!   gone); any other is parked ([`crate::remote::redirdev::parked`]),
//!   since the same local port may lead to another exporting host here.
//!   At a snapshot revert, a redirdev that is neither refuses the start
//!   ([`foreign_redirdevs`]).
//!
//! Pure functions: the caller reads sysfs, vm.conf and `/proc`.

use std::ops::Range;

use crate::device::UsbId;
use crate::hostdev::{UsbHostdev, XmlError, alias_id, parked_source_xml, source_xml, usb_hostdevs};
use crate::remote::redirdev::{
    RECONNECT_SECS, Redirdev, Wanted, parked, redirdev_sources, source_xml as redirdev_source_xml,
};
use crate::sysfs::UsbDevice;

/// Why a hostdev is parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParkReason {
    /// This host gives the guest no device under that alias now: the device
    /// is not plugged in, or vm.conf gives it to another guest or to nobody.
    NotAssigned,
    /// Its device is here and the guest's, but a process holds it open
    /// (another guest's QEMU, seedd...): libvirt would refuse it.
    Held(String),
    /// vm.conf or sysfs could not be read: bbvirt cannot tell.
    Unknown,
}

impl std::fmt::Display for ParkReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParkReason::NotAssigned => {
                f.write_str("this host does not give the guest that device now")
            }
            ParkReason::Held(who) => write!(f, "its device is held by {who}"),
            ParkReason::Unknown => f.write_str("bbvirt cannot tell which device it is"),
        }
    }
}

/// What [`rewrite`] made of one of bbvirt's hostdevs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Its device, at its current address.
    At { bus: u32, dev: u32 },
    /// Parked: dropped by libvirt, removed by the follow-up.
    Parked(ParkReason),
}

/// One of bbvirt's hostdevs in a saved XML and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub alias: String,
    /// The address the saved XML had.
    pub was: (Option<u32>, Option<u32>),
    pub fate: Fate,
    /// Whether the `<source>` text changed.
    pub changed: bool,
}

impl Change {
    /// The change in words, for the log.
    pub fn describe(&self) -> String {
        let was = match self.was {
            (Some(b), Some(d)) => format!("{b:03}:{d:03}"),
            _ => "no address".to_string(),
        };
        match &self.fate {
            Fate::At { bus, dev } if (Some(*bus), Some(*dev)) == self.was => {
                format!("{} stays at {was}", self.alias)
            }
            Fate::At { bus, dev } => format!("{} {was} -> {bus:03}:{dev:03}", self.alias),
            Fate::Parked(why) => format!("{} {was} -> parked ({why})", self.alias),
        }
    }
}

/// The result of [`rewrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The XML to use; None when nothing changed (libvirt's hook contract:
    /// empty output means "unchanged").
    pub xml: Option<String>,
    /// Every bbvirt hostdev found, in document order.
    pub changes: Vec<Change>,
}

/// Rewrites bbvirt's hostdevs in a saved domain XML for this host (see the
/// module doc). `assigned`: the present devices this host gives the guest,
/// with their aliases; None when that cannot be known (every bbvirt hostdev
/// is parked). `held_by(dev)`: who holds the device open, if anyone.
pub fn rewrite(
    xml: &str,
    assigned: Option<&[(String, &UsbDevice)]>,
    held_by: &dyn Fn(&UsbDevice) -> Option<String>,
) -> Result<Rewritten, XmlError> {
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut changes = Vec::new();
    let mut parked = 0;
    for h in usb_hostdevs(xml)? {
        let (Some(alias), Some(range)) = (h.alias.clone(), h.source_range.clone()) else {
            continue;
        };
        if !h.is_bbvirts() {
            continue;
        }
        let indent = indent_before(xml, range.start);
        let mine = assigned.map(|a| a.iter().find(|(al, _)| *al == alias).map(|(_, d)| *d));
        let mut park = |why| {
            parked += 1;
            parked_fate(&h, &alias, why, parked - 1, &indent)
        };
        let (fate, text) = match mine {
            Some(Some(dev)) => match held_by(dev) {
                Some(who) => park(ParkReason::Held(who)),
                None => (
                    Fate::At {
                        bus: dev.busnum,
                        dev: dev.devnum,
                    },
                    source_xml(dev.id, dev.busnum, dev.devnum, &indent),
                ),
            },
            Some(None) => park(ParkReason::NotAssigned),
            None => park(ParkReason::Unknown),
        };
        let changed = xml[range.clone()] != text;
        if changed {
            edits.push((range, text));
        }
        changes.push(Change {
            alias,
            was: (h.bus, h.device),
            fate,
            changed,
        });
    }
    Ok(Rewritten {
        xml: apply(xml, edits),
        changes,
    })
}

/// `xml` with each range of `edits` (in document order, disjoint) replaced
/// by its text; None when there is none.
fn apply(xml: &str, edits: Vec<(Range<usize>, String)>) -> Option<String> {
    if edits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(xml.len() + 256 * edits.len());
    let mut at = 0;
    for (range, text) in edits {
        out.push_str(&xml[at..range.start]);
        out.push_str(&text);
        at = range.end;
    }
    out.push_str(&xml[at..]);
    Some(out)
}

/// What [`rewrite_remote`] made of one of bbvirt's redirdevs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFate {
    /// This host gives the guest that remote device: QEMU connects where
    /// this host's vm.conf says (`HOST:PORT`).
    Connects(String),
    /// Parked ([`crate::remote::redirdev::parked`]): it connects nowhere
    /// and the follow-up detaches it.
    Parked(ParkReason),
}

/// One of bbvirt's redirdevs in a saved XML and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChange {
    pub alias: String,
    /// Where it connected in the saved XML (`HOST:SERVICE`).
    pub was: String,
    pub fate: RemoteFate,
    /// Whether the `<source>` text changed.
    pub changed: bool,
}

impl RemoteChange {
    /// The change in words, for the log.
    pub fn describe(&self) -> String {
        match &self.fate {
            RemoteFate::Connects(to) if !self.changed => {
                format!("{} stays connecting to {to}", self.alias)
            }
            RemoteFate::Connects(to) => format!("{} {} -> {to}", self.alias, self.was),
            RemoteFate::Parked(why) => format!("{} {} -> parked ({why})", self.alias, self.was),
        }
    }
}

/// The result of [`rewrite_remote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRewritten {
    /// The XML to use; None when nothing changed.
    pub xml: Option<String>,
    /// Every bbvirt redirdev found, in document order.
    pub changes: Vec<RemoteChange>,
}

/// Rewrites bbvirt's redirdevs (remote devices, [`crate::remote`]) in a
/// saved domain XML for this host, as [`rewrite`] does its hostdevs: each
/// one this host gives the guest (`given`: what this host's vm.conf gives
/// it, [`crate::remote::redirdev::wanted`]) connects where this host says, with
/// reconnecting on; any other is parked. None for `given`: this host
/// cannot tell (vm.conf unusable), every one is parked. So a migrated or
/// restored guest never reaches through this host's tunnels a device this
/// host does not give it (on another host the same local port may lead to
/// another exporting host), and the one it should hold is back as soon as
/// QEMU connects (the source's connection is gone, or the exporting host
/// refuses it until it is).
pub fn rewrite_remote(xml: &str, given: Option<&[Wanted]>) -> Result<RemoteRewritten, XmlError> {
    let mut edits = Vec::new();
    let mut changes = Vec::new();
    for (r, range) in redirdev_sources(xml)? {
        let (fate, connect) = match given {
            Some(g) => match g.iter().find(|w| w.alias == r.alias) {
                Some(w) => {
                    let to = w.element.connects_to();
                    (RemoteFate::Connects(to.to_string()), to)
                }
                None => (RemoteFate::Parked(ParkReason::NotAssigned), parked()),
            },
            None => (RemoteFate::Parked(ParkReason::Unknown), parked()),
        };
        // Where it connects already: left byte for byte as libvirt wrote it.
        let changed = r.host != connect.host.bare() || r.service != connect.port.to_string();
        match range {
            Some(range) if changed => {
                edits.push((range, redirdev_source_xml(&connect, RECONNECT_SECS)))
            }
            // No <source>: libvirt would not have saved it; left as it is.
            _ => {}
        }
        let was = match (r.host.as_str(), r.service.as_str()) {
            ("", "") => "nowhere".to_string(),
            (h, s) if h.contains(':') => format!("[{h}]:{s}"),
            (h, s) => format!("{h}:{s}"),
        };
        changes.push(RemoteChange {
            alias: r.alias,
            was,
            fate,
            changed,
        });
    }
    Ok(RemoteRewritten {
        xml: apply(xml, edits),
        changes,
    })
}

fn parked_fate(
    h: &UsbHostdev,
    alias: &str,
    why: ParkReason,
    slot: u32,
    indent: &str,
) -> (Fate, String) {
    let id: Option<UsbId> = h.id.or_else(|| alias_id(alias));
    (
        Fate::Parked(why),
        parked_source_xml(id, h.bus.unwrap_or(1), slot, indent),
    )
}

/// The whitespace between the start of the line and `at`: the indentation
/// of the element that starts there.
fn indent_before(xml: &str, at: usize) -> String {
    let line_start = xml[..at].rfind('\n').map_or(0, |i| i + 1);
    let lead = &xml[line_start..at];
    if lead.chars().all(|c| c == ' ' || c == '\t') {
        lead.to_string()
    } else {
        String::new()
    }
}

/// bbvirt's redirdevs of a saved XML (as it is, no rewrite) that would
/// connect the guest where this host does not: not parked, and not one
/// `given` names with that same source (`given`: what this host's vm.conf
/// gives the guest, [`crate::remote::redirdev::wanted`]). The hook refuses a start that
/// would keep one (a snapshot revert, which has no XML filter): the same
/// local port may lead to another device here.
pub fn foreign_redirdevs(xml: &str, given: &[Wanted]) -> Result<Vec<Redirdev>, XmlError> {
    Ok(redirdev_sources(xml)?
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| !r.is_parked() && !given.iter().any(|w| w.is_held_by(r)))
        .collect())
}

/// What libvirt would do with one of bbvirt's hostdevs of a saved XML as it
/// is (no rewrite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It takes the guest's own device (the one this host gives it under
    /// that alias) at the saved address.
    Own,
    /// Parked, or nothing there that it would take and the source is
    /// optional: the guest comes back without it.
    Dropped,
    /// Nothing there that it would take: the start fails ("Did not find USB
    /// device").
    Fails,
    /// It takes another device: the one at the saved address, which this
    /// host does not give the guest under that alias.
    Wrong {
        id: UsbId,
        serial: Option<String>,
        name: String,
    },
}

/// One of bbvirt's hostdevs of a saved XML, judged ([`judge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub alias: String,
    pub bus: Option<u32>,
    pub dev: Option<u32>,
    pub verdict: Verdict,
    /// Where the device this host gives the guest under that alias is now
    /// (None: no such device present).
    pub now_at: Option<(u32, u32)>,
}

impl Judged {
    /// Whether the guest would come back holding exactly its own device.
    pub fn clean(&self) -> bool {
        self.verdict == Verdict::Own || (self.verdict == Verdict::Dropped && self.now_at.is_none())
    }

    /// What would happen, in words.
    pub fn describe(&self) -> String {
        let at = match (self.bus, self.dev) {
            (Some(b), Some(d)) => format!("{b:03}:{d:03}"),
            _ => "no address".to_string(),
        };
        let now = match self.now_at {
            Some((b, d)) => format!("its device is at {b:03}:{d:03} now"),
            None => "its device is not here (or not the guest's) now".to_string(),
        };
        match &self.verdict {
            Verdict::Own => format!("{} at {at}: its own device", self.alias),
            Verdict::Dropped => format!("{} at {at}: dropped; {now}", self.alias),
            Verdict::Fails => format!(
                "{} at {at}: nothing libvirt would take is there, the start fails; {now}",
                self.alias
            ),
            Verdict::Wrong { id, serial, name } => format!(
                "{} at {at}: libvirt would take another device, {id}{} at {name}; {now}",
                self.alias,
                serial
                    .as_deref()
                    .map(|s| format!(" \"{}\"", s.escape_debug()))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Judges bbvirt's hostdevs of a saved XML as libvirt would take them now
/// (see the module doc). `assigned`: the present devices this host gives the
/// guest, with their aliases; `present`: every USB device on the host.
pub fn judge(
    xml: &str,
    assigned: &[(String, &UsbDevice)],
    present: &[UsbDevice],
) -> Result<Vec<Judged>, XmlError> {
    let mut out = Vec::new();
    for h in usb_hostdevs(xml)? {
        let Some(alias) = h.alias.clone().filter(|_| h.is_bbvirts()) else {
            continue;
        };
        let own = assigned.iter().find(|(a, _)| *a == alias).map(|(_, d)| *d);
        let taken = libvirt_would_take(&h, present);
        let verdict = match taken {
            _ if h.is_parked() => Verdict::Dropped,
            None if h.optional => Verdict::Dropped,
            None => Verdict::Fails,
            Some(d) if own.is_some_and(|o| o.name == d.name) => Verdict::Own,
            Some(d) => Verdict::Wrong {
                id: d.id,
                serial: d.serial.clone(),
                name: d.name.clone(),
            },
        };
        out.push(Judged {
            alias,
            bus: h.bus,
            dev: h.device,
            verdict,
            now_at: own.map(|d| (d.busnum, d.devnum)),
        });
    }
    Ok(out)
}

/// The device libvirt's `virHostdevFindUSBDevice` would take for `h` among
/// `present` (a hostdev with an explicit address: vendor:product and
/// address must both match when a vendor is given, else the address).
fn libvirt_would_take<'p>(h: &UsbHostdev, present: &'p [UsbDevice]) -> Option<&'p UsbDevice> {
    let (bus, dev) = (h.bus?, h.device?);
    if bus == 0 {
        return None;
    }
    present
        .iter()
        .find(|d| d.busnum == bus && d.devnum == dev && h.id.is_none_or(|id| id == d.id))
}

/// Whether a domain XML holds any of bbvirt's hostdevs (unreadable XML:
/// false).
pub fn holds_bbvirt_hostdevs(xml: &str) -> bool {
    usb_hostdevs(xml).is_ok_and(|hs| hs.iter().any(UsbHostdev::is_bbvirts))
}

/// Whether `xml` holds any of bbvirt's devices: its hostdevs, or its
/// redirdevs (remote devices).
pub fn holds_bbvirt_devices(xml: &str) -> bool {
    holds_bbvirt_hostdevs(xml) || redirdev_sources(xml).is_ok_and(|r| !r.is_empty())
}

/// A guest's managed save image, judged ([`judge`]): what `status` and
/// `check` report about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedImage {
    /// bbvirt's hostdevs in it.
    pub judged: Vec<Judged>,
}

impl SavedImage {
    /// Whether the guest would come back holding exactly its own devices
    /// without bbvirt's rewrite.
    pub fn restores_cleanly(&self) -> bool {
        self.judged.iter().all(Judged::clean)
    }

    /// What to do about an image that does not restore cleanly, for the
    /// guest libvirt calls `name`; `hook_in_place`: bbvirt's hook is
    /// installed (it rewrites the image's devices when the guest starts).
    pub fn fix(&self, name: &str, hook_in_place: bool) -> String {
        let name = crate::text::shell_quote(name);
        if hook_in_place {
            format!(
                "nothing to do: bbvirt's hook gives the guest this host's devices when it \
                 starts (`virsh start {name}`)"
            )
        } else {
            format!(
                "install bbvirt's hook (`bbvirt install`, then restart libvirtd) before \
                 `virsh start {name}`, or discard the saved state: `virsh managedsave-remove {name}`"
            )
        }
    }
}
