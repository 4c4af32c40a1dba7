//! `bbvirt serve PORT`: an exporting host serves the device of
//! `SERVE_USB_<PORT>` over the network with `usbredirect`, for as long as
//! it runs (`bbvirt-serve@PORT.service`, one unit per served device).
//!
//! Why a supervisor of its own instead of usbredirect under systemd alone
//! (what the lab saw of usbredirect 0.15, [`crate::remote`]):
//! - usbredirect names its device by bus and device number, which change
//!   at every replug; bbvirt finds the device by the element (serial,
//!   port, id: the rules of [`crate::selector`], twins by port), and starts
//!   usbredirect at its current address;
//! - an unplugged device is no unplug for the guest: usbredirect goes on
//!   running while its device is gone, and the guest keeps a dead device.
//!   bbvirt watches the device and stops usbredirect when it goes, which
//!   closes the connection: the guest sees the unplug, and its
//!   `<reconnect>` brings the device back once it is served again;
//! - usbredirect exits after each client (status 0), and with status 0 when
//!   it cannot open its device: restarting on its exit status alone would
//!   spin. bbvirt starts it again only while the device is present, and
//!   waits longer (up to [`MAX_BACKOFF`]) each time it ends within
//!   [`SHORT_LIFE`] of its start.
//!
//! With TLS (the default), usbredirect listens on the loopback at the
//! inner port ([`crate::remote::tunnel::inner_port`]) and stunnel
//! (`bbvirt tunnels`) takes the clients on PORT; with `tls=no` usbredirect
//! itself listens on every IPv4 address at PORT. The device is polled every
//! [`POLL`]: plugged in, it is served within about that time.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::remote::element::{ServeElement, Transport};
use crate::remote::endpoint::Port;
use crate::sysfs::{Sysfs, UsbDevice};
use crate::{info, note, warn};

/// usbredirect, by its absolute path (never looked up in `PATH`).
pub const USBREDIRECT: &str = "/usr/bin/usbredirect";

/// How often the device's presence is looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// A usbredirect that ends sooner than this after its start makes the next
/// start wait longer (doubling from [`POLL`] up to [`MAX_BACKOFF`]).
pub const SHORT_LIFE: Duration = Duration::from_secs(5);

/// The longest wait between two starts of usbredirect.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why `bbvirt serve` cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path} has no SERVE_USB_{port}: nothing to serve on port {port}")]
    NotConfigured { path: String, port: Port },
    #[error(
        "SERVE_USB_{port}: its inner port (PORT + {}) passes 65535: choose a port up to {}",
        crate::remote::tunnel::INNER_OFFSET,
        u16::MAX - crate::remote::tunnel::INNER_OFFSET
    )]
    NoInnerPort { port: Port },
    #[error("cannot run {USBREDIRECT}")]
    Spawn(#[source] std::io::Error),
}

/// usbredirect's command line for the device at `busnum`-`devnum`, listening
/// on `listen` (an IP literal and a port, as usbredirect 0.15 takes them).
pub fn usbredirect_argv(busnum: u32, devnum: u32, listen: &str) -> Vec<OsString> {
    [
        DEVICE_OPTION,
        &format!("{busnum}-{devnum}"),
        AS_OPTION,
        listen,
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// usbredirect's option naming the device (`BUS-DEV`).
const DEVICE_OPTION: &str = "--device";
/// usbredirect's option that makes it a server (`ADDRESS:PORT`).
const AS_OPTION: &str = "--as";

/// The options [`usbredirect_argv`] needs that a usbredirect whose
/// `--help` printed `help` lacks: "recent enough" is having them all
/// (usbredirect has no `--version`; Debian 12's 0.13 has both, and is the
/// oldest seen working, in the lab).
pub fn missing_options(help: &str) -> Vec<&'static str> {
    [DEVICE_OPTION, AS_OPTION]
        .into_iter()
        .filter(|o| {
            !help
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                .any(|w| w == *o)
        })
        .collect()
}

/// The port usbredirect listens on for the device served at `port`: the
/// inner port behind the TLS tunnel, or `port` itself for `tls=no`
/// (`status` looks for its client there).
pub fn listen_port(port: Port, element: &ServeElement) -> Result<Port, ServeError> {
    match element.transport {
        Transport::Tls => {
            crate::remote::tunnel::inner_port(port).ok_or(ServeError::NoInnerPort { port })
        }
        Transport::Plain => Ok(port),
    }
}

/// Where usbredirect listens for the device served at `port`: the
/// loopback behind the tunnel, every IPv4 address for `tls=no`.
pub fn listen_address(port: Port, element: &ServeElement) -> Result<String, ServeError> {
    let at = listen_port(port, element)?;
    Ok(match element.transport {
        Transport::Tls => format!("{}:{at}", crate::remote::tunnel::INNER_HOST),
        Transport::Plain => format!("0.0.0.0:{at}"),
    })
}

/// The present device `port`'s element selects, by the rules every
/// element follows ([`crate::selector::assign`]) among all of this host's
/// served elements: the most specific first, one device each.
pub fn device_for(config: &Config, port: Port, present: &[UsbDevice]) -> Option<UsbDevice> {
    let e = config.serve.iter().position(|(p, _)| *p == port)?;
    let selectors: Vec<_> = config
        .serve
        .iter()
        .map(|(_, s)| s.selector.clone())
        .collect();
    let candidates: Vec<_> = present.iter().map(UsbDevice::candidate).collect();
    let assignment = crate::selector::assign(&selectors, &candidates);
    assignment
        .owner
        .iter()
        .position(|o| *o == Some(e))
        .map(|d| present[d].clone())
}

/// Serves `port`'s device until killed: see the module doc.
pub fn run(config: &Config, sysfs: &Sysfs, port: Port) -> Result<(), ServeError> {
    let Some((_, element)) = config.serve.iter().find(|(p, _)| *p == port) else {
        return Err(ServeError::NotConfigured {
            path: config.path.display().to_string(),
            port,
        });
    };
    let listen = listen_address(port, element)?;
    let mut backoff = POLL;
    let mut said_absent = false;
    loop {
        let present = sysfs.scan().map(|s| s.usb).unwrap_or_default();
        let Some(dev) = device_for(config, port, &present) else {
            if !said_absent {
                note!("SERVE_USB_{port}: no such device plugged in: waiting for it");
                said_absent = true;
            }
            std::thread::sleep(POLL);
            continue;
        };
        said_absent = false;
        let started = Instant::now();
        let mut child = spawn(&dev, &listen)?;
        info!("serving {} on port {port} ({listen})", dev.describe());
        let end = watch(sysfs, &dev, &mut child, listen_port(port, element)?.get());
        let lived = started.elapsed();
        match end {
            End::DeviceGone => info!(
                "{} is gone: stopped serving it on port {port}",
                dev.describe()
            ),
            End::Exited => note!(
                "usbredirect for {} ended after {} s (its client went)",
                dev.describe(),
                lived.as_secs()
            ),
            End::ClientGone(c) => note!(
                "usbredirect for {}: its client {c} went after {} s and it went on: \
                 stopped it, to serve the next one",
                dev.describe(),
                lived.as_secs()
            ),
        }
        backoff = if lived < SHORT_LIFE {
            (backoff * 2).min(MAX_BACKOFF)
        } else {
            POLL
        };
        std::thread::sleep(backoff);
    }
}

/// Starts usbredirect for `dev`; it dies with bbvirt (parent-death signal).
fn spawn(dev: &UsbDevice, listen: &str) -> Result<Child, ServeError> {
    let mut cmd = Command::new(USBREDIRECT);
    cmd.args(usbredirect_argv(dev.busnum, dev.devnum, listen));
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(ServeError::Spawn)
}

/// Why a usbredirect stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its device went; bbvirt stopped it.
    DeviceGone,
    /// It ended by itself (after its client, as 0.15 does).
    Exited,
    /// Its client's connection went and it did not end; bbvirt stopped it.
    ClientGone(SocketAddr),
}

/// Whether the client usbredirect served (`first`, the first one seen) is
/// gone from `now` (its clients at this look).
fn client_gone(first: Option<SocketAddr>, now: &[SocketAddr]) -> Option<SocketAddr> {
    first.filter(|c| !now.contains(c))
}

/// usbredirect's clients now, from the socket tables; None when they
/// cannot be read (no decision is taken on that).
fn clients_of(child: &Child, port: u16) -> Option<Vec<SocketAddr>> {
    let proc_root = crate::holders::proc_root();
    let sockets = crate::sockets::read_tables(&proc_root).ok()?;
    let inodes = crate::sockets::socket_inodes(&proc_root, child.id()).ok()?;
    Some(crate::sockets::clients(&sockets, &inodes, port))
}

/// Waits while usbredirect runs, its device stays at its address and its
/// first client stays connected. usbredirect serves one client; 0.15 ends
/// when it goes, but 0.13 (Debian 12) was seen in the lab going on without
/// serving the next one when a second connection waited as the first went
/// (scenario 71, the link down): so bbvirt stops it then, and the next
/// client gets a fresh one.
fn watch(sysfs: &Sysfs, dev: &UsbDevice, child: &mut Child, port: u16) -> End {
    let mut first: Option<SocketAddr> = None;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return End::Exited,
            Ok(None) => {}
            Err(e) => warn!("waiting for usbredirect: {e}"),
        }
        let here = sysfs
            .scan()
            .map(|s| {
                s.usb.iter().any(|d| {
                    d.name == dev.name
                        && d.busnum == dev.busnum
                        && d.devnum == dev.devnum
                        && d.id == dev.id
                        && d.serial == dev.serial
                })
            })
            .unwrap_or(false);
        if !here {
            stop(child);
            return End::DeviceGone;
        }
        if let Some(now) = clients_of(child, port) {
            if let Some(c) = client_gone(first, &now) {
                stop(child);
                return End::ClientGone(c);
            }
            first = first.or_else(|| now.first().copied());
        }
        std::thread::sleep(POLL);
    }
}

/// SIGTERM, then SIGKILL after 2 s.
fn stop(child: &mut Child) {
    // SAFETY: a signal to our own child, by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_first_client_gone_is_the_end_of_a_usbredirect() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:36B0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10 1 0\n\
           1: 0100007F:36B0 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 11 1 0\n\
           2: 0100007F:36B0 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 12 1 0\n\
           3: 0100007F:0FA0 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 13 1 0\n";
        let sockets = crate::sockets::parse_table(table).unwrap();
        let mine = std::collections::BTreeSet::from([10, 11, 13]);
        // Only its own ESTABLISHED sockets on its port: 127.0.0.1:14000's
        // client at port 50000 (inode 12 is another process's, 13 another port).
        let now = crate::sockets::clients(&sockets, &mine, 14000);
        assert_eq!(now, ["127.0.0.1:50000".parse::<SocketAddr>().unwrap()]);
        let c = now[0];
        assert_eq!(client_gone(None, &now), None, "no client seen yet");
        assert_eq!(client_gone(Some(c), &now), None);
        let other: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        assert_eq!(client_gone(Some(c), &[other]), Some(c), "another one now");
        assert_eq!(client_gone(Some(c), &[]), Some(c));
    }

    #[test]
    fn recent_enough_is_having_the_options_bbvirt_uses() {
        // Debian 12's usbredirect 0.13 --help (abridged).
        let v013 = "Usage:\n  usbredirect [OPTION?]\n\nApplication Options:\n  \
                    --device            Local USB device to be redirected\n  \
                    --to                Client URI to connect to\n  \
                    --as                Server URI to be run\n";
        assert!(missing_options(v013).is_empty());
        let client_only = "Application Options:\n  --device  d\n  --to  Client URI\n";
        assert_eq!(missing_options(client_only), ["--as"]);
        // A word that merely contains an option does not count.
        assert_eq!(missing_options("--devices --ask"), ["--device", "--as"]);
        assert_eq!(missing_options(""), ["--device", "--as"]);
    }

    use super::*;

    fn conf(text: &str) -> Config {
        crate::config::parse_native(std::path::Path::new("/t/vm.conf"), text).unwrap()
    }

    fn dev(name: &str, serial: Option<&str>, busnum: u32, devnum: u32) -> UsbDevice {
        UsbDevice {
            name: name.into(),
            id: "1a86:7523".parse().unwrap(),
            serial: serial.map(Into::into),
            busnum,
            devnum,
            ports: name
                .split('-')
                .nth(1)
                .unwrap()
                .split('.')
                .map(|p| p.parse().unwrap())
                .collect(),
            path: format!("/sys/bus/usb/devices/{name}").into(),
        }
    }

    #[test]
    fn the_command_line_and_where_it_listens() {
        let argv = usbredirect_argv(3, 12, "127.0.0.1:14000");
        assert_eq!(argv, ["--device", "3-12", "--as", "127.0.0.1:14000"]);
        let c = conf(
            "SERVE_USB_4000=\"id=1a86:7523\"\nSERVE_USB_4001=\"id=1a86:7523 tls=no\"\nSERVE_USB_60000=\"port=1-1\"\n",
        );
        let at = |i: usize| listen_address(c.serve[i].0, &c.serve[i].1).map_err(|e| e.to_string());
        assert_eq!(at(0).unwrap(), "127.0.0.1:14000");
        assert_eq!(at(1).unwrap(), "0.0.0.0:4001");
        assert!(at(2).unwrap_err().contains("passes 65535"), "{:?}", at(2));
    }

    #[test]
    fn twins_are_told_apart_by_port_and_the_specific_element_wins() {
        let c = conf(
            "SERVE_USB_4000=\"id=1a86:7523 port=1-2\"\n\
             SERVE_USB_4001=\"id=1a86:7523\"\n\
             SERVE_USB_4002=\"id=1a86:7523 serial=ZB9\"\n",
        );
        let present = [
            dev("1-1", None, 1, 5),
            dev("1-2", None, 1, 7),
            dev("2-1", Some("ZB9"), 2, 3),
        ];
        let at = |p: u16| device_for(&c, Port::new(p).unwrap(), &present).map(|d| d.name);
        assert_eq!(at(4000).as_deref(), Some("1-2"));
        assert_eq!(at(4002).as_deref(), Some("2-1"));
        assert_eq!(
            at(4001).as_deref(),
            Some("1-1"),
            "the one left, first in port order"
        );
        assert_eq!(at(4003), None, "no such element");
        // unplugged: nothing is served
        assert_eq!(
            device_for(&c, Port::new(4000).unwrap(), &present[..1]),
            None
        );
    }
}
