//! Devices on another host in `status`: on a hypervisor, each configured
//! guest's remote devices (`DOMAIN_REMOTE_`): whether its live XML holds
//! the redirdev and whether QEMU's stream is up; on an exporting host, each
//! `SERVE_USB_` device and its client ([`crate::report::served`], shown by
//! `devices` too).
//!
//! Why the sockets and not QEMU: QEMU's own view (`info usb`, through
//! libvirt's `qemu-monitor-command`) taints the domain for good. The
//! stream is a TCP connection, so the kernel's tables say whether it is up
//! ([`crate::sockets`]): a guest's QEMU (found by its `-name guest=`,
//! [`crate::holders::qemu_pids`]) holding an ESTABLISHED socket to where
//! its redirdev connects (the local tunnel `127.0.0.1:PORT`, or for
//! `tls=no` the exporting host) has its device's stream; and usbredirect
//! listening on its port, or holding a client there, says the same on the
//! exporting host. A connection says the stream is up, not that the guest
//! uses the device; no connection says the exporting host is down, serves
//! nothing (the device unplugged, `bbvirt serve` not running) or the
//! tunnel is down: QEMU keeps trying (`<reconnect>`), so it is no problem
//! of this host's (not unhealthy), as an unplugged local device is not.
//!
//! [`Net::look`] is the I/O (tables, QEMU processes, their sockets, a
//! name's addresses); the rest are pure functions of what it saw.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use crate::context::Context;
use crate::remote::element::Transport;
use crate::remote::endpoint::{Endpoint, Host};
use crate::remote::redirdev::{Redirdev, Wanted, parse_alias, wanted};
use crate::sockets::{TcpSocket, connected_to};

use super::{DomainState, RemoteState, RemoteStatus, StaleEntry, StaleKind};
use crate::report::{LiveDomain, uri_of};

/// A guest's QEMU processes: each pid with its socket inodes, or why they
/// could not be read.
pub(crate) type QemuSockets = Vec<(u32, Result<BTreeSet<u64>, String>)>;

/// What the host's sockets showed.
#[derive(Debug, Default)]
pub(crate) struct Net {
    /// Both socket tables, or why they could not be read.
    pub(crate) tables: Option<Result<Vec<TcpSocket>, String>>,
    /// By guest name: its QEMU processes.
    pub(crate) qemu: BTreeMap<String, QemuSockets>,
    /// By connect address (`HOST:PORT` as shown): its socket addresses.
    pub(crate) addrs: BTreeMap<String, Result<Vec<SocketAddr>, String>>,
}

/// Where a connect address is, as socket addresses: an address as it is,
/// a name looked up (the resolver's answer, as QEMU's).
fn addresses_of(e: &Endpoint) -> Result<Vec<SocketAddr>, String> {
    let port = e.port.get();
    match &e.host {
        Host::V4(a) => Ok(vec![SocketAddr::new(IpAddr::V4(*a), port)]),
        Host::V6(a) => Ok(vec![SocketAddr::new(IpAddr::V6(*a), port)]),
        Host::Name(n) => (n.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|err| format!("{n} does not resolve: {err}")),
    }
}

impl Net {
    /// Looks under `proc_root` at what the configured remote and served
    /// devices need: nothing when vm.conf has neither. A name is looked up
    /// (DNS, for `tls=no`) only for a redirdev a running guest holds
    /// (`seen`): a status never waits on the resolver for nothing.
    pub(crate) fn look(ctx: &Context, seen: &[LiveDomain], proc_root: &Path) -> Net {
        let config = ctx.config;
        let mut net = Net::default();
        let guests: Vec<&crate::config::DomainConf> = config
            .domains
            .iter()
            .filter(|d| !d.remote.is_empty())
            .collect();
        if guests.is_empty() && config.serve.is_empty() {
            return net;
        }
        crate::log::step("reading the TCP socket tables");
        net.tables = Some(crate::sockets::read_tables(proc_root));
        if guests.is_empty() {
            return net;
        }
        crate::log::step("looking for the guests' QEMU processes and their sockets");
        let mut pids = crate::holders::qemu_pids(proc_root);
        for d in &guests {
            let name = d.libvirt_name();
            let found = pids.remove(name).unwrap_or_default();
            let sockets = found
                .into_iter()
                .map(|pid| {
                    let inodes = crate::sockets::socket_inodes(proc_root, pid)
                        .map_err(|e| format!("pid {pid}: {e}"));
                    (pid, inodes)
                })
                .collect();
            net.qemu.insert(name.to_string(), sockets);
            let uri = uri_of(ctx, d);
            let live = seen
                .iter()
                .find(|s| s.is(&uri, name))
                .and_then(|s| s.redirdevs.as_deref())
                .unwrap_or_default();
            for w in wanted(&d.remote) {
                if !live.iter().any(|l| w.is_held_by(l)) {
                    continue;
                }
                let to = w.element.connects_to();
                net.addrs
                    .entry(to.to_string())
                    .or_insert_with(|| addresses_of(&to));
            }
        }
        net
    }
}

/// Whether the guest's QEMU holds the stream of `w` (its redirdev is
/// there): the state, the QEMU pid that holds it, and why when that could
/// not be told or there is no stream.
fn stream_of(
    w: &Wanted,
    qemu: Option<&QemuSockets>,
    tables: Option<&Result<Vec<TcpSocket>, String>>,
    addrs: Option<&Result<Vec<SocketAddr>, String>>,
) -> (RemoteState, Option<u32>, Option<String>) {
    let attached = |why: String| (RemoteState::Attached, None, Some(why));
    let tables = match tables {
        Some(Ok(t)) => t,
        Some(Err(e)) => return attached(format!("the socket tables could not be read: {e}")),
        None => return attached("the socket tables were not read".into()),
    };
    let to = match addrs {
        Some(Ok(a)) => a,
        Some(Err(e)) => return attached(e.clone()),
        None => return attached("its address was not looked up".into()),
    };
    let qemu = qemu.map(Vec::as_slice).unwrap_or_default();
    if qemu.is_empty() {
        return attached("no QEMU process of this guest was found".into());
    }
    let mut unreadable = Vec::new();
    for (pid, inodes) in qemu {
        match inodes {
            Ok(inodes) if connected_to(tables, inodes, to).is_some() => {
                return (RemoteState::Connected, Some(*pid), None);
            }
            Ok(_) => {}
            Err(e) => unreadable.push(e.clone()),
        }
    }
    if unreadable.len() == qemu.len() {
        return attached(format!(
            "its QEMU's sockets could not be read (run as root): {}",
            unreadable.join("; ")
        ));
    }
    let why = match w.element.transport {
        Transport::Tls => format!(
            "no connection to {}:{}: {} is down or serves nothing there (device unplugged, \
             bbvirt serve not running), or this host's tunnel (bbvirt tunnels) is down; \
             QEMU keeps trying",
            w.host, w.service, w.shown
        ),
        Transport::Plain => format!(
            "no connection to {}: it is down or serves nothing there (device unplugged, \
             bbvirt serve not running); QEMU keeps trying",
            w.shown
        ),
    };
    (RemoteState::Waiting, None, Some(why))
}

/// Each configured guest's remote devices, in vm.conf order.
pub(crate) fn remote_of(ctx: &Context, seen: &[LiveDomain], net: &Net) -> Vec<RemoteStatus> {
    let mut out = Vec::new();
    for d in ctx.config.domains.iter().filter(|d| !d.remote.is_empty()) {
        let uri = uri_of(ctx, d);
        let name = d.libvirt_name();
        let live = seen.iter().find(|s| s.is(&uri, name));
        for w in wanted(&d.remote) {
            let to = w.element.connects_to();
            let (state, qemu_pid, reason) = match live {
                None => (RemoteState::Unknown, None, None),
                Some(s) => match (s.state, &s.redirdevs) {
                    (DomainState::Running, Some(rds)) if rds.iter().any(|l| w.is_held_by(l)) => {
                        stream_of(
                            &w,
                            net.qemu.get(name),
                            net.tables.as_ref(),
                            net.addrs.get(&to.to_string()),
                        )
                    }
                    (DomainState::Running, Some(_)) => (RemoteState::Missing, None, None),
                    (DomainState::ShutOff | DomainState::Undefined, _) => {
                        (RemoteState::Inactive, None, None)
                    }
                    _ => (RemoteState::Unknown, None, s.error.clone()),
                },
            };
            out.push(RemoteStatus {
                domain: name.to_string(),
                uri: uri.clone(),
                endpoint: w.shown.clone(),
                tls: w.element.transport == Transport::Tls,
                alias: w.alias.clone(),
                connects_to: to.to_string(),
                state,
                qemu_pid,
                reason,
            });
        }
    }
    out
}

/// bbvirt's redirdevs that should not be where they are: in a configured
/// guest, one vm.conf does not give it (`not_assigned`) or that connects
/// elsewhere than vm.conf says (`wrong_source`); in another running guest,
/// one vm.conf gives to a configured guest (`not_assigned`; one attached
/// there by hand for a device no guest is given is fine). `sync` removes
/// the first kind; `detach HOST:PORT -D GUEST` any.
pub(crate) fn stale_redirdevs(ctx: &Context, seen: &[LiveDomain]) -> Vec<StaleEntry> {
    let config = ctx.config;
    // The guest vm.conf gives an alias to (the first), by libvirt name.
    let given_to = |alias: &str| {
        config.domains.iter().find_map(|d| {
            wanted(&d.remote)
                .iter()
                .any(|w| w.alias == alias)
                .then(|| d.libvirt_name().to_string())
        })
    };
    let mut out = Vec::new();
    for s in seen {
        let Some(live) = &s.redirdevs else { continue };
        let conf = config
            .domains
            .iter()
            .find(|d| s.configured && uri_of(ctx, d) == s.uri && d.libvirt_name() == s.name);
        let own = conf.map(|d| wanted(&d.remote)).unwrap_or_default();
        for l in live {
            let reason = match own.iter().find(|w| w.alias == l.alias) {
                Some(w) if w.is_held_by(l) => continue,
                Some(_) => StaleKind::WrongSource,
                None if s.configured => StaleKind::NotAssigned,
                None if given_to(&l.alias).is_some() => StaleKind::NotAssigned,
                None => continue,
            };
            out.push(stale_entry(s, l, reason, given_to(&l.alias)));
        }
    }
    out
}

fn stale_entry(
    s: &LiveDomain,
    l: &Redirdev,
    reason: StaleKind,
    assigned_to: Option<String>,
) -> StaleEntry {
    StaleEntry {
        domain: s.name.clone(),
        uri: s.uri.clone(),
        alias: l.alias.clone(),
        serial: None,
        bus: None,
        dev: None,
        reason,
        assigned_to,
        endpoint: parse_alias(&l.alias).map(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::TcpState;
    use crate::sockets::test_socket as sock;

    fn w(element: &str) -> Wanted {
        wanted(&[element.parse().unwrap()]).remove(0)
    }

    #[test]
    fn the_stream_by_the_guests_qemu_sockets() {
        let tables = Ok(vec![
            sock(
                "127.0.0.1:50000",
                "127.0.0.1:4000",
                TcpState::Established,
                7,
            ),
            sock("10.0.0.2:50001", "10.0.0.7:4001", TcpState::Established, 8),
            sock("127.0.0.1:50002", "127.0.0.1:4002", TcpState::Other(2), 9),
        ]);
        let tls = w("zigbee.lan:4000");
        let addr = |s: &str| Ok(vec![s.parse().unwrap()]);
        let qemu: QemuSockets = vec![(55, Err("pid 55: gone".into())), (90, Ok([7, 8, 9].into()))];
        let got = stream_of(
            &tls,
            Some(&qemu),
            Some(&tables),
            Some(&addr("127.0.0.1:4000")),
        );
        assert_eq!(got, (RemoteState::Connected, Some(90), None));
        let plain = w("10.0.0.7:4001 tls=no");
        let got = stream_of(
            &plain,
            Some(&qemu),
            Some(&tables),
            Some(&addr("10.0.0.7:4001")),
        );
        assert_eq!(got.0, RemoteState::Connected);
        // SYN_SENT is no stream.
        let other = w("h.lan:4002");
        let got = stream_of(
            &other,
            Some(&qemu),
            Some(&tables),
            Some(&addr("127.0.0.1:4002")),
        );
        assert_eq!(got.0, RemoteState::Waiting);
        assert!(got.2.unwrap().contains("bbvirt tunnels"));
        // Another process's socket to the same place is not the guest's.
        let other_qemu: QemuSockets = vec![(91, Ok([1].into()))];
        let got = stream_of(
            &tls,
            Some(&other_qemu),
            Some(&tables),
            Some(&addr("127.0.0.1:4000")),
        );
        assert_eq!(got.0, RemoteState::Waiting);
        // What cannot be told is said, never guessed.
        for (qemu, tables, addrs, why) in [
            (
                Some(vec![(5, Err("pid 5: denied".to_string()))]),
                Some(tables.clone()),
                Some(addr("127.0.0.1:4000")),
                "run as root",
            ),
            (
                Some(vec![]),
                Some(tables.clone()),
                Some(addr("127.0.0.1:4000")),
                "no QEMU process",
            ),
            (
                Some(qemu.clone()),
                Some(Err("cannot read /proc/net/tcp".to_string())),
                Some(addr("127.0.0.1:4000")),
                "cannot read /proc/net/tcp",
            ),
            (
                Some(qemu.clone()),
                Some(tables.clone()),
                Some(Err("x.lan does not resolve".to_string())),
                "does not resolve",
            ),
        ] {
            let got = stream_of(&tls, qemu.as_ref(), tables.as_ref(), addrs.as_ref());
            assert_eq!(got.0, RemoteState::Attached, "{why}");
            assert!(got.2.as_deref().unwrap().contains(why), "{got:?}");
        }
    }

    #[test]
    fn addresses_are_taken_as_they_are() {
        let of = |s: &str| addresses_of(&s.parse().unwrap()).unwrap();
        assert_eq!(of("10.0.0.7:4001"), ["10.0.0.7:4001".parse().unwrap()]);
        assert_eq!(of("[fd00::7]:4002"), ["[fd00::7]:4002".parse().unwrap()]);
    }
}
