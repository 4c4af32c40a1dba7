//! What every command that looks at guests shares: the parsed [`Config`],
//! the [`Sysfs`] view, the [`Hypervisor`] and the options ([`Context`]);
//! which guest and URI a name or a serial leads to ([`Target`]); and one
//! connection per URI for the whole run ([`Connections`]).
//!
//! Decisions:
//! - **One place resolves a guest.** A configured guest is reached at
//!   `--connect`, else its `DOMAIN_URI_<id>`, else libvirt's default URI
//!   ([`Target::of`]); `--domain NAME` is a config id or libvirt name, else
//!   a libvirt name used verbatim on `--connect` or the default
//!   ([`Context::explicit_target`]). actions, status and check all ask here.
//! - **One connection per URI per run**, a failed one included: a URI that
//!   did not answer is not asked again in the same run (its error is
//!   returned again), so a run over many guests on a dead daemon costs one
//!   connect.
//! - **The host lock is taken by an explicit call** ([`Connections::lock_host`]),
//!   by the commands that change guests, right before they first connect;
//!   `status` and `check` only read and never take it.
//! - **The readiness gate comes first** ([`crate::daemon`]): for the
//!   commands that change guests, the gate is asked before the lock and
//!   before connecting, so a run told "not ready" neither waits for the
//!   lock nor connects. `status` and `check` do not use the gate.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::cli::Opts;
use crate::config::{Config, DomainConf};
use crate::daemon::Readiness;
use crate::libvirt::{Connection, Hypervisor, VirtError, uri_label};
use crate::sysfs::Sysfs;
use crate::{debug, note, warn};

/// Everything a command that looks at guests needs.
pub struct Context<'a> {
    pub config: &'a Config,
    pub sysfs: &'a Sysfs,
    pub hv: &'a dyn Hypervisor,
    pub opts: &'a Opts,
    /// Where the host-wide lock lives ([`crate::lock`]); None: no locking.
    pub lock_dir: Option<&'a Path>,
    /// Whether the local daemon may be asked yet ([`crate::daemon`]); None
    /// where that gate does not apply.
    pub readiness: Option<&'a Readiness>,
}

/// A guest to reach: its libvirt name and the URI it is reached at (None:
/// libvirt's default URI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub uri: Option<String>,
}

impl Target {
    /// The guest vm.conf describes as `d`, reached at `connect`
    /// (`--connect`) when given, else at its `DOMAIN_URI_`, else at
    /// libvirt's default URI.
    pub fn of(d: &DomainConf, connect: Option<&str>) -> Target {
        Target {
            name: d.libvirt_name().to_string(),
            uri: connect.map(str::to_string).or_else(|| d.uri.clone()),
        }
    }

    /// The URI for messages: the URI, or "the default URI".
    pub fn uri_label(&self) -> &str {
        uri_label(self.uri.as_deref())
    }

    /// The `virsh` command line that does what `args` say to this guest,
    /// for dry-run output (`args` are quoted by the caller).
    pub fn virsh(&self, args: &[&str]) -> String {
        let mut line = String::from("virsh");
        if let Some(uri) = &self.uri {
            line.push_str(" -c ");
            line.push_str(&crate::text::shell_quote(uri));
        }
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        line
    }
}

impl<'a> Context<'a> {
    /// The guest vm.conf describes as `d`, at the URI in force.
    pub fn target_for_conf(&self, d: &DomainConf) -> Target {
        Target::of(d, self.opts.connect.as_deref())
    }

    /// The guest named by `--domain` (or an action's DOMAIN): a config id
    /// or libvirt name, or else used verbatim as a libvirt name.
    pub fn explicit_target(&self, name: &str) -> Target {
        match self.config.find_domain(name) {
            Some(d) => self.target_for_conf(d),
            None => Target {
                name: name.to_string(),
                uri: self.opts.connect.clone(),
            },
        }
    }

    /// The guest a serial goes to: `--domain`, else the guest that wins it
    /// in vm.conf ([`Config::owner_of`]).
    pub fn target_for_serial(&self, serial: &str) -> Option<Target> {
        if let Some(name) = &self.opts.domain {
            let t = self.explicit_target(name);
            debug!("{serial}: --domain {name} -> domain '{}'", t.name);
            return Some(t);
        }
        let d = self.config.owner_of(serial)?;
        let others: Vec<&str> = self
            .config
            .domains
            .iter()
            .filter(|o| o.id != d.id && o.serials.iter().any(|s| s == serial))
            .map(|o| o.id.as_str())
            .collect();
        if !others.is_empty() {
            warn!(
                "{serial} is assigned to {} and also to {}: the first in {} wins",
                d.id,
                others.join(", "),
                self.config.path.display()
            );
        }
        let t = self.target_for_conf(d);
        debug!(
            "{serial}: DOMAIN_RNG_{} -> domain '{}' at {}",
            d.id,
            t.name,
            t.uri_label()
        );
        Some(t)
    }

    /// Every guest to search when the device's own guest is not known:
    /// `--domain`, else every configured guest (each once).
    pub fn all_targets(&self) -> Vec<Target> {
        if let Some(name) = &self.opts.domain {
            return vec![self.explicit_target(name)];
        }
        self.targets_of(self.config.domains.iter())
    }

    /// The guests of these configured domains, each once, in order.
    pub fn targets_of<'d>(&self, domains: impl IntoIterator<Item = &'d DomainConf>) -> Vec<Target> {
        let mut out: Vec<Target> = Vec::new();
        for d in domains {
            let t = self.target_for_conf(d);
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// The URIs of the configured guests, each once, in config order; the
    /// URI in force (`--connect`, else the default) when none is configured.
    pub fn uris(&self) -> Vec<Option<String>> {
        let mut uris: Vec<Option<String>> = Vec::new();
        for t in self.targets_of(&self.config.domains) {
            if !uris.contains(&t.uri) {
                uris.push(t.uri);
            }
        }
        if self.config.domains.is_empty() {
            uris.push(self.opts.connect.clone());
        }
        uris
    }

    /// The connections of a command that changes guests: it takes the host
    /// lock ([`Connections::lock_host`]) before it first connects.
    pub fn connections(&self) -> Connections<'a> {
        Connections::for_changes(self.hv, self.readiness, self.lock_dir)
    }
}

/// One connection per URI for the whole run (see the module doc).
pub struct Connections<'a> {
    hv: &'a dyn Hypervisor,
    /// Asked before the lock and before connecting (commands that change
    /// guests, where the gate applies).
    readiness: Option<&'a Readiness>,
    /// Where to take the host lock; None for read-only use.
    lock_dir: Option<&'a Path>,
    lock: Option<crate::lock::HostLock>,
    /// The lock could not be taken (warned once): not tried again.
    lock_failed: bool,
    /// Warn once per URI found without a daemon (commands that change guests).
    warn_down: bool,
    open: HashMap<Option<String>, Result<Box<dyn Connection>, VirtError>>,
    /// URIs already warned about.
    warned: HashSet<Option<String>>,
}

impl<'a> Connections<'a> {
    /// For `status` and `check`: no lock, no warnings (they report).
    pub fn read_only(hv: &'a dyn Hypervisor) -> Connections<'a> {
        Connections {
            hv,
            readiness: None,
            lock_dir: None,
            lock: None,
            lock_failed: false,
            warn_down: false,
            open: HashMap::new(),
            warned: HashSet::new(),
        }
    }

    /// For the commands that change guests: the readiness gate (None where
    /// it does not apply), the host lock in `lock_dir` (None: no locking),
    /// and a warning when libvirt is not running.
    pub fn for_changes(
        hv: &'a dyn Hypervisor,
        readiness: Option<&'a Readiness>,
        lock_dir: Option<&'a Path>,
    ) -> Connections<'a> {
        Connections {
            readiness,
            lock_dir,
            warn_down: true,
            ..Connections::read_only(hv)
        }
    }

    /// Takes the host lock ([`crate::lock`]) before the first connection to
    /// `uri`, unless it is held already or this is read-only use; first the
    /// readiness gate is asked about `uri`, and a "not ready" is returned
    /// without taking the lock. A lock that cannot be taken (e.g. `/run`
    /// read-only) is warned about: better unserialised than not at all.
    pub fn lock_host(&mut self, uri: Option<&str>) -> Result<(), VirtError> {
        self.ask_gate(uri)?;
        if let (Some(dir), None, false) = (self.lock_dir, &self.lock, self.lock_failed) {
            crate::log::step(&format!("waiting for the lock in {}", dir.display()));
            match crate::lock::acquire(dir) {
                Ok(l) => self.lock = Some(l),
                Err(e) => {
                    warn!(
                        "locking {}: {e}; carrying on without the lock",
                        dir.display()
                    );
                    self.lock_failed = true;
                }
            }
        }
        Ok(())
    }

    /// Lets go of the host lock between two changes of a run over many
    /// devices (`sync`): the next [`Connections::lock_host`] takes it again.
    /// Runs that udev starts meanwhile then wait for one change, not for the
    /// whole run (at boot, `bbvirt-sync.service` attaching an autostarted
    /// guest's devices while udev's runs for the same devices queue behind
    /// it: up to 12 s under the lab's emulation, past the 20 s deadline
    /// under load). Each change reads the live XML again under the lock, so
    /// nothing decided before it goes stale.
    pub fn release_lock(&mut self) {
        self.lock = None;
    }

    /// Whether this run holds the host lock now.
    pub fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }

    /// The readiness gate's answer for `uri` (Ok once it is connected, or
    /// where no gate applies); a "not ready" is noted once per URI.
    pub fn ask_gate(&mut self, uri: Option<&str>) -> Result<(), VirtError> {
        let key = uri.map(str::to_string);
        let Some(gate) = self.readiness else {
            return Ok(());
        };
        if self.open.get(&key).is_some_and(Result::is_ok) {
            return Ok(());
        }
        gate.check(uri).inspect_err(|e| {
            if self.warned.insert(key) {
                note!("{e}: nothing to do now");
            }
        })
    }

    /// The connection to `uri`, opened on first use after asking the
    /// readiness gate (where it applies); a URI that failed gives its error
    /// again without a second attempt.
    pub fn get(&mut self, uri: Option<&str>) -> Result<&dyn Connection, VirtError> {
        self.ask_gate(uri)?;
        let key = uri.map(str::to_string);
        if !self.open.contains_key(&key) {
            crate::log::step(&format!("connecting to libvirt at {}", uri_label(uri)));
            let conn = self.hv.connect(uri);
            if let (Ok(_), Some(gate)) = (&conn, self.readiness) {
                gate.record(uri);
            }
            self.open.insert(key.clone(), conn);
        }
        match &self.open[&key] {
            Ok(c) => Ok(c.as_ref()),
            Err(e) => {
                if self.warn_down && e.is_nothing_to_do() && self.warned.insert(key) {
                    warn!(
                        "{e}: nothing changed; the guest's start (or libvirtd's, \
                         through the qemu hook) brings its devices"
                    );
                }
                Err(e.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHv;
    impl Hypervisor for NoHv {
        fn connect(&self, _: Option<&str>) -> Result<Box<dyn Connection>, VirtError> {
            Err(VirtError::Down {
                uri: "x".into(),
                message: "none".into(),
            })
        }
        fn version(&self) -> Result<u32, String> {
            Err("none".into())
        }
    }

    fn free(dir: &Path) -> bool {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("lock"))
            .unwrap();
        // SAFETY: flock on a descriptor we own; released when f is dropped.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }

    #[test]
    fn the_lock_is_let_go_between_changes_and_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut conns = Connections::for_changes(&NoHv, None, Some(dir.path()));
        conns.lock_host(None).unwrap();
        assert!(conns.holds_lock());
        assert!(!free(dir.path()), "held by the run");
        conns.release_lock();
        assert!(!conns.holds_lock());
        assert!(free(dir.path()), "another run may take it now");
        conns.lock_host(None).unwrap();
        assert!(!free(dir.path()), "taken again for the next change");
        // read-only use never locks
        let mut ro = Connections::read_only(&NoHv);
        ro.lock_host(None).unwrap();
        assert!(!ro.holds_lock());
    }
}
