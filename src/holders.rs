//! Which host processes hold a USB device node open.
//!
//! Why: a device that a process on the host holds through libusb (seedd,
//! most often, started before the guest wanted the device) is one that QEMU
//! cannot take cleanly. `status` and `devices` say who holds each device
//! ([`HeldBy`], here below both reports so that neither depends on the
//! other).
//!
//! How: a holder is a process with an open file descriptor on the device's
//! node, i.e. a link `/proc/PID/fd/N` that reads back as
//! `/dev/bus/usb/BBB/DDD`; its name is `/proc/PID/comm`. One pass over
//! `/proc` answers for every device at once. Processes that vanish during
//! the pass, or whose descriptors this user may not read, are skipped and
//! counted, so a report made without root can say it may be incomplete.
//! The proc root is a parameter (`$BBVIRT_PROC_ROOT`, default `/proc`), like
//! the sysfs root, so tests use fixture trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `$BBVIRT_PROC_ROOT`, or `/proc`.
pub fn proc_root() -> PathBuf {
    std::env::var_os("BBVIRT_PROC_ROOT").map_or_else(|| PathBuf::from("/proc"), PathBuf::from)
}

/// The device node of the USB device at `bus`:`dev`, as udev names it.
pub fn device_node(bus: u32, dev: u32) -> String {
    format!("/dev/bus/usb/{bus:03}/{dev:03}")
}

/// A process holding a device node open.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/PID/comm`, without its newline ("?" when unreadable).
    pub name: String,
    /// The guest, when the process is a QEMU that libvirt started for it.
    pub guest: Option<String>,
}

/// The guest name in a QEMU command line (`-name guest=NAME,...`, commas in
/// NAME doubled), or None when the process is no libvirt-started QEMU.
pub fn qemu_guest(cmdline: &[u8]) -> Option<String> {
    let mut args = cmdline.split(|&b| b == 0);
    args.by_ref().find(|a| *a == b"-name")?;
    let value = String::from_utf8_lossy(args.next()?).into_owned();
    let mut name = String::new();
    let mut chars = value.strip_prefix("guest=")?.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                name.push(',');
            }
            ',' => break,
            c => name.push(c),
        }
    }
    (!name.is_empty()).then_some(name)
}

/// What one pass over `/proc` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holders {
    /// Device node -> the processes holding it, by pid, each once.
    pub by_node: BTreeMap<String, Vec<Holder>>,
    /// Processes whose descriptors could not be read (permission, or gone).
    pub unreadable: usize,
}

impl Holders {
    /// The holders of `node` (none when nobody holds it).
    pub fn of(&self, node: &str) -> &[Holder] {
        self.by_node.get(node).map_or(&[], Vec::as_slice)
    }
}

/// The processes under `proc_root`: each pid and its directory entry;
/// None when `proc_root` cannot be read.
pub(crate) fn processes(
    proc_root: &Path,
) -> Option<impl Iterator<Item = (u32, std::fs::DirEntry)>> {
    let entries = std::fs::read_dir(proc_root).ok()?;
    Some(entries.flatten().filter_map(|entry| {
        let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
        Some((pid, entry))
    }))
}

/// Finds the holders of the given device nodes under `proc_root`.
pub fn scan(proc_root: &Path, nodes: &[String]) -> Holders {
    let mut found = Holders::default();
    if nodes.is_empty() {
        return found;
    }
    let Some(processes) = processes(proc_root) else {
        return found;
    };
    for (pid, entry) in processes {
        let fd_dir = entry.path().join("fd");
        let Ok(fds) = std::fs::read_dir(&fd_dir) else {
            found.unreadable += 1;
            continue;
        };
        let mut held: Vec<&String> = Vec::new();
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(node) = nodes.iter().find(|n| Path::new(n.as_str()) == target)
                && !held.contains(&node)
            {
                held.push(node);
            }
        }
        if held.is_empty() {
            continue;
        }
        let name = std::fs::read_to_string(entry.path().join("comm"))
            .map(|s| s.trim_end_matches('\n').to_string())
            .unwrap_or_else(|_| "?".to_string());
        let guest = std::fs::read(entry.path().join("cmdline"))
            .ok()
            .and_then(|c| qemu_guest(&c));
        for node in held {
            found.by_node.entry(node.clone()).or_default().push(Holder {
                pid,
                name: name.clone(),
                guest: guest.clone(),
            });
        }
    }
    for list in found.by_node.values_mut() {
        list.sort();
    }
    found
}

/// The QEMU processes libvirt started, by guest name (`-name guest=...`,
/// [`qemu_guest`]), each guest's pids in order: how `status` finds the
/// process whose sockets carry a guest's remote devices, on any URI (a
/// pid file is only where the system daemon writes it). Two daemons
/// running guests of one name give that name both pids.
pub fn qemu_pids(proc_root: &Path) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let Some(processes) = processes(proc_root) else {
        return out;
    };
    for (pid, entry) in processes {
        if let Some(guest) = std::fs::read(entry.path().join("cmdline"))
            .ok()
            .and_then(|c| qemu_guest(&c))
        {
            out.entry(guest).or_default().push(pid);
        }
    }
    for pids in out.values_mut() {
        pids.sort_unstable();
    }
    out
}

/// A process that has a device's node open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldBy {
    pub pid: u32,
    pub name: String,
    /// The guest whose QEMU this is, if it is one.
    pub guest: Option<String>,
}

impl HeldBy {
    /// Every process that holds the node of the device at `bus`:`dev`
    /// ([`crate::holders`]): status and devices both show them.
    pub fn of_device(holders: &crate::holders::Holders, bus: u32, dev: u32) -> Vec<HeldBy> {
        holders
            .of(&crate::holders::device_node(bus, dev))
            .iter()
            .map(|h| HeldBy {
                pid: h.pid,
                name: h.name.clone(),
                guest: h.guest.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fixture /proc: each process gets comm and fd links to the targets.
    fn process(root: &Path, pid: u32, comm: &str, targets: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(dir.join("fd")).unwrap();
        std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        for (n, t) in targets.iter().enumerate() {
            symlink(t, dir.join("fd").join(n.to_string())).unwrap();
        }
    }

    #[test]
    fn device_nodes_are_zero_padded() {
        assert_eq!(device_node(1, 4), "/dev/bus/usb/001/004");
        assert_eq!(device_node(12, 127), "/dev/bus/usb/012/127");
    }

    #[test]
    fn finds_each_holder_once_by_pid_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let a = device_node(1, 4);
        let b = device_node(3, 9);
        process(p, 812, "seedd", &[&a, "/dev/null", &a]);
        process(p, 77, "qemu-system-x86", &[&b, "socket:[1234]"]);
        process(p, 900, "bash", &["/dev/pts/0"]);
        process(p, 901, "lsusb", &[&a, &b]);
        std::fs::create_dir_all(p.join("self")).unwrap();
        std::fs::write(p.join("uptime"), "1 2\n").unwrap();

        let h = scan(p, &[a.clone(), b.clone(), device_node(2, 2)]);
        assert_eq!(
            h.of(&a),
            [
                Holder {
                    pid: 812,
                    name: "seedd".into(),
                    guest: None,
                },
                Holder {
                    pid: 901,
                    name: "lsusb".into(),
                    guest: None,
                }
            ]
        );
        assert_eq!(
            h.of(&b).iter().map(|x| x.pid).collect::<Vec<_>>(),
            vec![77, 901]
        );
        assert!(h.of(&device_node(2, 2)).is_empty());
        assert_eq!(h.unreadable, 0);
    }

    #[test]
    fn a_guests_qemu_is_named_as_that_guests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        process(p, 77, "qemu-system-x86", &[&device_node(1, 4)]);
        std::fs::write(
            p.join("77/cmdline"),
            b"/usr/bin/qemu-system-x86_64\0-name\0guest=guestA,debug-threads=on\0-S\0",
        )
        .unwrap();
        let h = scan(p, &[device_node(1, 4)]);
        assert_eq!(h.of(&device_node(1, 4))[0].guest.as_deref(), Some("guestA"));

        assert_eq!(
            qemu_guest(b"qemu\0-name\0guest=a,,b,debug-threads=on\0"),
            Some("a,b".into())
        );
        assert_eq!(
            qemu_guest(b"qemu\0-name\0guest=solo\0"),
            Some("solo".into())
        );
        assert_eq!(qemu_guest(b"seedd\0-k\0-d\0"), None);
        assert_eq!(qemu_guest(b"qemu\0-name\0"), None);
        assert_eq!(qemu_guest(b"qemu\0-name\0plain\0"), None);
        assert_eq!(qemu_guest(b""), None);
    }

    #[test]
    fn a_process_without_readable_descriptors_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("4242")).unwrap(); // no fd directory
        process(p, 812, "seedd", &[&device_node(1, 4)]);
        let h = scan(p, &[device_node(1, 4)]);
        assert_eq!(h.unreadable, 1);
        assert_eq!(h.of(&device_node(1, 4)).len(), 1);
    }

    #[test]
    fn a_missing_proc_root_finds_nothing() {
        let h = scan(Path::new("/nonexistent/proc"), &[device_node(1, 4)]);
        assert_eq!(h, Holders::default());
    }

    #[test]
    fn a_hostile_process_name_is_kept_as_text() {
        let dir = tempfile::tempdir().unwrap();
        process(dir.path(), 5, "x\x1b[2J; rm", &[&device_node(1, 4)]);
        let h = scan(dir.path(), &[device_node(1, 4)]);
        assert_eq!(h.of(&device_node(1, 4))[0].name, "x\x1b[2J; rm");
    }

    #[test]
    fn qemu_processes_by_guest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        process(p, 90, "qemu-system-x86", &[]);
        std::fs::write(
            p.join("90/cmdline"),
            b"qemu\0-name\0guest=g1,debug-threads=on\0",
        )
        .unwrap();
        process(p, 91, "seedd", &[]);
        std::fs::write(p.join("91/cmdline"), b"seedd\0").unwrap();
        process(p, 12, "qemu-system-x86", &[]);
        std::fs::write(p.join("12/cmdline"), b"qemu\0-name\0guest=g1\0").unwrap();
        std::fs::create_dir_all(p.join("self")).unwrap();
        let found = qemu_pids(p);
        assert_eq!(found.len(), 1);
        assert_eq!(found["g1"], [12, 90]);
        assert!(qemu_pids(&p.join("nowhere")).is_empty());
    }
}
