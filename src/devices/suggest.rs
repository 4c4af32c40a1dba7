//! The `DOMAIN_USB_` element `bbvirt devices` suggests for a device: the
//! shortest that selects exactly that device among those present, proven
//! by the code that routes devices.
//!
//! The forms are tried in this order, and the first that selects only the
//! device wins:
//! 1. `id=VVVV:PPPP`: no other device present has its vendor:product;
//! 2. `id=VVVV:PPPP serial=S`: no other device with that id has its
//!    serial (skipped when it has none, or one no element can hold:
//!    [`crate::text::element_quote`]);
//! 3. `id=VVVV:PPPP port=BUS-PORT`: always one device, the one in that
//!    socket; the suggestion then says why only the port tells it apart
//!    ([`PortBecause`]) and from which devices ([`Suggestion::twins`]):
//!    moving the device to another port changes its element.
//!
//! The proof ([`selects_only`]): the element is written as text
//! ([`Selector::to_element`]), read back by the parser vm.conf's elements
//! go through ([`Selector`]'s `FromStr`), and given with every present
//! device to [`crate::selector::assign`], the rule `attach`, `sync`, the
//! hook and udev's front route by. It must take that device and no other,
//! with no overlap. A form that fails the proof is not suggested.
//!
//! "Shortest" is among the devices present now: `id=` alone stops
//! selecting just this device when a second one with the same id is
//! plugged in (the element then takes the first in port order), which is
//! why bbvirt(1) advises adding the serial when one may come.

use crate::selector::{Candidate, Selector, assign};
use crate::sysfs::UsbDevice;
use crate::text::element_quote;

/// Which keys the suggested element gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keys {
    Id,
    IdSerial,
    IdPort,
}

/// Why only the port tells a device apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortBecause {
    /// Another device present has the same id and the same serial (twins).
    SameSerial,
    /// It has no serial (or an empty one), and another device present has
    /// the same id: no element can say "no serial".
    NoSerial,
    /// Its serial is one no element can hold (a NUL byte), and another
    /// device present has the same id.
    UnusableSerial,
}

/// An element that selects exactly one present device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub selector: Selector,
    /// Its text ([`Selector::to_element`]), read back as `selector`.
    pub element: String,
    pub keys: Keys,
    /// Set when `keys` is [`Keys::IdPort`].
    pub port_because: Option<PortBecause>,
    /// With [`Keys::IdPort`]: the other devices (indexes into the devices
    /// given) that the same element without its port would select too.
    pub twins: Vec<usize>,
}

/// The element suggested for `devices[i]` (see the module doc), among all
/// of `devices` (every USB device present). None only when no form passes
/// the proof, which needs two devices on one port: sysfs never shows that.
pub fn suggest(devices: &[UsbDevice], i: usize) -> Option<Suggestion> {
    let dev = devices.get(i)?;
    let candidates: Vec<Candidate> = devices.iter().map(UsbDevice::candidate).collect();
    let by_id = Selector {
        id: Some(dev.id),
        serial: None,
        port: None,
    };
    let serial = dev.serial.as_deref().filter(|s| element_quote(s).is_some());
    let by_serial = serial.map(|s| Selector {
        serial: Some(s.to_string()),
        ..by_id.clone()
    });
    let by_port = Selector {
        port: Some((dev.busnum, dev.ports.clone())),
        ..by_id.clone()
    };
    // The best element without a port: whom it selects besides this
    // device are the twins only the port tells apart.
    let without_port = by_serial.clone().unwrap_or_else(|| by_id.clone());
    let mut forms = vec![(Keys::Id, by_id)];
    forms.extend(by_serial.map(|s| (Keys::IdSerial, s)));
    forms.push((Keys::IdPort, by_port));
    for (keys, selector) in forms {
        let Some(element) = selects_only(&selector, &candidates, i) else {
            continue;
        };
        let (port_because, twins) = if keys == Keys::IdPort {
            let because = match dev.serial.as_deref() {
                None | Some("") => PortBecause::NoSerial,
                Some(_) if serial.is_none() => PortBecause::UnusableSerial,
                Some(_) => PortBecause::SameSerial,
            };
            let twins = (0..candidates.len())
                .filter(|&d| d != i && without_port.matches(&candidates[d]))
                .collect();
            (Some(because), twins)
        } else {
            (None, Vec::new())
        };
        return Some(Suggestion {
            selector,
            element,
            keys,
            port_because,
            twins,
        });
    }
    None
}

/// The element's text when `selector`, written out and read back as
/// vm.conf's elements are, is routed to `candidates[i]` and to no other
/// present device by the routing rule ([`assign`]), with no overlap; None
/// otherwise.
pub fn selects_only(selector: &Selector, candidates: &[Candidate], i: usize) -> Option<String> {
    let element = selector.to_element()?;
    let back: Selector = element.parse().ok()?;
    if back != *selector {
        return None;
    }
    let routed = assign(std::slice::from_ref(&back), candidates);
    let taken: Vec<usize> = routed
        .owner
        .iter()
        .enumerate()
        .filter_map(|(d, owner)| owner.map(|_| d))
        .collect();
    (taken == [i] && routed.overlaps.is_empty()).then_some(element)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::UsbId;
    use std::path::PathBuf;

    fn dev(name: &str, id: &str, serial: Option<&str>, devnum: u32) -> UsbDevice {
        let (busnum, ports) = crate::sysfs::parse_device_name(name).unwrap();
        UsbDevice {
            name: name.into(),
            id: id.parse::<UsbId>().unwrap(),
            serial: serial.map(Into::into),
            busnum,
            devnum,
            ports,
            path: PathBuf::from("/sys/bus/usb/devices").join(name),
        }
    }

    fn elements(devices: &[UsbDevice]) -> Vec<String> {
        (0..devices.len())
            .map(|i| suggest(devices, i).map_or("-".into(), |s| s.element))
            .collect()
    }

    #[test]
    fn the_shortest_element_that_selects_only_the_device() {
        let devices = [
            dev("1-1", "10c4:ea60", Some("0001"), 2), // twins: one serial
            dev("1-2", "10c4:ea60", Some("0001"), 3),
            dev("1-3", "1050:0407", Some("KEY1"), 4), // two keys, two serials
            dev("2-1", "1050:0407", Some("KEY2"), 2),
            dev("2-2", "0658:0200", None, 3), // alone, no serial
            dev("2-3", "046d:c52b", Some("R 1"), 4), // alone
            dev("3-1.4", "0483:5740", None, 5), // no serial, and ...
            dev("3-2", "0483:5740", Some("ST1"), 6), // ... one with a serial
        ];
        assert_eq!(
            elements(&devices),
            [
                "id=10c4:ea60 port=1-1",
                "id=10c4:ea60 port=1-2",
                "id=1050:0407 serial=KEY1",
                "id=1050:0407 serial=KEY2",
                "id=0658:0200",
                "id=046d:c52b",
                "id=0483:5740 port=3-1.4",
                "id=0483:5740 serial=ST1",
            ]
        );
        let s = suggest(&devices, 0).unwrap();
        assert_eq!(
            (s.keys, s.port_because, s.twins),
            (Keys::IdPort, Some(PortBecause::SameSerial), vec![1])
        );
        let s = suggest(&devices, 6).unwrap();
        assert_eq!(
            (s.keys, s.port_because, s.twins),
            (Keys::IdPort, Some(PortBecause::NoSerial), vec![7])
        );
        assert_eq!(suggest(&devices, 2).unwrap().keys, Keys::IdSerial);
        assert_eq!(suggest(&devices, 4).unwrap().keys, Keys::Id);
        assert_eq!(suggest(&devices, 8), None);
    }

    #[test]
    fn a_serial_no_element_can_hold_goes_by_port() {
        let devices = [
            dev("1-1", "10c4:ea60", Some("A\0B"), 2),
            dev("1-2", "10c4:ea60", Some("C"), 3),
            dev("1-3", "10c4:ea60", Some(""), 4),
        ];
        let s = suggest(&devices, 0).unwrap();
        assert_eq!(s.element, "id=10c4:ea60 port=1-1");
        assert_eq!(s.port_because, Some(PortBecause::UnusableSerial));
        assert_eq!(s.twins, [1, 2]);
        assert_eq!(
            suggest(&devices, 2).unwrap().port_because,
            Some(PortBecause::NoSerial)
        );
        assert_eq!(
            suggest(&devices, 1).unwrap().element,
            "id=10c4:ea60 serial=C"
        );
    }

    #[test]
    fn every_suggestion_is_proven_by_the_routing_rule() {
        let devices = [
            dev("1-1", "10c4:ea60", Some("x \"$(reboot)\"\n"), 2),
            dev("1-2", "10c4:ea60", Some("0001"), 3),
            dev("1-3", "10c4:ea60", Some("0001"), 4),
        ];
        let candidates: Vec<Candidate> = devices.iter().map(UsbDevice::candidate).collect();
        for i in 0..devices.len() {
            let s = suggest(&devices, i).unwrap();
            let back: Selector = s.element.parse().unwrap();
            assert_eq!(back, s.selector);
            let a = assign(&[back], &candidates);
            let mut want = vec![None; devices.len()];
            want[i] = Some(0);
            assert_eq!(a.owner, want, "{}", s.element);
        }
        // A selector that matches two devices is refused.
        let id_only: Selector = "id=10c4:ea60".parse().unwrap();
        assert_eq!(selects_only(&id_only, &candidates, 1), None);
        // One that matches another device than the one asked about, too.
        let other: Selector = "id=10c4:ea60 port=1-3".parse().unwrap();
        assert_eq!(selects_only(&other, &candidates, 1), None);
        assert_eq!(
            selects_only(&other, &candidates, 2).as_deref(),
            Some("id=10c4:ea60 port=1-3")
        );
    }
}
