//! Device identifiers as given on the command line or by udev.
//!
//! A BitBabbler can be named three ways: by its serial number (stable across
//! replugs), by its logical address `BUS:DEV` (what libvirt's `<hostdev>` needs,
//! changes on every replug), or by its physical address `BUS-PORT[.PORT...]`
//! (stable while it stays in the same socket). Parsing is pure; the lookup of
//! the other two forms happens in [`crate::sysfs`].
//!
//! `attach` and `detach` also take a remote device (one another host
//! serves, [`crate::remote`]) by its exporting host and port, `HOST:PORT`
//! ([`DeviceArg`]). `1:2` is a device address and `exporter:4000` an
//! endpoint; the rule that tells them apart is one: a word whose part
//! before its first ':' is all digits (`3:12`, `003:012`, `1:2:3`) is
//! `BUS:DEV`, and an IPv6 address is written in brackets (`[fd00::7]:4000`)
//! as in vm.conf. An IPv4 address has dots before its first ':', so
//! `10.0.0.7:4000` is an endpoint.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a device identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device identifier '{}': expected a serial number, serial=SERIAL, BUS:DEV or BUS-PORT[.PORT...]", .0.escape_debug())]
pub struct InvalidDeviceId(pub String);

/// One way of naming a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceId {
    /// A serial number: a BitBabbler's such as `KWIF4Q` (looked up among
    /// BitBabblers only), or any other device's (`0001`, `serial=A-1`).
    Serial(String),
    /// A logical address: USB bus number and device number.
    Address { bus: u32, dev: u32 },
    /// A physical address: bus number and the chain of hub ports, as in sysfs
    /// device names (`3-1.4.2` is bus 3, ports 1, 4, 2).
    Physical { bus: u32, ports: Vec<u32> },
}

/// The BitBabbler's USB vendor ID (FTDI).
pub const BITBABBLER_VENDOR: u16 = 0x0403;
/// The BitBabbler's USB product ID.
pub const BITBABBLER_PRODUCT: u16 = 0x7840;
/// Both, as a [`UsbId`].
pub const BITBABBLER_ID: UsbId = UsbId {
    vendor: BITBABBLER_VENDOR,
    product: BITBABBLER_PRODUCT,
};

/// A USB vendor:product pair, `VVVV:PPPP` in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsbId {
    pub vendor: u16,
    pub product: u16,
}

/// Why a string is not `VVVV:PPPP`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid USB id '{}': expected VVVV:PPPP, four hex digits each", .0.escape_debug())]
pub struct InvalidUsbId(pub String);

impl FromStr for UsbId {
    type Err = InvalidUsbId;

    fn from_str(s: &str) -> Result<UsbId, InvalidUsbId> {
        let hex4 = |h: &str| {
            (h.len() == 4 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u16::from_str_radix(h, 16).ok())
                .flatten()
        };
        let (v, p) = s.split_once(':').ok_or_else(|| InvalidUsbId(s.into()))?;
        match (hex4(v), hex4(p)) {
            (Some(vendor), Some(product)) => Ok(UsbId { vendor, product }),
            _ => Err(InvalidUsbId(s.into())),
        }
    }
}

impl fmt::Display for UsbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.product)
    }
}

/// True when `s` has the form of a BitBabbler serial number: 6 or 7 characters
/// of `A-Z` and `0-9`. Only such serials are ever routed or put into a libvirt
/// alias, whatever a USB descriptor or a config file claims.
pub fn is_valid_serial(s: &str) -> bool {
    (6..=7).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Parses a USB bus or device number as udev and users write it: decimal,
/// 1-3 digits, leading zeros allowed (`003`).
pub fn parse_usb_number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for DeviceId {
    type Err = InvalidDeviceId;

    /// Parses a DEVICE argument, or a sysfs device name (`3-1.4.2`).
    fn from_str(s: &str) -> Result<DeviceId, InvalidDeviceId> {
        let bad = || InvalidDeviceId(s.to_string());
        // `serial=S`, as in vm.conf, for a serial that looks like an address.
        if let Some(serial) = s.strip_prefix("serial=") {
            return if serial.is_empty() || serial.chars().any(char::is_control) {
                Err(bad())
            } else {
                Ok(DeviceId::Serial(serial.to_string()))
            };
        }
        if let Some((bus, dev)) = s.split_once(':') {
            let bus = parse_usb_number(bus).ok_or_else(bad)?;
            let dev = parse_usb_number(dev).ok_or_else(bad)?;
            return Ok(DeviceId::Address { bus, dev });
        }
        if let Some((bus, ports)) = s.split_once('-') {
            let bus = parse_usb_number(bus).ok_or_else(bad)?;
            let ports = ports
                .split('.')
                .map(parse_usb_number)
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(bad)?;
            // USB allows at most 7 tiers below the root hub.
            if ports.len() > 7 {
                return Err(bad());
            }
            return Ok(DeviceId::Physical { bus, ports });
        }
        // A bare word of printable ASCII: a serial (a BitBabbler's when it
        // is 6-7 of A-Z0-9).
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()) {
            return Ok(DeviceId::Serial(s.to_string()));
        }
        Err(bad())
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A serial that would read back as something else, as serial=S
            // (control characters escaped: it may come from a device).
            DeviceId::Serial(s)
                if !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b':' && b != b'-') =>
            {
                f.write_str(s)
            }
            DeviceId::Serial(s) => write!(f, "serial={}", crate::text::escape_controls(s)),
            DeviceId::Address { bus, dev } => write!(f, "{bus:03}:{dev:03}"),
            DeviceId::Physical { bus, ports } => {
                write!(f, "{bus}-")?;
                for (i, p) in ports.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// A DEVICE argument of `attach` and `detach`: a local device, or a remote
/// one by its exporting host and port (the rule is in the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceArg {
    Local(DeviceId),
    Remote(crate::remote::endpoint::Endpoint),
}

/// Why a DEVICE argument is neither a device identifier nor `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDeviceArg {
    #[error(transparent)]
    Local(#[from] InvalidDeviceId),
    #[error("invalid remote device '{}' (expected HOST:PORT, [IPV6]:PORT for IPv6): {source}", crate::text::escape_controls(.value))]
    Remote {
        value: String,
        source: crate::remote::endpoint::EndpointError,
    },
}

impl DeviceArg {
    /// Whether `s` names a remote device: it starts with '[' (an IPv6
    /// address), or has a ':' and the part before its first ':' is not all
    /// digits (all digits: a USB bus number, `BUS:DEV`). `serial=S` is a
    /// local device's serial whatever S holds.
    pub fn is_remote(s: &str) -> bool {
        if s.starts_with("serial=") {
            return false;
        }
        if s.starts_with('[') {
            return true;
        }
        match s.split_once(':') {
            Some((bus, _)) => bus.is_empty() || !bus.bytes().all(|b| b.is_ascii_digit()),
            None => false,
        }
    }
}

impl FromStr for DeviceArg {
    type Err = InvalidDeviceArg;

    fn from_str(s: &str) -> Result<DeviceArg, InvalidDeviceArg> {
        if DeviceArg::is_remote(s) {
            return s
                .parse()
                .map(DeviceArg::Remote)
                .map_err(|source| InvalidDeviceArg::Remote {
                    value: s.to_string(),
                    source,
                });
        }
        Ok(DeviceArg::Local(s.parse()?))
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceArg::Local(id) => write!(f, "{id}"),
            DeviceArg::Remote(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials() {
        assert_eq!(
            "KWIF4Q".parse::<DeviceId>(),
            Ok(DeviceId::Serial("KWIF4Q".into()))
        );
        assert_eq!(
            "ABC1234".parse::<DeviceId>(),
            Ok(DeviceId::Serial("ABC1234".into()))
        );
        // Any other device's serial: a bare printable word, or serial=S.
        for (text, serial) in [
            ("0001", "0001"),
            ("abcdef", "abcdef"),
            ("ABCDEFGH", "ABCDEFGH"),
            ("serial=A-1", "A-1"),
            ("serial=A B", "A B"),
        ] {
            assert_eq!(
                text.parse::<DeviceId>(),
                Ok(DeviceId::Serial(serial.into())),
                "{text:?}"
            );
        }
        for bad in [
            "",
            "ABC DEF",
            "ABC-DE",
            "ÄBCDEF",
            "AB\nCDE",
            "--help",
            "-D",
            "ABCDE ",
            "serial=",
            "serial=a\nb",
        ] {
            assert_eq!(
                bad.parse::<DeviceId>(),
                Err(InvalidDeviceId(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn logical_addresses() {
        assert_eq!(
            "1:2".parse::<DeviceId>(),
            Ok(DeviceId::Address { bus: 1, dev: 2 })
        );
        assert_eq!(
            "001:012".parse::<DeviceId>(),
            Ok(DeviceId::Address { bus: 1, dev: 12 })
        );
        assert_eq!(
            "255:127".parse::<DeviceId>(),
            Ok(DeviceId::Address { bus: 255, dev: 127 })
        );
        for bad in [
            "1:", ":2", "1:2:3", "0001:2", "1:0002", "a:2", "1:-2", "1: 2", "+1:2",
        ] {
            assert!(bad.parse::<DeviceId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn physical_addresses() {
        assert_eq!(
            "3-1.4.2".parse::<DeviceId>(),
            Ok(DeviceId::Physical {
                bus: 3,
                ports: vec![1, 4, 2]
            })
        );
        assert_eq!(
            "1-1".parse::<DeviceId>(),
            Ok(DeviceId::Physical {
                bus: 1,
                ports: vec![1]
            })
        );
        for bad in [
            "3-",
            "3-1.",
            "3-.1",
            "-1",
            "3-1..2",
            "3-1.2.3.4.5.6.7.8",
            "3-1:1.0",
        ] {
            assert!(bad.parse::<DeviceId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "KWIF4Q",
            "001:002",
            "3-1.4.2",
            "0001",
            "serial=A-1",
            "serial=A B",
        ] {
            assert_eq!(s.parse::<DeviceId>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn a_device_or_a_remote_one() {
        let local = |s: &str| DeviceArg::Local(s.parse().unwrap());
        let remote = |s: &str| DeviceArg::Remote(s.parse().unwrap());
        for (arg, want) in [
            ("1:2", local("1:2")),
            ("003:012", local("3:12")),
            ("KWIF4Q", local("KWIF4Q")),
            ("3-1.4", local("3-1.4")),
            ("serial=a:b", local("serial=a:b")),
            ("exporter.lan:4000", remote("exporter.lan:4000")),
            ("10.0.0.7:4001", remote("10.0.0.7:4001")),
            ("[fd00::7]:4002", remote("[fd00::7]:4002")),
            ("a1:4000", remote("a1:4000")),
        ] {
            assert_eq!(arg.parse::<DeviceArg>(), Ok(want.clone()), "{arg}");
            assert_eq!(want.to_string().parse::<DeviceArg>(), Ok(want), "{arg}");
        }
        // Bus-number words stay device identifiers, and their errors too.
        for bad in ["1:2:3", "1234:1", "1:", "3-1."] {
            assert_eq!(
                bad.parse::<DeviceArg>(),
                Err(InvalidDeviceArg::Local(InvalidDeviceId(bad.into()))),
                "{bad}"
            );
        }
        // Anything else with a ':' is HOST:PORT, its error naming the value.
        for (bad, says) in [
            ("exporter.lan:0", "invalid port '0'"),
            ("fe80::1:4000", "write it in brackets"),
            ("::1:4000", "write it in brackets"),
            ("h:4000x", "invalid port '4000x'"),
            ("[fd00::7]", "has no port"),
            ("evil'/><x:1", "invalid host name 'evil'/><x'"),
            ("a\nb:1", "'a\\nb:1'"),
        ] {
            let e = bad.parse::<DeviceArg>().unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, InvalidDeviceArg::Remote { .. }), "{bad}: {msg}");
            assert!(msg.contains(says), "{bad}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}
