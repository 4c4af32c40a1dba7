//! The `<redirdev>` XML that gives a guest a remote USB device, its alias,
//! and reading bbvirt's redirdevs back from a domain's live XML.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use super::element::RemoteElement;
use super::endpoint::{Endpoint, Host, Port, is_valid_name};
use crate::hostdev::{XmlError, escape_attr};

/// The prefix of every alias bbvirt puts on a redirdev; distinct from the
/// hostdev prefixes ([`crate::hostdev::ALIAS_PREFIX`],
/// [`crate::hostdev::USB_ALIAS_PREFIX`]): none is a prefix of another.
pub const REDIR_ALIAS_PREFIX: &str = "ua-bbnet-";

/// The alias of the redirdev of the device served at `endpoint` (the
/// exporting host and its port, not the address QEMU connects to):
/// `ua-bbnet-KIND-HOST-PORT` with KIND and HOST
/// - `n` and the name lowercased (DNS names are case-insensitive), each
///   '.' as '_': `ua-bbnet-n-exporter_lan-4000`;
/// - `4` and the address, each '.' as '_': `ua-bbnet-4-10_0_0_7-4000`;
/// - `6` and the address's eight groups in hex, all of them, joined by '_'
///   (`::` and a dotted IPv4 tail are not written: `::ffff:1.2.3.4` and
///   `::ffff:1:2:3:4` would both be `__ffff_1_2_3_4`):
///   `ua-bbnet-6-fe80_0_0_0_0_0_0_1-4000`;
/// - `x` and the name's bytes in hex, for a [`Host::Name`] that is no DNS
///   name (built by hand, not parsed): never the case for a parsed one.
///
/// Within a kind the mapping is one to one (a name has no '_', a port no
/// '-', so the port is after the last '-'), and the kinds differ: two
/// endpoints never share an alias. The guest is not in it: an alias only
/// needs to be unique within its guest, and one endpoint serves one
/// device, so it is given to one guest at a time; and the same remote
/// device has the same alias on every hypervisor, which a migration needs.
/// Always `ua-[A-Za-z0-9_-]+`, as libvirt requires of a user alias.
pub fn alias_for(endpoint: &Endpoint) -> String {
    let (kind, host) = match &endpoint.host {
        Host::Name(n) if is_valid_name(n) => ('n', n.to_ascii_lowercase().replace('.', "_")),
        Host::Name(n) => ('x', n.bytes().map(|b| format!("{b:02x}")).collect()),
        Host::V4(a) => ('4', a.to_string().replace('.', "_")),
        Host::V6(a) => {
            let groups: Vec<String> = a.segments().iter().map(|g| format!("{g:x}")).collect();
            ('6', groups.join("_"))
        }
    };
    format!("{REDIR_ALIAS_PREFIX}{kind}-{host}-{}", endpoint.port)
}

/// Whether `alias` is one of bbvirt's redirdev aliases. bbvirt never
/// touches any other redirdev.
pub fn is_ours(alias: &str) -> bool {
    alias.starts_with(REDIR_ALIAS_PREFIX)
}

/// The endpoint an alias of [`alias_for`] stands for (a name lowercased);
/// None for any other alias, a `x` one included.
pub fn parse_alias(alias: &str) -> Option<Endpoint> {
    let rest = alias.strip_prefix(REDIR_ALIAS_PREFIX)?;
    let (kind, rest) = rest.split_once('-')?;
    let (host, port) = rest.rsplit_once('-')?;
    let port: Port = port.parse().ok()?;
    let host = match kind {
        "n" => Host::Name(host.replace('_', ".")),
        "4" => Host::V4(host.replace('_', ".").parse::<Ipv4Addr>().ok()?),
        "6" => {
            let groups = host.split('_').map(|g| u16::from_str_radix(g, 16).ok());
            let groups: [u16; 8] = groups.collect::<Option<Vec<_>>>()?.try_into().ok()?;
            Host::V6(Ipv6Addr::from(groups))
        }
        _ => return None,
    };
    let endpoint = Endpoint { host, port };
    // Only the one spelling alias_for writes.
    (alias_for(&endpoint) == alias).then_some(endpoint)
}

/// Seconds between QEMU's attempts to connect again after a remote
/// device's stream broke (`<reconnect timeout>`): how soon a device is back
/// after a network drop, an unplug and replug, or a migration (whose
/// destination is refused while the source still holds the device). Each
/// attempt costs one local connection to the tunnel and one TLS handshake
/// with the exporting host.
pub const RECONNECT_SECS: u32 = 2;

/// The redirdev XML that connects the guest's USB redirection to
/// `connect` (where usbredir's stream is served to QEMU: the local end of
/// the TLS tunnel, or the exporting host itself for `tls=no`), tagged with
/// `alias`, for a live attach. QEMU connects again every `reconnect_secs`
/// seconds after the stream breaks; 0 turns reconnecting off (libvirt
/// refuses an enabled reconnect with timeout 0). There is no `tls=`
/// attribute: the tunnel gives TLS (libvirt 11.3 hot-plugs a `tls='yes'`
/// redirdev as plain TCP).
pub fn redirdev_xml(alias: &str, connect: &Endpoint, reconnect_secs: u32) -> String {
    format!(
        "<redirdev bus='usb' type='tcp'>{}<alias name='{}'/></redirdev>",
        source_xml(connect, reconnect_secs),
        escape_attr(alias)
    )
}

/// The `<source>` element of a redirdev that connects to `connect`, QEMU
/// connecting again every `reconnect_secs` seconds (0: never): the one
/// place it is written, for a live attach ([`redirdev_xml`]) and for a
/// saved state's rewrite ([`crate::saved::rewrite_remote`]).
pub fn source_xml(connect: &Endpoint, reconnect_secs: u32) -> String {
    let reconnect = if reconnect_secs == 0 {
        "<reconnect enabled='no'/>".to_string()
    } else {
        format!("<reconnect enabled='yes' timeout='{reconnect_secs}'/>")
    };
    format!(
        "<source mode='connect' host='{}' service='{}'>{reconnect}</source>",
        escape_attr(&connect.host.bare()),
        escape_attr(&connect.port.to_string()),
    )
}

/// Where a parked redirdev connects: TCP port 9 of the loopback address
/// (the discard service, which nothing normally serves). A saved state
/// carries each redirdev with its source; libvirt refuses a restored or
/// migrated XML with a redirdev less (or of another type), so one this
/// host does not give the guest cannot be removed there. It is pointed
/// here instead: QEMU's connection is refused (or, should a discard
/// service listen, whatever it says is discarded and no device comes), it
/// tries again every [`RECONNECT_SECS`], and the follow-up detaches it.
/// Never a port a tunnel or an exporting host could serve a device on.
pub fn parked() -> Endpoint {
    Endpoint {
        host: Host::V4(Ipv4Addr::LOCALHOST),
        port: Port::new(9).expect("9 is a valid port"),
    }
}

/// One of bbvirt's redirdevs in a domain's XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirdev {
    pub alias: String,
    /// `<source host service>`: where QEMU connects; empty when not given.
    pub host: String,
    pub service: String,
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.has_tag_name(tag))
}

impl Redirdev {
    /// Whether it is parked ([`parked`]).
    pub fn is_parked(&self) -> bool {
        let p = parked();
        self.host == p.host.bare() && self.service == p.port.to_string()
    }
}

/// Every `<redirdev>` under `<devices>` whose alias is bbvirt's
/// ([`is_ours`]), in document order; all others are left out.
pub fn redirdevs_in(domain_xml: &str) -> Result<Vec<Redirdev>, XmlError> {
    Ok(redirdev_sources(domain_xml)?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// A redirdev and the byte range of its `<source>` element in the XML it
/// was read from (None: it has none).
pub type Located = (Redirdev, Option<Range<usize>>);

/// [`redirdevs_in`], each with where its `<source>` is, for a rewrite in
/// place.
pub fn redirdev_sources(domain_xml: &str) -> Result<Vec<Located>, XmlError> {
    let doc = roxmltree::Document::parse(domain_xml)?;
    let mut out = Vec::new();
    for rd in doc.descendants().filter(|n| {
        n.has_tag_name("redirdev")
            && n.parent_element()
                .is_some_and(|p| p.has_tag_name("devices"))
    }) {
        let Some(alias) = child(rd, "alias").and_then(|a| a.attribute("name")) else {
            continue;
        };
        if !is_ours(alias) {
            continue;
        }
        let source = child(rd, "source");
        let attr = |name: &str| {
            source
                .and_then(|s| s.attribute(name))
                .unwrap_or("")
                .to_string()
        };
        out.push((
            Redirdev {
                alias: alias.to_string(),
                host: attr("host"),
                service: attr("service"),
            },
            source.map(|s| s.range()),
        ));
    }
    Ok(out)
}

/// One remote device a guest should hold: its alias, where QEMU connects
/// (host and service as the live XML writes them), its XML, and the
/// element that asks for it. `sync` attaches it, `status` reports it, and
/// both tell whether a live redirdev is it by [`Wanted::is_held_by`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub alias: String,
    pub host: String,
    pub service: String,
    pub xml: String,
    /// `HOST:PORT` of the exporting host, for messages.
    pub shown: String,
    /// The (first) element that asks for it.
    pub element: RemoteElement,
}

impl Wanted {
    /// Whether the live redirdev `l` is this device as it should be: its
    /// alias, connecting where the element says (else `sync` replaces it).
    pub fn is_held_by(&self, l: &Redirdev) -> bool {
        l.alias == self.alias && l.host == self.host && l.service == self.service
    }
}

/// The redirdevs `remote` asks for, one per exporting host and port (a
/// repeated element is one device: the first one counts).
pub fn wanted(remote: &[RemoteElement]) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = Vec::new();
    for r in remote {
        let alias = alias_for(&r.endpoint);
        if out.iter().any(|w| w.alias == alias) {
            continue;
        }
        let to = r.connects_to();
        // As the live XML writes it: an IPv6 address without brackets.
        let host = to.host.bare();
        out.push(Wanted {
            xml: redirdev_xml(&alias, &to, RECONNECT_SECS),
            alias,
            host,
            service: to.port.to_string(),
            shown: r.endpoint.to_string(),
            element: r.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostdev::{ALIAS_PREFIX, USB_ALIAS_PREFIX};

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn alias_is_valid(a: &str) -> bool {
        a.strip_prefix("ua-").is_some_and(|r| {
            !r.is_empty()
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
    }

    #[test]
    fn prefixes_are_distinct() {
        for other in [ALIAS_PREFIX, USB_ALIAS_PREFIX] {
            assert!(!REDIR_ALIAS_PREFIX.starts_with(other), "{other}");
            assert!(!other.starts_with(REDIR_ALIAS_PREFIX), "{other}");
        }
        assert!(!is_ours("ua-bbvirt-KWIF4Q") && !is_ours("ua-bbusb-10c4ea60-ha-e0-0001"));
        assert!(is_ours(&alias_for(&ep("h:1"))));
    }

    #[test]
    fn aliases() {
        for (e, want) in [
            ("Exporter.LAN:4000", "ua-bbnet-n-exporter_lan-4000"),
            ("10.0.0.7:4000", "ua-bbnet-4-10_0_0_7-4000"),
            ("[fe80::1]:4000", "ua-bbnet-6-fe80_0_0_0_0_0_0_1-4000"),
        ] {
            assert_eq!(alias_for(&ep(e)), want, "{e}");
        }
        // A Name that no parse gave still makes a valid alias.
        let odd = Endpoint {
            host: Host::Name("a'b>\n".into()),
            port: ep("h:9").port,
        };
        assert_eq!(alias_for(&odd), "ua-bbnet-x-6127623e0a-9");
        assert_eq!(parse_alias(&alias_for(&odd)), None);
    }

    #[test]
    fn aliases_are_one_to_one() {
        let tricky = [
            "1.2.3.4:1",
            "[1:2:3:4::]:1",
            "[::1.2.3.4]:1",
            "[::ffff:1.2.3.4]:1",
            "[::ffff:1:2:3:4]:1",
            "a-b.c:1",
            "a.b-c:1",
            "a-b-c:1",
            "a.b.c:1",
            "a-1:1",
            "a:11",
            "a.b:1",
            "a-b:1",
            "x-6127623e0a:9",
            "a.b:12",
            "a.b-1:2",
            "[::]:1",
            "[::1]:1",
            "0.0.0.0:1",
            "localhost:1",
        ];
        let mut seen = std::collections::HashMap::new();
        for t in tricky {
            let e = ep(t);
            let a = alias_for(&e);
            assert!(alias_is_valid(&a), "{a}");
            if let Some(prev) = seen.insert(a.clone(), t) {
                panic!("{prev} and {t} share {a}");
            }
            assert_eq!(parse_alias(&a), Some(e), "{t} reads back");
        }
        // Same host in another case: the same device, the same alias.
        assert_eq!(alias_for(&ep("A.B:1")), alias_for(&ep("a.b:1")));
        assert_eq!(
            parse_alias("ua-bbnet-n-A_b-1"),
            None,
            "only the canonical spelling"
        );
        for bad in [
            "ua-bbnet-",
            "ua-bbnet-n-a",
            "ua-bbnet-q-a-1",
            "ua-bbnet-4-1_2_3-1",
            "ua-bbnet-6-1_2-1",
            "ua-bbnet-n-a-01",
            "ua-other",
        ] {
            assert_eq!(parse_alias(bad), None, "{bad}");
        }
    }

    #[test]
    fn xml_for_each_kind_of_host() {
        let a = alias_for(&ep("exporter.lan:4000"));
        assert_eq!(
            redirdev_xml(&a, &ep("exporter.lan:4000"), 5),
            "<redirdev bus='usb' type='tcp'><source mode='connect' host='exporter.lan' service='4000'>\
             <reconnect enabled='yes' timeout='5'/></source><alias name='ua-bbnet-n-exporter_lan-4000'/></redirdev>"
        );
        assert!(
            redirdev_xml(&a, &ep("127.0.0.1:41000"), 5)
                .contains("host='127.0.0.1' service='41000'")
        );
        let v6 = redirdev_xml(&a, &ep("[fe80::1]:4000"), 10);
        assert!(v6.contains("host='fe80::1' service='4000'"), "{v6}");
        assert!(!v6.contains('[') && !v6.contains("tls="));
        assert!(redirdev_xml(&a, &ep("h:1"), 0).contains("<reconnect enabled='no'/></source>"));
        // Whatever reaches the alias attribute cannot break out of it.
        let evil = redirdev_xml("x'/><evil a='&", &ep("h:1"), 1);
        assert!(!evil.contains("<evil") && evil.contains("x&apos;/&gt;&lt;evil a=&apos;&amp;"));
    }

    #[test]
    fn reads_back_only_ours() {
        let ours = [
            ep("exporter.lan:4000"),
            ep("[fe80::1]:4001"),
            ep("10.0.0.7:4002"),
        ];
        let mut devices = String::from(
            "<controller type='usb' index='0' model='qemu-xhci'><alias name='usb'/></controller>\n\
             <redirdev bus='usb' type='tcp'><source mode='connect' host='10.9.9.9' service='1'/>\
             <alias name='ua-other'/></redirdev>\n\
             <redirdev bus='usb' type='spicevmc'><alias name='redir0'/></redirdev>\n\
             <hostdev mode='subsystem' type='usb'><source><address bus='1' device='2'/></source>\
             <alias name='ua-bbvirt-KWIF4Q'/></hostdev>\n",
        );
        for (i, e) in ours.iter().enumerate() {
            let connect = Endpoint {
                host: Host::V4(Ipv4Addr::LOCALHOST),
                port: Port::new(41000 + i as u16).unwrap(),
            };
            let connect = if i == 1 { e.clone() } else { connect };
            devices.push_str(&redirdev_xml(&alias_for(e), &connect, 5));
        }
        let xml = format!("<domain type='kvm'><name>g</name><devices>{devices}</devices></domain>");
        let found = redirdevs_in(&xml).unwrap();
        let got: Vec<_> = found
            .iter()
            .map(|r| (r.alias.as_str(), r.host.as_str(), r.service.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ua-bbnet-n-exporter_lan-4000", "127.0.0.1", "41000"),
                ("ua-bbnet-6-fe80_0_0_0_0_0_0_1-4001", "fe80::1", "4001"),
                ("ua-bbnet-4-10_0_0_7-4002", "127.0.0.1", "41002"),
            ]
        );
        assert_eq!(parse_alias(&found[1].alias), Some(ours[1].clone()));
    }

    #[test]
    fn garbage_xml_is_an_error_not_a_panic() {
        assert!(redirdevs_in("").is_err());
        assert!(redirdevs_in("<domain><devices>").is_err());
        let bare = "<domain><devices><redirdev><alias name='ua-bbnet-x'/></redirdev><redirdev/></devices></domain>";
        assert_eq!(
            redirdevs_in(bare).unwrap(),
            vec![Redirdev {
                alias: "ua-bbnet-x".into(),
                host: String::new(),
                service: String::new()
            }]
        );
    }

    #[test]
    fn each_exporting_host_and_port_is_one_device() {
        let remote =
            |s: &[&str]| -> Vec<RemoteElement> { s.iter().map(|e| e.parse().unwrap()).collect() };
        let w = wanted(&remote(&[
            "a.lan:4000",
            "A.LAN:4000 tls=yes",
            "[::1]:4000 tls=no",
        ]));
        let shown: Vec<(&str, &str, &str)> = w
            .iter()
            .map(|w| (w.alias.as_str(), w.host.as_str(), w.service.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("ua-bbnet-n-a_lan-4000", "127.0.0.1", "4000"),
                ("ua-bbnet-6-0_0_0_0_0_0_0_1-4000", "::1", "4000"),
            ]
        );
        assert!(
            w[0].xml.contains("host='127.0.0.1' service='4000'"),
            "{}",
            w[0].xml
        );
        assert!(
            w[1].xml.contains("host='::1' service='4000'"),
            "{}",
            w[1].xml
        );
        assert!(w[0].is_held_by(&Redirdev {
            alias: w[0].alias.clone(),
            host: "127.0.0.1".into(),
            service: "4000".into()
        }));
        assert!(!w[0].is_held_by(&Redirdev {
            alias: w[0].alias.clone(),
            host: "127.0.0.1".into(),
            service: "4001".into()
        }));
    }
}
