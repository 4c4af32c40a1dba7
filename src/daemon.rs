//! Is the local libvirt daemon ready to serve? Answered without connecting.
//!
//! Why: at boot, udev's coldplug runs bbvirt for every device present. On a
//! systemd host `libvirtd.socket` (or `virtqemud.socket`) listens from early
//! boot, so a connect succeeds at once and then waits: for a service that
//! cannot start yet (`libvirtd.service` is ordered `After=network.target`,
//! and networking may itself wait in `udevadm settle`: the original bbvirt's
//! boot deadlock), or for a daemon that is up but still initialising its
//! drivers (it tells systemd it is ready *before* that, and accepts no
//! client until it is done: over a minute under emulation). A connect from
//! udev would also start a socket-activated daemon that nobody asked for.
//!
//! Decision: on a host where systemd is PID 1 and `bbvirt-sync.service` is
//! installed, bbvirt run by udev connects to the local qemu daemon only when
//! [`READY_FILE`] names the daemon that runs now. That file is written by
//! the first bbvirt that got a connection to this daemon instance, normally
//! `bbvirt-sync.service`: the unit is wanted by `libvirtd.service` and
//! `virtqemud.service` and ordered after them, so it runs whenever the daemon
//! starts (boot, socket activation, restart), waits through the driver
//! initialisation outside any udev worker, writes the file *before* it scans
//! the devices, and then attaches every present assigned device to its
//! running guest (guests that autostarted, or that libvirt reconnected to,
//! while udev's runs were told "not ready"). An event before the file exists
//! is therefore covered by that scan; an event after it connects itself.
//!
//! Otherwise (no systemd, the unit not installed: a host that only swapped
//! the binary of the original package, a remote URI, another driver) nothing
//! changes: bbvirt connects, and a refused or missing socket means "libvirt
//! is not running" ([`crate::libvirt::VirtError::Down`]).
//!
//! A daemon instance is named by its pid and its start time (field 22 of
//! `/proc/PID/stat`, in clock ticks since boot), so a reused pid is never
//! taken for the daemon that served before. The pids come from the daemons'
//! own pidfiles (`/run/libvirtd.pid`, `/run/virtqemud.pid`), which they hold
//! while they run.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::libvirt::VirtError;

/// Whether udev runs this process (it sets ACTION and DEVPATH for RUN
/// programs): then the gate is enforced.
pub fn run_by_udev() -> bool {
    std::env::var_os("ACTION").is_some() && std::env::var_os("DEVPATH").is_some()
}

/// The unit that makes the gate safe (see the module doc).
pub const SYNC_UNIT: &str = "bbvirt-sync.service";

/// The file, in bbvirt's run directory, that names the daemon instances
/// that served a bbvirt: lines of `PID STARTTIME`.
pub const READY_FILE: &str = "ready";

/// Where systemd looks for unit files (a masked unit in /etc wins).
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The modular daemon's socket: libvirt's client library connects
/// `qemu:///system` to virtqemud when it exists, else to libvirtd.
pub const VIRTQEMUD_SOCK: &str = "/run/libvirt/virtqemud-sock";

/// The pidfiles of the daemons that serve `qemu:///system`: the monolithic
/// libvirtd and the modular virtqemud.
const PIDFILES: [&str; 2] = ["/run/libvirtd.pid", "/run/virtqemud.pid"];

/// The files the gate reads, as parameters so that tests use fixtures.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// `/proc`.
    pub proc_root: PathBuf,
    /// bbvirt's run directory (`/run/bbvirt`, see [`crate::lock::run_dir`]).
    pub run_dir: PathBuf,
    /// `/run/systemd/system`: a directory when systemd is PID 1 (sd_booted).
    pub systemd_booted: PathBuf,
    pub unit_dirs: Vec<PathBuf>,
    pub pidfiles: Vec<PathBuf>,
}

impl HostPaths {
    /// The real host's paths; the run directory as [`crate::lock::run_dir`].
    pub fn system() -> HostPaths {
        HostPaths {
            proc_root: PathBuf::from("/proc"),
            run_dir: crate::lock::run_dir(),
            systemd_booted: PathBuf::from("/run/systemd/system"),
            unit_dirs: UNIT_DIRS.iter().map(PathBuf::from).collect(),
            pidfiles: PIDFILES.iter().map(PathBuf::from).collect(),
        }
    }

    fn ready_file(&self) -> PathBuf {
        self.run_dir.join(READY_FILE)
    }
}

/// The readiness gate of one bbvirt run; exists only on hosts where it
/// applies ([`Readiness::detect`]).
#[derive(Debug, Clone)]
pub struct Readiness {
    paths: HostPaths,
    /// Refuse to connect to a daemon not known to serve (runs by udev);
    /// otherwise only record the daemon once connected.
    enforce: bool,
}

/// One daemon process: pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub pid: u32,
    pub start: u64,
}

impl Readiness {
    /// The gate for this host: Some when systemd is PID 1 and
    /// [`SYNC_UNIT`] is installed and not masked. `enforce` for runs by udev.
    pub fn detect(paths: HostPaths, enforce: bool) -> Option<Readiness> {
        if !paths.systemd_booted.is_dir() || !sync_unit_installed(&paths.unit_dirs) {
            return None;
        }
        Some(Readiness { paths, enforce })
    }

    /// Ok when bbvirt may connect to `uri` now; [`VirtError::NotReady`]
    /// when the gate is enforced, the URI is the local qemu daemon's, and
    /// that daemon has not served a bbvirt yet (or is not running).
    pub fn check(&self, uri: Option<&str>) -> Result<(), VirtError> {
        if !self.enforce || !served_by_local_qemu_daemon(uri) {
            return Ok(());
        }
        let live = self.running();
        if live.is_empty() {
            return Err(not_ready(uri, "no libvirt daemon is running yet"));
        }
        let recorded = read_ready(&self.paths.ready_file());
        if live.iter().any(|i| recorded.contains(i)) {
            Ok(())
        } else {
            Err(not_ready(
                uri,
                "the daemon has not finished starting (bbvirt-sync.service attaches once it serves)",
            ))
        }
    }

    /// After a connection to `uri` succeeded: records the running daemon as
    /// one that serves, unless it is recorded already. Failures only cost
    /// the next udev runs a "not ready", so they are logged, not raised.
    pub fn record(&self, uri: Option<&str>) {
        if !served_by_local_qemu_daemon(uri) {
            return;
        }
        let live = self.running();
        let file = self.paths.ready_file();
        if live.is_empty() || read_ready(&file) == live {
            return;
        }
        if let Err(e) = write_ready(&file, &live) {
            crate::warn!("recording that libvirt serves in {}: {e}", file.display());
        }
    }

    /// The daemon processes whose pidfiles name a live process.
    fn running(&self) -> Vec<Instance> {
        self.paths
            .pidfiles
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .filter_map(|s| s.trim().parse::<u32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(
                    self.paths.proc_root.join(pid.to_string()).join("stat"),
                )
                .ok()?;
                Some(Instance {
                    pid,
                    start: start_time(&stat)?,
                })
            })
            .collect()
    }
}

fn not_ready(uri: Option<&str>, reason: &str) -> VirtError {
    VirtError::NotReady {
        uri: crate::libvirt::uri_label(uri).to_string(),
        reason: reason.to_string(),
    }
}

/// Whether `unit_dirs` hold [`SYNC_UNIT`], the first one found not masked
/// (a link to /dev/null).
fn sync_unit_installed(unit_dirs: &[PathBuf]) -> bool {
    for dir in unit_dirs {
        let f = dir.join(SYNC_UNIT);
        if f.symlink_metadata().is_ok() {
            return std::fs::canonicalize(&f).is_ok_and(|t| t != Path::new("/dev/null"));
        }
    }
    false
}

/// Whether `uri` reaches the local daemon that serves QEMU guests:
/// `qemu:///system` (or `qemu+unix:///system`), or the default URI when
/// `LIBVIRT_DEFAULT_URI` is unset (root's default on a host with that daemon).
pub fn served_by_local_qemu_daemon(uri: Option<&str>) -> bool {
    match uri {
        Some(u) => is_local_qemu_system(u),
        None => match std::env::var("LIBVIRT_DEFAULT_URI") {
            Ok(u) if !u.is_empty() => is_local_qemu_system(&u),
            _ => true,
        },
    }
}

fn is_local_qemu_system(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return false;
    };
    let (driver, transport) = scheme.split_once('+').unwrap_or((scheme, ""));
    let path = rest.split('?').next().unwrap_or_default();
    driver == "qemu" && matches!(transport, "" | "unix") && path == "/system"
}

/// Field 22 of `/proc/PID/stat` (start time), counted after the command
/// name's closing parenthesis, since the name may hold spaces and ')'.
pub fn start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields 3 (state) onwards; start time is field 22.
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The instances recorded in the ready file; none when it is missing or
/// not of bbvirt's form.
fn read_ready(file: &Path) -> Vec<Instance> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let pid = w.next()?.parse().ok()?;
            let start = w.next()?.parse().ok()?;
            Some(Instance { pid, start })
        })
        .collect()
}

/// Writes the ready file whole (a temporary file renamed over it), so a
/// reader never sees half of it.
fn write_ready(file: &Path, live: &[Instance]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{READY_FILE}.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    for i in live {
        writeln!(f, "{} {}", i.pid, i.start)?;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture host: systemd booted, the unit installed, and daemons
    /// whose pid and start time the test chooses.
    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Host {
            let h = Host {
                dir: tempfile::tempdir().unwrap(),
            };
            std::fs::create_dir_all(h.p("run/systemd/system")).unwrap();
            std::fs::create_dir_all(h.p("units")).unwrap();
            std::fs::write(h.p("units").join(SYNC_UNIT), "[Service]\n").unwrap();
            h
        }
        fn p(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
        fn paths(&self) -> HostPaths {
            HostPaths {
                proc_root: self.p("proc"),
                run_dir: self.p("run/bbvirt"),
                systemd_booted: self.p("run/systemd/system"),
                unit_dirs: vec![self.p("etc-units"), self.p("units")],
                pidfiles: vec![self.p("run/libvirtd.pid"), self.p("run/virtqemud.pid")],
            }
        }
        /// A running daemon with this pidfile, pid and start time.
        fn daemon(&self, pidfile: &str, pid: u32, start: u64) {
            std::fs::write(self.p("run").join(pidfile), format!("{pid}\n")).unwrap();
            let d = self.p("proc").join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            // A name with a space and a parenthesis, as comm may hold.
            let stat = format!(
                "{pid} (lib virtd) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 17 0 {start} 1000 10 18446744073709551615\n"
            );
            std::fs::write(d.join("stat"), stat).unwrap();
        }
        fn gate(&self, enforce: bool) -> Readiness {
            Readiness::detect(self.paths(), enforce).expect("gate applies")
        }
    }

    const SYSTEM: Option<&str> = Some("qemu:///system");

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_the_name() {
        let stat = "812 (a) b) c) S 1 812 812 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0";
        assert_eq!(start_time(stat), Some(4242));
        assert_eq!(start_time("812 (x) S 1"), None);
        assert_eq!(start_time("garbage"), None);
    }

    #[test]
    fn which_uris_the_gate_covers() {
        assert!(is_local_qemu_system("qemu:///system"));
        assert!(is_local_qemu_system("qemu+unix:///system"));
        assert!(is_local_qemu_system(
            "qemu:///system?socket=/run/libvirt/virtqemud-sock"
        ));
        assert!(!is_local_qemu_system("qemu:///session"));
        assert!(!is_local_qemu_system("qemu+ssh://host/system"));
        assert!(!is_local_qemu_system("qemu://host/system"));
        assert!(!is_local_qemu_system("test:///default"));
        assert!(!is_local_qemu_system("lxc:///system"));
        assert!(!is_local_qemu_system("nonsense"));
    }

    #[test]
    fn no_gate_without_systemd_or_without_the_unit_or_with_it_masked() {
        let h = Host::new();
        assert!(Readiness::detect(h.paths(), true).is_some());

        let mut p = h.paths();
        p.systemd_booted = h.p("no-such-dir");
        assert!(
            Readiness::detect(p, true).is_none(),
            "not booted by systemd"
        );

        let mut p = h.paths();
        p.unit_dirs = vec![h.p("empty")];
        assert!(Readiness::detect(p, true).is_none(), "unit not installed");

        // Masked in the first directory: the unit never runs, so no gate.
        std::fs::create_dir_all(h.p("etc-units")).unwrap();
        std::os::unix::fs::symlink("/dev/null", h.p("etc-units").join(SYNC_UNIT)).unwrap();
        assert!(Readiness::detect(h.paths(), true).is_none(), "masked");
    }

    #[test]
    fn no_daemon_running_is_not_ready() {
        let h = Host::new();
        let e = h.gate(true).check(SYSTEM).unwrap_err();
        assert!(e.is_nothing_to_do(), "{e}");
        assert!(
            e.to_string().contains("no libvirt daemon is running yet"),
            "{e}"
        );
    }

    #[test]
    fn a_daemon_that_never_served_is_not_ready_until_a_connection_records_it() {
        let h = Host::new();
        h.daemon("libvirtd.pid", 812, 5000);
        let udev = h.gate(true);
        let e = udev.check(SYSTEM).unwrap_err();
        assert!(matches!(e, VirtError::NotReady { .. }), "{e}");
        assert!(e.to_string().contains("not finished starting"), "{e}");

        // bbvirt-sync.service's run (not enforced) connects and records.
        let sync = h.gate(false);
        assert!(sync.check(SYSTEM).is_ok(), "the sync run is never refused");
        sync.record(SYSTEM);
        assert_eq!(
            std::fs::read_to_string(h.p("run/bbvirt").join(READY_FILE)).unwrap(),
            "812 5000\n"
        );
        assert!(udev.check(SYSTEM).is_ok());
        assert!(
            udev.check(None).is_ok(),
            "the default URI is the local daemon"
        );
    }

    #[test]
    fn a_restarted_daemon_or_a_reused_pid_is_not_the_one_that_served() {
        let h = Host::new();
        h.daemon("libvirtd.pid", 812, 5000);
        h.gate(false).record(SYSTEM);
        assert!(h.gate(true).check(SYSTEM).is_ok());

        // Same pid, later start: another process.
        h.daemon("libvirtd.pid", 812, 9000);
        assert!(h.gate(true).check(SYSTEM).is_err());

        // A new pid.
        h.daemon("libvirtd.pid", 900, 9100);
        assert!(h.gate(true).check(SYSTEM).is_err());
        h.gate(false).record(SYSTEM);
        assert!(h.gate(true).check(SYSTEM).is_ok());
    }

    #[test]
    fn the_modular_daemon_counts_too() {
        let h = Host::new();
        h.daemon("virtqemud.pid", 700, 42);
        assert!(h.gate(true).check(SYSTEM).is_err());
        h.gate(false).record(SYSTEM);
        assert!(h.gate(true).check(SYSTEM).is_ok());
    }

    #[test]
    fn a_stale_pidfile_is_no_daemon() {
        let h = Host::new();
        std::fs::create_dir_all(h.p("run")).unwrap();
        std::fs::write(h.p("run/libvirtd.pid"), "4242\n").unwrap();
        let e = h.gate(true).check(SYSTEM).unwrap_err();
        assert!(
            e.to_string().contains("no libvirt daemon is running yet"),
            "{e}"
        );
        h.gate(false).record(SYSTEM);
        assert!(!h.p("run/bbvirt").join(READY_FILE).exists());
    }

    #[test]
    fn other_uris_are_never_refused() {
        let h = Host::new();
        let g = h.gate(true);
        assert!(g.check(Some("qemu+ssh://other/system")).is_ok());
        assert!(g.check(Some("test:///default")).is_ok());
    }

    #[test]
    fn a_garbled_ready_file_is_not_ready() {
        let h = Host::new();
        h.daemon("libvirtd.pid", 812, 5000);
        std::fs::create_dir_all(h.p("run/bbvirt")).unwrap();
        std::fs::write(h.p("run/bbvirt").join(READY_FILE), "812\nxyz 5000\n").unwrap();
        assert!(h.gate(true).check(SYSTEM).is_err());
    }
}
