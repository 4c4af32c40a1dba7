//! The human-readable form of the report: what could not be read, the
//! devices, then the suggested elements and how to use them.

use crate::device::is_valid_serial;
use crate::report::table;
use crate::text::escape_controls;

use super::{Device, FoundBy, PortBecause, Report};

/// The most characters of a descriptor string shown in a cell (the JSON
/// and the suggested element keep it whole).
pub const MAX_CELL: usize = 40;

/// Untrusted text for a cell: escaped ([`escape_controls`]: nothing that
/// breaks a line or moves text), at most [`MAX_CELL`] characters of it,
/// `…` marking a cut.
fn cell(s: &str) -> String {
    let shown: String = s.chars().take(MAX_CELL).collect();
    let cut = if s.chars().count() > MAX_CELL {
        "…"
    } else {
        ""
    };
    format!("{}{cut}", escape_controls(&shown))
}

fn string(s: Option<&str>) -> String {
    s.map_or_else(|| "-".to_string(), cell)
}

/// A serial: quoted (so that spaces show), `(none)` without one.
fn serial(s: Option<&str>) -> String {
    s.map_or_else(|| "(none)".to_string(), |s| format!("\"{}\"", cell(s)))
}

/// The report as the human-readable tables.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    if let Some(e) = &report.sysfs.error {
        out.push_str(&format!(
            "sysfs: cannot list USB devices: {}\n\n",
            escape_controls(e)
        ));
    }
    if let Some(e) = &report.libvirt.error {
        let what = if report.libvirt.reachable {
            "error"
        } else {
            "unreachable, showing the host side only"
        };
        out.push_str(&format!("libvirt: {what}: {}\n\n", escape_controls(e)));
    }
    if let Some(e) = &report.config.error {
        for line in e.lines() {
            out.push_str(&format!("vm.conf: {}\n", escape_controls(line)));
        }
        out.push_str("vm.conf: cannot be used: devices shown without their assignments\n\n");
    }
    if report.devices.is_empty() {
        out.push_str("USB devices: none plugged in (root hubs aside)\n");
        return out;
    }
    devices(&mut out, report);
    if !report.served.is_empty() {
        out.push('\n');
        crate::report::served::table(&mut out, &report.served);
    }
    out.push('\n');
    suggestions(&mut out, report);
    out
}

fn devices(out: &mut String, report: &Report) {
    out.push_str("USB devices (root hubs aside):\n");
    let rows: Vec<Vec<String>> = report
        .devices
        .iter()
        .map(|d| {
            vec![
                d.address.clone(),
                d.port.clone(),
                d.id.clone(),
                serial(d.serial.as_deref()),
                string(d.manufacturer.as_deref()),
                string(d.product.as_deref()),
                d.matched_by.as_deref().map_or("-".into(), escape_controls),
                used_by(d),
            ]
        })
        .collect();
    table(
        out,
        &[
            "ADDRESS",
            "PORT",
            "ID",
            "SERIAL",
            "MANUFACTURER",
            "PRODUCT",
            "VM.CONF",
            "USED BY",
        ],
        &rows,
    );
    if report.processes.unreadable > 0 {
        out.push_str(&format!(
            "  ({} processes could not be looked at: run as root to see every holder)\n",
            report.processes.unreadable
        ));
    }
}

/// Who has the device: `guest NAME`, or `host` with its drivers and the
/// processes holding it; stale bbvirt entries for it after that.
fn used_by(d: &Device) -> String {
    let mut parts: Vec<String> = Vec::new();
    match &d.guest {
        Some(g) => {
            let by_qemu = !d.hostdevs.iter().any(|h| h.found_by == FoundBy::Address);
            parts.push(format!(
                "guest {}{}",
                escape_controls(g),
                if by_qemu { " (its QEMU holds it)" } else { "" }
            ));
        }
        None => {
            let mut host = String::from("host");
            if !d.drivers.is_empty() {
                host.push_str(&format!(" ({})", escape_controls(&d.drivers.join(", "))));
            }
            let holders: Vec<String> = d
                .held_by
                .iter()
                .map(|h| format!("{} (pid {})", escape_controls(&h.name), h.pid))
                .collect();
            if !holders.is_empty() {
                host.push_str(&format!(", held by {}", holders.join(", ")));
            }
            parts.push(host);
        }
    }
    if let Some(port) = d.served_on {
        parts.push(format!("served on {port}"));
    }
    for h in d.hostdevs.iter().filter(|h| h.found_by == FoundBy::Alias) {
        parts.push(format!("stale entry in {}", escape_controls(&h.domain)));
    }
    parts.join("; ")
}

/// Why a suggested element needs the port: `because`, told from `twins`
/// (the addresses of the devices only the port tells it from), the verb
/// agreeing with how many they are.
fn port_note(because: PortBecause, twins: &[String]) -> String {
    let have = if twins.len() == 1 { "has" } else { "have" };
    let twins = twins.join(", ");
    match because {
        PortBecause::SameSerial => format!(
            "only the port tells it from {twins} (same id and serial): \
             moved to another port, it needs a new element"
        ),
        PortBecause::NoSerial => format!(
            "no serial, and {twins} {have} its id: only the port tells it apart; \
             moved to another port, it needs a new element"
        ),
        PortBecause::UnusableSerial => format!(
            "its serial cannot be written in vm.conf, and {twins} {have} its id: \
             only the port tells it apart; moved, it needs a new element"
        ),
    }
}

fn suggestions(out: &mut String, report: &Report) {
    out.push_str(
        "Suggested DOMAIN_USB_ elements (each selects exactly its device among those plugged in):\n",
    );
    let rows: Vec<Vec<String>> = report
        .devices
        .iter()
        .map(|d| match &d.suggestion {
            Some(s) => {
                let note = match s.port_because {
                    Some(because) => port_note(because, &s.twins),
                    None => match d.serial.as_deref() {
                        Some(serial) if d.bitbabbler && is_valid_serial(serial) => format!(
                            "a BitBabbler: DOMAIN_RNG_<id>=( {serial} ) gives it by its serial"
                        ),
                        _ => String::new(),
                    },
                };
                vec![d.address.clone(), s.word.clone(), note]
            }
            None => vec![
                d.address.clone(),
                "(none: no element selects only this device)".to_string(),
                String::new(),
            ],
        })
        .collect();
    table(out, &["ADDRESS", "ELEMENT", "NOTE"], &rows);
    let conf = escape_controls(&report.config.path.display().to_string());
    let missing = if report.config.exists {
        ""
    } else {
        " (it does not exist yet)"
    };
    out.push_str(&format!(
        "\nPaste an element into DOMAIN_USB_<id>=( ... ) in {conf}{missing},\n\
         <id> being the guest's name (or any shell identifier, with DOMAIN_NAME_<id>=\"NAME\"),\n\
         then run bbvirt check, and bbvirt sync to attach what is plugged in.\n"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verb_agrees_with_the_number_of_twins() {
        let one = ["001:004".to_string()];
        let two = ["001:004".to_string(), "001:005".to_string()];
        for because in [PortBecause::NoSerial, PortBecause::UnusableSerial] {
            assert!(port_note(because, &one).contains("and 001:004 has its id:"));
            assert!(port_note(because, &two).contains("and 001:004, 001:005 have its id:"));
        }
        assert!(
            port_note(PortBecause::SameSerial, &two)
                .starts_with("only the port tells it from 001:004, 001:005 (same id and serial)")
        );
    }
}
