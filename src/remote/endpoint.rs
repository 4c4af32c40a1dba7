//! The small values of a remote USB device: a TCP [`Port`], a [`Host`] and
//! the [`Endpoint`] `HOST:PORT` they make (the vm.conf elements that use
//! them are in [`crate::remote::element`]). Each parses with `FromStr` into
//! its own error, which names the offending value with its control
//! characters escaped ([`crate::text::escape_controls`]).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::text::escape_controls;

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(u16);

impl Port {
    /// The port `n`; None for 0.
    pub fn new(n: u16) -> Option<Port> {
        (n != 0).then_some(Port(n))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

/// Why a string is not a [`Port`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port '{}': expected 1 to 65535 in decimal digits, without sign, spaces or leading zeros", escape_controls(.0))]
pub struct PortError(pub String);

impl FromStr for Port {
    type Err = PortError;

    fn from_str(s: &str) -> Result<Port, PortError> {
        // u16's own parser takes a '+' and leading zeros.
        if s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PortError(s.into()));
        }
        s.parse().map(Port).map_err(|_| PortError(s.into()))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The host of an [`Endpoint`]: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name as written (see [`Host::from_str`] for what is one);
    /// compared as written, though DNS ignores case (the alias does too).
    Name(String),
    V4(Ipv4Addr),
    /// Written `[fe80::1]`, in brackets, as in a URL.
    V6(Ipv6Addr),
}

/// Why a string is not a [`Host`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the host is empty")]
    Empty,
    #[error("'{}' is an IPv6 address: write it in brackets, as in [fe80::1]", escape_controls(.0))]
    BareV6(String),
    #[error("'{}' has a zone id (%...): not supported, give an address that needs none", escape_controls(.0))]
    Zone(String),
    #[error("invalid IPv6 address '{}'", escape_controls(.0))]
    V6(String),
    #[error("'{}' is neither an IPv4 address nor a DNS name (its last label is all digits)", escape_controls(.0))]
    Numeric(String),
    #[error("invalid host name '{}': expected labels of 1 to 63 letters, digits or '-' (not first or last), joined by '.', at most 253 in all, no trailing '.'", escape_controls(.0))]
    Name(String),
}

/// Whether `s` is a DNS name as [`Host::Name`] takes it: 1 to 253 bytes
/// (RFC 1035 without the root's dot), labels of 1 to 63 bytes.
pub fn is_valid_name(s: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (1..=253).contains(&s.len()) && s.split('.').all(label_ok) && !numeric_last_label(s)
}

/// Whether the last label of `s` is all digits (and not empty).
fn numeric_last_label(s: &str) -> bool {
    let last = s.rsplit('.').next().unwrap_or(s);
    !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())
}

impl FromStr for Host {
    type Err = HostError;

    /// `[IPV6]`, an IPv4 address in dotted decimal (no leading zeros), or
    /// a DNS name: 1 to 253 bytes, labels of 1 to 63 of `[A-Za-z0-9-]`
    /// joined by '.', no label starting or ending with '-', no trailing
    /// dot, and a last label that is not all digits (`1.2.3` and
    /// `999.1.1.1` are mistyped addresses, not names).
    fn from_str(s: &str) -> Result<Host, HostError> {
        if s.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| HostError::V6(s.into()))?;
            if inner.contains('%') {
                return Err(HostError::Zone(s.into()));
            }
            return inner
                .parse()
                .map(Host::V6)
                .map_err(|_| HostError::V6(s.into()));
        }
        if s.contains(':') {
            let addr = s.split_once('%').map_or(s, |(a, _)| a);
            return Err(match addr.parse::<Ipv6Addr>() {
                Ok(_) => HostError::BareV6(s.into()),
                Err(_) => HostError::Name(s.into()),
            });
        }
        if let Ok(v4) = s.parse::<Ipv4Addr>() {
            return Ok(Host::V4(v4));
        }
        if numeric_last_label(s) {
            Err(HostError::Numeric(s.into()))
        } else if is_valid_name(s) {
            Ok(Host::Name(s.to_string()))
        } else {
            Err(HostError::Name(s.into()))
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

impl Host {
    /// The host as an XML attribute, a socket address lookup and stunnel
    /// take it: an IPv6 address without brackets (they are only there to
    /// split `HOST:PORT`), anything else as written.
    pub fn bare(&self) -> String {
        match self {
            Host::V6(a) => a.to_string(),
            other => other.to_string(),
        }
    }

    /// Whether the host is this machine: 127.0.0.0/8, `::1`, or the name
    /// `localhost` in any case.
    pub fn is_loopback(&self) -> bool {
        match self {
            Host::Name(n) => n.eq_ignore_ascii_case("localhost"),
            Host::V4(a) => a.is_loopback(),
            Host::V6(a) => a.is_loopback(),
        }
    }
}

/// `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: Host,
    pub port: Port,
}

/// Why a string is not `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("'{}' has no port: expected HOST:PORT ([IPV6]:PORT for IPv6)", escape_controls(.0))]
    MissingPort(String),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Port(#[from] PortError),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    /// Split at the last ':' after the last ']' (the one of `[IPV6]`).
    fn from_str(s: &str) -> Result<Endpoint, EndpointError> {
        let after_bracket = s.rfind(']').map_or(0, |i| i + 1);
        let colon = s[after_bracket..]
            .rfind(':')
            .map(|i| after_bracket + i)
            .ok_or_else(|| EndpointError::MissingPort(s.into()))?;
        Ok(Endpoint {
            host: s[..colon].parse()?,
            port: s[colon + 1..].parse()?,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::element::RemoteElement;
    use EndpointError as E;
    use HostError as H;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn words(s: &str) -> Vec<&str> {
        s.split(' ').collect()
    }

    #[test]
    fn ports() {
        assert_eq!("1".parse::<Port>().map(Port::get), Ok(1));
        assert_eq!("65535".parse::<Port>().map(Port::get), Ok(65535));
        assert_eq!(Port::new(0), None);
        let mut bad = words("0 00 022 65536 99999 100000 +1 -1 1a 0x10 ١ 1\0");
        bad.extend([" 1", "1 ", "", "1\n"]);
        for b in bad {
            assert_eq!(b.parse::<Port>(), Err(PortError(b.into())), "{b:?}");
        }
    }

    #[test]
    fn hosts() {
        let h = |s: &str| s.parse::<Host>();
        let name = |s: &str| Ok(Host::Name(s.into()));
        assert_eq!(h("exporter.lan"), name("exporter.lan"));
        assert_eq!(h("a"), name("a"));
        assert_eq!(h("1a.b2"), name("1a.b2"));
        assert_eq!(h("10.0.0.7"), Ok(Host::V4(Ipv4Addr::new(10, 0, 0, 7))));
        assert_eq!(h("[fe80::1]"), Ok(Host::V6("fe80::1".parse().unwrap())));
        for (s, back) in [("Ex-1.LAN", "Ex-1.LAN"), ("[FE80:0::1]", "[fe80::1]")] {
            assert_eq!(h(s).unwrap().to_string(), back);
        }
        assert_eq!(h(""), Err(H::Empty));
        assert_eq!(h("::1"), Err(H::BareV6("::1".into())));
        assert_eq!(h("fe80::1%eth0"), Err(H::BareV6("fe80::1%eth0".into())));
        assert_eq!(h("[fe80::1%eth0]"), Err(H::Zone("[fe80::1%eth0]".into())));
        for v6 in ["[1.2.3.4]", "[::1", "[]", "[::1]]"] {
            assert_eq!(h(v6), Err(H::V6(v6.into())), "{v6}");
        }
        for numeric in words("1.2.3 999.1.1.1 01.2.3.4 1.2.3.4.5 7 a.1") {
            assert_eq!(h(numeric), Err(H::Numeric(numeric.into())), "{numeric}");
        }
        let label = "a".repeat(63);
        let exact = [label.as_str(); 4].join(".")[..253].to_string();
        assert!(h(&label).is_ok() && h(&exact).is_ok(), "63, 253 bytes");
        let (long, over) = ("a".repeat(64), format!("{exact}b"));
        let mut bad = words("host_name a..b .a a. -a a- a.-b a'b a\"b a<b a&b exämple a:b");
        bad.extend([&long, &over, "ex ample", "a\nb", "a\0b", "a\u{202e}b"]);
        for b in bad {
            assert_eq!(h(b), Err(H::Name(b.into())), "{b:?}");
        }
    }

    #[test]
    fn loopback() {
        let lo = |s: &str| s.parse::<Host>().unwrap().is_loopback();
        assert!(lo("[::1]") && lo("127.9.9.9") && lo("LocalHost"));
        assert!(!lo("[::2]") && !lo("128.0.0.1") && !lo("localhost.lan"));
    }

    #[test]
    fn endpoints() {
        let e = ep("[::1]:22");
        assert_eq!((e.host, e.port.get()), (Host::V6(Ipv6Addr::LOCALHOST), 22));
        for s in words("[::1]:22 [fe80::1:2]:4000 exporter.lan:4000 10.0.0.7:1") {
            assert_eq!(ep(s).to_string(), s);
        }
        for (s, want) in [
            ("::1:22", E::Host(H::BareV6("::1".into()))),
            ("host_name:1", E::Host(H::Name("host_name".into()))),
            ("[::1]x:22", E::Host(H::V6("[::1]x".into()))),
            (":22", E::Host(H::Empty)),
            ("host", E::MissingPort("host".into())),
            ("[::1]", E::MissingPort("[::1]".into())),
            ("", E::MissingPort("".into())),
            ("h:", E::Port(PortError("".into()))),
            ("h:022", E::Port(PortError("022".into()))),
            ("h: 1", E::Port(PortError(" 1".into()))),
        ] {
            assert_eq!(s.parse::<Endpoint>(), Err(want), "{s:?}");
        }
    }

    /// Every message names the value, and no control character or text
    /// mover reaches a log line or a terminal as it is. (An element's
    /// words end at whitespace: its hostile word has none.)
    #[test]
    fn hostile_values_are_named_escaped() {
        fn msg<T: fmt::Debug, E: fmt::Display>(r: Result<T, E>) -> String {
            r.map_or_else(|e| e.to_string(), |v| panic!("accepted: {v:?}"))
        }
        let word = "'<&\"\0\u{1b}[2J\u{202e}";
        let value = format!("x{word}\n y");
        for m in [
            msg(value.parse::<Port>()),
            msg(value.parse::<Host>()),
            msg(format!("[{value}]").parse::<Host>()),
            msg(format!("h:{value}").parse::<Endpoint>()),
            msg(format!("h:1 tls={word}").parse::<RemoteElement>()),
            msg(format!("h:1 {word}").parse::<RemoteElement>()),
            msg(format!("{word}:1").parse::<RemoteElement>()),
        ] {
            assert!(!m.chars().any(crate::text::is_unsafe_char), "{m:?}");
            assert!(m.contains(r#"'<&"\u{0}\u{1b}[2J\u{202e}"#), "{m:?}");
        }
    }
}
