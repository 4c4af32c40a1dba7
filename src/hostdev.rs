//! The `<hostdev>` XML that bbvirt gives libvirt, and reading hostdevs back
//! from a domain's XML (live, saved, migrating).
//!
//! Every hostdev bbvirt attaches carries the user alias `ua-bbvirt-<serial>`
//! (or `ua-bbusb-...`, [`usb_alias`]). That tag is how bbvirt recognises its
//! own entries later: to detach a device after it has left sysfs (udev's
//! remove event), to tell "already attached" from "stale entry at an old
//! address", to rewrite them in a saved guest's XML ([`crate::saved`]), and
//! to never touch a hostdev an admin configured by hand.
//!
//! # What a hostdev says ([`source_xml`])
//!
//! `<source startupPolicy='optional'>` with the device's `<vendor>`,
//! `<product>` and `<address bus device>`. The address picks the device; the
//! rest is for the moments bbvirt is not asked, when libvirt opens the
//! device again from a saved state (a restore without bbvirt's hook, a
//! snapshot revert, which has no XML hook): libvirt then takes only a
//! device of that vendor:product at that address (`virUSBDeviceFind`), and
//! `optional` makes a device that is not there be dropped (`missing='yes'`)
//! instead of failing the whole restore. A twin of the same vendor:product
//! at the old address would still match: bbvirt's hook rewrites the
//! address on restore and migration, and refuses a start that would take a
//! twin ([`crate::saved`]).
//!
//! A **parked** hostdev ([`parked_source_xml`]) has a device number above
//! 127, which no USB device has (the kernel numbers a bus's devices 1 to
//! 127): libvirt finds nothing there and, `optional`, drops it. Each parked
//! hostdev of a guest gets its own number ([`PARKED_FIRST`] + its slot):
//! libvirt takes two USB hostdevs with the same bus and device (or, without
//! a device number, the same vendor:product) for one and refuses the XML
//! ("Hostdev already exists", seen in the lab with two BitBabblers parked
//! at device 0). Device 0 would not do either way: libvirt then searches
//! by vendor:product alone. bbvirt parks a hostdev of a
//! saved state whose device this host does not give the guest (absent,
//! assigned elsewhere, held by another process): the guest's device count
//! must not change on restore or migration (libvirt checks it), so the
//! entry stays, empty, until bbvirt's follow-up removes it once the guest
//! runs.

use crate::device::{UsbId, is_valid_serial};

/// The prefix of every alias bbvirt puts on a hostdev.
pub const ALIAS_PREFIX: &str = "ua-bbvirt-";

/// The alias for a device with this serial. Only valid serials (6-7 of
/// `A-Z0-9`) may be given; libvirt requires `ua-[A-Za-z0-9_-]+`.
pub fn alias_for(serial: &str) -> String {
    debug_assert!(is_valid_serial(serial));
    format!("{ALIAS_PREFIX}{serial}")
}

/// The prefix of the aliases of devices that a `DOMAIN_USB_` element
/// routes ([`usb_alias`]); distinct from [`ALIAS_PREFIX`]: neither is a
/// prefix of the other.
pub const USB_ALIAS_PREFIX: &str = "ua-bbusb-";

/// The longest serial put into a [`usb_alias`] as it is.
const ALIAS_SERIAL_MAX: usize = 32;

/// The alias of a device that element `element` (0-based) of guest
/// `guest`'s `DOMAIN_USB_` list routes: `ua-bbusb-VVVVPPPP-GUEST-eN-TAG`,
/// e.g. `ua-bbusb-10c4ea60-ha-e0-0001`. GUEST is the config id (a shell
/// identifier: alias-safe). TAG is the serial when it is 1 to 32 of
/// `[A-Za-z0-9_-]`, else `h` and 8 hex digits of a hash of its bytes
/// (FNV-1a, 32 bit), or `noserial`. Guest and element make it unique on
/// the host (one device per element, so twins with one serial differ) and
/// stable across replugs; vendor, product and serial make it readable.
pub fn usb_alias(
    id: crate::selector::UsbId,
    guest: &str,
    element: usize,
    serial: Option<&str>,
) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let tag = match serial {
        None => "noserial".to_string(),
        Some(s) if !s.is_empty() && s.len() <= ALIAS_SERIAL_MAX && s.chars().all(safe) => {
            s.to_string()
        }
        Some(s) => format!("h{:08x}", fnv1a32(s.as_bytes())),
    };
    // Config ids are shell identifiers; anything else is not put in as is.
    let guest = if !guest.is_empty() && guest.chars().all(safe) {
        guest.to_string()
    } else {
        format!("h{:08x}", fnv1a32(guest.as_bytes()))
    };
    format!(
        "{USB_ALIAS_PREFIX}{:04x}{:04x}-{guest}-e{element}-{tag}",
        id.vendor, id.product
    )
}

/// FNV-1a, 32 bit: a short stable digest, not a security measure.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The serial a bbvirt alias stands for, or None for any other alias.
pub fn serial_from_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(ALIAS_PREFIX)
}

/// Escapes text for an XML attribute value in single or double quotes.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

/// The device number of the first parked hostdev of a guest (the next
/// ones count up): no USB device has it.
pub const PARKED_FIRST: u32 = 200;

/// The highest device number a USB device can have (the kernel's devmap
/// holds 128 bits, the first unused): anything above it is parked.
pub const MAX_DEVNUM: u32 = 127;

/// The `<source>` element that names the USB device `id` at `bus`:`dev`
/// (see the module doc), its lines after the first indented by `indent`
/// (the column of `<source`). The one place that says how bbvirt names a
/// device to libvirt: attach and the saved-state rewrite both use it.
pub fn source_xml(id: UsbId, bus: u32, dev: u32, indent: &str) -> String {
    source_element(Some(id), bus, dev, indent)
}

/// The `<source>` of the parked hostdev in slot `slot` (0, 1, ...: one per
/// parked hostdev of the guest) on `bus` (see the module doc), with the
/// device's vendor:product when known.
pub fn parked_source_xml(id: Option<UsbId>, bus: u32, slot: u32, indent: &str) -> String {
    source_element(id, bus.max(1), PARKED_FIRST + slot, indent)
}

fn source_element(id: Option<UsbId>, bus: u32, dev: u32, indent: &str) -> String {
    let ids = id.map_or_else(String::new, |id| {
        format!(
            "{indent}  <vendor id='0x{:04x}'/>\n{indent}  <product id='0x{:04x}'/>\n",
            id.vendor, id.product
        )
    });
    format!(
        "<source startupPolicy='optional'>\n{ids}{indent}  <address bus='{bus}' device='{dev}'/>\n{indent}</source>"
    )
}

/// The hostdev XML for the USB device `id` at `bus`:`dev` tagged with
/// `alias`.
pub fn hostdev_xml(id: UsbId, bus: u32, dev: u32, alias: &str) -> String {
    format!(
        "<hostdev mode='subsystem' type='usb'>\n  {}\n  <alias name='{}'/>\n</hostdev>\n",
        source_xml(id, bus, dev, "  "),
        escape_attr(alias)
    )
}

/// The vendor:product a bbvirt alias stands for: a BitBabbler's for
/// `ua-bbvirt-`, the `VVVVPPPP` of a `ua-bbusb-` alias; None for others.
pub fn alias_id(alias: &str) -> Option<UsbId> {
    if alias.starts_with(ALIAS_PREFIX) {
        return Some(crate::sysfs::BITBABBLER_ID);
    }
    let hex = alias.strip_prefix(USB_ALIAS_PREFIX)?.get(..8)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(UsbId {
        vendor: u16::from_str_radix(&hex[..4], 16).ok()?,
        product: u16::from_str_radix(&hex[4..], 16).ok()?,
    })
}

/// A USB hostdev found in a domain's XML.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsbHostdev {
    /// The device alias (`<alias name=.../>`), if any.
    pub alias: Option<String>,
    /// The host bus and device number of `<source><address .../>`, if given.
    pub bus: Option<u32>,
    pub device: Option<u32>,
    /// Where it sits in the guest, `BUS-PORT` (`0-1`, `0-1.2` behind a
    /// guest hub), from the hostdev's own `<address type='usb' bus port>`
    /// that libvirt fills in on attach; None when the XML has none.
    pub guest_port: Option<String>,
    /// `<source><vendor id/><product id/>`, when given.
    pub id: Option<UsbId>,
    /// `<source startupPolicy='optional'>` (or `requisite`, which is the
    /// same outside a cold boot): libvirt drops the device when it cannot
    /// find it instead of failing.
    pub optional: bool,
    /// Where the `<source>` element is in the XML text (byte range), for
    /// rewriting it in place ([`crate::saved`]).
    pub source_range: Option<std::ops::Range<usize>>,
}

impl UsbHostdev {
    /// Whether this is one of bbvirt's hostdevs: a BitBabbler's
    /// (`ua-bbvirt-SERIAL`) or one a `DOMAIN_USB_` element routed
    /// (`ua-bbusb-...`). bbvirt never touches any other.
    pub fn is_bbvirts(&self) -> bool {
        self.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(ALIAS_PREFIX) || a.starts_with(USB_ALIAS_PREFIX))
    }

    /// The serial, when this is one of bbvirt's BitBabbler hostdevs.
    pub fn bbvirt_serial(&self) -> Option<&str> {
        self.alias.as_deref().and_then(serial_from_alias)
    }

    pub fn is_at(&self, bus: u32, dev: u32) -> bool {
        self.bus == Some(bus) && self.device == Some(dev)
    }

    /// Whether this is a parked hostdev (see the module doc).
    pub fn is_parked(&self) -> bool {
        self.device.is_some_and(|d| d > MAX_DEVNUM)
    }
}

/// Why a domain XML could not be read.
#[derive(Debug, thiserror::Error)]
#[error("parsing the domain XML")]
pub struct XmlError(#[from] roxmltree::Error);

fn num_attr(node: roxmltree::Node, name: &str) -> Option<u32> {
    let v = node.attribute(name)?;
    // libvirt writes decimal; accept 0x-prefixed hex as its parser does.
    match v.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Every `<hostdev mode='subsystem' type='usb'>` under `<devices>`.
pub fn usb_hostdevs(domain_xml: &str) -> Result<Vec<UsbHostdev>, XmlError> {
    let doc = roxmltree::Document::parse(domain_xml)?;
    let mut out = Vec::new();
    for hd in doc.descendants().filter(|n| {
        n.has_tag_name("hostdev")
            && n.attribute("type") == Some("usb")
            && n.attribute("mode").unwrap_or("subsystem") == "subsystem"
            && n.parent_element()
                .is_some_and(|p| p.has_tag_name("devices"))
    }) {
        let alias = hd
            .children()
            .find(|n| n.has_tag_name("alias"))
            .and_then(|a| a.attribute("name"))
            .map(str::to_string);
        let source = hd.children().find(|n| n.has_tag_name("source"));
        let addr = source.and_then(|s| s.children().find(|n| n.has_tag_name("address")));
        let id_of = |tag: &str| {
            source
                .and_then(|s| s.children().find(|n| n.has_tag_name(tag)))
                .and_then(|n| num_attr(n, "id"))
                .and_then(|v| u16::try_from(v).ok())
        };
        let guest_port = hd
            .children()
            .find(|n| n.has_tag_name("address") && n.attribute("type") == Some("usb"))
            .and_then(|a| Some(format!("{}-{}", a.attribute("bus")?, a.attribute("port")?)));
        out.push(UsbHostdev {
            alias,
            bus: addr.and_then(|a| num_attr(a, "bus")),
            device: addr.and_then(|a| num_attr(a, "device")),
            guest_port,
            id: id_of("vendor")
                .zip(id_of("product"))
                .map(|(vendor, product)| UsbId { vendor, product }),
            optional: source
                .and_then(|s| s.attribute("startupPolicy"))
                .is_some_and(|p| p == "optional" || p == "requisite"),
            source_range: source.map(|s| s.range()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn usb_aliases_are_readable_unique_per_element_and_always_valid() {
        use crate::selector::UsbId;
        let cp210x = UsbId {
            vendor: 0x10c4,
            product: 0xea60,
        };
        assert_eq!(
            usb_alias(cp210x, "ha", 0, Some("0001")),
            "ua-bbusb-10c4ea60-ha-e0-0001"
        );
        // Twins with one serial: two elements, two aliases, in one guest or
        // in two.
        assert_ne!(
            usb_alias(cp210x, "ha", 0, Some("0001")),
            usb_alias(cp210x, "ha", 1, Some("0001"))
        );
        assert_ne!(
            usb_alias(cp210x, "ha", 0, Some("0001")),
            usb_alias(cp210x, "hb", 0, Some("0001"))
        );
        assert_eq!(
            usb_alias(cp210x, "ha", 2, None),
            "ua-bbusb-10c4ea60-ha-e2-noserial"
        );
        let hostile = ["A B", "x'><hostdev", "", "\u{7}\n", &"Z".repeat(33), "ü"];
        let mut seen = std::collections::HashSet::new();
        for s in hostile {
            let a = usb_alias(cp210x, "ha", 0, Some(s));
            assert!(a.starts_with(USB_ALIAS_PREFIX), "{a}");
            assert!(
                a["ua-".len()..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{a}"
            );
            assert_eq!(a, usb_alias(cp210x, "ha", 0, Some(s)), "stable");
            assert!(seen.insert(a), "distinct serials, distinct aliases");
        }
        // Never one of the BitBabbler aliases, nor their prefix.
        assert!(!USB_ALIAS_PREFIX.starts_with(ALIAS_PREFIX));
        assert!(!ALIAS_PREFIX.starts_with(USB_ALIAS_PREFIX));
        assert_eq!(
            serial_from_alias(&usb_alias(cp210x, "ha", 0, Some("KWIF4Q"))),
            None
        );
    }

    use super::*;

    /// Live XML as libvirt 9.0 printed it in the lab, trimmed.
    const LIVE: &str = r#"<domain type='qemu' id='1'>
  <name>guest1</name>
  <devices>
    <controller type='usb' index='0' model='qemu-xhci'><alias name='usb'/></controller>
    <hostdev mode='subsystem' type='usb' managed='no'>
      <source>
        <vendor id='0x0403'/>
        <product id='0x7840'/>
        <address bus='1' device='2'/>
      </source>
      <alias name='ua-bbvirt-ABC1234'/>
      <address type='usb' bus='0' port='1'/>
    </hostdev>
    <hostdev mode='subsystem' type='usb' managed='no'>
      <source><address bus='3' device='7'/></source>
      <alias name='hostdev1'/>
      <address type='usb' bus='0' port='2'/>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source>
      <alias name='ua-bbvirt-PCIDEV'/>
    </hostdev>
  </devices>
</domain>"#;

    #[test]
    fn reads_usb_hostdevs_only() {
        let hds = usb_hostdevs(LIVE).unwrap();
        let keys: Vec<_> = hds
            .iter()
            .map(|h| {
                (
                    h.alias.as_deref(),
                    h.bus,
                    h.device,
                    h.guest_port.as_deref(),
                    h.id,
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                (
                    Some("ua-bbvirt-ABC1234"),
                    Some(1),
                    Some(2),
                    Some("0-1"),
                    Some(crate::sysfs::BITBABBLER_ID)
                ),
                (Some("hostdev1"), Some(3), Some(7), Some("0-2"), None),
            ]
        );
        // The source range is the <source> element, for rewriting in place.
        let r = hds[0].source_range.clone().unwrap();
        assert!(LIVE[r.clone()].starts_with("<source>") && LIVE[r].ends_with("</source>"));
        assert!(!hds[0].optional);
        assert_eq!(hds[0].bbvirt_serial(), Some("ABC1234"));
        assert_eq!(hds[1].bbvirt_serial(), None);
        assert!(hds[0].is_at(1, 2));
        assert!(!hds[0].is_at(2, 1));
    }

    #[test]
    fn hostdev_by_vendor_has_no_address() {
        let xml = "<domain><devices><hostdev type='usb'><source><vendor id='0x0403'/>\
                   <product id='0x7840'/></source></hostdev></devices></domain>";
        let hds = usb_hostdevs(xml).unwrap();
        assert_eq!(hds.len(), 1);
        assert_eq!(
            (hds[0].bus, hds[0].device, hds[0].alias.as_deref()),
            (None, None, None)
        );
    }

    #[test]
    fn garbage_xml_is_an_error_not_a_panic() {
        assert!(usb_hostdevs("<domain><devices>").is_err());
        assert!(usb_hostdevs("").is_err());
        let hds = usb_hostdevs(
            "<domain><devices><hostdev type='usb'><source><address bus='x' device='-1'/>\
             </source></hostdev></devices></domain>",
        )
        .unwrap();
        assert_eq!((hds[0].bus, hds[0].device), (None, None));
    }

    #[test]
    fn built_xml_parses_back() {
        let bb = crate::sysfs::BITBABBLER_ID;
        let xml = hostdev_xml(bb, 3, 12, &alias_for("KWIF4Q"));
        let wrapped = format!("<domain><devices>{xml}</devices></domain>");
        let hds = usb_hostdevs(&wrapped).unwrap();
        assert_eq!(hds.len(), 1);
        let h = &hds[0];
        assert_eq!(
            (h.alias.as_deref(), h.bus, h.device, h.id, h.optional),
            (Some("ua-bbvirt-KWIF4Q"), Some(3), Some(12), Some(bb), true)
        );
        assert!(!h.is_parked());
        assert!(xml.contains("<source startupPolicy='optional'>"));
        assert!(xml.contains("<vendor id='0x0403'/>") && xml.contains("<product id='0x7840'/>"));
        assert!(xml.contains("<address bus='3' device='12'/>"));
        assert!(xml.contains("<alias name='ua-bbvirt-KWIF4Q'/>"));
        // parked: a number no device has (never 0: libvirt would search by
        // vendor:product alone then), one per slot
        let parked = format!(
            "<domain><devices><hostdev mode='subsystem' type='usb'>{}<alias name='a'/>\
             </hostdev></devices></domain>",
            parked_source_xml(Some(bb), 0, 1, "")
        );
        let p = &usb_hostdevs(&parked).unwrap()[0];
        assert_eq!((p.bus, p.device, p.optional), (Some(1), Some(201), true));
        assert!(p.is_parked());
    }

    #[test]
    fn aliases_tell_their_usb_id() {
        let cp210x = UsbId {
            vendor: 0x10c4,
            product: 0xea60,
        };
        assert_eq!(
            alias_id("ua-bbvirt-KWIF4Q"),
            Some(crate::sysfs::BITBABBLER_ID)
        );
        assert_eq!(
            alias_id(&usb_alias(cp210x, "ha", 0, Some("0001"))),
            Some(cp210x)
        );
        assert_eq!(alias_id("ua-bbusb-xyz"), None);
        assert_eq!(alias_id("hostdev0"), None);
        assert_eq!(alias_id("ua-bbusb-10c4ea6"), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_attr("a'b\"c<d>e&f\ng"),
            "a&apos;b&quot;c&lt;d&gt;e&amp;f&#10;g"
        );
        // Whatever reaches the alias attribute cannot break out of it.
        let xml = hostdev_xml(crate::sysfs::BITBABBLER_ID, 1, 2, "x'/><evil a='");
        let wrapped = format!("<domain><devices>{xml}</devices></domain>");
        let hds = usb_hostdevs(&wrapped).unwrap();
        assert_eq!(hds[0].alias.as_deref(), Some("x'/><evil a='"));
        assert!(!wrapped.contains("<evil"));
    }
}
