//! The two vm.conf elements of a remote USB device: [`RemoteElement`] (a
//! guest's `DOMAIN_REMOTE_<id>` on the hypervisor) and [`ServeElement`] (an
//! exporting host's `SERVE_USB_<port>`), each with its [`Transport`]. Each
//! parses with `FromStr` into its own error naming the word at fault.

use std::str::FromStr;

use crate::remote::endpoint::{Endpoint, EndpointError, Port, PortError};
use crate::selector::{Selector, SelectorError};
use crate::text::escape_controls;

/// How the bytes of a remote device travel: in a TLS tunnel unless
/// plaintext is asked for by name (`tls=no`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    #[default]
    Tls,
    Plain,
}

/// Why a `tls=` word is wrong. Shared by both elements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsWordError {
    #[error("'{}': expected tls=yes or tls=no", escape_controls(.0))]
    Value(String),
    #[error("'tls=' is given twice")]
    Twice,
}

/// Reads a `tls=` word into `seen` (None until one was read).
fn tls_word(word: &str, seen: &mut Option<Transport>) -> Result<(), TlsWordError> {
    let t = match word {
        "tls=yes" => Transport::Tls,
        "tls=no" => Transport::Plain,
        _ => return Err(TlsWordError::Value(word.into())),
    };
    if seen.replace(t).is_some() {
        return Err(TlsWordError::Twice);
    }
    Ok(())
}

/// One element of a guest's `DOMAIN_REMOTE_<id>`: `HOST:PORT [tls=yes|no]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteElement {
    pub endpoint: Endpoint,
    pub transport: Transport,
}

/// Why a `DOMAIN_REMOTE_` element is not valid. Each names the word at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteElementError {
    #[error("the element is empty: expected HOST:PORT [tls=yes|no]")]
    Empty,
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("unknown word '{}' (expected HOST:PORT [tls=yes|no])", escape_controls(.0))]
    UnknownWord(String),
    #[error(transparent)]
    Tls(#[from] TlsWordError),
}

impl FromStr for RemoteElement {
    type Err = RemoteElementError;

    /// Words split at ASCII whitespace: first `HOST:PORT`, then at most one
    /// `tls=yes` or `tls=no`.
    fn from_str(s: &str) -> Result<RemoteElement, RemoteElementError> {
        let mut words = s.split_ascii_whitespace();
        let endpoint = words.next().ok_or(RemoteElementError::Empty)?.parse()?;
        let mut transport = None;
        for w in words {
            if !w.starts_with("tls=") {
                return Err(RemoteElementError::UnknownWord(w.into()));
            }
            tls_word(w, &mut transport)?;
        }
        Ok(RemoteElement {
            endpoint,
            transport: transport.unwrap_or_default(),
        })
    }
}

/// Where a hypervisor's QEMU connects for a remote device: the local end
/// of its TLS tunnel, `127.0.0.1` at the device's own port (the tunnel
/// carries it to the exporting host), or for `tls=no` the exporting host
/// itself. The same on every hypervisor, so a guest's XML stays right
/// wherever it moves.
pub const TUNNEL_HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

impl RemoteElement {
    /// Where QEMU connects for this device ([`TUNNEL_HOST`]).
    pub fn connects_to(&self) -> Endpoint {
        match self.transport {
            Transport::Tls => Endpoint {
                host: crate::remote::endpoint::Host::V4(TUNNEL_HOST),
                port: self.endpoint.port,
            },
            Transport::Plain => self.endpoint.clone(),
        }
    }
}

/// The value of an exporting host's `SERVE_USB_<port>`: the words of a
/// `DOMAIN_USB_` element ([`crate::selector`]) and at most one `tls=` word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeElement {
    pub selector: Selector,
    pub transport: Transport,
}

/// Why a `SERVE_USB_` value is not valid. Each names the word at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServeElementError {
    #[error("unbalanced quotes in '{}'", escape_controls(.0))]
    Quotes(String),
    #[error(transparent)]
    Tls(#[from] TlsWordError),
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

impl FromStr for ServeElement {
    type Err = ServeElementError;

    /// Split into words as [`Selector`] splits them (shell words, crate
    /// `shlex`); the `tls=` word is taken out, the others are quoted back
    /// and given to [`Selector::from_str`].
    fn from_str(s: &str) -> Result<ServeElement, ServeElementError> {
        let words = shlex::split(s).ok_or_else(|| ServeElementError::Quotes(s.into()))?;
        let (tls, rest): (Vec<&str>, Vec<&str>) = words
            .iter()
            .map(String::as_str)
            .partition(|w| w.starts_with("tls="));
        let mut transport = None;
        for w in tls {
            tls_word(w, &mut transport)?;
        }
        let joined = shlex::Quoter::new()
            .allow_nul(true)
            .join(rest)
            .map_err(|_| ServeElementError::Quotes(s.into()))?;
        Ok(ServeElement {
            selector: joined.parse()?,
            transport: transport.unwrap_or_default(),
        })
    }
}

/// The prefix of the vm.conf variables that serve a device.
pub const SERVE_VAR_PREFIX: &str = "SERVE_USB_";

/// The port of a `SERVE_USB_<port>` variable name; None for any other name.
pub fn port_from_var_name(name: &str) -> Option<Result<Port, PortError>> {
    name.strip_prefix(SERVE_VAR_PREFIX).map(str::parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EndpointError as E;
    use RemoteElementError as R;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn qemu_connects_to_the_tunnel_unless_plaintext_is_asked_for() {
        let r = |s: &str| {
            s.parse::<RemoteElement>()
                .unwrap()
                .connects_to()
                .to_string()
        };
        assert_eq!(r("exporter.lan:4000"), "127.0.0.1:4000");
        assert_eq!(r("[fd00::7]:4001 tls=yes"), "127.0.0.1:4001");
        assert_eq!(r("exporter.lan:4000 tls=no"), "exporter.lan:4000");
    }

    #[test]
    fn remote_elements() {
        let r = |s: &str| s.parse::<RemoteElement>();
        let tls = r("exporter.lan:4000").unwrap();
        assert_eq!(tls.endpoint, ep("exporter.lan:4000"));
        assert_eq!(tls.transport, Transport::Tls);
        assert_eq!(r("  h:1\ttls=yes ").unwrap().transport, Transport::Tls);
        assert_eq!(r("h:1 tls=no").unwrap().transport, Transport::Plain);
        let value = |w: &str| R::Tls(TlsWordError::Value(w.into()));
        for (s, want) in [
            ("", R::Empty),
            (" \t", R::Empty),
            ("h:1 tls=no tls=no", R::Tls(TlsWordError::Twice)),
            ("h:1 tls=off", value("tls=off")),
            ("h:1 tls=NO", value("tls=NO")),
            ("h:1 plain", R::UnknownWord("plain".into())),
            ("h:1 h:2", R::UnknownWord("h:2".into())),
            ("tls=no h:1", R::Endpoint(E::MissingPort("tls=no".into()))),
        ] {
            assert_eq!(r(s), Err(want), "{s:?}");
        }
    }

    #[test]
    fn serve_elements() {
        let s = |t: &str| t.parse::<ServeElement>();
        let e = s(r#"id=10c4:ea60 serial='A B' tls=no"#).unwrap();
        assert_eq!(e.transport, Transport::Plain);
        assert_eq!(e.selector, "id=10c4:ea60 serial='A B'".parse().unwrap());
        let e = s(r#""tls=yes" port=3-1.4 serial="x;\$(rm)""#).unwrap();
        assert_eq!(e.transport, Transport::Tls);
        assert_eq!(e.selector.serial.as_deref(), Some("x;$(rm)"));
        assert_eq!(s("port=1-2").unwrap().transport, Transport::Tls);
        let twice = s("port=1-2 tls=no tls=yes");
        assert_eq!(twice, Err(TlsWordError::Twice.into()));
        let bad = s("port=1-2 tls=1");
        assert_eq!(bad, Err(TlsWordError::Value("tls=1".into()).into()));
        assert_eq!(s("tls=no"), Err(SelectorError::Empty.into()));
        let unknown = SelectorError::UnknownKey("color".into());
        assert_eq!(s("port=1-2 color=red"), Err(unknown.into()));
        let quotes = ServeElementError::Quotes("port=1-2 'x".into());
        assert_eq!(s("port=1-2 'x"), Err(quotes));
        // The variable's name gives the port.
        assert_eq!(
            port_from_var_name("SERVE_USB_4000"),
            Port::new(4000).map(Ok)
        );
        let zero = Some(Err(PortError("04000".into())));
        assert_eq!(port_from_var_name("SERVE_USB_04000"), zero);
        assert_eq!(
            port_from_var_name("SERVE_USB_"),
            Some(Err(PortError("".into())))
        );
        assert_eq!(port_from_var_name("DOMAIN_USB_4000"), None);
        assert_eq!(port_from_var_name("serve_usb_4000"), None);
    }
}
