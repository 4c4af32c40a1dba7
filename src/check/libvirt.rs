//! Checking libvirt: every configured guest is defined, can take USB
//! devices (a USB controller, better than USB 1.1: [`crate::controllers`]),
//! and libvirt runs hooks from `qemu.d`.
//!
//! A guest's controllers are read from its live XML when it runs, else from
//! its definition, and only for guests that vm.conf gives devices.

use crate::config::Config;
use crate::context::{Connections, Target};
use crate::install::paths::HOOK_PATH;
use crate::libvirt::{Hypervisor, VirtError};

use super::Finding;

/// The first libvirt that runs hooks from `qemu.d` (6.5.0, libvirt's encoding).
pub const MIN_LIBVIRT_VERSION: u32 = 6_005_000;

/// Checks that every configured guest is defined in libvirt. Each guest is
/// looked up at `connect` (`--connect`), else its `DOMAIN_URI_`, else the
/// default URI; one connection per URI. A URI where libvirt does not answer
/// gives one warning and no domain findings.
pub fn check_domains(config: &Config, connect: Option<&str>, hv: &dyn Hypervisor) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut conns = Connections::read_only(hv);
    // URIs already warned about.
    let mut unreachable: Vec<Option<String>> = Vec::new();
    for d in &config.domains {
        let target = Target::of(d, connect);
        let label = target.uri_label();
        let conn = match conns.get(target.uri.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                if !unreachable.contains(&target.uri) {
                    unreachable.push(target.uri.clone());
                    let why = match &e {
                        VirtError::Connect { message, .. } | VirtError::Down { message, .. } => {
                            message.clone()
                        }
                        other => other.to_string(),
                    };
                    found.push(Finding::warning(
                        format!("libvirt not reachable at {label}: {why} (skipped domain checks)"),
                        "start libvirtd (or virtqemud), or correct DOMAIN_URI_/--connect",
                    ));
                }
                continue;
            }
        };
        let name = &target.name;
        let has_devices = config.serials_of(d).next().is_some();
        crate::log::step(&format!("looking up domain '{name}' at {label}"));
        match conn.live_xml(name) {
            Ok(xml) => {
                found.push(Finding::ok(format!(
                    "guest {}: domain '{name}' at {label} is defined and running",
                    d.id
                )));
                if has_devices {
                    found.extend(controller_finding(&d.id, name, "live XML", &xml));
                }
            }
            Err(VirtError::NotRunning(_)) => {
                found.push(Finding::ok(format!(
                    "guest {}: domain '{name}' at {label} is defined (not running)",
                    d.id
                )));
                if has_devices {
                    crate::log::step(&format!("reading the definition of '{name}' at {label}"));
                    match conn.definition_xml(name) {
                        Ok(xml) => {
                            found.extend(controller_finding(&d.id, name, "definition", &xml))
                        }
                        Err(e) => found.push(Finding::warning(
                            format!("guest {}: reading the definition of '{name}': {e}", d.id),
                            "its USB controllers were not checked",
                        )),
                    }
                }
            }
            Err(VirtError::NoDomain(_)) => found.push(Finding::error(
                format!("guest {}: libvirt at {label} has no domain '{name}'", d.id),
                format!(
                    "define it, or set DOMAIN_NAME_{} (or DOMAIN_URI_{}) to where it is \
                     (virsh{} list --all)",
                    d.id,
                    d.id,
                    target
                        .uri
                        .as_deref()
                        .map(|u| format!(" -c {u}"))
                        .unwrap_or_default()
                ),
            )),
            Err(e) => found.push(Finding::warning(
                format!("guest {}: looking up domain '{name}' at {label}: {e}", d.id),
                "see libvirt's log; the domain was not checked",
            )),
        }
    }
    found
}

/// libvirt's version (`major * 1_000_000 + minor * 1000 + release`) against
/// the 6.5 that `qemu.d` hooks need. `Err` is why it is unknown.
pub fn check_libvirt_version(version: Result<u32, String>) -> Finding {
    let v = match version {
        Ok(v) => v,
        Err(why) => {
            return Finding::warning(
                format!("cannot read libvirt's version ({why})"),
                "make sure libvirt is 6.5 or later: older versions ignore hooks in qemu.d",
            );
        }
    };
    let shown = format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000);
    if v >= MIN_LIBVIRT_VERSION {
        Finding::ok(format!("libvirt {shown} runs hooks from qemu.d"))
    } else {
        Finding::error(
            format!("libvirt {shown} is older than 6.5 and ignores /{HOOK_PATH}"),
            "upgrade libvirt, or run `bbvirt hook \"$@\"` from /etc/libvirt/hooks/qemu",
        )
    }
}

/// What the USB controllers in `xml` (the guest's `source`: live XML or
/// definition) mean for a guest that has devices assigned: none is an error
/// (every attach fails), USB 1.1 only a warning; each says the fix.
pub fn controller_finding(id: &str, name: &str, source: &str, xml: &str) -> Option<Finding> {
    use crate::controllers::{Speed, UsbSupport, XHCI_FIX, usb_support};
    let fix = format!(
        "add {XHCI_FIX} with `virsh edit {}`, then restart the guest",
        crate::text::shell_quote(name)
    );
    match usb_support(xml) {
        Ok(UsbSupport::NoController) => Some(Finding::error(
            format!(
                "guest {id}: domain '{name}' has no USB controller ({source}): every attach of \
                 its devices will fail"
            ),
            fix,
        )),
        Ok(UsbSupport::Controller {
            model,
            speed: Speed::Usb1,
        }) => Some(Finding::warning(
            format!(
                "guest {id}: domain '{name}' has only a USB 1.1 controller ({model}, \
                     {source}): its devices run at 12 Mb/s at most there (a BitBabbler far \
                     below its rate)"
            ),
            fix,
        )),
        Ok(_) => None,
        Err(e) => Some(Finding::warning(
            format!("guest {id}: the {source} of '{name}' is not XML bbvirt can read: {e}"),
            "its USB controllers were not checked",
        )),
    }
}
