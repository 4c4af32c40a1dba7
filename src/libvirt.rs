//! The hypervisor boundary: a narrow trait with the few things bbvirt asks of
//! libvirt, and its implementation on the official bindings (crate `virt`).
//!
//! Errors are classified by libvirt's error *code* and the domain's state,
//! never by message text: "no such domain" and "domain not running" mean there
//! is nothing to do (udev runs bbvirt for devices whose guest is off), anything
//! else is a failure.

use std::ffi::CString;

/// What went wrong talking to libvirt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtError {
    #[error("domain '{0}' is not defined")]
    NoDomain(String),
    #[error("domain '{0}' is not running")]
    NotRunning(String),
    #[error("connecting to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
    /// No daemon behind the socket (refused, or no socket at all): no guest
    /// can be reached now, and the hook's `started`/`reconnect` events bring
    /// the devices when libvirt and the guest come back.
    #[error("libvirt is not running at {uri}: {message}")]
    Down { uri: String, message: String },
    /// The local daemon is not ready to serve yet and bbvirt, run by udev,
    /// did not connect ([`crate::daemon`]): `bbvirt-sync.service` brings
    /// the devices once it serves.
    #[error("libvirt at {uri} is not ready yet: {reason}")]
    NotReady { uri: String, reason: String },
    #[error("{message} (libvirt error code {code})")]
    Failed { code: i32, message: String },
}

impl VirtError {
    /// True when the error means "nothing to do" rather than a failure.
    pub fn is_nothing_to_do(&self) -> bool {
        matches!(
            self,
            VirtError::NoDomain(_)
                | VirtError::NotRunning(_)
                | VirtError::Down { .. }
                | VirtError::NotReady { .. }
        )
    }
}

/// Whether libvirt is busy with a guest ([`Connection::job_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// No job: a device can be attached or detached now.
    Idle,
    /// libvirt is starting, restoring, reverting or migrating the guest in
    /// (an asynchronous job): an attach now would wait for it.
    Busy,
}

/// The URI for messages: `uri`, or "the default URI" for libvirt's default
/// (None). The one place that label is made.
pub fn uri_label(uri: Option<&str>) -> &str {
    uri.unwrap_or("the default URI")
}

/// Opens connections.
pub trait Hypervisor {
    /// Connects to `uri`, or to libvirt's default for this user when None.
    fn connect(&self, uri: Option<&str>) -> Result<Box<dyn Connection>, VirtError>;
    /// The version of the libvirt library bbvirt runs with
    /// (`major * 1_000_000 + minor * 1000 + release`); Err says why unknown.
    fn version(&self) -> Result<u32, String>;
}

/// One open connection. Domains are named by their libvirt name.
pub trait Connection {
    /// The live XML of a running domain.
    fn live_xml(&self, domain: &str) -> Result<String, VirtError>;
    /// The persistent definition of a domain, running or not
    /// (`VIR_DOMAIN_XML_INACTIVE`).
    fn definition_xml(&self, domain: &str) -> Result<String, VirtError>;
    /// Attaches a device to the running domain only (`VIR_DOMAIN_AFFECT_LIVE`).
    fn attach_live(&self, domain: &str, xml: &str) -> Result<(), VirtError>;
    /// Asks for the device with this alias to be detached from the running
    /// domain only. libvirt may finish the removal later: callers wait for the
    /// alias to leave the live XML.
    fn detach_alias_live(&self, domain: &str, alias: &str) -> Result<(), VirtError>;
    /// Names of the running domains.
    fn running_domains(&self) -> Result<Vec<String>, VirtError>;
    /// Whether libvirt has a job on the running domain: `virDomainGetJobInfo`,
    /// which answers at once during an incoming migration (an error that
    /// means busy), and otherwise waits for a start, restore or revert to
    /// end (at most libvirt's 30 s; a timeout means busy too).
    fn job_state(&self, domain: &str) -> Result<JobState, VirtError>;
    /// The domain XML of the domain's managed save image
    /// (`virDomainManagedSaveGetXMLDesc`, secure info left out); None when
    /// it has none.
    fn managed_save_xml(&self, domain: &str) -> Result<Option<String>, VirtError>;
    /// The URI libvirt says this connection is to (`virConnectGetURI`):
    /// two URIs (`qemu:///system` and the default) may reach one daemon.
    /// None when unknown.
    fn canonical_uri(&self) -> Option<String> {
        None
    }
}

/// Classifies a libvirt error from its numeric code. `active` is the domain's
/// state looked up after the failure (None when unknown): an operation refused
/// because the domain stopped is "not running", not a failure.
pub fn classify(domain: &str, code: i32, message: &str, active: Option<bool>) -> VirtError {
    if code == virt::sys::VIR_ERR_NO_DOMAIN as i32 {
        return VirtError::NoDomain(domain.to_string());
    }
    if active == Some(false) {
        return VirtError::NotRunning(domain.to_string());
    }
    VirtError::Failed {
        code,
        message: message.to_string(),
    }
}

/// The monolithic daemon's socket, which libvirt's default URI reaches
/// (on hosts with the modular daemons, `virtproxyd` listens there).
pub const LIBVIRTD_SOCK: &str = "/run/libvirt/libvirt-sock";

/// The URI to connect to instead when libvirt's default URI found no daemon
/// (`uri` None, `LIBVIRT_DEFAULT_URI` unset): `qemu:///system` on a host
/// whose only local daemon is virtqemud (its socket there, libvirtd's, or
/// virtproxyd's in its place, not). libvirt's client resolves the default
/// through `/run/libvirt/libvirt-sock` alone, so without this a guest with
/// no `DOMAIN_URI_` is unreachable there, although `qemu:///system` is
/// (lab scenario 64: the boot "modular" runs virtqemud without virtproxyd).
pub fn default_uri_fallback(
    uri: Option<&str>,
    default_uri_set: bool,
    libvirtd_sock: bool,
    virtqemud_sock: bool,
) -> Option<&'static str> {
    (uri.is_none() && !default_uri_set && !libvirtd_sock && virtqemud_sock)
        .then_some("qemu:///system")
}

/// The real thing: libvirt through the `virt` crate.
#[derive(Debug, Default)]
pub struct Libvirt;

impl Libvirt {
    /// Sets libvirt's error callback to one that prints nothing: bbvirt
    /// reports errors itself, once, in its own words.
    pub fn new() -> Libvirt {
        virt::error::clear_error_callback();
        Libvirt
    }
}

fn code_of(e: &virt::error::Error) -> i32 {
    e.code().to_raw() as i32
}

impl Hypervisor for Libvirt {
    fn connect(&self, uri: Option<&str>) -> Result<Box<dyn Connection>, VirtError> {
        match virt::connect::Connect::open(uri) {
            Ok(conn) => Ok(Box::new(LibvirtConnection { conn })),
            Err(e) => {
                let absent = daemon_absent(code_of(&e), last_errno());
                let sockets = |p: &str| std::path::Path::new(p).exists();
                if absent
                    && let Some(instead) = default_uri_fallback(
                        uri,
                        std::env::var_os("LIBVIRT_DEFAULT_URI").is_some(),
                        sockets(LIBVIRTD_SOCK),
                        sockets(crate::daemon::VIRTQEMUD_SOCK),
                    )
                {
                    crate::debug!(
                        "the default URI has no daemon ({LIBVIRTD_SOCK} is missing), but \
                         virtqemud listens: connecting to {instead}"
                    );
                    return self.connect(Some(instead));
                }
                let uri = uri_label(uri).to_string();
                let message = e.message().to_string();
                if absent {
                    Err(VirtError::Down { uri, message })
                } else {
                    Err(VirtError::Connect { uri, message })
                }
            }
        }
    }

    fn version(&self) -> Result<u32, String> {
        virt::connect::Connect::version().map_err(|e| e.message().to_string())
    }
}

/// The `errno` libvirt recorded with its last error on this thread (its
/// `int1` field, set by system errors such as a failed socket connect).
fn last_errno() -> Option<i32> {
    // SAFETY: virGetLastError returns this thread's error object (or NULL),
    // owned by libvirt and valid until the next libvirt call on the thread.
    let err = unsafe { virt::sys::virGetLastError() };
    if err.is_null() {
        return None;
    }
    Some(unsafe { (*err).int1 })
}

/// Whether a failed connect means "no daemon": a system error whose errno
/// says the socket refused the connection or does not exist. Decided by code
/// and errno, never by the (translated) message.
pub fn daemon_absent(code: i32, errno: Option<i32>) -> bool {
    code == virt::sys::VIR_ERR_SYSTEM_ERROR as i32
        && matches!(errno, Some(libc::ECONNREFUSED) | Some(libc::ENOENT))
}

struct LibvirtConnection {
    conn: virt::connect::Connect,
}

impl LibvirtConnection {
    fn lookup(&self, name: &str) -> Result<virt::domain::Domain, VirtError> {
        self.conn
            .lookup_domain_by_name(name)
            .map_err(|e| classify(name, code_of(&e), e.message(), None))
    }

    /// Runs `op` on the running domain `name`, mapping errors by code.
    fn with_running<T>(
        &self,
        name: &str,
        op: impl FnOnce(&virt::domain::Domain) -> Result<T, virt::error::Error>,
    ) -> Result<T, VirtError> {
        let dom = self.lookup(name)?;
        if !dom.is_active().unwrap_or(true) {
            return Err(VirtError::NotRunning(name.to_string()));
        }
        op(&dom).map_err(|e| classify(name, code_of(&e), e.message(), dom.is_active().ok()))
    }
}

impl Connection for LibvirtConnection {
    fn live_xml(&self, domain: &str) -> Result<String, VirtError> {
        self.with_running(domain, |d| d.xml_desc(0))
    }

    fn definition_xml(&self, domain: &str) -> Result<String, VirtError> {
        let dom = self.lookup(domain)?;
        dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| classify(domain, code_of(&e), e.message(), None))
    }

    fn attach_live(&self, domain: &str, xml: &str) -> Result<(), VirtError> {
        self.with_running(domain, |d| {
            d.attach_device_flags(xml, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
        })
    }

    fn detach_alias_live(&self, domain: &str, alias: &str) -> Result<(), VirtError> {
        let c_alias = CString::new(alias).map_err(|_| VirtError::Failed {
            code: -1,
            message: format!("alias {alias:?} contains a NUL byte"),
        })?;
        self.with_running(domain, |d| {
            // virt 0.5 does not wrap virDomainDetachDeviceAlias (libvirt >= 4.4).
            // SAFETY: the domain pointer is valid while `d` lives; the alias
            // is a NUL-terminated string that outlives the call.
            let rc = unsafe {
                virt::sys::virDomainDetachDeviceAlias(
                    d.as_ptr(),
                    c_alias.as_ptr(),
                    virt::sys::VIR_DOMAIN_AFFECT_LIVE,
                )
            };
            if rc < 0 {
                Err(virt::error::Error::last_error())
            } else {
                Ok(())
            }
        })
    }

    fn running_domains(&self) -> Result<Vec<String>, VirtError> {
        let doms = self
            .conn
            .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(|e| VirtError::Failed {
                code: code_of(&e),
                message: e.message().to_string(),
            })?;
        Ok(doms.iter().filter_map(|d| d.name().ok()).collect())
    }

    fn job_state(&self, domain: &str) -> Result<JobState, VirtError> {
        let dom = self.lookup(domain)?;
        if !dom.is_active().unwrap_or(true) {
            return Err(VirtError::NotRunning(domain.to_string()));
        }
        match dom.job_info() {
            Ok(info) if info.r#type == virt::sys::VIR_DOMAIN_JOB_NONE as i32 => Ok(JobState::Idle),
            Ok(_) => Ok(JobState::Busy),
            Err(e) if job_busy(code_of(&e)) => Ok(JobState::Busy),
            Err(e) => Err(classify(
                domain,
                code_of(&e),
                e.message(),
                dom.is_active().ok(),
            )),
        }
    }

    fn managed_save_xml(&self, domain: &str) -> Result<Option<String>, VirtError> {
        let dom = self.lookup(domain)?;
        let err = |e: virt::error::Error| classify(domain, code_of(&e), e.message(), None);
        if !dom.has_managed_save(0).map_err(err)? {
            return Ok(None);
        }
        // virt 0.5 does not wrap virDomainManagedSaveGetXMLDesc (libvirt >= 3.7).
        // SAFETY: the domain pointer is valid while `dom` lives; libvirt
        // returns a malloc'ed string (or NULL) that we free after copying.
        unsafe {
            let p = virt::sys::virDomainManagedSaveGetXMLDesc(dom.as_ptr(), 0);
            if p.is_null() {
                return Err(err(virt::error::Error::last_error()));
            }
            let xml = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
            libc::free(p.cast());
            Ok(Some(xml))
        }
    }

    fn canonical_uri(&self) -> Option<String> {
        self.conn.uri().ok()
    }
}

/// Whether a job query's error code means "busy": an incoming migration
/// (`VIR_ERR_OPERATION_UNSUPPORTED`: "statistics are available only on the
/// source host") or a job that did not end within libvirt's wait
/// (`VIR_ERR_OPERATION_TIMEOUT`: "cannot acquire state change lock").
pub fn job_busy(code: i32) -> bool {
    code == virt::sys::VIR_ERR_OPERATION_UNSUPPORTED as i32
        || code == virt::sys::VIR_ERR_OPERATION_TIMEOUT as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_uri_falls_back_to_virtqemud_only_where_nothing_else_answers() {
        let q = Some("qemu:///system");
        // only virtqemud listens (no libvirtd, no virtproxyd)
        assert_eq!(default_uri_fallback(None, false, false, true), q);
        // libvirt-sock there (libvirtd, or virtproxyd forwarding): libvirt's own
        assert_eq!(default_uri_fallback(None, false, true, true), None);
        // nothing listens: nothing to fall back to
        assert_eq!(default_uri_fallback(None, false, false, false), None);
        // the admin chose: a URI given, or LIBVIRT_DEFAULT_URI set
        assert_eq!(
            default_uri_fallback(Some("qemu:///system"), false, false, true),
            None
        );
        assert_eq!(
            default_uri_fallback(Some("test:///default"), false, false, true),
            None
        );
        assert_eq!(default_uri_fallback(None, true, false, true), None);
    }

    #[test]
    fn classification_by_code() {
        let no_domain = virt::sys::VIR_ERR_NO_DOMAIN as i32;
        let invalid = virt::sys::VIR_ERR_OPERATION_INVALID as i32;
        assert_eq!(
            classify("g", no_domain, "whatever text", None),
            VirtError::NoDomain("g".into())
        );
        // Same code, different meaning depending on the domain's state.
        assert_eq!(
            classify("g", invalid, "domain is not running", Some(false)),
            VirtError::NotRunning("g".into())
        );
        assert_eq!(
            classify("g", invalid, "USB device 001:002 is in use", Some(true)),
            VirtError::Failed {
                code: invalid,
                message: "USB device 001:002 is in use".into()
            }
        );
        // The message text never decides.
        assert!(matches!(
            classify(
                "g",
                1,
                "Domain not found: no domain with matching name",
                None
            ),
            VirtError::Failed { .. }
        ));
        assert!(VirtError::NotRunning("g".into()).is_nothing_to_do());
        assert!(
            VirtError::Down {
                uri: "u".into(),
                message: String::new()
            }
            .is_nothing_to_do()
        );
        let sys = virt::sys::VIR_ERR_SYSTEM_ERROR as i32;
        assert!(daemon_absent(sys, Some(libc::ECONNREFUSED)));
        assert!(daemon_absent(sys, Some(libc::ENOENT)));
        assert!(!daemon_absent(sys, Some(libc::EACCES)));
        assert!(!daemon_absent(sys, None));
        assert!(!daemon_absent(
            virt::sys::VIR_ERR_AUTH_FAILED as i32,
            Some(libc::ECONNREFUSED)
        ));
        assert!(
            !VirtError::Failed {
                code: 1,
                message: String::new()
            }
            .is_nothing_to_do()
        );
    }
}
