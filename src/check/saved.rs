//! Checking managed save images: a configured guest with one whose bbvirt
//! hostdevs would not restore cleanly as they are (the device moved, is
//! gone, or another device sits at the saved address: [`crate::saved`]) is
//! an error when bbvirt's hook is not installed to rewrite them, and fine
//! (an `ok` line) when it is.

use std::path::Path;

use crate::config::Config;
use crate::context::{Connections, Target};
use crate::libvirt::Hypervisor;
use crate::saved::{SavedImage, judge};
use crate::sysfs::Scan;

use super::Finding;

/// One finding per configured guest that has a managed save image holding
/// bbvirt devices. `root`: where the hook is looked for.
pub fn check_saved(
    config: &Config,
    connect: Option<&str>,
    hv: &dyn Hypervisor,
    scan: &Scan,
    root: &Path,
) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut conns = Connections::read_only(hv);
    let hook = super::hook_in_place(root);
    for (i, d) in config.domains.iter().enumerate() {
        let target = Target::of(d, connect);
        let Ok(conn) = conns.get(target.uri.as_deref()) else {
            continue; // check_domains said so already
        };
        let name = &target.name;
        let xml = match conn.managed_save_xml(name) {
            Ok(Some(xml)) => xml,
            Ok(None) => continue,
            Err(e) if e.is_nothing_to_do() => continue,
            Err(e) => {
                found.push(Finding::warning(
                    format!(
                        "guest {}: reading the managed save image of '{name}': {e}",
                        d.id
                    ),
                    "its saved devices were not checked",
                ));
                continue;
            }
        };
        let assigned = config.guest_devices(i, scan);
        let image = match judge(&xml, &assigned, &scan.usb) {
            Ok(judged) => SavedImage { judged },
            Err(e) => {
                found.push(Finding::warning(
                    format!("guest {}: the managed save image of '{name}': {e}", d.id),
                    "its saved devices were not checked",
                ));
                continue;
            }
        };
        if image.judged.is_empty() {
            continue;
        }
        let what: Vec<String> = image.judged.iter().map(|j| j.describe()).collect();
        let line = format!(
            "guest {}: the managed save image of '{name}' holds {}",
            d.id,
            what.join("; ")
        );
        found.push(if image.restores_cleanly() {
            Finding::ok(line)
        } else if hook {
            Finding::ok(format!("{line}: {}", image.fix(name, true)))
        } else {
            Finding::error(
                format!("{line}: as it is, it would not restore cleanly"),
                image.fix(name, false),
            )
        });
    }
    found
}
