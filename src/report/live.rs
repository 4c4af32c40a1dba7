//! Looking at libvirt for a report: every configured domain on its URI,
//! then the other running domains of each daemon once ([`look_at_libvirt`]).
//! `status` and `devices` look at the same domains the same way, so this
//! is theirs in common.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::DomainConf;
use crate::context::{Connections, Context};
use crate::hostdev::{UsbHostdev, usb_hostdevs};
use crate::libvirt::{Connection, VirtError, uri_label};
use crate::remote::redirdev::{Redirdev, redirdevs_in};

/// What libvirt says of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    Running,
    ShutOff,
    Undefined,
    Unknown,
}

/// One domain whose live XML was looked at (or tried); `bbvirt devices`
/// looks at the same ones.
pub struct LiveDomain {
    pub uri: Option<String>,
    pub name: String,
    pub configured: bool,
    pub state: DomainState,
    /// The USB hostdevs, when the domain runs and its XML could be read.
    pub hostdevs: Option<Vec<UsbHostdev>>,
    /// bbvirt's redirdevs (remote devices), from the same XML.
    pub redirdevs: Option<Vec<Redirdev>>,
    /// Its USB controllers' models by index (from the same XML), for where
    /// its hostdevs sit in the guest.
    pub controller_models: BTreeMap<String, String>,
    /// A shut-off domain's managed save image's XML, if it has one.
    pub managed_save: Option<String>,
    pub error: Option<String>,
}

impl LiveDomain {
    pub fn is(&self, uri: &Option<String>, name: &str) -> bool {
        self.uri == *uri && self.name == name
    }
}

/// The URI a configured guest is looked at on (`-c`, else its own).
pub fn uri_of(ctx: &Context, d: &DomainConf) -> Option<String> {
    ctx.target_for_conf(d).uri
}

/// Reads one domain's live XML and classifies the answer.
fn scan_domain(
    conn: &dyn Connection,
    uri: &Option<String>,
    name: &str,
    configured: bool,
) -> LiveDomain {
    crate::log::step(&format!("reading the live XML of '{name}'"));
    let mut controller_models = BTreeMap::new();
    let mut managed_save = None;
    let mut redirdevs = None;
    let (state, hostdevs, error) = match conn.live_xml(name) {
        Ok(xml) => match usb_hostdevs(&xml) {
            Ok(h) => {
                controller_models = crate::controllers::controller_models(&xml).unwrap_or_default();
                redirdevs = redirdevs_in(&xml).ok();
                (DomainState::Running, Some(h), None)
            }
            Err(e) => (
                DomainState::Running,
                None,
                Some(format!("reading the live XML: {}", crate::log::chain(&e))),
            ),
        },
        Err(VirtError::NotRunning(_)) => {
            crate::log::step(&format!("looking for a managed save image of '{name}'"));
            managed_save = conn.managed_save_xml(name).ok().flatten();
            (DomainState::ShutOff, None, None)
        }
        Err(VirtError::NoDomain(_)) => (DomainState::Undefined, None, None),
        Err(e) => (DomainState::Unknown, None, Some(e.to_string())),
    };
    LiveDomain {
        uri: uri.clone(),
        name: name.to_string(),
        configured,
        state,
        hostdevs,
        redirdevs,
        controller_models,
        managed_save,
        error,
    }
}

/// What libvirt showed.
pub struct Seen {
    /// Every domain looked at: the configured ones, then the others that run.
    pub domains: Vec<LiveDomain>,
    /// False when a connection could not be opened.
    pub reachable: bool,
    /// Connection and listing errors, and errors reading other domains.
    pub errors: Vec<String>,
}

/// First every configured domain on every URI, then the other running
/// domains of each daemon once: two URIs may reach the same daemon
/// (`qemu:///system` and root's default), and a configured guest seen
/// through the other URI is still the configured guest.
pub fn look_at_libvirt(ctx: &Context) -> Seen {
    let mut seen = Seen {
        domains: Vec::new(),
        reachable: true,
        errors: Vec::new(),
    };
    let mut conns = Connections::read_only(ctx.hv);
    let open = look_at_configured(ctx, &mut conns, &mut seen);
    look_at_others(&mut conns, &open, &mut seen);
    // Errors reading other (unconfigured) domains count as libvirt errors.
    let others: Vec<String> = seen
        .domains
        .iter()
        .filter(|s| !s.configured)
        .filter_map(|s| Some(format!("domain '{}': {}", s.name, s.error.as_ref()?)))
        .collect();
    seen.errors.extend(others);
    seen
}

/// Reads the configured domains, URI by URI in config order; returns the
/// URIs whose connection opened, in order.
fn look_at_configured(
    ctx: &Context,
    conns: &mut Connections,
    seen: &mut Seen,
) -> Vec<Option<String>> {
    let mut open: Vec<Option<String>> = Vec::new();
    for uri in ctx.uris() {
        let names: Vec<&str> = ctx
            .config
            .domains
            .iter()
            .filter(|d| uri_of(ctx, d) == uri)
            .map(DomainConf::libvirt_name)
            .collect();
        let conn = match conns.get(uri.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                seen.reachable = false;
                let msg = e.to_string();
                for name in names {
                    if !seen.domains.iter().any(|s| s.is(&uri, name)) {
                        seen.domains.push(LiveDomain {
                            uri: uri.clone(),
                            name: name.to_string(),
                            configured: true,
                            state: DomainState::Unknown,
                            hostdevs: None,
                            redirdevs: None,
                            controller_models: BTreeMap::new(),
                            managed_save: None,
                            error: Some(msg.clone()),
                        });
                    }
                }
                seen.errors.push(msg);
                continue;
            }
        };
        for name in &names {
            if !seen.domains.iter().any(|s| s.is(&uri, name)) {
                seen.domains.push(scan_domain(conn, &uri, name, true));
            }
        }
        open.push(uri);
    }
    open
}

/// Reads the running domains vm.conf does not name, once per daemon.
fn look_at_others(conns: &mut Connections, open: &[Option<String>], seen: &mut Seen) {
    // The daemon each URI reached, as libvirt names it (else the URI itself).
    let daemon: Vec<Option<String>> = open
        .iter()
        .map(|uri| {
            conns
                .get(uri.as_deref())
                .ok()
                .and_then(|c| c.canonical_uri())
                .or_else(|| uri.clone())
        })
        .collect();
    let daemon_of = |uri: &Option<String>| -> Option<Option<String>> {
        open.iter()
            .position(|u| u == uri)
            .map(|i| daemon[i].clone())
    };
    for (i, uri) in open.iter().enumerate() {
        if daemon[..i].contains(&daemon[i]) {
            continue;
        }
        let Ok(conn) = conns.get(uri.as_deref()) else {
            continue;
        };
        crate::log::step(&format!(
            "listing the running domains at {}",
            uri_label(uri.as_deref())
        ));
        match conn.running_domains() {
            Ok(running) => {
                for name in running {
                    let known = seen
                        .domains
                        .iter()
                        .any(|s| s.name == name && daemon_of(&s.uri) == Some(daemon[i].clone()));
                    if known {
                        continue;
                    }
                    let s = scan_domain(conn, uri, &name, false);
                    // Stopped or undefined since it was listed: nothing in it.
                    if s.state == DomainState::Running || s.error.is_some() {
                        seen.domains.push(s);
                    }
                }
            }
            Err(e) => seen.errors.push(format!(
                "listing the running domains at {}: {e}",
                uri_label(uri.as_deref())
            )),
        }
    }
}
