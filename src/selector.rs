//! `DOMAIN_USB_<id>` elements: which USB device each one selects, and who
//! wins a device that several select.
//!
//! An element is `key=value` words, all of which must hold: `id=VVVV:PPPP`
//! (hex vendor:product), `serial=STRING` (the device's exact `serial`
//! attribute) and `port=BUS-PORT[.PORT...]` (the physical port, as sysfs
//! names it: `3-1.4`). Each element needs `id=` or `port=`: a serial alone
//! could be any vendor's. The element is split into words as a shell splits
//! them (crate `shlex`), so `serial='A B'` is one word.
//!
//! Who gets a device ([`assign`]), decided so that an admin can predict it:
//! 1. the most specific element first: the one with more keys (of `id`,
//!    `serial`, `port`) wins;
//! 2. between equally specific elements, the one earlier in the file;
//! 3. each element takes at most one device ("one element per device"): an
//!    element that matches several present devices takes the first in port
//!    order (bus, then the port chain), and the others are left to other
//!    elements, or to the host.
//!
//! Every device that two elements match, and every element that matches
//! several devices, is reported ([`Assignment::overlaps`]) so that `check`
//! can name them.

use std::str::FromStr;

use crate::device::DeviceId;
pub use crate::device::{InvalidUsbId, UsbId};

/// One element of a `DOMAIN_USB_` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub id: Option<UsbId>,
    pub serial: Option<String>,
    /// Bus and port chain (`3-1.4` is bus 3, ports 1, 4).
    pub port: Option<(u32, Vec<u32>)>,
}

/// Why an element is not a valid selector. Each names the word at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unbalanced quotes in '{}'", .0.escape_debug())]
    Quotes(String),
    #[error("the element is empty")]
    Empty,
    #[error("'{}' is not key=value (keys: id, serial, port)", .0.escape_debug())]
    NotKeyValue(String),
    #[error("unknown key '{}' (keys: id, serial, port)", .0.escape_debug())]
    UnknownKey(String),
    #[error("'{0}=' is given twice")]
    Twice(&'static str),
    #[error(transparent)]
    Id(#[from] InvalidUsbId),
    #[error("invalid port '{}': expected BUS-PORT[.PORT...], as in 3-1.4", .0.escape_debug())]
    Port(String),
    #[error("an empty serial= matches nothing: leave it out")]
    EmptySerial,
    #[error("needs id= or port= (a serial alone could be any device's)")]
    NeedsIdOrPort,
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        let words = shlex::split(s).ok_or_else(|| SelectorError::Quotes(s.to_string()))?;
        if words.is_empty() {
            return Err(SelectorError::Empty);
        }
        let mut sel = Selector {
            id: None,
            serial: None,
            port: None,
        };
        for w in &words {
            let (key, value) = w
                .split_once('=')
                .ok_or_else(|| SelectorError::NotKeyValue(w.clone()))?;
            match key {
                "id" if sel.id.is_some() => return Err(SelectorError::Twice("id")),
                "id" => sel.id = Some(value.parse()?),
                "serial" if sel.serial.is_some() => return Err(SelectorError::Twice("serial")),
                "serial" if value.is_empty() => return Err(SelectorError::EmptySerial),
                "serial" => sel.serial = Some(value.to_string()),
                "port" if sel.port.is_some() => return Err(SelectorError::Twice("port")),
                "port" => match value.parse::<DeviceId>() {
                    Ok(DeviceId::Physical { bus, ports }) => sel.port = Some((bus, ports)),
                    _ => return Err(SelectorError::Port(value.to_string())),
                },
                other => return Err(SelectorError::UnknownKey(other.to_string())),
            }
        }
        if sel.id.is_none() && sel.port.is_none() {
            return Err(SelectorError::NeedsIdOrPort);
        }
        Ok(sel)
    }
}

/// What [`Selector`] looks at in a present device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub id: UsbId,
    pub serial: Option<&'a str>,
    pub bus: u32,
    pub ports: &'a [u32],
}

impl Selector {
    /// The BitBabbler shorthand: `DOMAIN_RNG_` serial S is
    /// `id=0403:7840 serial=S`.
    pub fn bitbabbler(serial: &str) -> Selector {
        Selector {
            id: Some(UsbId {
                vendor: crate::device::BITBABBLER_VENDOR,
                product: crate::device::BITBABBLER_PRODUCT,
            }),
            serial: Some(serial.to_string()),
            port: None,
        }
    }

    /// Whether every key of the element holds for `c`.
    pub fn matches(&self, c: &Candidate) -> bool {
        self.id.is_none_or(|id| id == c.id)
            && self.serial.as_deref().is_none_or(|s| c.serial == Some(s))
            && self
                .port
                .as_ref()
                .is_none_or(|(bus, ports)| *bus == c.bus && ports.as_slice() == c.ports)
    }

    /// Whether the element could have matched a device that has left,
    /// known only by what its remove event carries: its `id` and, when
    /// known, its port (a serial can no longer be read: any serial holds).
    pub fn could_match(&self, id: UsbId, port: Option<(u32, &[u32])>) -> bool {
        self.id.is_none_or(|i| i == id)
            && match (&self.port, port) {
                (Some((bus, ports)), Some((b, p))) => *bus == b && ports.as_slice() == p,
                _ => true,
            }
    }

    /// Whether some device could match both elements: no key that both
    /// give differs.
    pub fn may_overlap(&self, other: &Selector) -> bool {
        fn agree<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
            match (a, b) {
                (Some(x), Some(y)) => x == y,
                _ => true,
            }
        }
        agree(&self.id, &other.id)
            && agree(&self.serial, &other.serial)
            && agree(&self.port, &other.port)
    }

    /// How many keys the element gives (1-3): more is more specific.
    pub fn specificity(&self) -> usize {
        usize::from(self.id.is_some())
            + usize::from(self.serial.is_some())
            + usize::from(self.port.is_some())
    }

    /// The element's text, which [`Selector::from_str`] reads back as this
    /// selector: `id=VVVV:PPPP`, `serial=S` (quoted by
    /// [`crate::text::element_quote`] when it needs it), `port=BUS-PORT`,
    /// in that order, the keys it gives. None when no element can say it:
    /// neither `id` nor `port`, or a serial no element can hold (empty, or
    /// with a NUL).
    pub fn to_element(&self) -> Option<String> {
        if self.id.is_none() && self.port.is_none() {
            return None;
        }
        let mut words: Vec<String> = Vec::new();
        if let Some(id) = self.id {
            words.push(format!("id={id}"));
        }
        if let Some(serial) = &self.serial {
            words.push(format!("serial={}", crate::text::element_quote(serial)?));
        }
        if let Some((bus, ports)) = &self.port {
            let port = DeviceId::Physical {
                bus: *bus,
                ports: ports.clone(),
            };
            words.push(format!("port={port}"));
        }
        Some(words.join(" "))
    }
}

/// Why a device or an element is in more than one match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlap {
    /// Several elements match device `device`: `winner` took it, `others`
    /// did not (indexes into the element list).
    Device {
        device: usize,
        winner: Option<usize>,
        others: Vec<usize>,
    },
    /// Element `element` matches several devices; it took `taken`.
    Element {
        element: usize,
        devices: Vec<usize>,
        taken: Option<usize>,
    },
}

/// Who gets which device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// For each device (same order as given): the element that took it.
    pub owner: Vec<Option<usize>>,
    pub overlaps: Vec<Overlap>,
}

/// Assigns `devices` to `elements` (in file order) by the rules of the
/// module doc.
pub fn assign(elements: &[Selector], devices: &[Candidate]) -> Assignment {
    // Every matching pair, best first: specificity, file order, port order.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (e, sel) in elements.iter().enumerate() {
        for (d, dev) in devices.iter().enumerate() {
            if sel.matches(dev) {
                pairs.push((e, d));
            }
        }
    }
    let port_key = |d: usize| (devices[d].bus, devices[d].ports);
    pairs.sort_by(|&(e1, d1), &(e2, d2)| {
        elements[e2]
            .specificity()
            .cmp(&elements[e1].specificity())
            .then(e1.cmp(&e2))
            .then(port_key(d1).cmp(&port_key(d2)))
    });
    let mut owner: Vec<Option<usize>> = vec![None; devices.len()];
    let mut took: Vec<Option<usize>> = vec![None; elements.len()];
    for &(e, d) in &pairs {
        if owner[d].is_none() && took[e].is_none() {
            owner[d] = Some(e);
            took[e] = Some(d);
        }
    }
    let mut overlaps = Vec::new();
    for (d, &winner) in owner.iter().enumerate() {
        let mut matching: Vec<usize> = pairs
            .iter()
            .filter(|&&(_, pd)| pd == d)
            .map(|&(e, _)| e)
            .collect();
        if matching.len() > 1 {
            matching.sort_unstable();
            overlaps.push(Overlap::Device {
                device: d,
                winner,
                others: matching
                    .into_iter()
                    .filter(|&e| Some(e) != winner)
                    .collect(),
            });
        }
    }
    for (e, &taken) in took.iter().enumerate() {
        let mut matched: Vec<usize> = pairs
            .iter()
            .filter(|&&(pe, _)| pe == e)
            .map(|&(_, d)| d)
            .collect();
        if matched.len() > 1 {
            matched.sort_by_key(|&d| port_key(d));
            overlaps.push(Overlap::Element {
                element: e,
                devices: matched,
                taken,
            });
        }
    }
    Assignment { owner, overlaps }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const CP210X: UsbId = UsbId {
        vendor: 0x10c4,
        product: 0xea60,
    };

    fn dev<'a>(id: UsbId, serial: Option<&'a str>, bus: u32, ports: &'a [u32]) -> Candidate<'a> {
        Candidate {
            id,
            serial,
            bus,
            ports,
        }
    }

    #[test]
    fn usb_ids() {
        assert_eq!("10c4:EA60".parse::<UsbId>(), Ok(CP210X));
        assert_eq!(CP210X.to_string(), "10c4:ea60");
        for bad in [
            "10c4",
            "10c4:ea6",
            "10c4:ea600",
            "g0c4:ea60",
            ":",
            "+0c4:ea60",
            "",
        ] {
            assert!(bad.parse::<UsbId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn elements_parse_like_shell_words() {
        let s = sel("id=10c4:ea60 port=1-5");
        assert_eq!(s.id, Some(CP210X));
        assert_eq!(s.port, Some((1, vec![5])));
        assert_eq!(s.serial, None);

        let s = sel(r#"id=1050:0407 serial='A B' "port=3-1.4""#);
        assert_eq!(s.serial.as_deref(), Some("A B"));
        assert_eq!(s.port, Some((3, vec![1, 4])));
        assert_eq!(s.specificity(), 3);

        assert_eq!(sel("port=2-1").specificity(), 1);
        assert_eq!(
            sel(r#"id=0403:7840 serial="x;\$(rm)""#).serial.as_deref(),
            Some("x;$(rm)")
        );
    }

    #[test]
    fn malformed_elements_say_what_is_wrong() {
        for (text, want) in [
            ("", SelectorError::Empty),
            ("   ", SelectorError::Empty),
            ("serial=0001", SelectorError::NeedsIdOrPort),
            ("id=10c4:ea60 id=10c4:ea60", SelectorError::Twice("id")),
            ("id=10c4:ea60 serial=", SelectorError::EmptySerial),
            (
                "id=10c4:ea60 vendor=1",
                SelectorError::UnknownKey("vendor".into()),
            ),
            ("10c4:ea60", SelectorError::NotKeyValue("10c4:ea60".into())),
            ("id=10c4:ea60 port=1:5", SelectorError::Port("1:5".into())),
            (
                "id=10c4:ea60 port=KWIF4Q",
                SelectorError::Port("KWIF4Q".into()),
            ),
            (
                "id=10c4:ea60 serial='A B",
                SelectorError::Quotes("id=10c4:ea60 serial='A B".into()),
            ),
            ("id=xyz", SelectorError::Id(InvalidUsbId("xyz".into()))),
        ] {
            assert_eq!(text.parse::<Selector>(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn matching_needs_every_key() {
        let s = sel("id=10c4:ea60 serial=0001 port=1-5");
        assert!(s.matches(&dev(CP210X, Some("0001"), 1, &[5])));
        assert!(!s.matches(&dev(CP210X, Some("0001"), 1, &[6])));
        assert!(!s.matches(&dev(CP210X, Some("0002"), 1, &[5])));
        assert!(!s.matches(&dev(CP210X, None, 1, &[5])));
        assert!(!s.matches(&dev(
            UsbId {
                vendor: 0x10c4,
                product: 0xea61
            },
            Some("0001"),
            1,
            &[5]
        )));
        assert!(sel("port=1-5").matches(&dev(CP210X, None, 1, &[5])));
        assert!(
            !sel("port=1-5").matches(&dev(CP210X, None, 1, &[5, 1])),
            "not below"
        );
    }

    #[test]
    fn twins_with_one_serial_go_by_port() {
        let elements = [sel("id=10c4:ea60 port=1-5"), sel("id=10c4:ea60 port=2-1")];
        let devices = [
            dev(CP210X, Some("0001"), 2, &[1]),
            dev(CP210X, Some("0001"), 1, &[5]),
        ];
        let a = assign(&elements, &devices);
        assert_eq!(a.owner, vec![Some(1), Some(0)]);
        assert!(a.overlaps.is_empty());
    }

    #[test]
    fn the_most_specific_element_wins_then_file_order() {
        // Element 0 (id only) and 1 (id+port) both match the device at 1-5.
        let elements = [sel("id=10c4:ea60"), sel("id=10c4:ea60 port=1-5")];
        let devices = [dev(CP210X, Some("0001"), 1, &[5])];
        let a = assign(&elements, &devices);
        assert_eq!(a.owner, vec![Some(1)]);
        assert_eq!(
            a.overlaps,
            vec![Overlap::Device {
                device: 0,
                winner: Some(1),
                others: vec![0]
            }]
        );

        // Equally specific: the earlier element.
        let elements = [sel("port=1-5"), sel("id=10c4:ea60")];
        let a = assign(&elements, &devices);
        assert_eq!(a.owner, vec![Some(0)]);
    }

    #[test]
    fn one_element_takes_one_device_in_port_order() {
        let zwave = UsbId {
            vendor: 0x0658,
            product: 0x0200,
        };
        let elements = [sel("id=0658:0200")];
        let devices = [
            dev(zwave, None, 3, &[2]),
            dev(zwave, None, 1, &[4, 1]),
            dev(zwave, None, 1, &[2]),
        ];
        let a = assign(&elements, &devices);
        assert_eq!(a.owner, vec![None, None, Some(0)], "1-2 comes first");
        assert_eq!(
            a.overlaps,
            vec![Overlap::Element {
                element: 0,
                devices: vec![2, 1, 0],
                taken: Some(2)
            }]
        );

        // Two such elements take two devices; the third stays on the host.
        let elements = [sel("id=0658:0200"), sel("id=0658:0200")];
        let a = assign(&elements, &devices);
        assert_eq!(a.owner, vec![None, Some(1), Some(0)]);
    }

    #[test]
    fn a_loser_still_gets_the_next_device_it_matches() {
        // Element 0 is more specific and takes 1-5; element 1 (id only)
        // then takes the other stick rather than nothing.
        let elements = [sel("id=10c4:ea60 port=1-5"), sel("id=10c4:ea60")];
        let devices = [
            dev(CP210X, Some("0001"), 1, &[5]),
            dev(CP210X, Some("0001"), 1, &[6]),
        ];
        let a = assign(&elements, &devices);
        assert_eq!(a.owner, vec![Some(0), Some(1)]);
    }

    #[test]
    fn elements_are_written_as_they_are_read() {
        for text in [
            "id=10c4:ea60",
            "id=10c4:ea60 serial=0001",
            "id=10c4:ea60 port=3-1.4",
            "id=1050:0407 serial=\"A B\" port=1-2",
            "port=2-1",
            "id=0403:7840 serial=\"x;\\$(rm) \\\"q\\\" \\`id\\`\"",
        ] {
            let s = sel(text);
            assert_eq!(s.to_element().as_deref(), Some(text), "{text}");
            assert_eq!(sel(&s.to_element().unwrap()), s, "{text}");
        }
        // Any serial an element can hold comes back the same.
        for serial in ["A B", "a\nb", "x'y\"z", "\\", "#", " ", "\u{202e}"] {
            let s = Selector {
                id: Some(CP210X),
                serial: Some(serial.to_string()),
                port: None,
            };
            assert_eq!(sel(&s.to_element().unwrap()), s, "{serial:?}");
        }
        let unsayable = |serial: Option<&str>, id: Option<UsbId>| Selector {
            id,
            serial: serial.map(str::to_string),
            port: None,
        };
        assert_eq!(unsayable(Some(""), Some(CP210X)).to_element(), None);
        assert_eq!(unsayable(Some("a\0b"), Some(CP210X)).to_element(), None);
        assert_eq!(unsayable(Some("0001"), None).to_element(), None);
    }

    #[test]
    fn the_bitbabbler_shorthand_is_id_and_serial() {
        let s = Selector::bitbabbler("KWIF4Q");
        assert_eq!(s, sel("id=0403:7840 serial=KWIF4Q"));
        let bb = UsbId {
            vendor: 0x0403,
            product: 0x7840,
        };
        assert!(s.matches(&dev(bb, Some("KWIF4Q"), 1, &[1])));
        // An FTDI device of another product with the same serial is not it.
        let ftdi = UsbId {
            vendor: 0x0403,
            product: 0x6001,
        };
        assert!(!s.matches(&dev(ftdi, Some("KWIF4Q"), 1, &[1])));
    }
}
