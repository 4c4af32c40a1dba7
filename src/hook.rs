//! The libvirt qemu hook: `bbvirt hook DOMAIN OPERATION SUBOP EXTRA`, the
//! domain XML on stdin.
//!
//! libvirt runs its hooks synchronously while it holds the guest, so a hook
//! that calls back into libvirt deadlocks. This one never does; it reads
//! vm.conf, sysfs and `/proc`, writes to sysfs, and starts a follow-up
//! ([`crate::follow_up_process`]). What it does per operation:
//!
//! - `started` (a guest came up) and `reconnect` (libvirtd restarted and
//!   found it running): it writes `change` to the sysfs `uevent` file of
//!   each of the guest's devices that is plugged in
//!   ([`crate::config::Config::guest_devices`]); udev then runs its rule,
//!   which runs `bbvirt attach` outside libvirt's hook, and that attaches
//!   the device. On `started` of a guest whose XML holds bbvirt devices
//!   (it ran before: a restore, an incoming migration, a snapshot revert),
//!   or that has a follow-up pending, it leaves the devices to the
//!   follow-up instead (starting one if none is pending): udev's attach
//!   would wait for libvirt's job inside a udev worker. A guest that gets
//!   devices from other hosts (`DOMAIN_REMOTE_`, [`crate::remote`]) is
//!   followed up too: no udev event brings those.
//! - `restore begin` (`virsh restore`, a start from a managed save image)
//!   and `migrate begin` (the destination of a migration): libvirt passes
//!   the saved XML and uses what the hook prints instead (nothing printed:
//!   unchanged). The hook rewrites bbvirt's hostdevs for this host
//!   ([`crate::saved::rewrite`]: each at its device's current address, or
//!   parked) and its redirdevs ([`crate::saved::rewrite_remote`]: each
//!   connecting where this host's vm.conf says, or parked), and starts the
//!   follow-up. Unreadable XML is left to libvirt:
//!   nothing printed, exit 0 (bbvirt never makes a restore fail); unusable
//!   vm.conf or sysfs parks every bbvirt hostdev.
//! - `prepare begin` (before any QEMU starts): when a bbvirt hostdev of the
//!   XML would make libvirt take a device that is not the guest's own
//!   ([`crate::saved::judge`]: a snapshot revert, which has no XML hook, to
//!   a state whose device's old address now holds a twin; or a redirdev
//!   would connect where this host does not give the guest a remote
//!   device, [`crate::saved::foreign_redirdevs`]), the hook refuses
//!   the start: it logs why and exits 5 ([`crate::exit::REFUSED`]), the
//!   hook script exits 1, and libvirt does not start the guest. This is the
//!   one case it exits non-zero, and the one failure the script passes on:
//!   any other (bbvirt missing, denied, crashed) it logs and lets libvirt go
//!   on (`dist/libvirt/hooks/qemu.d/bbvirt`).
//! - [`PROBE`] (`bbvirt check`): prints `bbvirt-probe ok`.
//!
//! Everything else exits 0 at once. The whole run is bounded (5 s, `main`):
//! past it the hook exits 0 with nothing printed.

use std::io::{Read, Write};

use crate::config::Config;
use crate::follow_up_process::FollowUps;
use crate::remote::redirdev::{Wanted, wanted};
use crate::saved;
use crate::sysfs::{Scan, Sysfs, UsbDevice};
use crate::{debug, error, info, note, warn};

/// The operation `bbvirt check` runs the installed hook with, as the daemon
/// would run it: bbvirt answers `bbvirt-probe ok` on stdout and does
/// nothing else, so the answer proves that the whole chain ran (the script,
/// its interpreter and this binary, under the daemon's confinement).
/// libvirt never passes it.
pub const PROBE: &str = "bbvirt-probe";

/// The most XML read from stdin (libvirt's largest domain XML is far below).
const MAX_XML: u64 = 64 << 20;

/// Whether the operation is one after which the guest's devices are
/// re-announced or followed up.
pub fn wants_devices(operation: &str) -> bool {
    matches!(operation, "started" | "reconnect")
}

/// What the hook works with besides its arguments and stdin.
pub struct HookEnv<'a> {
    /// vm.conf: Err(why) when it cannot be used (the hook goes on: a
    /// problem there never stops a guest).
    pub config: Result<&'a Config, String>,
    pub sysfs: &'a Sysfs,
    /// `/proc`, to see which devices a process holds open.
    pub proc_root: &'a std::path::Path,
    pub follow_ups: &'a dyn FollowUps,
}

/// Runs the hook; returns its exit status (0 but for a refused `prepare`).
/// Every problem is logged.
pub fn run(args: &[String], env: &HookEnv, stdin: &mut dyn Read, stdout: &mut dyn Write) -> i32 {
    let (Some(domain), Some(operation)) = (args.first(), args.get(1)) else {
        error!("hook: expected DOMAIN OPERATION SUBOP EXTRA, got {args:?}");
        return 0;
    };
    let subop = args.get(2).map_or("-", String::as_str);
    match (operation.as_str(), subop) {
        ("restore" | "migrate", "begin") => {
            if let Some(xml) = read_xml(stdin, domain, operation) {
                let out = rewrite(domain, operation, &xml, env);
                if let Some(out) = out
                    && let Err(e) = stdout
                        .write_all(out.as_bytes())
                        .and_then(|()| stdout.flush())
                {
                    error!("hook: {domain} {operation}: writing the XML: {e}");
                }
            }
            start_follow_up(domain, operation, env);
            0
        }
        ("prepare", "begin") => match read_xml(stdin, domain, operation) {
            Some(xml) => refuse_wrong_devices(domain, &xml, env),
            None => 0,
        },
        ("started", _) => {
            let followed = read_xml(stdin, domain, operation)
                .is_some_and(|xml| saved::holds_bbvirt_devices(&xml))
                || has_remote_devices(domain, env);
            if followed || env.follow_ups.pending(domain) {
                if followed {
                    start_follow_up(domain, operation, env);
                }
                note!(
                    "hook: {domain} {operation}: its devices come with the follow-up \
                     (it held bbvirt devices before, is being restored or migrated in, or \
                     gets devices from other hosts)"
                );
            } else {
                reannounce(domain, operation, env);
            }
            0
        }
        ("reconnect", _) => {
            reannounce(domain, operation, env);
            0
        }
        (PROBE, _) => {
            if let Err(e) = writeln!(stdout, "{PROBE} ok").and_then(|()| stdout.flush()) {
                error!("hook: {PROBE}: {e}");
            }
            0
        }
        _ => {
            debug!("hook: {domain} {operation}: nothing to do");
            0
        }
    }
}

/// The domain XML on stdin; None (logged) when it cannot be read.
fn read_xml(stdin: &mut dyn Read, domain: &str, operation: &str) -> Option<String> {
    let mut buf = Vec::new();
    if let Err(e) = stdin.take(MAX_XML).read_to_end(&mut buf) {
        error!("hook: {domain} {operation}: reading the domain XML: {e}");
        return None;
    }
    match String::from_utf8(buf) {
        Ok(s) if !s.trim().is_empty() => Some(s),
        Ok(_) => {
            debug!("hook: {domain} {operation}: no domain XML on stdin");
            None
        }
        Err(_) => {
            error!("hook: {domain} {operation}: the domain XML is not UTF-8: left unchanged");
            None
        }
    }
}

/// Whether vm.conf gives `domain` devices of other hosts
/// (`DOMAIN_REMOTE_`): no udev event can bring those, so its start is
/// followed up (the follow-up's sync attaches every device of the guest).
fn has_remote_devices(domain: &str, env: &HookEnv) -> bool {
    env.config.as_ref().is_ok_and(|c| {
        c.guest_named(domain)
            .is_some_and(|i| !c.domains[i].remote.is_empty())
    })
}

/// The devices this host gives `domain` now, with their aliases; None when
/// that cannot be known (vm.conf or sysfs unusable; logged). A guest vm.conf
/// does not name gets none.
fn assigned<'s>(
    domain: &str,
    env: &HookEnv,
    scan: Option<&'s Scan>,
) -> Option<Vec<(String, &'s UsbDevice)>> {
    let config = env.config.as_ref().ok()?;
    let scan = scan?;
    Some(match config.guest_named(domain) {
        Some(i) => config.guest_devices(i, scan),
        None => Vec::new(),
    })
}

fn scan_or_log(env: &HookEnv, domain: &str, operation: &str) -> Option<Scan> {
    match env.sysfs.scan() {
        Ok(s) => Some(s),
        Err(e) => {
            error!("hook: {domain} {operation}: {}", crate::log::chain(&e));
            None
        }
    }
}

/// `restore`/`migrate begin`: the XML libvirt should use, None for "as it
/// is". See the module doc.
fn rewrite(domain: &str, operation: &str, xml: &str, env: &HookEnv) -> Option<String> {
    if !saved::holds_bbvirt_devices(xml) {
        debug!("hook: {domain} {operation}: no bbvirt device in its XML");
        return None;
    }
    if let Err(why) = &env.config {
        error!("hook: {domain} {operation}: {why}: parking every bbvirt device of the guest");
    }
    let hostdevs = if saved::holds_bbvirt_hostdevs(xml) {
        rewrite_hostdevs(domain, operation, xml, env)
    } else {
        None
    };
    let xml_now = hostdevs.as_deref().unwrap_or(xml);
    let given = remote_given(domain, env);
    match saved::rewrite_remote(xml_now, given.as_deref()) {
        Ok(r) => {
            for c in &r.changes {
                info!("hook: {domain} {operation}: {}", c.describe());
            }
            r.xml.or(hostdevs)
        }
        Err(e) => {
            error!(
                "hook: {domain} {operation}: {}: its remote devices left unchanged",
                crate::log::chain(&e)
            );
            hostdevs
        }
    }
}

/// The remote devices this host gives `domain` (vm.conf's
/// `DOMAIN_REMOTE_`, [`wanted`]); None when vm.conf cannot be used. A
/// guest vm.conf does not name gets none.
fn remote_given(domain: &str, env: &HookEnv) -> Option<Vec<Wanted>> {
    let config = env.config.as_ref().ok()?;
    Some(match config.guest_named(domain) {
        Some(i) => wanted(&config.domains[i].remote),
        None => Vec::new(),
    })
}

/// [`rewrite`]'s part for bbvirt's hostdevs ([`saved::rewrite`]).
fn rewrite_hostdevs(domain: &str, operation: &str, xml: &str, env: &HookEnv) -> Option<String> {
    let scan = scan_or_log(env, domain, operation);
    let assigned = assigned(domain, env, scan.as_ref());
    let nodes: Vec<String> = assigned
        .iter()
        .flatten()
        .map(|(_, d)| crate::holders::device_node(d.busnum, d.devnum))
        .collect();
    let holders = crate::holders::scan(env.proc_root, &nodes);
    // A device held by a QEMU (another guest's) is one libvirt would refuse:
    // "in use". Other holders (seedd...) are no reason to keep it from its
    // guest here, as they are none for an attach.
    let held_by = |d: &UsbDevice| {
        holders
            .of(&crate::holders::device_node(d.busnum, d.devnum))
            .iter()
            .find(|h| h.guest.is_some())
            .map(|h| {
                format!(
                    "guest {:?}'s QEMU (pid {})",
                    h.guest.as_deref().unwrap_or(""),
                    h.pid
                )
            })
    };
    match saved::rewrite(xml, assigned.as_deref(), &held_by) {
        Ok(r) => {
            for c in &r.changes {
                info!("hook: {domain} {operation}: {}", c.describe());
            }
            r.xml
        }
        Err(e) => {
            error!(
                "hook: {domain} {operation}: {}: left unchanged",
                crate::log::chain(&e)
            );
            None
        }
    }
}

fn start_follow_up(domain: &str, operation: &str, env: &HookEnv) {
    match env.follow_ups.start(domain) {
        Ok(true) => debug!("hook: {domain} {operation}: follow-up started"),
        Ok(false) => debug!("hook: {domain} {operation}: a follow-up is pending already"),
        Err(e) => warn!(
            "hook: {domain} {operation}: no follow-up ({e}): run `bbvirt sync` once the guest runs"
        ),
    }
}

/// `prepare begin`: 1 (refuse: `bbvirt hook` exits [`crate::exit::REFUSED`]) when a bbvirt hostdev would take a device
/// that is not the guest's own, else 0.
fn refuse_wrong_devices(domain: &str, xml: &str, env: &HookEnv) -> i32 {
    let mut wrong = Vec::new();
    if saved::holds_bbvirt_hostdevs(xml)
        && let Some(scan) = scan_or_log(env, domain, "prepare")
    {
        let own = assigned(domain, env, Some(&scan)).unwrap_or_default();
        match saved::judge(xml, &own, &scan.usb) {
            Ok(judged) => wrong.extend(
                judged
                    .iter()
                    .filter(|j| matches!(j.verdict, saved::Verdict::Wrong { .. }))
                    .map(|j| {
                        format!(
                            "{}: unplug and plug that device again (its address changes), \
                             then retry",
                            j.describe()
                        )
                    }),
            ),
            Err(e) => error!("hook: {domain} prepare: {}", crate::log::chain(&e)),
        }
    }
    let given = remote_given(domain, env).unwrap_or_default();
    match saved::foreign_redirdevs(xml, &given) {
        Ok(foreign) => wrong.extend(foreign.iter().map(|r| {
            format!(
                "{} would connect to {}:{}, which this host does not give it: \
                 start it afresh (virsh start) and `bbvirt sync` attaches its remote devices",
                r.alias, r.host, r.service
            )
        })),
        Err(e) => error!("hook: {domain} prepare: {}", crate::log::chain(&e)),
    }
    for why in &wrong {
        error!("hook: {domain} prepare: refusing to start it: {why}");
    }
    i32::from(!wrong.is_empty())
}

/// `started`/`reconnect`: asks udev to re-announce each of the guest's
/// plugged-in devices; udev's rule attaches them.
fn reannounce(domain: &str, operation: &str, env: &HookEnv) {
    let config = match &env.config {
        Ok(c) => *c,
        Err(why) => {
            note!("hook: {why}: no devices for {domain}");
            return;
        }
    };
    let Some(scan) = scan_or_log(env, domain, operation) else {
        return;
    };
    let devices = config
        .guest_named(domain)
        .map(|i| config.guest_devices(i, &scan))
        .unwrap_or_default();
    if devices.is_empty() {
        note!("hook: {domain} {operation}: none of its devices is plugged in");
    }
    for (_, dev) in devices {
        match env.sysfs.trigger_change(dev) {
            Ok(()) => info!(
                "hook: {domain} {operation}: asked udev to re-announce {} ({:03}:{:03})",
                match &dev.serial {
                    Some(s) if dev.is_bitbabbler() => s.clone(),
                    _ => dev.describe(),
                },
                dev.busnum,
                dev.devnum
            ),
            Err(e) => error!("hook: {}", crate::log::chain(&e)),
        }
    }
}
