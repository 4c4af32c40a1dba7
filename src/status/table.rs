//! The human-readable form of the report: one aligned table per part, and
//! a last line that says what is wrong.

use crate::device::{DeviceId, is_valid_serial};
use crate::report::table;

use super::{DeviceState, DomainState, RemoteState, Report, StaleKind};

/// Text from sysfs, vm.conf or libvirt, made safe for a terminal: control
/// characters escaped (quotes stay as they are, for readability).
fn esc(s: &str) -> String {
    crate::text::escape_controls(s)
}

/// A serial for the table: valid ones as they are, anything else quoted.
fn show_serial(serial: Option<&str>) -> String {
    match serial {
        Some(s) if is_valid_serial(s) => s.to_string(),
        Some(s) => format!("{s:?}"),
        None => "(none)".to_string(),
    }
}

fn show_addr(bus: Option<u32>, dev: Option<u32>) -> String {
    match (bus, dev) {
        (Some(b), Some(d)) => DeviceId::Address { bus: b, dev: d }.to_string(),
        _ => "?".to_string(),
    }
}

fn show_uri(uri: Option<&str>) -> String {
    uri.map_or_else(|| "(default)".to_string(), esc)
}

/// The report as the human-readable table.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    problems_with_the_sources(&mut out, report);
    devices(&mut out, report);
    for part in [absent, stale, domains] {
        out.push('\n');
        part(&mut out, report);
    }
    if !report.remote.is_empty() {
        out.push('\n');
        remote(&mut out, report);
    }
    if !report.served.is_empty() {
        out.push('\n');
        crate::report::served::table(&mut out, &report.served);
    }
    if report.domains.iter().any(|d| d.managed_save.is_some()) {
        out.push('\n');
        saved(&mut out, report);
    }
    out.push('\n');
    out.push_str(&summary(report));
    out.push('\n');
    out
}

/// What could not be read: sysfs, libvirt.
fn problems_with_the_sources(out: &mut String, report: &Report) {
    if let Some(e) = &report.sysfs.error {
        out.push_str(&format!("sysfs: cannot list USB devices: {}\n\n", esc(e)));
    }
    if let Some(e) = &report.libvirt.error {
        let what = if report.libvirt.reachable {
            "error"
        } else {
            "unreachable, showing the host side only"
        };
        out.push_str(&format!("libvirt: {what}: {}\n\n", esc(e)));
    }
}

/// A device for the table: a BitBabbler by its serial ([`show_serial`]),
/// another device by `VVVV:PPPP` and its serial quoted.
fn show_device(d: &super::DeviceStatus) -> String {
    if d.id == "0403:7840" {
        return show_serial(d.serial.as_deref());
    }
    match &d.serial {
        Some(s) => format!("{} {s:?}", d.id),
        None => format!("{} (no serial)", d.id),
    }
}

/// Every BitBabbler plugged in, and every other device an element matches.
fn devices(out: &mut String, report: &Report) {
    if report.devices.is_empty() {
        out.push_str("Devices: none plugged in\n");
    } else {
        out.push_str("Devices:\n");
        let rows: Vec<Vec<String>> = report
            .devices
            .iter()
            .map(|d| {
                let assigned = match (&d.assigned_to, d.valid_serial) {
                    (Some(a), _) => match d.matched_by.as_deref() {
                        Some(by) if by.starts_with("DOMAIN_USB_") => format!("{} ({by})", esc(a)),
                        _ => esc(a),
                    },
                    (None, true) => "(host)".to_string(),
                    (None, false) => "(host: unusable serial)".to_string(),
                };
                let state = match d.state {
                    DeviceState::Host => "host",
                    DeviceState::Attached => "attached",
                    DeviceState::Missing => "NOT ATTACHED",
                    DeviceState::Inactive => "guest down",
                    DeviceState::Unknown => "unknown",
                };
                let attached = if d.attached_to.is_empty() {
                    "-".to_string()
                } else {
                    d.attached_to
                        .iter()
                        .map(|a| {
                            let wrong = report.stale.iter().any(|s| {
                                s.domain == a.domain
                                    && s.uri == a.uri
                                    && Some(s.alias.as_str()) == d.alias.as_deref()
                            });
                            let place = match (&a.guest_port, &a.controller) {
                                (Some(p), Some(c)) => format!(
                                    " (guest port {}, {} {})",
                                    esc(p),
                                    esc(c),
                                    crate::controllers::model_speed(c).label()
                                ),
                                (Some(p), None) => format!(" (guest port {})", esc(p)),
                                _ => String::new(),
                            };
                            format!(
                                "{} at {}{place}{}",
                                esc(&a.domain),
                                show_addr(a.bus, a.dev),
                                if wrong { " (stale)" } else { "" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                vec![
                    show_device(d),
                    d.address.clone(),
                    d.port.clone(),
                    assigned,
                    state.to_string(),
                    attached,
                    held_by(d),
                ]
            })
            .collect();
        // HELD BY only when some device is held by a process other than
        // its own guest's QEMU.
        let mut header = vec![
            "DEVICE",
            "ADDRESS",
            "PORT",
            "ASSIGNED TO",
            "STATE",
            "ATTACHED IN",
        ];
        if report.devices.iter().any(|d| held_by(d) != "-") {
            header.push("HELD BY");
        }
        table(out, &header, &rows);
    }
}

/// The processes other than its own guest's QEMU that hold a device open:
/// "seedd (pid 812)", "qemu-system-x86 (pid 77, guest other)"; "-" for none.
fn held_by(d: &super::DeviceStatus) -> String {
    let shown: Vec<String> = d
        .held_by
        .iter()
        .filter(|h| h.guest.is_none() || h.guest != d.assigned_to)
        .map(|h| match &h.guest {
            Some(g) => format!("{} (pid {}, guest {})", esc(&h.name), h.pid, esc(g)),
            None => format!("{} (pid {})", esc(&h.name), h.pid),
        })
        .collect();
    if shown.is_empty() {
        "-".to_string()
    } else {
        shown.join(", ")
    }
}

/// The configured serials and elements that have no device plugged in.
fn absent(out: &mut String, report: &Report) {
    if report.absent.is_empty() {
        out.push_str("Absent: none (every configured device is plugged in)\n");
    } else {
        out.push_str("Absent (configured, not plugged in):\n");
        let rows: Vec<Vec<String>> = report
            .absent
            .iter()
            .map(|a| {
                let what = match (&a.serial, &a.element) {
                    (Some(s), _) => show_serial(Some(s)),
                    (None, Some(e)) => format!("{e} (no device matches)"),
                    (None, None) => "?".to_string(),
                };
                vec![what, esc(&a.assigned_to)]
            })
            .collect();
        table(out, &["DEVICE", "ASSIGNED TO"], &rows);
    }
}

/// The bbvirt entries that should not be there.
fn stale(out: &mut String, report: &Report) {
    if report.stale.is_empty() {
        out.push_str("Stale: none\n");
    } else {
        out.push_str("Stale (bbvirt entries that should not be there):\n");
        let rows: Vec<Vec<String>> = report
            .stale
            .iter()
            .map(|s| {
                let reason = match s.reason {
                    StaleKind::Absent => "device not plugged in".to_string(),
                    StaleKind::Moved => {
                        let now = report
                            .devices
                            .iter()
                            .find(|d| d.alias.as_deref() == Some(s.alias.as_str()));
                        match now {
                            Some(d) => format!("device now at {}", d.address),
                            None => "device moved".to_string(),
                        }
                    }
                    StaleKind::NotAssigned => match &s.assigned_to {
                        Some(a) => format!("wrong guest: assigned to {}", esc(a)),
                        None => "not assigned to this guest".to_string(),
                    },
                    StaleKind::WrongSource => "connects elsewhere than vm.conf says".to_string(),
                };
                vec![
                    esc(&s.domain),
                    match (&s.serial, &s.endpoint) {
                        (Some(serial), _) => show_serial(Some(serial)),
                        (None, Some(e)) => format!("{} (remote)", esc(e)),
                        (None, None) => esc(&s.alias),
                    },
                    // A redirdev has no USB address.
                    if crate::remote::redirdev::is_ours(&s.alias) {
                        "-".to_string()
                    } else {
                        show_addr(s.bus, s.dev)
                    },
                    reason,
                ]
            })
            .collect();
        table(out, &["DOMAIN", "DEVICE", "ADDRESS", "REASON"], &rows);
    }
}

/// The configured domains and their state.
fn domains(out: &mut String, report: &Report) {
    if report.domains.is_empty() {
        out.push_str("Domains: none configured\n");
    } else {
        out.push_str("Domains:\n");
        let rows: Vec<Vec<String>> = report
            .domains
            .iter()
            .map(|d| {
                let state = match d.state {
                    DomainState::Running => "running",
                    DomainState::ShutOff => "shut off",
                    DomainState::Undefined => "not defined",
                    DomainState::Unknown => "unknown",
                };
                let mut row = vec![
                    esc(&d.id),
                    esc(&d.name),
                    show_uri(d.uri.as_deref()),
                    state.to_string(),
                ];
                row.push(d.error.as_deref().map(esc).unwrap_or_default());
                row
            })
            .collect();
        let header: &[&str] = if report.domains.iter().any(|d| d.error.is_some()) {
            &["ID", "NAME", "URI", "STATE", "ERROR"]
        } else {
            &["ID", "NAME", "URI", "STATE"]
        };
        table(out, header, &rows);
    }
}

/// The configured guests' remote devices.
fn remote(out: &mut String, report: &Report) {
    out.push_str("Remote devices (DOMAIN_REMOTE_):\n");
    let rows: Vec<Vec<String>> = report
        .remote
        .iter()
        .map(|r| {
            let state = match r.state {
                RemoteState::Connected => "connected",
                RemoteState::Waiting => "waiting",
                RemoteState::Attached => "attached",
                RemoteState::Missing => "NOT ATTACHED",
                RemoteState::Inactive => "guest down",
                RemoteState::Unknown => "unknown",
            };
            let mut row = vec![
                esc(&r.endpoint),
                if r.tls { "tls" } else { "plain" }.to_string(),
                esc(&r.domain),
                esc(&r.connects_to),
                match r.qemu_pid {
                    Some(pid) => format!("{state} (QEMU pid {pid})"),
                    None => state.to_string(),
                },
            ];
            row.push(r.reason.as_deref().map(esc).unwrap_or_default());
            row
        })
        .collect();
    let header: &[&str] = if report.remote.iter().any(|r| r.reason.is_some()) {
        &[
            "DEVICE",
            "TRANSPORT",
            "GUEST",
            "QEMU CONNECTS TO",
            "STATE",
            "WHY",
        ]
    } else {
        &["DEVICE", "TRANSPORT", "GUEST", "QEMU CONNECTS TO", "STATE"]
    };
    table(out, header, &rows);
}

/// The shut-off guests with a managed save image: bbvirt's devices in it,
/// what libvirt would do with each as saved, and what to do.
fn saved(out: &mut String, report: &Report) {
    out.push_str("Saved (managed save images):\n");
    for d in &report.domains {
        let Some(m) = &d.managed_save else { continue };
        let state = if m.hostdevs.is_empty() {
            "no bbvirt device in it"
        } else if m.restores_cleanly {
            "restores cleanly"
        } else if m.rewritten_by_hook {
            "devices moved: bbvirt's hook rewrites them on start"
        } else {
            "WOULD NOT RESTORE CLEANLY"
        };
        out.push_str(&format!("  {}: {state}\n", esc(&d.name)));
        for h in &m.hostdevs {
            out.push_str(&format!("    {}\n", esc(&h.what)));
        }
        if let Some(fix) = &m.fix {
            out.push_str(&format!("    fix: {}\n", esc(fix)));
        }
    }
}

/// The last line of the table: "healthy", or what is wrong.
fn summary(report: &Report) -> String {
    if report.healthy {
        return "Status: healthy".to_string();
    }
    let mut problems: Vec<String> = Vec::new();
    let count =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if !report.stale.is_empty() {
        problems.push(count(report.stale.len(), "stale entry", "stale entries"));
    }
    let missing = report
        .devices
        .iter()
        .filter(|d| d.state == DeviceState::Missing)
        .count();
    if missing > 0 {
        problems.push(count(
            missing,
            "device not attached to its running guest",
            "devices not attached to their running guests",
        ));
    }
    let remote_missing = report
        .remote
        .iter()
        .filter(|r| r.state == RemoteState::Missing)
        .count();
    if remote_missing > 0 {
        problems.push(count(
            remote_missing,
            "remote device not attached to its running guest",
            "remote devices not attached to their running guests",
        ));
    }
    let held = report.devices.iter().filter(|d| d.held_on_host).count();
    if held > 0 {
        problems.push(count(
            held,
            "device of a running guest held open on the host (see HELD BY)",
            "devices of running guests held open on the host (see HELD BY)",
        ));
    }
    if !report.libvirt.reachable {
        problems.push("libvirt unreachable".to_string());
    } else if report.libvirt.error.is_some() || report.domains.iter().any(|d| d.error.is_some()) {
        problems.push("libvirt errors".to_string());
    }
    if report.sysfs.error.is_some() {
        problems.push("sysfs unreadable".to_string());
    }
    let unsafe_saves = report
        .domains
        .iter()
        .filter_map(|d| d.managed_save.as_ref())
        .filter(|m| !m.restores_cleanly && !m.rewritten_by_hook)
        .count();
    if unsafe_saves > 0 {
        problems.push(count(
            unsafe_saves,
            "managed save image that would not restore cleanly (see Saved)",
            "managed save images that would not restore cleanly (see Saved)",
        ));
    }
    if problems.is_empty() {
        problems.push("state unknown".to_string());
    }
    let fix = if missing + remote_missing > 0 || !report.stale.is_empty() {
        " (bbvirt sync fixes stale and missing entries in configured guests)"
    } else {
        ""
    };
    format!("Status: NOT HEALTHY: {}{fix}", problems.join(", "))
}
