//! The devices this host serves to guests on other hosts
//! (`SERVE_USB_<port>`), as a report shows them: the device each element
//! selects now, where usbredirect listens for it and its client, told from
//! the kernel's socket tables ([`crate::sockets`]; why the sockets: see
//! the `remote` part of [`crate::status`]). `status` and `devices` both
//! show them, with the same table ([`table`]).

use serde::Serialize;

use crate::config::Config;
use crate::remote::element::Transport;
use crate::remote::endpoint::Port;
use crate::sockets::{OnPort, TcpSocket, on_port};
use crate::sysfs::UsbDevice;

/// A device this host serves (`SERVE_USB_<port>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Served {
    pub port: u16,
    pub tls: bool,
    pub listen: Option<String>,
    pub device: Option<ServedDevice>,
    pub client: ClientState,
    pub peer: Option<String>,
    pub reason: Option<String>,
}

/// The device a `SERVE_USB_` element selects now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServedDevice {
    pub address: String,
    pub bus: u32,
    pub dev: u32,
    pub port: String,
    pub id: String,
    pub serial: Option<String>,
}

/// Whether a served device has its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientState {
    /// usbredirect holds a connection on its port.
    Connected,
    /// usbredirect listens, no client.
    Waiting,
    /// Nothing listens there.
    None,
    /// The socket tables could not be read.
    Unknown,
}

/// Each `SERVE_USB_` element of this host, in port order: the device it
/// selects now among `usb` ([`crate::serve::device_for`], as `bbvirt
/// serve` picks it), where usbredirect listens for it, and its client in
/// `tables` (None: not read).
pub fn served_of(
    config: &Config,
    usb: &[UsbDevice],
    tables: Option<&Result<Vec<TcpSocket>, String>>,
) -> Vec<Served> {
    config
        .serve
        .iter()
        .map(|(port, element)| {
            let dev = crate::serve::device_for(config, *port, usb);
            let listen = crate::serve::listen_address(*port, element).ok();
            let inner = crate::serve::listen_port(*port, element);
            let tls = element.transport == Transport::Tls;
            let (client, peer, reason) = client_of(*port, tls, &inner, dev.is_some(), tables);
            Served {
                port: port.get(),
                tls,
                listen,
                device: dev.map(|d| ServedDevice {
                    address: d.address().to_string(),
                    bus: d.busnum,
                    dev: d.devnum,
                    port: d.physical().to_string(),
                    id: d.id.to_string(),
                    serial: d.serial.clone(),
                }),
                client,
                peer,
                reason,
            }
        })
        .collect()
}

/// The client of the device served at `port`, usbredirect listening on
/// port `listen`: who is on that port, and for TLS the far end of
/// stunnel's socket on `port` (the client's own address).
fn client_of(
    port: Port,
    tls: bool,
    listen: &Result<Port, crate::serve::ServeError>,
    plugged: bool,
    tables: Option<&Result<Vec<TcpSocket>, String>>,
) -> (ClientState, Option<String>, Option<String>) {
    let unknown = |why: String| (ClientState::Unknown, None, Some(why));
    let listen = match listen {
        Ok(l) => *l,
        Err(e) => return unknown(e.to_string()),
    };
    let tables = match tables {
        Some(Ok(t)) => t,
        Some(Err(e)) => return unknown(format!("the socket tables could not be read: {e}")),
        None => return unknown("the socket tables were not read".into()),
    };
    let outer = on_port(tables, port.get());
    match on_port(tables, listen.get()) {
        OnPort::Connected(peer) => {
            let peer = match (tls, outer) {
                (true, OnPort::Connected(p)) => Some(p.to_string()),
                (true, _) => None,
                (false, _) => Some(peer.to_string()),
            };
            (ClientState::Connected, peer, None)
        }
        OnPort::Listening if tls && outer == OnPort::Nothing => (
            ClientState::Waiting,
            None,
            Some(format!(
                "nothing listens on port {port}: the TLS tunnel (bbvirt tunnels) is not running, \
                 no client can reach the device"
            )),
        ),
        OnPort::Listening => (ClientState::Waiting, None, None),
        OnPort::Nothing if !plugged => (
            ClientState::None,
            None,
            Some("no device the element selects is plugged in".into()),
        ),
        OnPort::Nothing => (
            ClientState::None,
            None,
            Some(format!(
                "nothing listens on port {listen}: bbvirt serve {port} (bbvirt-serve@{port}) is \
                 not running, or usbredirect is between two clients"
            )),
        ),
    }
}

/// The devices this host serves (`SERVE_USB_`), for `status` and `devices`.
pub fn table(out: &mut String, served: &[Served]) {
    out.push_str("Served to other hosts (SERVE_USB_):\n");
    let rows: Vec<Vec<String>> = served
        .iter()
        .map(|s| {
            let device = match &s.device {
                Some(d) => format!(
                    "{} {} ({}{})",
                    d.address,
                    d.id,
                    d.port,
                    match &d.serial {
                        Some(serial) => format!(", serial {serial:?}"),
                        None => String::new(),
                    }
                ),
                None => "(not plugged in)".to_string(),
            };
            let client = match (s.client, &s.peer) {
                (ClientState::Connected, Some(p)) => format!("connected from {p}"),
                (ClientState::Connected, None) => "connected".to_string(),
                (ClientState::Waiting, _) => "waiting".to_string(),
                (ClientState::None, _) => "none".to_string(),
                (ClientState::Unknown, _) => "unknown".to_string(),
            };
            let mut row = vec![
                s.port.to_string(),
                if s.tls { "tls" } else { "plain" }.to_string(),
                crate::text::escape_controls(&device),
                s.listen.as_deref().unwrap_or("-").to_string(),
                client,
            ];
            row.push(
                s.reason
                    .as_deref()
                    .map(crate::text::escape_controls)
                    .unwrap_or_default(),
            );
            row
        })
        .collect();
    let header: &[&str] = if served.iter().any(|s| s.reason.is_some()) {
        &[
            "PORT",
            "TRANSPORT",
            "DEVICE",
            "USBREDIRECT ON",
            "CLIENT",
            "WHY",
        ]
    } else {
        &["PORT", "TRANSPORT", "DEVICE", "USBREDIRECT ON", "CLIENT"]
    };
    super::table(out, header, &rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::TcpState;
    use crate::sockets::test_socket as sock;

    const ANY: &str = "0.0.0.0:0";

    #[test]
    fn a_served_devices_client() {
        let p = |n: u16| Port::new(n).unwrap();
        let tls_listen = Ok(p(14000));
        let plain_listen = Ok(p(4001));
        let connected = Ok(vec![
            sock("127.0.0.1:14000", ANY, TcpState::Listen, 1),
            sock(
                "127.0.0.1:14000",
                "127.0.0.1:40000",
                TcpState::Established,
                2,
            ),
            sock(
                "127.0.0.1:40000",
                "127.0.0.1:14000",
                TcpState::Established,
                3,
            ),
            sock("[::]:4000", "[::]:0", TcpState::Listen, 4),
            sock(
                "[fd00::7]:4000",
                "[fd00::2]:50000",
                TcpState::Established,
                5,
            ),
            sock("0.0.0.0:4001", ANY, TcpState::Listen, 6),
            sock("10.0.0.7:4001", "10.0.0.2:50001", TcpState::Established, 7),
        ]);
        assert_eq!(
            client_of(p(4000), true, &tls_listen, true, Some(&connected)),
            (ClientState::Connected, Some("[fd00::2]:50000".into()), None)
        );
        assert_eq!(
            client_of(p(4001), false, &plain_listen, true, Some(&connected)),
            (ClientState::Connected, Some("10.0.0.2:50001".into()), None)
        );
        let waiting = Ok(vec![
            sock("127.0.0.1:14000", ANY, TcpState::Listen, 1),
            sock("[::]:4000", "[::]:0", TcpState::Listen, 4),
        ]);
        assert_eq!(
            client_of(p(4000), true, &tls_listen, true, Some(&waiting)),
            (ClientState::Waiting, None, None)
        );
        let no_tunnel = Ok(vec![sock("127.0.0.1:14000", ANY, TcpState::Listen, 1)]);
        let got = client_of(p(4000), true, &tls_listen, true, Some(&no_tunnel));
        assert_eq!(got.0, ClientState::Waiting);
        assert!(got.2.unwrap().contains("bbvirt tunnels"));
        let nothing = Ok(vec![]);
        let got = client_of(p(4000), true, &tls_listen, false, Some(&nothing));
        assert_eq!(got.0, ClientState::None);
        assert!(got.2.unwrap().contains("plugged in"));
        let got = client_of(p(4000), true, &tls_listen, true, Some(&nothing));
        assert!(
            got.2
                .unwrap()
                .contains("nothing listens on port 14000: bbvirt serve 4000")
        );
        let got = client_of(p(4000), true, &tls_listen, true, None);
        assert_eq!(got.0, ClientState::Unknown);
        let overflow = Err(crate::serve::ServeError::NoInnerPort { port: p(60000) });
        let got = client_of(p(60000), true, &overflow, true, Some(&nothing));
        assert_eq!(got.0, ClientState::Unknown);
        assert!(got.2.unwrap().contains("65535"));
    }
}
