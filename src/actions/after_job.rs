//! `bbvirt sync NAME --after-job`: what the hook's follow-up does after a
//! restore, an incoming migration or a snapshot revert, once libvirt's job
//! on the guest is over ([`crate::follow_up_process`] says why it is a
//! process of its own and how it is started).
//!
//! It waits, without the host lock, until libvirt has no job on the guest
//! (the restore or migration is over), then takes every bbvirt entry out of
//! it and attaches this host's devices for it, each at its current address
//! (as `sync` does). Every entry, not only the parked and stale ones: QEMU
//! closes a `usb-host` device that it opened by path (libvirt's
//! `hostdevice=/dev/bus/usb/BBB/DDD`) when it loads a saved state (its
//! `post_load` emulates a surprise removal and then re-opens only the
//! devices it scans for), so after a restore, a migration or a revert the
//! guest holds an empty slot under the device's alias until it is attached
//! again; seen in the lab (scenario 23: no QEMU held the node after the
//! restore, though libvirt listed the device at its new address). A guest
//! vm.conf does not name only loses bbvirt's entries, its redirdevs
//! (remote devices) included (parked: the rewrite gave it none of this
//! host's devices). It gives up quietly
//! when the guest is not running, or libvirt not reachable, for
//! [`NOT_RUNNING`] (the restore or migration failed), and with a warning
//! after [`crate::follow_up_process::WAIT`] of libvirt being busy with it.

use std::time::{Duration, Instant};

use crate::context::{Context, Target};
use crate::libvirt::{JobState, VirtError};
use crate::{debug, info, note, warn};

use super::{ActionError, Outcome, Steps};

/// How long the guest may stay absent or shut off before the follow-up
/// gives up (the restore begin hook runs before libvirt adds the guest).
pub const NOT_RUNNING: Duration = Duration::from_secs(60);

/// The follow-up's time bounds.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// How long libvirt may stay busy with the guest.
    pub wait: Duration,
    /// How long the guest may stay absent, off, or libvirt unreachable.
    pub not_running: Duration,
    /// Between two looks.
    pub poll: Duration,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            wait: crate::follow_up_process::WAIT,
            not_running: NOT_RUNNING,
            poll: Duration::from_secs(1),
        }
    }
}

impl Context<'_> {
    /// The follow-up for the guest libvirt calls `name` (module doc).
    pub fn follow_up(&self, name: &str) -> Result<Outcome, ActionError> {
        self.follow_up_within(name, Bounds::default())
    }

    /// [`Context::follow_up`] within other bounds.
    pub fn follow_up_within(&self, name: &str, bounds: Bounds) -> Result<Outcome, ActionError> {
        let conf = self
            .config
            .guest_named(name)
            .map(|i| &self.config.domains[i]);
        let target = match conf {
            Some(d) => self.target_for_conf(d),
            None => Target {
                name: name.to_string(),
                uri: self.opts.connect.clone(),
            },
        };
        let start = Instant::now();
        if !self.wait_for_guest(&target, start, bounds) {
            return Ok(Outcome::NothingToDo);
        }
        info!(
            "follow-up: '{}' runs, libvirt is done with it ({:.0} s): syncing its devices",
            target.name,
            start.elapsed().as_secs_f64()
        );
        let mut conns = self.connections();
        let mut steps = Steps::default();
        let live = match self.connect(&mut conns, &target) {
            Ok(conn) => self.live_hostdevs(conn, &target.name)?.unwrap_or_default(),
            Err(e) if e.is_nothing_to_do() => Vec::new(),
            Err(source) => {
                return Err(ActionError::Virt {
                    action: "syncing",
                    what: "devices".into(),
                    domain: target.name.clone(),
                    source,
                });
            }
        };
        // Out with every bbvirt entry: parked ones are empty, the others
        // were closed by QEMU when it loaded the saved state (module doc).
        for h in live.iter().filter(|h| h.is_bbvirts()) {
            let alias = h.alias.clone().unwrap_or_default();
            debug!(
                "follow-up: taking {alias} out of '{}' ({})",
                target.name,
                if h.is_parked() {
                    "parked"
                } else {
                    "QEMU closed it when it loaded the saved state"
                }
            );
            let result = self
                .connect(&mut conns, &target)
                .map_err(|source| ActionError::Virt {
                    action: "detaching",
                    what: alias.clone(),
                    domain: target.name.clone(),
                    source,
                })
                .and_then(|conn| self.detach_alias(conn, &target, &alias));
            steps.record(result);
            conns.release_lock();
        }
        match conf {
            Some(d) => {
                let scan = self.sysfs.scan()?;
                self.sync_one(&mut conns, &mut steps, d, &scan);
            }
            None => {
                note!(
                    "'{}' is not in {}: no device of this host for it",
                    target.name,
                    self.config.path.display()
                );
                // Out with its remote devices too (the rewrite parked them).
                self.sync_remote(&mut conns, &mut steps, &target, &[]);
            }
        }
        steps.finish()
    }

    /// Waits until the guest runs and libvirt has no job on it. False when
    /// it gave up (logged).
    fn wait_for_guest(&self, target: &Target, start: Instant, bounds: Bounds) -> bool {
        let mut conn = None;
        let mut last_seen = start;
        loop {
            if conn.is_none() {
                crate::log::step(&format!("connecting to libvirt at {}", target.uri_label()));
                conn = self.hv.connect(target.uri.as_deref()).ok();
            }
            let state = match &conn {
                Some(c) => {
                    crate::log::step(&format!("asking libvirt about '{}'", target.name));
                    c.job_state(&target.name)
                }
                None => Err(VirtError::Down {
                    uri: target.uri_label().to_string(),
                    message: "no connection".into(),
                }),
            };
            match state {
                Ok(JobState::Idle) => return true,
                Ok(JobState::Busy) => {
                    last_seen = Instant::now();
                    debug!("follow-up: libvirt is busy with '{}'", target.name);
                }
                Err(e) => {
                    // Not there (yet), not running, or libvirt unreachable:
                    // the restore begin hook runs before libvirt adds the
                    // guest, but not for long.
                    if last_seen.elapsed() >= bounds.not_running {
                        note!(
                            "follow-up: '{}' is not running ({e}): nothing to do",
                            target.name
                        );
                        return false;
                    }
                    if !matches!(e, VirtError::NoDomain(_) | VirtError::NotRunning(_)) {
                        debug!("follow-up: {e}");
                        conn = None;
                    }
                }
            }
            if start.elapsed() >= bounds.wait {
                warn!(
                    "follow-up: libvirt was still busy with '{}' after {} s: giving up; \
                     run `bbvirt sync` once it is done",
                    target.name,
                    bounds.wait.as_secs()
                );
                return false;
            }
            std::thread::sleep(bounds.poll);
        }
    }
}
