//! Checking seedd.conf against vm.conf: the host's seedd must not take the
//! guests' devices ([`crate::seedd`] says why and how the file is read).
//!
//! - a `[Device:ID]` section naming a device that vm.conf gives to a guest is
//!   an error, naming the guest and both lines. A serial ID is compared
//!   directly; a `BUS:DEV` or `BUS-PORT` ID is resolved to the present
//!   BitBabbler at that address (an absent one cannot be compared, and is
//!   said so at `-v`);
//! - no `[Device:...]` section at all, while vm.conf assigns devices to
//!   guests, is a warning: seedd then takes every BitBabbler, the guests'
//!   ones included (unless its command line has `--device-id`, which bbvirt
//!   cannot see);
//! - a section ID that is none of the DEVICE forms is a warning;
//! - no seedd.conf at all is fine (seedd is not configured, or not
//!   installed): one `ok` line at `-v`.

use std::path::Path;

use crate::config::Config;
use crate::seedd::{DeviceSection, SeeddConf};
use crate::sysfs::{UsbDevice, find_in};

use super::Finding;

/// The findings for seedd.conf at `path`, against `config` (None when
/// vm.conf could not be read) and the present BitBabblers.
pub fn check_seedd(path: &Path, config: Option<&Config>, present: &[UsbDevice]) -> Vec<Finding> {
    let shown = path.display();
    let conf = match SeeddConf::load(path) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return vec![Finding::ok(format!(
                "{shown} does not exist: no seedd to check"
            ))];
        }
        Err(e) => {
            return vec![Finding::error(
                crate::log::chain(&e),
                "correct the file: seedd refuses it too",
            )];
        }
    };
    let Some(config) = config else {
        return Vec::new();
    };
    let assigned = config
        .domains
        .iter()
        .any(|d| config.serials_of(d).next().is_some());
    let sections = conf.device_sections();
    let mut found = Vec::new();
    if sections.is_empty() {
        if assigned {
            found.push(Finding::warning(
                format!(
                    "{shown} has no [Device:...] section: seedd takes every BitBabbler, \
                     the guests' too, and QEMU cannot take a device that seedd holds"
                ),
                "add a [Device:SERIAL] section for each of the host's own devices (or give \
                 seedd --device-id for each), so that seedd leaves the guests' alone",
            ));
        } else {
            found.push(Finding::ok(format!(
                "{shown}: seedd takes every BitBabbler; vm.conf gives none to a guest"
            )));
        }
        return found;
    }
    for s in &sections {
        found.push(section_finding(&shown.to_string(), s, config, present));
    }
    found
}

/// The finding for one `[Device:ID]` section of the file shown as `shown`.
fn section_finding(
    shown: &str,
    s: &DeviceSection,
    config: &Config,
    present: &[UsbDevice],
) -> Finding {
    let at = format!("{shown}:{}", s.line);
    let Some(id) = &s.id else {
        return Finding::warning(
            format!(
                "{at}: [Device:{}] is not a serial, BUS:DEV or BUS-PORT",
                crate::text::escape_controls(&s.raw)
            ),
            "seedd will not match it as bbvirt reads it; correct the ID",
        );
    };
    let serial = match id {
        crate::device::DeviceId::Serial(serial) => Some(serial.clone()),
        other => find_in(present, other).and_then(|d| d.serial.clone()),
    };
    let Some(serial) = serial else {
        return Finding::ok(format!(
            "{at}: [Device:{}] is not plugged in; not compared with vm.conf",
            s.raw
        ));
    };
    let Some(d) = config.owner_of(&serial) else {
        return Finding::ok(format!(
            "{at}: [Device:{}] is the host's (no guest has it)",
            s.raw
        ));
    };
    let line = config
        .serial_line(d, &serial)
        .map(|l| format!(" ({}:{l})", config.path.display()))
        .unwrap_or_default();
    let which = if s.raw == serial {
        serial.clone()
    } else {
        format!("{} ({serial})", s.raw)
    };
    Finding::error(
        format!(
            "{at}: [Device:{which}] gives the host's seedd a device that vm.conf assigns to \
             guest {}{line}",
            d.id
        ),
        "remove the section from seedd.conf (then restart seedd), or the serial from vm.conf",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Severity;
    use crate::config::DomainConf;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/seedd")
            .join(name)
    }

    /// guestA has KWIF4Q and ABC1234; nobody has LONER01.
    fn config() -> Config {
        let text = "DOMAIN_RNG_guestA=( KWIF4Q ABC1234 )\nDOMAIN_RNG_guestB=( BRAVO01 )\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.conf");
        std::fs::write(&path, text).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(&path, perms).unwrap();
        Config::load(&path).unwrap().unwrap()
    }

    fn device(name: &str, serial: &str, bus: u32, dev: u32, ports: &[u32]) -> UsbDevice {
        UsbDevice {
            name: name.into(),
            id: crate::sysfs::BITBABBLER_ID,
            serial: Some(serial.into()),
            busnum: bus,
            devnum: dev,
            ports: ports.to_vec(),
            path: PathBuf::from("/sys/bus/usb/devices").join(name),
        }
    }

    fn severities(f: &[Finding]) -> Vec<Severity> {
        f.iter().map(|f| f.severity).collect()
    }

    #[test]
    fn a_section_for_a_guests_serial_is_an_error_naming_both_lines() {
        let found = check_seedd(&fixture("conflict.conf"), Some(&config()), &[]);
        assert_eq!(severities(&found), [Severity::Error], "{found:?}");
        let line = found[0].to_string();
        assert!(line.contains("conflict.conf:4: [Device:KWIF4Q]"), "{line}");
        assert!(line.contains("guest guestA"), "{line}");
        assert!(line.contains("vm.conf:1)"), "{line}");
    }

    #[test]
    fn an_address_is_resolved_through_the_present_devices() {
        // host-devices.conf names LONER01, 3-1.4 and 1:7.
        let present = [
            device("3-1.4", "ABC1234", 3, 5, &[1, 4]),
            device("1-2", "LONER01", 1, 7, &[2]),
        ];
        let found = check_seedd(&fixture("host-devices.conf"), Some(&config()), &present);
        assert_eq!(
            severities(&found),
            [Severity::Ok, Severity::Error, Severity::Ok],
            "{found:?}"
        );
        assert!(
            found[1]
                .to_string()
                .contains(":8: [Device:3-1.4 (ABC1234)]"),
            "{}",
            found[1]
        );
        // Not plugged in: said, not compared.
        let found = check_seedd(&fixture("host-devices.conf"), Some(&config()), &[]);
        assert_eq!(severities(&found), [Severity::Ok; 3], "{found:?}");
        assert!(found[1].what.contains("not plugged in"), "{found:?}");
    }

    #[test]
    fn no_device_section_warns_only_when_guests_have_devices() {
        let found = check_seedd(&fixture("example.conf"), Some(&config()), &[]);
        assert_eq!(severities(&found), [Severity::Warning], "{found:?}");
        assert!(found[0].fix.contains("[Device:SERIAL]"), "{}", found[0]);

        let none = Config {
            domains: vec![DomainConf {
                id: "g".into(),
                name: None,
                uri: None,
                serials: vec![],
                usb: Vec::new(),
                remote: Vec::new(),
            }],
            ..config()
        };
        let found = check_seedd(&fixture("example.conf"), Some(&none), &[]);
        assert_eq!(severities(&found), [Severity::Ok], "{found:?}");
    }

    #[test]
    fn a_broken_file_is_an_error_with_its_line_and_a_missing_one_is_fine() {
        let found = check_seedd(&fixture("bad-header.conf"), Some(&config()), &[]);
        assert_eq!(severities(&found), [Severity::Error]);
        assert!(
            found[0].what.contains("bad-header.conf:3: "),
            "{}",
            found[0]
        );

        let found = check_seedd(Path::new("/nonexistent/seedd.conf"), Some(&config()), &[]);
        assert_eq!(severities(&found), [Severity::Ok]);
    }
}
