//! The stunnel configuration that carries remote USB devices in mutual TLS
//! (the path is in [`crate::remote`]): a `[serve-PORT]` server section for
//! each device an exporting host serves with TLS, a `[remote-ALIAS]` client
//! section for each remote device its guests use with TLS, on a hypervisor.
//! Pure: the caller gathers the elements and writes the file.
//!
//! stunnel's syntax, as read in stunnel 5.75's source (`src/resolver.c`,
//! `src/options.c`, `src/verify.c`) and manual (`doc/stunnel.pod.in`):
//! - `accept` and `connect = [HOST:]PORT` are split at the **last** ':'
//!   (`strrchr` in `name2addrlist`) and HOST goes to `getaddrinfo` as it
//!   is: an IPv6 address is written bare (`fd00::7:4000`; `:::4000` for all
//!   addresses, as the manual says); brackets are not taken off, and
//!   `[fd00::7]` would not resolve.
//! - Each line, and each value after its '=', is trimmed of whitespace at
//!   both ends, and an option is one line: a path with a space at either
//!   end or a newline cannot be written ([`TunnelError::Path`]).
//! - `checkIP` is matched by OpenSSL's `X509_check_ip_asc` (a bare IPv6
//!   address), `checkHost` by `X509_check_host` (case-insensitive).
//! - An empty `pid =` writes no pid file.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::element::{RemoteElement, ServeElement, TUNNEL_HOST, Transport};
use super::endpoint::{Endpoint, Host, Port};
use super::redirdev::alias_for;
use crate::text::{escape_controls, is_unsafe_char};

/// What is added to a served device's port for the port its usbredirect
/// listens on behind the tunnel ([`inner_port`]).
pub const INNER_OFFSET: u16 = 10000;

/// Where usbredirect listens behind the tunnel on an exporting host.
pub const INNER_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// TCP keepalive on the connections between the hosts, `(option, value)`:
/// a probe after 5 s idle, then every 2 s, the connection given up after 3
/// unanswered. Why: an end that vanishes without a word (a link down, a
/// host gone) leaves the other end's connection ESTABLISHED for hours
/// (Linux's default first probe comes after 2 h); on the exporting host
/// that stale client keeps usbredirect, which serves one client, from the
/// hypervisor's next connection, and the device never comes back. Seen in
/// the lab (71, a link down for 6 s). With these an idle dead peer is
/// found within 11 s, and a live one answers a probe with a reset at once
/// when its side of the connection is gone. Each side sets them on its
/// network socket: the accepted one (`a:`) in a server section, the one to
/// the exporting host (`r:`) in a client section.
pub const KEEPALIVE: [(&str, u32); 4] = [
    ("SO_KEEPALIVE", 1),
    ("TCP_KEEPIDLE", 5),
    ("TCP_KEEPINTVL", 2),
    ("TCP_KEEPCNT", 3),
];

/// stunnel's `socket =` lines setting [`KEEPALIVE`] on the socket `side`
/// (`a` accepted, `r` remote).
fn keepalive_lines(side: char) -> String {
    KEEPALIVE
        .iter()
        .map(|(option, value)| format!("socket = {side}:{option}={value}\n"))
        .collect()
}

/// The default directory of the certificates ([`TlsFiles::in_dir`]).
pub const TLS_DIR: &str = "/etc/bit-babbler/tls";

/// The port usbredirect listens on (at [`INNER_HOST`]) for the device
/// served with TLS at `p`: `p` + [`INNER_OFFSET`]; None past 65535.
pub fn inner_port(p: Port) -> Option<Port> {
    p.get().checked_add(INNER_OFFSET).and_then(Port::new)
}

/// The certificates of the tunnels: the fleet's CA, and this host's own
/// certificate (signed by that CA) and key, used as server on an exporting
/// host and as client on a hypervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca-cert.pem`, `host-cert.pem` and `host-key.pem` in `dir`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca-cert.pem"),
            cert: dir.join("host-cert.pem"),
            key: dir.join("host-key.pem"),
        }
    }
}

impl Default for TlsFiles {
    /// The files in [`TLS_DIR`].
    fn default() -> TlsFiles {
        TlsFiles::in_dir(Path::new(TLS_DIR))
    }
}

/// Why no stunnel configuration is written: two users of one port on this
/// host, a tunnel that cannot be, or a path stunnel would misread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error("SERVE_USB_{0}: the port behind its TLS tunnel would be {0}+{INNER_OFFSET}, past 65535: serve it on port {max} or below, or with tls=no", max = u16::MAX - INNER_OFFSET)]
    InnerOverflow(Port),
    #[error(
        "SERVE_USB_{other} listens on port {other}, where usbredirect of SERVE_USB_{serve} listens behind its TLS tunnel ({serve}+{INNER_OFFSET}): serve one of them on another port"
    )]
    ServeInner { serve: Port, other: Port },
    #[error(
        "SERVE_USB_{port} and the remote device {remote} both need port {port} on this host (the remote device's TLS tunnel listens on 127.0.0.1:{port} for QEMU): serve one of them on another port"
    )]
    ServeRemote { port: Port, remote: Endpoint },
    #[error("the TLS tunnel of the remote device {remote} listens on 127.0.0.1:{}, where usbredirect of SERVE_USB_{serve} listens behind its own tunnel ({serve}+{INNER_OFFSET}): serve one of them on another port", .remote.port)]
    RemoteInner { remote: Endpoint, serve: Port },
    #[error("the remote devices {first} and {second} have the same port: the TLS tunnels of both would listen on 127.0.0.1:{} on this host; serve one of them on another port", .first.port)]
    RemoteRemote { first: Endpoint, second: Endpoint },
    #[error("the remote device {0} is on this host's loopback: its TLS tunnel, listening on 127.0.0.1:{port}, would connect to itself or to this host's own device; name the exporting host by a network address", port = .0.port)]
    Loopback(Endpoint),
    #[error("the {what} path '{}' cannot be written into stunnel's configuration: expected an absolute UTF-8 path without control characters nor whitespace at either end", escape_controls(&.path.to_string_lossy()))]
    Path { what: &'static str, path: PathBuf },
}

/// A user of a port on this host.
#[derive(Debug, Clone)]
enum Bind {
    /// usbredirect (`tls=no`) or stunnel's server, on all addresses.
    Serve(Port),
    /// usbredirect behind the tunnel of the device served at this port.
    Inner(Port),
    /// The tunnel of a remote device, on [`TUNNEL_HOST`].
    Remote(Endpoint),
}

/// The distinct remote devices used with TLS, one per alias (a DNS name in
/// another case is the same device), sorted by port then alias.
fn tls_remotes(remote: &[RemoteElement]) -> Vec<(String, &Endpoint)> {
    let mut out: Vec<(String, &Endpoint)> = Vec::new();
    for r in remote.iter().filter(|r| r.transport == Transport::Tls) {
        let alias = alias_for(&r.endpoint);
        if !out.iter().any(|(a, _)| *a == alias) {
            out.push((alias, &r.endpoint));
        }
    }
    out.sort_by(|(a, x), (b, y)| (x.port, a).cmp(&(y.port, b)));
    out
}

/// Every port the remote USB path binds on this host, sorted by port.
fn binds(serve: &[(Port, ServeElement)], remotes: &[(String, &Endpoint)]) -> Vec<(Port, Bind)> {
    let mut out = Vec::new();
    for (port, e) in serve {
        out.push((*port, Bind::Serve(*port)));
        if e.transport == Transport::Tls {
            out.extend(inner_port(*port).map(|i| (i, Bind::Inner(*port))));
        }
    }
    out.extend(
        remotes
            .iter()
            .map(|(_, e)| (e.port, Bind::Remote((*e).clone()))),
    );
    out.sort_by_key(|(p, _)| *p);
    out
}

/// The ports bbvirt's remote USB path binds on this host, for `check`:
/// each served device's port (`"serve"`), the port behind the tunnel of
/// each served with TLS (`"inner"`), and the tunnel's local port of each
/// remote device used with TLS (`"remote"`); sorted by port.
pub fn local_ports(
    serve: &[(Port, ServeElement)],
    remote: &[RemoteElement],
) -> Vec<(Port, &'static str)> {
    let kind = |(p, b)| match b {
        Bind::Serve(_) => (p, "serve"),
        Bind::Inner(_) => (p, "inner"),
        Bind::Remote(_) => (p, "remote"),
    };
    binds(serve, &tls_remotes(remote))
        .into_iter()
        .map(kind)
        .collect()
}

/// The error of two users of one port; None for two `SERVE_USB_` of one
/// port (vm.conf has one variable per port).
fn clash(a: &Bind, b: &Bind) -> Option<TunnelError> {
    use {Bind::*, TunnelError as T};
    Some(match (a.clone(), b.clone()) {
        (Serve(other), Inner(serve)) | (Inner(serve), Serve(other)) => {
            T::ServeInner { serve, other }
        }
        (Serve(port), Remote(remote)) | (Remote(remote), Serve(port)) => {
            T::ServeRemote { port, remote }
        }
        (Inner(serve), Remote(remote)) | (Remote(remote), Inner(serve)) => {
            T::RemoteInner { remote, serve }
        }
        (Remote(first), Remote(second)) => T::RemoteRemote { first, second },
        (Serve(_), Serve(_)) | (Inner(_), Inner(_)) => return None,
    })
}

/// Whether stunnel reads `p` back as written: absolute, UTF-8, without a
/// character of [`is_unsafe_char`] nor whitespace at either end.
fn check_path(what: &'static str, p: &Path) -> Option<TunnelError> {
    let s = p
        .to_str()
        .filter(|s| p.is_absolute() && !s.chars().any(is_unsafe_char));
    let path = p.to_path_buf();
    s.is_none_or(|s| s.trim() != s)
        .then_some(TunnelError::Path { what, path })
}

const HEADER: &str = "\
# stunnel configuration of bbvirt's remote USB devices (TLS tunnels).
# Made by `bbvirt tunnels` from vm.conf at each start (bbvirt-tunnels.service).
foreground = quiet
pid =
syslog = yes
debug = notice
";

/// The stunnel configuration of this host: global options, then a server
/// section for each device in `serve` with TLS (accepting TLS on all
/// addresses at its port, to usbredirect at [`INNER_HOST`]:[`inner_port`]),
/// then a client section for each distinct remote device in `remote` with
/// TLS (accepting QEMU at [`TUNNEL_HOST`]:PORT, to `HOST:PORT` in TLS,
/// checking that the peer's certificate names HOST); each kind by port.
/// Both ends present [`TlsFiles::cert`] and require the peer's to be of
/// [`TlsFiles::ca`]. Ok(None) when nothing is served nor used with TLS (the
/// paths are not checked then). Every error is kept, in this order: inner
/// ports past 65535, loopback remote devices, each pair of users of one
/// port on this host (by port), bad paths.
pub fn stunnel_conf(
    serve: &[(Port, ServeElement)],
    remote: &[RemoteElement],
    tls: &TlsFiles,
) -> Result<Option<String>, Vec<TunnelError>> {
    let tls_serve = serve.iter().filter(|(_, e)| e.transport == Transport::Tls);
    let mut servers: Vec<Port> = tls_serve.map(|(p, _)| *p).collect();
    servers.sort();
    let remotes = tls_remotes(remote);
    if servers.is_empty() && remotes.is_empty() {
        return Ok(None);
    }
    let mut errors = Vec::new();
    let overflow = servers.iter().filter(|p| inner_port(**p).is_none());
    errors.extend(overflow.map(|p| TunnelError::InnerOverflow(*p)));
    let loopback = remotes.iter().filter(|(_, e)| e.host.is_loopback());
    errors.extend(loopback.map(|(_, e)| TunnelError::Loopback((*e).clone())));
    let binds = binds(serve, &remotes);
    for (i, (p, a)) in binds.iter().enumerate() {
        let same_port = binds[i + 1..].iter().take_while(|(q, _)| q == p);
        errors.extend(same_port.filter_map(|(_, b)| clash(a, b)));
    }
    errors.extend(check_path("CA certificate", &tls.ca));
    errors.extend(check_path("certificate", &tls.cert));
    errors.extend(check_path("key", &tls.key));
    if !errors.is_empty() {
        return Err(errors);
    }

    let (ca, cert, key) = (tls.ca.display(), tls.cert.display(), tls.key.display());
    // Mutual TLS, in every section.
    let mutual = format!(
        "cert = {cert}\nkey = {key}\nCAfile = {ca}\nverifyChain = yes\nsslVersionMin = TLSv1.2\n"
    );
    let mut out = String::from(HEADER);
    for (port, inner) in servers.iter().filter_map(|p| Some((p, inner_port(*p)?))) {
        let _ = writeln!(out, "\n[serve-{port}]\naccept = :::{port}");
        let _ = writeln!(out, "connect = {INNER_HOST}:{inner}");
        out.push_str(&mutual);
        out.push_str("requireCert = yes\n");
        out.push_str(&keepalive_lines('a'));
    }
    for (alias, e) in &remotes {
        // Bare, not in brackets: see the module's text.
        let host = e.host.bare();
        let check = match &e.host {
            Host::V6(_) | Host::V4(_) => "checkIP",
            Host::Name(_) => "checkHost",
        };
        let (port, local) = (e.port, TUNNEL_HOST);
        let _ = writeln!(
            out,
            "\n[remote-{alias}]\nclient = yes\naccept = {local}:{port}"
        );
        let _ = writeln!(out, "connect = {host}:{port}");
        out.push_str(&mutual);
        let _ = writeln!(out, "{check} = {host}");
        out.push_str(&keepalive_lines('r'));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TunnelError as T;

    fn port(n: u16) -> Port {
        Port::new(n).unwrap()
    }

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    /// `"4000 4001/no"`: a device served at each port, `tls=no` for `/no`.
    fn serve(ports: &str) -> Vec<(Port, ServeElement)> {
        let one = |w: &str| match w.split_once('/') {
            Some((p, _)) => (p.parse().unwrap(), "port=1-2 tls=no".parse().unwrap()),
            None => (w.parse().unwrap(), "port=1-2".parse().unwrap()),
        };
        ports.split_whitespace().map(one).collect()
    }

    /// Elements separated by ','.
    fn remote(list: &str) -> Vec<RemoteElement> {
        list.split(',').map(|s| s.parse().unwrap()).collect()
    }

    fn conf(s: &[(Port, ServeElement)], r: &[RemoteElement], tls: &TlsFiles) -> String {
        stunnel_conf(s, r, tls).unwrap().unwrap()
    }

    /// The lines of the section `[name]`.
    fn section<'a>(conf: &'a str, name: &str) -> Vec<&'a str> {
        let start = conf.find(&format!("\n[{name}]\n")).expect(name) + 1;
        let lines = conf[start..].lines().skip(1);
        lines.take_while(|l| !l.is_empty()).collect()
    }

    fn key(path: &str) -> TlsFiles {
        let key = path.into();
        TlsFiles {
            key,
            ..TlsFiles::default()
        }
    }

    fn path(what: &'static str, p: &Path) -> TunnelError {
        let path = p.to_path_buf();
        T::Path { what, path }
    }

    #[test]
    fn inner_ports_and_files() {
        assert_eq!(inner_port(port(4000)), Some(port(14000)));
        assert_eq!(inner_port(port(55535)), Some(port(65535)));
        assert_eq!(inner_port(port(55536)), None);
        let tls = TlsFiles::default();
        assert_eq!(tls.ca, Path::new("/etc/bit-babbler/tls/ca-cert.pem"));
        assert_eq!(tls.cert, Path::new("/etc/bit-babbler/tls/host-cert.pem"));
        assert_eq!(tls.key, Path::new("/etc/bit-babbler/tls/host-key.pem"));
    }

    #[test]
    fn nothing_to_tunnel() {
        let bad = key("relative");
        assert_eq!(stunnel_conf(&[], &[], &bad), Ok(None));
        let plain = remote("exporter.lan:4000 tls=no");
        assert_eq!(stunnel_conf(&serve("4001/no"), &plain, &bad), Ok(None));
    }

    #[test]
    fn exporting_host() {
        let c = conf(&serve("4001 4002/no 4000"), &[], &TlsFiles::default());
        let s4000 = section(&c, "serve-4000").join("|");
        assert!(s4000.starts_with("accept = :::4000|connect = 127.0.0.1:14000|"));
        assert!(s4000.ends_with(
            "|verifyChain = yes|sslVersionMin = TLSv1.2|requireCert = yes|\
             socket = a:SO_KEEPALIVE=1|socket = a:TCP_KEEPIDLE=5|socket = a:TCP_KEEPINTVL=2|\
             socket = a:TCP_KEEPCNT=3"
        ));
        let s4001 = section(&c, "serve-4001").join("|");
        assert!(s4001.starts_with("accept = :::4001|connect = 127.0.0.1:14001|"));
        // By port; none for tls=no; no client.
        assert!(c.find("[serve-4000]") < c.find("[serve-4001]"));
        assert_eq!(c.matches("\n[").count(), 2, "{c}");
        assert!(!c.contains("4002") && !c.contains("client"), "{c}");
    }

    #[test]
    fn hypervisor() {
        let r = remote(
            "[fd00::7]:4002,exporter.lan:4000,10.0.0.7:4001 tls=yes,plain.lan:4003 tls=no,\
            exporter.lan:4000,Exporter.LAN:4000 tls=yes",
        );
        let c = conf(&[], &r, &TlsFiles::default());
        for (alias, host, check) in [
            ("n-exporter_lan-4000", "exporter.lan", "checkHost"),
            ("4-10_0_0_7-4001", "10.0.0.7", "checkIP"),
            ("6-fd00_0_0_0_0_0_0_7-4002", "fd00::7", "checkIP"),
        ] {
            let lines = section(&c, &format!("remote-ua-bbnet-{alias}"));
            let p = &alias[alias.len() - 4..];
            let head = format!("client = yes|accept = 127.0.0.1:{p}|connect = {host}:{p}");
            assert_eq!(lines[..3].join("|"), head);
            assert_eq!((lines.len(), lines[8]), (13, &*format!("{check} = {host}")));
            assert_eq!(
                lines[9..].join("|"),
                keepalive_lines('r').trim_end().replace('\n', "|")
            );
            assert!(lines[12] == "socket = r:TCP_KEEPCNT=3", "{lines:?}");
        }
        // One section per device, by port; none for tls=no; no server.
        assert_eq!(c.matches("\n[").count(), 3, "{c}");
        assert!(c.find("-4000]") < c.find("-4001]") && c.find("-4001]") < c.find("-4002]"));
        assert!(!c.contains("4003") && !c.contains("requireCert") && !c.contains("[fd00"));
    }

    #[test]
    fn every_clash_is_reported() {
        let s = serve("5000/no 4200 4100/no 14000/no 4000 60000/no 60001");
        let r = remote(
            "a.lan:4100,b.lan:14200,c.lan:4300,[fd00::1]:4300,localhost:4400,\
            d.lan:5000 tls=no,e.lan:15000",
        );
        let (first, second) = (ep("[fd00::1]:4300"), ep("c.lan:4300"));
        let want = vec![
            T::InnerOverflow(port(60001)),
            T::Loopback(ep("localhost:4400")),
            T::ServeRemote {
                port: port(4100),
                remote: ep("a.lan:4100"),
            },
            // By port then alias: `ua-bbnet-6-` before `ua-bbnet-n-`.
            T::RemoteRemote { first, second },
            T::ServeInner {
                serve: port(4000),
                other: port(14000),
            },
            T::RemoteInner {
                remote: ep("b.lan:14200"),
                serve: port(4200),
            },
            path("key", Path::new("bad")),
        ];
        assert_eq!(stunnel_conf(&s, &r, &key("bad")), Err(want.clone()));
        let got = stunnel_conf(&s, &r, &TlsFiles::default()).unwrap_err();
        assert_eq!(got, want[..6]);
        let ports = ["55535", "4400", "4100", "4300", "14000", "127.0.0.1:14200"];
        for (e, p) in got.iter().zip(ports) {
            assert!(e.to_string().contains(p), "{e}");
        }
    }

    #[test]
    fn local_ports_for_check() {
        let r = remote("a.lan:4002,A.lan:4002,b.lan:4003 tls=no");
        let want = [
            (4000, "serve"),
            (4001, "serve"),
            (4002, "remote"),
            (14001, "inner"),
        ];
        let want = want.map(|(p, k)| (port(p), k));
        assert_eq!(local_ports(&serve("4001 4000/no"), &r), want);
    }

    #[test]
    fn bad_paths() {
        let tls = TlsFiles {
            ca: "ca-cert.pem".into(),
            cert: "/etc/tls/host\n-cert.pem".into(),
            key: "/etc/tls/key.pem ".into(),
        };
        let got = stunnel_conf(&serve("4000"), &[], &tls).unwrap_err();
        let (ca, cert) = (
            path("CA certificate", &tls.ca),
            path("certificate", &tls.cert),
        );
        assert_eq!(got, [ca, cert, path("key", &tls.key)]);
        let msg = got[1].to_string();
        assert!(msg.contains(r"'/etc/tls/host\n-cert.pem'") && !msg.contains('\n'));
        for bad in [
            " /lead",
            "/a\u{1b}[2J",
            "/a\u{202e}b",
            "/tab\t",
            "/nbsp\u{a0}",
            "",
        ] {
            let got = stunnel_conf(&[], &remote("h.lan:1"), &key(bad));
            assert_eq!(got, Err(vec![path("key", Path::new(bad))]), "{bad:?}");
        }
        let odd = conf(&serve("4000"), &[], &key("/etc/tls/my key=#1.pem"));
        assert!(odd.contains("\nkey = /etc/tls/my key=#1.pem\n"), "{odd}");
    }

    /// Both roles at once, servers first; the exact text.
    #[test]
    fn golden_both_roles() {
        let tls = TlsFiles::in_dir(Path::new("/t"));
        let r = remote("[fd00::7]:4001,exporter.lan:4002 tls=no");
        let c = stunnel_conf(&serve("4000 4003/no"), &r, &tls);
        let want = "\
# stunnel configuration of bbvirt's remote USB devices (TLS tunnels).
# Made by `bbvirt tunnels` from vm.conf at each start (bbvirt-tunnels.service).
foreground = quiet
pid =
syslog = yes
debug = notice

[serve-4000]
accept = :::4000
connect = 127.0.0.1:14000
cert = /t/host-cert.pem
key = /t/host-key.pem
CAfile = /t/ca-cert.pem
verifyChain = yes
sslVersionMin = TLSv1.2
requireCert = yes
socket = a:SO_KEEPALIVE=1
socket = a:TCP_KEEPIDLE=5
socket = a:TCP_KEEPINTVL=2
socket = a:TCP_KEEPCNT=3

[remote-ua-bbnet-6-fd00_0_0_0_0_0_0_7-4001]
client = yes
accept = 127.0.0.1:4001
connect = fd00::7:4001
cert = /t/host-cert.pem
key = /t/host-key.pem
CAfile = /t/ca-cert.pem
verifyChain = yes
sslVersionMin = TLSv1.2
checkIP = fd00::7
socket = r:SO_KEEPALIVE=1
socket = r:TCP_KEEPIDLE=5
socket = r:TCP_KEEPINTVL=2
socket = r:TCP_KEEPCNT=3
";
        assert_eq!(c, Ok(Some(want.to_string())));
    }
}
