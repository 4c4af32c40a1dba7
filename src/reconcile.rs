//! Reconciliation: what a running guest's bbvirt devices should be, compared
//! with what its live XML says.
//!
//! The truth is sysfs (which devices are present, at which address) plus
//! vm.conf (which guest each serial belongs to). A guest's `ua-bbvirt-*`
//! hostdev is stale when its device is absent (a remove event was missed), has
//! moved to another address (replugged while bbvirt missed it), or is no
//! longer assigned to that guest. Hostdevs without bbvirt's alias are never
//! judged. Pure functions: the caller does the I/O.

use crate::hostdev::UsbHostdev;
use crate::sysfs::UsbDevice;

/// Why a bbvirt hostdev has to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleReason {
    /// No device with that serial is plugged in.
    Absent,
    /// The device is present at another address now.
    Moved { bus: u32, dev: u32 },
    /// The serial is not assigned to this guest (any more).
    NotAssigned,
}

impl std::fmt::Display for StaleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StaleReason::Absent => f.write_str("device not plugged in"),
            StaleReason::Moved { bus, dev } => write!(f, "device now at {bus:03}:{dev:03}"),
            StaleReason::NotAssigned => f.write_str("not assigned to this guest"),
        }
    }
}

/// A bbvirt hostdev that should not be in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub alias: String,
    pub serial: String,
    pub bus: Option<u32>,
    pub dev: Option<u32>,
    pub reason: StaleReason,
}

/// The stale bbvirt hostdevs among `live`, for a guest whose assigned
/// serials are `wanted`.
pub fn stale_entries(live: &[UsbHostdev], wanted: &[&str], present: &[UsbDevice]) -> Vec<Stale> {
    live.iter()
        .filter_map(|h| {
            let serial = h.bbvirt_serial()?;
            let reason = if !wanted.contains(&serial) {
                StaleReason::NotAssigned
            } else {
                match crate::sysfs::with_serial(present, serial) {
                    None => StaleReason::Absent,
                    Some(p) if !h.is_at(p.busnum, p.devnum) => StaleReason::Moved {
                        bus: p.busnum,
                        dev: p.devnum,
                    },
                    Some(_) => return None,
                }
            };
            Some(Stale {
                alias: h.alias.clone().unwrap_or_default(),
                serial: serial.to_string(),
                bus: h.bus,
                dev: h.device,
                reason,
            })
        })
        .collect()
}

/// The stale `ua-bbusb-*` hostdevs (devices a `DOMAIN_USB_` element routes)
/// among `live`, for a guest that should hold `wanted`: (alias, present
/// device) pairs. An alias it should not hold is stale (its device is gone,
/// or no element gives it to this guest any more); a wanted alias at
/// another address has moved. `serial` of a [`Stale`] is its alias here.
pub fn stale_usb_entries(live: &[UsbHostdev], wanted: &[(String, &UsbDevice)]) -> Vec<Stale> {
    live.iter()
        .filter_map(|h| {
            let alias = h.alias.as_deref()?;
            if !alias.starts_with(crate::hostdev::USB_ALIAS_PREFIX) {
                return None;
            }
            let reason = match wanted.iter().find(|(a, _)| a == alias) {
                None => StaleReason::NotAssigned,
                Some((_, p)) if !h.is_at(p.busnum, p.devnum) => StaleReason::Moved {
                    bus: p.busnum,
                    dev: p.devnum,
                },
                Some(_) => return None,
            };
            Some(Stale {
                alias: alias.to_string(),
                serial: alias.to_string(),
                bus: h.bus,
                dev: h.device,
                reason,
            })
        })
        .collect()
}

/// Where a present device stands in a running guest's live XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement<'a> {
    /// Its bbvirt hostdev is there, at its current address.
    Attached,
    /// Its bbvirt hostdev is there at another address (a remove event was
    /// missed): it is stale and must go before the device is attached.
    StaleAt(&'a UsbHostdev),
    /// No bbvirt hostdev of it.
    Missing,
}

/// Where `dev` (bbvirt's hostdev for it has `alias`) stands in `live`: the
/// decision both `attach` and `sync` take.
pub fn placement<'a>(live: &'a [UsbHostdev], alias: &str, dev: &UsbDevice) -> Placement<'a> {
    let mine = || live.iter().filter(|h| h.alias.as_deref() == Some(alias));
    if mine().any(|h| h.is_at(dev.busnum, dev.devnum)) {
        return Placement::Attached;
    }
    match mine().next() {
        Some(h) => Placement::StaleAt(h),
        None => Placement::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hd(alias: &str, bus: u32, dev: u32) -> UsbHostdev {
        UsbHostdev {
            alias: Some(alias.into()),
            bus: Some(bus),
            device: Some(dev),
            ..UsbHostdev::default()
        }
    }

    fn usb(serial: &str, bus: u32, dev: u32) -> UsbDevice {
        UsbDevice {
            name: format!("{bus}-1"),
            id: crate::sysfs::BITBABBLER_ID,
            serial: Some(serial.into()),
            busnum: bus,
            devnum: dev,
            ports: vec![1],
            path: "/nonexistent".into(),
        }
    }

    #[test]
    fn judges_only_bbvirt_entries() {
        let live = vec![
            hd("ua-bbvirt-AAAAAA", 1, 2), // right
            hd("ua-bbvirt-BBBBBB", 1, 3), // moved to 2:5
            hd("ua-bbvirt-CCCCCC", 1, 4), // unplugged
            hd("ua-bbvirt-DDDDDD", 1, 5), // present but someone else's
            hd("hostdev0", 1, 9),         // the admin's: never judged
            hd("ua-mine", 1, 10),
        ];
        let present = vec![
            usb("AAAAAA", 1, 2),
            usb("BBBBBB", 2, 5),
            usb("DDDDDD", 1, 5),
        ];
        let stale = stale_entries(&live, &["AAAAAA", "BBBBBB", "CCCCCC"], &present);
        let got: Vec<(&str, &StaleReason)> = stale
            .iter()
            .map(|s| (s.serial.as_str(), &s.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                ("BBBBBB", &StaleReason::Moved { bus: 2, dev: 5 }),
                ("CCCCCC", &StaleReason::Absent),
                ("DDDDDD", &StaleReason::NotAssigned),
            ]
        );
        assert_eq!(stale[0].alias, "ua-bbvirt-BBBBBB");
        assert_eq!((stale[0].bus, stale[0].dev), (Some(1), Some(3)));
        assert_eq!(
            placement(&live, "ua-bbvirt-AAAAAA", &present[0]),
            Placement::Attached
        );
        assert_eq!(
            placement(&live, "ua-bbvirt-BBBBBB", &present[1]),
            Placement::StaleAt(&live[1])
        );
        assert_eq!(
            placement(&live, "ua-bbvirt-EEEEEE", &usb("EEEEEE", 1, 6)),
            Placement::Missing
        );
    }

    #[test]
    fn nothing_live_nothing_stale() {
        assert!(stale_entries(&[], &["AAAAAA"], &[usb("AAAAAA", 1, 2)]).is_empty());
    }
}
