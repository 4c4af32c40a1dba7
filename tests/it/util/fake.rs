//! A fake hypervisor behind bbvirt's narrow [`Hypervisor`] trait: domains
//! by (URI, name), libvirt's refusals (a second device with one alias, a
//! device in use), an asynchronous detach, and a typed log of the changes
//! asked for ([`Call`]). Behaviours are set by builder methods.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bbvirt::hostdev::usb_hostdevs;
use bbvirt::libvirt::{Connection, Hypervisor, JobState, VirtError};
use bbvirt::remote::redirdev::redirdevs_in;

/// One hostdev in a fake domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dev {
    pub alias: String,
    pub bus: u32,
    pub dev: u32,
}

/// One redirdev (a remote USB device) in a fake domain: where its
/// `<source>` connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redir {
    pub alias: String,
    pub host: String,
    pub service: String,
}

#[derive(Debug, Clone, Default)]
pub struct FakeDomain {
    pub running: bool,
    pub hostdevs: Vec<Dev>,
    pub redirdevs: Vec<Redir>,
    /// The `<controller type='usb'>` elements of its XML.
    pub usb_controllers: String,
    /// Whether its live XML gives each hostdev its guest-side address
    /// (`<address type='usb' bus='0' port='N'/>`, N counting from 1), as
    /// libvirt does after an attach.
    pub guest_addresses: bool,
}

/// The controllers a fake domain has unless told otherwise.
pub const XHCI: &str = "<controller type='usb' index='0' model='qemu-xhci'/>";

/// Everything the fake knows and records.
#[derive(Debug, Default)]
struct FakeState {
    /// Domains by (URI, name); URI None is the default connection.
    pub domains: BTreeMap<(Option<String>, String), FakeDomain>,
    /// Every URI a connection was opened to.
    pub connects: Vec<Option<String>>,
    /// Every change asked for, in order.
    pub calls: Vec<Call>,
    /// When set, connecting fails with this.
    pub connect_error: Option<VirtError>,
    /// When set, attaching fails with this.
    pub attach_error: Option<VirtError>,
    /// How many live-XML reads a detached device stays visible for
    /// (libvirt's detach is asynchronous).
    pub detach_lag: u32,
    /// When true, a detach request is accepted but never carried out.
    pub detach_never_completes: bool,
    /// Aliases whose detach libvirt refuses.
    pub refuse_detach: Vec<String>,
    /// URIs that reach the daemon of another URI (as `qemu:///system`
    /// and the default URI do for root): from -> to.
    pub uri_aliases: BTreeMap<Option<String>, Option<String>>,
    pending: Vec<(Option<String>, String, String, u32)>,
    /// How many more job queries answer "busy", by (URI, name): a restore
    /// or incoming migration still under way.
    pub busy: BTreeMap<(Option<String>, String), u32>,
    /// Managed save images' XML, by (URI, name).
    pub managed_saves: BTreeMap<(Option<String>, String), String>,
    /// Every job query, by domain name, in order.
    pub job_queries: Vec<String>,
}

/// A change asked of the fake; its Display is the line tests compare:
/// `attach URI NAME ALIAS BUS:DEV`, `attach-redir URI NAME ALIAS
/// HOST:SERVICE`, `detach URI NAME ALIAS` (URI `-` for the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Attach {
        uri: Option<String>,
        domain: String,
        alias: String,
        bus: u32,
        dev: u32,
    },
    AttachRedir {
        uri: Option<String>,
        domain: String,
        alias: String,
        host: String,
        service: String,
    },
    Detach {
        uri: Option<String>,
        domain: String,
        alias: String,
    },
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let uri = |u: &Option<String>| u.clone().unwrap_or_else(|| "-".into());
        match self {
            Call::Attach {
                uri: u,
                domain,
                alias,
                bus,
                dev,
            } => write!(f, "attach {} {domain} {alias} {bus}:{dev}", uri(u)),
            Call::AttachRedir {
                uri: u,
                domain,
                alias,
                host,
                service,
            } => write!(
                f,
                "attach-redir {} {domain} {alias} {host}:{service}",
                uri(u)
            ),
            Call::Detach {
                uri: u,
                domain,
                alias,
            } => write!(f, "detach {} {domain} {alias}", uri(u)),
        }
    }
}

/// A fake libvirt, shared between the test and the code under test.
#[derive(Clone, Default)]
pub struct FakeHv(Rc<RefCell<FakeState>>);

impl FakeHv {
    pub fn new() -> FakeHv {
        FakeHv::default()
    }

    /// Adds a domain at `uri` (None = default URI).
    pub fn domain(self, uri: Option<&str>, name: &str, running: bool) -> FakeHv {
        self.0.borrow_mut().domains.insert(
            (uri.map(str::to_string), name.to_string()),
            FakeDomain {
                running,
                hostdevs: Vec::new(),
                redirdevs: Vec::new(),
                usb_controllers: XHCI.to_string(),
                guest_addresses: false,
            },
        );
        self
    }

    /// Puts a redirdev in a domain (an admin's, or one bbvirt left).
    pub fn redirdev(
        self,
        uri: Option<&str>,
        name: &str,
        alias: &str,
        host: &str,
        service: &str,
    ) -> FakeHv {
        self.0
            .borrow_mut()
            .domains
            .get_mut(&(uri.map(str::to_string), name.to_string()))
            .expect("domain added first")
            .redirdevs
            .push(Redir {
                alias: alias.into(),
                host: host.into(),
                service: service.into(),
            });
        self
    }

    /// Gives a domain these USB controller elements instead of one xHCI
    /// ("" for none). Like libvirt, the fake refuses USB hostdevs to a
    /// domain without a USB controller.
    pub fn usb_controllers(self, uri: Option<&str>, name: &str, xml: &str) -> FakeHv {
        self.0
            .borrow_mut()
            .domains
            .get_mut(&(uri.map(str::to_string), name.to_string()))
            .expect("domain defined first")
            .usb_controllers = xml.to_string();
        self
    }

    /// Makes a domain's live XML give each hostdev its guest-side address.
    pub fn guest_addresses(self, uri: Option<&str>, name: &str) -> FakeHv {
        self.0
            .borrow_mut()
            .domains
            .get_mut(&(uri.map(str::to_string), name.to_string()))
            .expect("domain defined first")
            .guest_addresses = true;
        self
    }

    /// Puts a hostdev into a domain directly (as if attached earlier).
    pub fn with_hostdev(
        self,
        uri: Option<&str>,
        name: &str,
        alias: &str,
        bus: u32,
        dev: u32,
    ) -> FakeHv {
        self.0
            .borrow_mut()
            .domains
            .get_mut(&(uri.map(str::to_string), name.to_string()))
            .expect("domain defined first")
            .hostdevs
            .push(Dev {
                alias: alias.to_string(),
                bus,
                dev,
            });
        self
    }

    /// The hostdevs of a domain, as (alias, bus, dev).
    pub fn hostdevs(&self, uri: Option<&str>, name: &str) -> Vec<(String, u32, u32)> {
        self.0.borrow().domains[&(uri.map(str::to_string), name.to_string())]
            .hostdevs
            .iter()
            .map(|d| (d.alias.clone(), d.bus, d.dev))
            .collect()
    }

    /// A domain's redirdevs: (alias, "host:service").
    pub fn redirdevs(&self, uri: Option<&str>, name: &str) -> Vec<(String, String)> {
        self.0.borrow().domains[&(uri.map(str::to_string), name.to_string())]
            .redirdevs
            .iter()
            .map(|r| (r.alias.clone(), format!("{}:{}", r.host, r.service)))
            .collect()
    }

    /// Makes connections to `from` reach the domains of `to`.
    pub fn alias_uri(self, from: Option<&str>, to: Option<&str>) -> FakeHv {
        self.0
            .borrow_mut()
            .uri_aliases
            .insert(from.map(str::to_string), to.map(str::to_string));
        self
    }

    /// Connecting fails with `e`.
    pub fn connect_error(self, e: VirtError) -> FakeHv {
        self.0.borrow_mut().connect_error = Some(e);
        self
    }

    /// Attaching fails with `e`.
    pub fn attach_error(self, e: VirtError) -> FakeHv {
        self.0.borrow_mut().attach_error = Some(e);
        self
    }

    /// A detached device stays in the live XML for `reads` more reads.
    pub fn detach_lag(self, reads: u32) -> FakeHv {
        self.0.borrow_mut().detach_lag = reads;
        self
    }

    /// A detach request is accepted but never carried out.
    pub fn detach_never_completes(self) -> FakeHv {
        self.0.borrow_mut().detach_never_completes = true;
        self
    }

    /// libvirt refuses to detach the device with `alias`.
    pub fn refuse_detach(self, alias: &str) -> FakeHv {
        self.0.borrow_mut().refuse_detach.push(alias.to_string());
        self
    }

    /// The changes asked for, in order.
    /// The next `n` job queries on the domain answer "busy" (libvirt is
    /// restoring it, or migrating it in).
    pub fn busy_for(self, uri: Option<&str>, name: &str, n: u32) -> FakeHv {
        self.0
            .borrow_mut()
            .busy
            .insert((uri.map(str::to_string), name.to_string()), n);
        self
    }

    /// The domain has a managed save image holding `xml`.
    pub fn managed_save(self, uri: Option<&str>, name: &str, xml: &str) -> FakeHv {
        self.0
            .borrow_mut()
            .managed_saves
            .insert((uri.map(str::to_string), name.to_string()), xml.to_string());
        self
    }

    /// The domains whose job state was asked, in order.
    pub fn job_queries(&self) -> Vec<String> {
        self.0.borrow().job_queries.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.borrow().calls.clone()
    }

    /// The changes asked for, as lines ([`Call`]'s Display).
    pub fn call_lines(&self) -> Vec<String> {
        self.calls().iter().map(ToString::to_string).collect()
    }

    pub fn connects(&self) -> Vec<Option<String>> {
        self.0.borrow().connects.clone()
    }
}

impl Hypervisor for FakeHv {
    fn version(&self) -> Result<u32, String> {
        Ok(9_000_000)
    }

    fn connect(&self, uri: Option<&str>) -> Result<Box<dyn Connection>, VirtError> {
        let mut st = self.0.borrow_mut();
        st.connects.push(uri.map(str::to_string));
        if let Some(e) = &st.connect_error {
            return Err(e.clone());
        }
        let uri = uri.map(str::to_string);
        let uri = st.uri_aliases.get(&uri).cloned().unwrap_or(uri);
        Ok(Box::new(FakeConn {
            hv: self.clone(),
            uri,
        }))
    }
}

struct FakeConn {
    hv: FakeHv,
    uri: Option<String>,
}

impl FakeConn {
    fn with_running<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut FakeState, &(Option<String>, String)) -> Result<T, VirtError>,
    ) -> Result<T, VirtError> {
        let mut st = self.hv.0.borrow_mut();
        let key = (self.uri.clone(), name.to_string());
        match st.domains.get(&key) {
            None => Err(VirtError::NoDomain(name.to_string())),
            Some(d) if !d.running => Err(VirtError::NotRunning(name.to_string())),
            Some(_) => f(&mut st, &key),
        }
    }
}

impl Connection for FakeConn {
    fn live_xml(&self, domain: &str) -> Result<String, VirtError> {
        self.with_running(domain, |st, key| {
            // Carry out pending detaches whose lag has run out.
            let mut done = Vec::new();
            for p in st.pending.iter_mut() {
                if (p.0.clone(), p.1.clone()) == *key {
                    if p.3 == 0 {
                        done.push(p.2.clone());
                    } else {
                        p.3 -= 1;
                    }
                }
            }
            st.pending
                .retain(|p| !((p.0.clone(), p.1.clone()) == *key && done.contains(&p.2)));
            let d = st.domains.get_mut(key).expect("checked");
            d.hostdevs.retain(|h| !done.contains(&h.alias));
            d.redirdevs.retain(|r| !done.contains(&r.alias));
            let mut xml = format!(
                "<domain type='kvm'><name>{}</name><devices>{}",
                key.1, d.usb_controllers
            );
            for (i, h) in d.hostdevs.iter().enumerate() {
                let guest = if d.guest_addresses {
                    format!("<address type='usb' bus='0' port='{}'/>", i + 1)
                } else {
                    String::new()
                };
                xml.push_str(&format!(
                    "<hostdev mode='subsystem' type='usb' managed='no'><source>\
                     <address bus='{}' device='{}'/></source><alias name='{}'/>{guest}</hostdev>",
                    h.bus, h.dev, h.alias
                ));
            }
            // As libvirt writes a live redirdev: tls='no' and the protocol added.
            for r in &d.redirdevs {
                xml.push_str(&format!(
                    "<redirdev bus='usb' type='tcp'><source mode='connect' host='{}' \
                     service='{}' tls='no'><reconnect enabled='yes' timeout='2'/></source>\
                     <protocol type='raw'/><alias name='{}'/></redirdev>",
                    r.host, r.service, r.alias
                ));
            }
            xml.push_str("</devices></domain>");
            Ok(xml)
        })
    }

    fn definition_xml(&self, domain: &str) -> Result<String, VirtError> {
        let st = self.hv.0.borrow();
        let d = st
            .domains
            .get(&(self.uri.clone(), domain.to_string()))
            .ok_or_else(|| VirtError::NoDomain(domain.to_string()))?;
        Ok(format!(
            "<domain type='kvm'><name>{domain}</name><devices>{}</devices></domain>",
            d.usb_controllers
        ))
    }

    fn attach_live(&self, domain: &str, xml: &str) -> Result<(), VirtError> {
        let uri = self.uri.clone();
        self.with_running(domain, |st, key| {
            if let Some(e) = &st.attach_error {
                return Err(e.clone());
            }
            let controllers = &st.domains[key].usb_controllers;
            let support = bbvirt::controllers::usb_support(&format!(
                "<domain><devices>{controllers}</devices></domain>"
            ))
            .expect("fixture XML");
            if !support.can_attach() {
                // libvirt 9.0's refusal, seen in the lab (VIR_ERR_CONFIG_UNSUPPORTED);
                // bbvirt never reads the text.
                return Err(VirtError::Failed {
                    code: 67,
                    message: "unsupported configuration: Device configuration is not \
                              compatible: Domain has no USB bus support"
                        .into(),
                });
            }
            let wrapped = format!("<domain><devices>{xml}</devices></domain>");
            if xml.starts_with("<redirdev") {
                let rd = redirdevs_in(&wrapped)
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .ok_or(VirtError::Failed {
                        code: 27,
                        message: "XML error".into(),
                    })?;
                let d = st.domains.get_mut(key).expect("checked");
                if d.hostdevs.iter().any(|h| h.alias == rd.alias)
                    || d.redirdevs.iter().any(|r| r.alias == rd.alias)
                {
                    return Err(VirtError::Failed {
                        code: 67,
                        message: "non unique alias detected".into(),
                    });
                }
                d.redirdevs.push(Redir {
                    alias: rd.alias.clone(),
                    host: rd.host.clone(),
                    service: rd.service.clone(),
                });
                st.calls.push(Call::AttachRedir {
                    uri: uri.clone(),
                    domain: key.1.clone(),
                    alias: rd.alias,
                    host: rd.host,
                    service: rd.service,
                });
                return Ok(());
            }
            let hd = usb_hostdevs(&wrapped)
                .ok()
                .and_then(|v| v.into_iter().next())
                .ok_or(VirtError::Failed {
                    code: 27,
                    message: "XML error".into(),
                })?;
            let dev = Dev {
                alias: hd.alias.clone().unwrap_or_default(),
                bus: hd.bus.unwrap_or(0),
                dev: hd.device.unwrap_or(0),
            };
            // What libvirt refuses: a second device with the same alias, or
            // a USB device already in use.
            for d in st.domains.values() {
                if d.hostdevs
                    .iter()
                    .any(|h| h.bus == dev.bus && h.dev == dev.dev)
                {
                    return Err(VirtError::Failed {
                        code: 55,
                        message: format!("USB device {:03}:{:03} is in use", dev.bus, dev.dev),
                    });
                }
            }
            let d = st.domains.get_mut(key).expect("checked");
            if d.hostdevs.iter().any(|h| h.alias == dev.alias) {
                return Err(VirtError::Failed {
                    code: 67,
                    message: "non unique alias detected".into(),
                });
            }
            d.hostdevs.push(dev.clone());
            st.calls.push(Call::Attach {
                uri: uri.clone(),
                domain: key.1.clone(),
                alias: dev.alias.clone(),
                bus: dev.bus,
                dev: dev.dev,
            });
            Ok(())
        })
    }

    fn detach_alias_live(&self, domain: &str, alias: &str) -> Result<(), VirtError> {
        let uri = self.uri.clone();
        self.with_running(domain, |st, key| {
            if st.refuse_detach.iter().any(|a| a == alias) {
                return Err(VirtError::Failed {
                    code: 1,
                    message: format!("refused to detach {alias}"),
                });
            }
            let d = st.domains.get(key).expect("checked");
            if !d.hostdevs.iter().any(|h| h.alias == alias)
                && !d.redirdevs.iter().any(|r| r.alias == alias)
            {
                return Err(VirtError::Failed {
                    code: 99,
                    message: format!("no device found with alias {alias}"),
                });
            }
            st.calls.push(Call::Detach {
                uri: uri.clone(),
                domain: key.1.clone(),
                alias: alias.to_string(),
            });
            let lag = if st.detach_never_completes {
                u32::MAX
            } else {
                st.detach_lag
            };
            st.pending
                .push((key.0.clone(), key.1.clone(), alias.to_string(), lag));
            Ok(())
        })
    }

    fn job_state(&self, domain: &str) -> Result<JobState, VirtError> {
        self.hv.0.borrow_mut().job_queries.push(domain.to_string());
        self.with_running(domain, |st, key| match st.busy.get_mut(key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Ok(JobState::Busy)
            }
            _ => Ok(JobState::Idle),
        })
    }

    fn managed_save_xml(&self, domain: &str) -> Result<Option<String>, VirtError> {
        let st = self.hv.0.borrow();
        let key = (self.uri.clone(), domain.to_string());
        if !st.domains.contains_key(&key) {
            return Err(VirtError::NoDomain(domain.to_string()));
        }
        Ok(st.managed_saves.get(&key).cloned())
    }

    fn running_domains(&self) -> Result<Vec<String>, VirtError> {
        let st = self.hv.0.borrow();
        Ok(st
            .domains
            .iter()
            .filter(|((u, _), d)| *u == self.uri && d.running)
            .map(|((_, n), _)| n.clone())
            .collect())
    }

    fn canonical_uri(&self) -> Option<String> {
        Some(self.uri.clone().unwrap_or_else(|| "fake:///default".into()))
    }
}
