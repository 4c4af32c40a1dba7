//! A guest's remote devices (`DOMAIN_REMOTE_<id>`, [`crate::remote`]): at
//! `sync` (and so on the guest's start, through the hook's follow-up) each
//! running guest gets a `<redirdev>` per element, connecting where
//! [`RemoteElement::connects_to`] says; bbvirt's redirdevs it should not
//! hold (element removed, or its source changed) are detached first.
//! `detach-all` detaches them all. Only redirdevs with bbvirt's alias
//! ([`crate::remote::redirdev::is_ours`]) are ever touched.
//!
//! Unlike a local device, a remote one is attached whether or not its
//! exporting host answers now: QEMU's `<reconnect>` keeps trying, so a
//! host that is down never fails or delays a guest's start, and the device
//! arrives when it comes up. Its presence is QEMU's business, not bbvirt's.

use crate::context::{Connections, Target};
use crate::libvirt::Connection;
use crate::remote::element::RemoteElement;
use crate::remote::redirdev::{Redirdev, Wanted, redirdevs_in, wanted};
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
            if self.opts.dry_run {
                self.plan_remote(target, w);
                steps.record(Ok(Outcome::Done));
                continue;
            }
            detail!("redirdev XML for {}:\n{}", w.shown, w.xml);
            crate::log::step(&format!("attaching {} to '{}'", w.shown, target.name));
            let result = match conn.attach_live(&target.name, &w.xml) {
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
            };
            steps.record(result);
        }
        conns.release_lock();
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
