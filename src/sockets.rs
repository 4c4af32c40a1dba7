//! TCP sockets as the kernel lists them (`/proc/net/tcp`, `/proc/net/tcp6`)
//! and the sockets a process holds (`/proc/PID/fd/N` -> `socket:[INODE]`).
//!
//! Why: `status` tells whether a remote device's stream is up without
//! asking QEMU. QMP's `human-monitor-command` through libvirt
//! (`qemu-monitor-command`) marks the domain tainted for good, and the
//! stream is a plain TCP connection anyway: the guest's QEMU holds an
//! ESTABLISHED socket to where its `<redirdev>` connects, and on an
//! exporting host usbredirect listens on its port and holds its client's
//! socket there. So the kernel's socket tables answer, read like any file.
//!
//! How: [`parse_table`] is pure (fixture tests, IPv4, IPv6 and IPv4-mapped
//! addresses); [`read_tables`] and [`socket_inodes`] are the thin I/O over a
//! proc root (`$BBVIRT_PROC_ROOT`, [`crate::holders::proc_root`]), so the
//! integration tests use fixture trees. The tables are those of the
//! reader's network namespace: the usual case, where bbvirt, QEMU and
//! usbredirect share the host's.
//!
//! The kernel writes each address as the words of its network-order bytes
//! printed with `%08X` in the host's byte order, and each port as a number:
//! `0100007F:0FA0` is 127.0.0.1:4000 on a little-endian host.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// A TCP state of the tables (`include/net/tcp_states.h`) that bbvirt tells
/// apart; every other is [`TcpState::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Established,
    Listen,
    Other(u8),
}

impl TcpState {
    fn from_code(code: u8) -> TcpState {
        match code {
            0x01 => TcpState::Established,
            0x0A => TcpState::Listen,
            other => TcpState::Other(other),
        }
    }
}

/// One line of a socket table. Addresses are unmapped: an IPv4-mapped IPv6
/// address (`::ffff:127.0.0.1`, an IPv6 socket talking IPv4) is its IPv4
/// address, so one comparison serves both tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    pub inode: u64,
}

/// Why a line of a socket table could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the socket table is not understood: '{}'", crate::text::escape_controls(.text))]
pub struct TableError {
    pub line: usize,
    pub text: String,
}

/// An address of a table: 8 hex digits (IPv4) or 32 (IPv6), each group of
/// 8 a word of the address's bytes in the host's byte order.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let words: Vec<[u8; 4]> = (0..hex.len() / 8)
        .map(|i| {
            let w = hex.get(i * 8..i * 8 + 8)?;
            let w = u32::from_str_radix(w, 16).ok()?;
            Some(w.to_ne_bytes())
        })
        .collect::<Option<_>>()?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match (hex.len(), words.as_slice()) {
        (8, [w]) => Some(IpAddr::V4(Ipv4Addr::from(*w))),
        (32, ws) => {
            let bytes: [u8; 16] = ws.concat().try_into().ok()?;
            let v6 = Ipv6Addr::from(bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// `ADDR:PORT` of a table, the port 4 hex digits.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    Some(SocketAddr::new(
        parse_ip(ip)?,
        u16::from_str_radix(port, 16).ok()?,
    ))
}

/// The sockets of the text of `/proc/net/tcp` or `/proc/net/tcp6`: a header
/// line, then `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`
/// per socket. Blank lines are skipped; any other line that does not read
/// is an error naming it (1-based, the header is line 1).
pub fn parse_table(text: &str) -> Result<Vec<TcpSocket>, TableError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        if words.is_empty() || (i == 0 && words[0] == "sl") {
            continue;
        }
        let socket = (|| {
            if !words[0].ends_with(':') || words.len() < 10 {
                return None;
            }
            Some(TcpSocket {
                local: parse_addr(words[1])?,
                remote: parse_addr(words[2])?,
                state: TcpState::from_code(u8::from_str_radix(words[3], 16).ok()?),
                inode: words[9].parse().ok()?,
            })
        })();
        out.push(socket.ok_or_else(|| TableError {
            line: i + 1,
            text: line.trim().to_string(),
        })?);
    }
    Ok(out)
}

/// The inode of a descriptor's link target `socket:[INODE]`; None for any
/// other target.
pub fn socket_inode(link: &str) -> Option<u64> {
    let n = link.strip_prefix("socket:[")?.strip_suffix(']')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// The IP address as the tables give it: IPv4-mapped IPv6 as IPv4.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The first ESTABLISHED socket among `inodes` (a process's sockets) whose
/// far end is one of `to` (compared unmapped).
pub fn connected_to<'s>(
    sockets: &'s [TcpSocket],
    inodes: &BTreeSet<u64>,
    to: &[SocketAddr],
) -> Option<&'s TcpSocket> {
    sockets.iter().find(|s| {
        s.state == TcpState::Established
            && inodes.contains(&s.inode)
            && to
                .iter()
                .any(|t| t.port() == s.remote.port() && unmapped(t.ip()) == s.remote.ip())
    })
}

/// The far ends of the ESTABLISHED sockets among `inodes` (a process's,
/// [`socket_inodes`]) on local port `port`: the clients it serves there
/// (`bbvirt serve` watches usbredirect's).
pub fn clients(sockets: &[TcpSocket], inodes: &BTreeSet<u64>, port: u16) -> Vec<SocketAddr> {
    sockets
        .iter()
        .filter(|s| {
            s.state == TcpState::Established && s.local.port() == port && inodes.contains(&s.inode)
        })
        .map(|s| s.remote)
        .collect()
}

/// Who is on the local TCP port `port` of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPort {
    /// An ESTABLISHED socket on it (accepted there), with its far end.
    Connected(SocketAddr),
    /// A listening socket, no established one.
    Listening,
    /// Neither.
    Nothing,
}

/// Who is on local port `port` in `sockets` (the host's tables).
pub fn on_port(sockets: &[TcpSocket], port: u16) -> OnPort {
    let here = |state| {
        sockets
            .iter()
            .find(move |s| s.local.port() == port && s.state == state)
    };
    match (here(TcpState::Established), here(TcpState::Listen)) {
        (Some(s), _) => OnPort::Connected(s.remote),
        (None, Some(_)) => OnPort::Listening,
        (None, None) => OnPort::Nothing,
    }
}

/// Both socket tables under `proc_root` (`net/tcp`, then `net/tcp6`; a
/// missing `tcp6` is a host without IPv6, not an error).
pub fn read_tables(proc_root: &Path) -> Result<Vec<TcpSocket>, String> {
    let mut out = Vec::new();
    for (name, required) in [("tcp", true), ("tcp6", false)] {
        let path = proc_root.join("net").join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                out.extend(parse_table(&text).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    Ok(out)
}

/// The inodes of the sockets process `pid` holds (`/proc/PID/fd`); an error
/// when its descriptors cannot be listed (not root, or it is gone).
pub fn socket_inodes(proc_root: &Path, pid: u32) -> std::io::Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for fd in std::fs::read_dir(proc_root.join(pid.to_string()).join("fd"))?.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path())
            && let Some(inode) = target.to_str().and_then(socket_inode)
        {
            out.insert(inode);
        }
    }
    Ok(out)
}

/// A socket for tests, its addresses written `IP:PORT`.
#[cfg(test)]
pub(crate) fn test_socket(local: &str, remote: &str, state: TcpState, inode: u64) -> TcpSocket {
    TcpSocket {
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        state,
        inode,
    }
}

/// A program listening on a TCP port of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub port: u16,
    pub pid: u32,
    /// Its `/proc/PID/comm`.
    pub name: String,
}

/// The listening sockets of `sockets` whose owners hold one of them among
/// `owners` (pid, name and socket inodes of each process): who listens
/// where. A listening socket no process of `owners` holds is left out.
pub fn listeners(sockets: &[TcpSocket], owners: &[(u32, String, BTreeSet<u64>)]) -> Vec<Listener> {
    let mut out = Vec::new();
    for s in sockets.iter().filter(|s| s.state == TcpState::Listen) {
        for (pid, name, inodes) in owners {
            let l = Listener {
                port: s.local.port(),
                pid: *pid,
                name: name.clone(),
            };
            if inodes.contains(&s.inode) && !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

/// Every process under `proc_root` that holds a socket, with its name and
/// socket inodes (processes whose descriptors cannot be read are left out:
/// without root, most).
pub fn socket_owners(proc_root: &Path) -> Vec<(u32, String, BTreeSet<u64>)> {
    let Some(processes) = crate::holders::processes(proc_root) else {
        return Vec::new();
    };
    processes
        .filter_map(|(pid, entry)| {
            let inodes = socket_inodes(proc_root, pid)
                .ok()
                .filter(|i| !i.is_empty())?;
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|s| s.trim_end_matches('\n').to_string())
                .unwrap_or_else(|_| "?".to_string());
            Some((pid, name, inodes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As a little-endian host writes them (the byte order of the words).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:36B0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:0FA0 01 00000000:00000000 00:00000000 00000000   64055        0 777 1 0000000000000000 20 4 30 10 -1
   2: 0700000A:0FA1 0900000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:9C40 0100007F:0FA2 06 00000000:00000000 03:00000F6B 00000000     0        0 0 3 0000000000000000
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0FA0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 900 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:D432 0000000000000000FFFF00000100007F:0FA3 01 00000000:00000000 00:00000000 00000000     0        0 901 1 0000000000000000 20 4 30 10 -1
   2: 000080FE00000000000000000100000000:0FA0 000080FE000000000000000002000000:C351 01 00000000:00000000 00:00000000 00000000     0        0 902 1 0000000000000000 20 4 30 10 -1
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn listeners_are_the_listening_sockets_with_their_owners() {
        let sockets = parse_table(TCP).unwrap();
        let owners = vec![
            (11, "usbredirect".to_string(), BTreeSet::from([23456, 5])),
            (12, "qemu".to_string(), BTreeSet::from([777])),
        ];
        assert_eq!(
            listeners(&sockets, &owners),
            [Listener {
                port: 14000,
                pid: 11,
                name: "usbredirect".into()
            }],
            "the established socket of pid 12 is no listener"
        );
        assert!(listeners(&sockets, &[]).is_empty());
    }

    #[test]
    fn ipv4_table() {
        let t = parse_table(TCP).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[0].local, sa("127.0.0.1:14000"));
        assert_eq!(t[0].state, TcpState::Listen);
        assert_eq!(t[0].inode, 23456);
        assert_eq!(
            (t[1].local, t[1].remote, t[1].state),
            (
                sa("127.0.0.1:54321"),
                sa("127.0.0.1:4000"),
                TcpState::Established
            )
        );
        assert_eq!(t[2].remote, sa("10.0.0.9:50000"));
        assert_eq!(t[3].state, TcpState::Other(6), "TIME_WAIT");
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_and_mapped() {
        let bad = parse_table(TCP6).unwrap_err();
        assert_eq!(bad.line, 4, "a 34-digit address is no address");
        let good: String = TCP6.lines().take(3).map(|l| format!("{l}\n")).collect();
        let good = format!(
            "{good}   2: 000080FE000000000000000001000000:0FA0 000080FE000000000000000002000000:C351 01 0 0 0 0 0 902\n"
        );
        let t = parse_table(&good).unwrap();
        assert_eq!(t[0].local, sa("[::]:4000"));
        assert_eq!(t[0].state, TcpState::Listen);
        // An IPv6 socket talking IPv4 reads as IPv4.
        assert_eq!(t[1].remote, sa("127.0.0.1:4003"));
        assert_eq!(t[2].local, sa("[fe80::1]:4000"));
        assert_eq!(t[2].remote, sa("[fe80::2]:50001"));
    }

    #[test]
    fn garbage_is_an_error_naming_its_line_never_a_panic() {
        for bad in [
            "x",
            "0: 0100007F 00000000:0000 0A 0 0 0 0 0 1",
            "0: 0100007F:36B0 00000000:0000 ZZ 0 0 0 0 0 1",
            "0: 0100007F:36B0 00000000:0000 0A 0 0 0 0 0 -1",
            "0: 0100007G:36B0 00000000:0000 0A 0 0 0 0 0 1",
            "0: 0100007F:36B 00000000:0000 0A 0 0 0 0 0 1",
            "0: 0100007F:36B0 00000000:0000 0A 0 0 0 0",
            "0: 0100007F:36B0 0000:0000 0A 0 0 0 0 0 1",
            "0: +100007F:36B0 00000000:0000 0A 0 0 0 0 0 1",
            "0: é100007F:36B0 00000000:0000 0A 0 0 0 0 0 1",
        ] {
            let text = format!("  sl  local_address\n{bad}\n");
            let e = parse_table(&text).unwrap_err();
            assert_eq!(e.line, 2, "{bad}");
            assert!(e.to_string().contains("line 2"), "{e}");
        }
        assert_eq!(parse_table("").unwrap(), []);
        assert_eq!(parse_table("  sl  local\n\n").unwrap(), []);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        for other in [
            "socket:[]",
            "socket:[1x]",
            "/dev/bus/usb/001/002",
            "pipe:[5]",
            "socket:[99999999999999999999999]",
        ] {
            assert_eq!(socket_inode(other), None, "{other}");
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn who_is_connected_and_who_listens() {
        let mut t = parse_table(TCP).unwrap();
        let inodes: BTreeSet<u64> = [777, 901].into();
        let to = |s: &str| [sa(s)];
        assert_eq!(
            connected_to(&t, &inodes, &to("127.0.0.1:4000")).map(|s| s.inode),
            Some(777)
        );
        assert!(connected_to(&t, &inodes, &to("127.0.0.1:4001")).is_none());
        assert!(
            connected_to(&t, &[778].into(), &to("10.0.0.9:50000")).is_some(),
            "by far end"
        );
        assert!(
            connected_to(&t, &BTreeSet::new(), &to("127.0.0.1:4000")).is_none(),
            "another process's socket"
        );
        let mut good6: String = TCP6.lines().take(3).map(|l| format!("{l}\n")).collect();
        good6.push('\n');
        t.extend(parse_table(&good6).unwrap());
        // A target written as a mapped address matches too.
        assert!(connected_to(&t, &inodes, &to("[::ffff:127.0.0.1]:4003")).is_some());
        assert_eq!(on_port(&t, 14000), OnPort::Listening);
        assert_eq!(on_port(&t, 4001), OnPort::Connected(sa("10.0.0.9:50000")));
        assert_eq!(on_port(&t, 4000), OnPort::Listening, "[::]:4000");
        assert_eq!(on_port(&t, 40000), OnPort::Nothing, "TIME_WAIT only");
        assert_eq!(on_port(&t, 5), OnPort::Nothing);
    }

    #[test]
    fn tables_and_descriptors_of_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(read_tables(root).unwrap_err().contains("net/tcp"));
        std::fs::create_dir_all(root.join("net")).unwrap();
        std::fs::write(root.join("net/tcp"), "  sl  local\n").unwrap();
        assert_eq!(read_tables(root).unwrap(), [], "no tcp6: no IPv6");
        std::fs::write(root.join("net/tcp6"), "  sl\nbad line\n").unwrap();
        assert!(read_tables(root).unwrap_err().contains("tcp6: line 2"));
        let fd = root.join("42/fd");
        std::fs::create_dir_all(&fd).unwrap();
        std::os::unix::fs::symlink("socket:[777]", fd.join("3")).unwrap();
        std::os::unix::fs::symlink("/dev/null", fd.join("4")).unwrap();
        assert_eq!(socket_inodes(root, 42).unwrap(), [777].into());
        assert!(socket_inodes(root, 43).is_err());
    }
}
