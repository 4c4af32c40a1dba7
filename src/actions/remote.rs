//! A guest's remote devices (`DOMAIN_REMOTE_<id>`, [`crate::remote`]): at
//! `sync` (and so on the guest's start, through the hook's follow-up) each
//! running guest gets a `<redirdev>` per element, connecting where
//! [`RemoteElement::connects_to`] says; bbvirt's redirdevs it should not
//! hold (element removed, or its source changed) are detached first.
//! `detach-all` detaches them all; `attach HOST:PORT` and `detach
//! HOST:PORT` one, by its exporting host and port (the endpoint's alias:
//! the same on every guest). Only redirdevs with bbvirt's alias
//! ([`crate::remote::redirdev::is_ours`]) are ever touched.
//!
//! Unlike a local device, a remote one is attached whether or not its
//! exporting host answers now: QEMU's `<reconnect>` keeps trying, so a
//! host that is down never fails or delays a guest's start, and the device
//! arrives when it comes up. Its presence is QEMU's business, not bbvirt's.

use crate::config::DomainConf;
use crate::context::{Connections, Target};
use crate::libvirt::Connection;
use crate::remote::element::RemoteElement;
use crate::remote::endpoint::Endpoint;
use crate::remote::redirdev::{Redirdev, Wanted, alias_for, redirdevs_in, wanted};
use crate::text::shell_quote;
use crate::{detail, info, note, warn};

use super::{ActionError, Context, Outcome, Steps};

/// What to change in a guest holding `live` to hold exactly `wanted`: the
/// aliases to detach (ours but not wanted, or wanted with another source),
/// then the devices to attach.
pub(super) fn plan<'w>(live: &[Redirdev], wanted: &'w [Wanted]) -> (Vec<String>, Vec<&'w Wanted>) {
    let detach = live
        .iter()
        .filter(|l| !wanted.iter().any(|w| w.is_held_by(l)))
        .map(|l| l.alias.clone())
        .collect();
    let attach = wanted
        .iter()
        .filter(|w| !live.iter().any(|l| w.is_held_by(l)))
        .collect();
    (detach, attach)
}

impl Context<'_> {
    /// bbvirt's redirdevs in a running domain; None (noted) when it is not
    /// running or not defined.
    pub(super) fn live_redirdevs(
        &self,
        conn: &dyn Connection,
        domain: &str,
    ) -> Result<Option<Vec<Redirdev>>, ActionError> {
        match conn.live_xml(domain) {
            Ok(xml) => redirdevs_in(&xml)
                .map(Some)
                .map_err(|source| ActionError::Xml {
                    domain: domain.to_string(),
                    source,
                }),
            Err(e) if e.is_nothing_to_do() => Ok(None),
            Err(source) => Err(ActionError::Virt {
                action: "reading",
                what: "the live XML".into(),
                domain: domain.to_string(),
                source,
            }),
        }
    }

    /// Makes the running guest `target` hold exactly the remote devices of
    /// `remote`. Each change is a step of `steps`.
    pub(super) fn sync_remote(
        &self,
        conns: &mut Connections,
        steps: &mut Steps,
        target: &Target,
        remote: &[RemoteElement],
    ) {
        let wanted = wanted(remote);
        let conn = match self.connect(conns, target) {
            Ok(c) => c,
            Err(_) if self.opts.dry_run => {
                // sync's hostdev pass already said why libvirt cannot be asked
                for w in &wanted {
                    self.plan_remote(target, w);
                }
                return;
            }
            Err(e) if e.is_nothing_to_do() => return,
            Err(source) => {
                steps.record(Err(ActionError::Virt {
                    action: "syncing",
                    what: "remote devices".into(),
                    domain: target.name.clone(),
                    source,
                }));
                return;
            }
        };
        let live = match self.live_redirdevs(conn, &target.name) {
            Ok(Some(live)) => live,
            Ok(None) => return,
            Err(e) => {
                steps.record(Err(e));
                return;
            }
        };
        let (detach, attach) = plan(&live, &wanted);
        for alias in detach {
            warn!(
                "'{}' holds {alias}, which vm.conf does not give it (or with another source): \
                 removing it",
                target.name
            );
            steps.record(self.detach_alias(conn, target, &alias));
        }
        for w in wanted.iter().filter(|w| !attach.contains(w)) {
            note!("{} is already attached to '{}'", w.shown, target.name);
        }
        for w in attach {
            steps.record(self.attach_redirdev(conn, target, w));
        }
        conns.release_lock();
    }

    /// Attaches the redirdev of `w` to the running guest `target` (a dry
    /// run says what it would do).
    fn attach_redirdev(
        &self,
        conn: &dyn Connection,
        target: &Target,
        w: &Wanted,
    ) -> Result<Outcome, ActionError> {
        if self.opts.dry_run {
            self.plan_remote(target, w);
            return Ok(Outcome::Done);
        }
        detail!("redirdev XML for {}:\n{}", w.shown, w.xml);
        crate::log::step(&format!("attaching {} to '{}'", w.shown, target.name));
        match conn.attach_live(&target.name, &w.xml) {
            Ok(()) => {
                info!(
                    "attached {} (served by {}) to '{}'",
                    w.alias, w.shown, target.name
                );
                Ok(Outcome::Done)
            }
            Err(e) if e.is_nothing_to_do() => {
                note!("{e}: {} not attached", w.shown);
                Ok(Outcome::NothingToDo)
            }
            Err(source) => Err(ActionError::Virt {
                action: "attaching",
                what: w.shown.clone(),
                domain: target.name.clone(),
                source,
            }),
        }
    }

    /// The guests vm.conf gives the remote device `endpoint` to, each with
    /// the device as its element asks for it; with `--domain`, that guest,
    /// with its own element or else another guest's (one exporting host and
    /// port is one device, one tunnel). Empty when no element names it.
    fn endpoint_targets(&self, endpoint: &Endpoint) -> Vec<(Target, Wanted)> {
        let alias = alias_for(endpoint);
        let given: Vec<(&DomainConf, Wanted)> = self
            .config
            .domains
            .iter()
            .filter_map(|d| {
                let w = wanted(&d.remote).into_iter().find(|w| w.alias == alias)?;
                Some((d, w))
            })
            .collect();
        match self.opts.domain.as_deref() {
            Some(name) => {
                let own = self.config.find_domain(name);
                given
                    .iter()
                    .find(|(d, _)| own.is_some_and(|o| std::ptr::eq(o, *d)))
                    .or(given.first())
                    .map(|(_, w)| (self.explicit_target(name), w.clone()))
                    .into_iter()
                    .collect()
            }
            None => {
                let mut out: Vec<(Target, Wanted)> = Vec::new();
                for (d, w) in given {
                    let t = self.target_for_conf(d);
                    if !out.iter().any(|(o, _)| *o == t) {
                        out.push((t, w));
                    }
                }
                out
            }
        }
    }

    /// `bbvirt attach HOST:PORT`: gives the remote device served at
    /// `endpoint` to the running guests vm.conf gives it to (or to
    /// `--domain`), as `sync` would, touching none of their other devices.
    /// vm.conf must name it: only an element says whether it goes through
    /// a TLS tunnel, and `bbvirt tunnels` makes the tunnel from vm.conf.
    pub fn attach_endpoint(&self, endpoint: &Endpoint) -> Result<Outcome, ActionError> {
        let targets = self.endpoint_targets(endpoint);
        if targets.is_empty() {
            note!(
                "{endpoint} is in no DOMAIN_REMOTE_ of {}: nothing to attach (add it to its \
                 guest's DOMAIN_REMOTE_, which says whether it goes through a TLS tunnel)",
                self.config.path.display()
            );
            return Ok(Outcome::NothingToDo);
        }
        let mut conns = self.connections();
        let mut steps = Steps::default();
        for (target, w) in &targets {
            let conn = match self.connect(&mut conns, target) {
                Ok(c) => c,
                Err(e) if self.opts.dry_run => {
                    note!(
                        "{e}: libvirt could not be asked what '{}' holds: showing the attach \
                         request only",
                        target.name
                    );
                    self.plan_remote(target, w);
                    steps.record(Ok(Outcome::Done));
                    continue;
                }
                Err(e) if e.is_nothing_to_do() => {
                    note!("{e}: {endpoint} not attached to '{}'", target.name);
                    continue;
                }
                Err(source) => {
                    steps.record(Err(ActionError::Virt {
                        action: "attaching",
                        what: endpoint.to_string(),
                        domain: target.name.clone(),
                        source,
                    }));
                    continue;
                }
            };
            let live = match self.live_redirdevs(conn, &target.name) {
                Ok(Some(live)) => live,
                Ok(None) => {
                    note!("'{}' is not running: {endpoint} not attached", target.name);
                    continue;
                }
                Err(e) => {
                    steps.record(Err(e));
                    continue;
                }
            };
            if live.iter().any(|l| w.is_held_by(l)) {
                note!("{endpoint} is already attached to '{}'", target.name);
                steps.record(Ok(Outcome::NothingToDo));
                continue;
            }
            // Its alias with another source: replaced, as sync replaces it.
            if live.iter().any(|l| l.alias == w.alias) {
                let detached = self.detach_alias(conn, target, &w.alias);
                let failed = detached.is_err();
                steps.record(detached);
                if failed {
                    continue;
                }
            }
            steps.record(self.attach_redirdev(conn, target, w));
        }
        conns.release_lock();
        steps.finish()
    }

    /// `bbvirt detach HOST:PORT`: detaches the remote device served at
    /// `endpoint` (its redirdev, by bbvirt's alias for it) from every
    /// configured guest that holds it live, or from `--domain`. A guest
    /// whose DOMAIN_REMOTE_ gives it gets it back at the next `sync`, as a
    /// detached local device at its next plug.
    pub fn detach_endpoint(&self, endpoint: &Endpoint) -> Result<Outcome, ActionError> {
        let alias = alias_for(endpoint);
        let targets = self.all_targets();
        if targets.is_empty() {
            note!(
                "no domain is configured: nothing to detach {endpoint} from (name its guest with -D)"
            );
            return Ok(Outcome::NothingToDo);
        }
        let given: Vec<Target> = self
            .endpoint_targets(endpoint)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let mut conns = self.connections();
        let mut steps = Steps::default();
        let mut answered = false;
        for target in &targets {
            let conn = match self.connect(&mut conns, target) {
                Ok(c) => c,
                // Only a guest vm.conf gives it to can be assumed to hold it.
                Err(e) if self.opts.dry_run && given.contains(target) => {
                    note!(
                        "{e}: libvirt could not be asked whether {endpoint} is attached to '{}': \
                         showing the detach request only",
                        target.name
                    );
                    super::plan_detach_alias(target, &alias);
                    steps.record(Ok(Outcome::Done));
                    continue;
                }
                Err(e) if self.opts.dry_run || e.is_nothing_to_do() => continue,
                Err(source) => {
                    steps.record(Err(ActionError::Virt {
                        action: "detaching",
                        what: endpoint.to_string(),
                        domain: target.name.clone(),
                        source,
                    }));
                    continue;
                }
            };
            answered = true;
            match self.live_redirdevs(conn, &target.name) {
                Ok(Some(live)) if live.iter().any(|l| l.alias == alias) => {
                    steps.record(self.detach_alias(conn, target, &alias));
                    if given.contains(target) {
                        note!(
                            "vm.conf gives {endpoint} to '{}': the next sync attaches it again",
                            target.name
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => steps.record(Err(e)),
            }
        }
        conns.release_lock();
        if answered && steps.errors.is_empty() && steps.outcome != Some(Outcome::Done) {
            note!("{endpoint} is not attached to any guest bbvirt looked at");
        }
        steps.finish()
    }

    /// A dry run's line for a redirdev attach.
    fn plan_remote(&self, target: &Target, w: &Wanted) {
        crate::log::dry_run(&target.virsh(&[
            "attach-device",
            &shell_quote(&target.name),
            "<xml>",
            "--live",
        ]));
        detail!("redirdev XML for {}:\n{}", w.shown, w.xml);
    }

    /// Detaches every bbvirt redirdev of the running guest `target`.
    pub(super) fn detach_remote(&self, conn: &dyn Connection, steps: &mut Steps, target: &Target) {
        match self.live_redirdevs(conn, &target.name) {
            Ok(Some(live)) => {
                for l in live {
                    steps.record(self.detach_alias(conn, target, &l.alias));
                }
            }
            Ok(None) => {}
            Err(e) => steps.record(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(s: &[&str]) -> Vec<RemoteElement> {
        s.iter().map(|e| e.parse().unwrap()).collect()
    }

    fn live(w: &Wanted) -> Redirdev {
        Redirdev {
            alias: w.alias.clone(),
            host: w.host.clone(),
            service: w.service.clone(),
        }
    }

    #[test]
    fn plan_keeps_what_is_right_and_replaces_what_is_not() {
        let w = wanted(&remote(&["a.lan:4000", "b.lan:4001", "c.lan:4002"]));
        let mut moved = live(&w[1]);
        moved.service = "9999".into();
        let gone = Redirdev {
            alias: "ua-bbnet-n-old-4003".into(),
            host: "127.0.0.1".into(),
            service: "4003".into(),
        };
        let (detach, attach) = plan(&[live(&w[0]), moved, gone], &w);
        assert_eq!(detach, ["ua-bbnet-n-b_lan-4001", "ua-bbnet-n-old-4003"]);
        let attach: Vec<&str> = attach.iter().map(|w| w.shown.as_str()).collect();
        assert_eq!(attach, ["b.lan:4001", "c.lan:4002"]);
        // nothing to do when the guest holds exactly what it should
        let all: Vec<Redirdev> = w.iter().map(live).collect();
        assert_eq!(plan(&all, &w), (vec![], vec![]));
        // a guest with no element loses every one of bbvirt's
        assert_eq!(plan(&all, &[]).0.len(), 3);
    }
}
