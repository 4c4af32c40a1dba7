//! The udev front: decide whether a udev event needs libvirt at all, in a
//! program that does not load it (`bbvirt-event`, `src/bin/bbvirt-event.rs`).
//!
//! Why: udev runs the rule's program for every matching device event, at
//! boot for every device present. Starting `bbvirt` costs loading libvirt's
//! library and its ~55 dependencies before `main` runs (16 ms on a real
//! host, 3-12 s on the lab's emulated Debian 13 at boot, where that alone
//! held each udev worker past issue 8's ~1 s bound). Most events need no
//! libvirt: the device stays with the host, or the daemon is not ready yet
//! ([`crate::daemon`]). `bbvirt-event` links only what reads vm.conf, sysfs
//! and `/proc` (no libvirt: a test reads its ELF `NEEDED` entries).
//!
//! Decision: the rule runs `bbvirt-event /usr/bin/bbvirt attach BUS:DEV
//! --syslog`. Of its command line `bbvirt-event` reads only those words
//! (and `-C FILE` before them), into what `bbvirt`'s own parser gives for
//! them ([`rule_words`]); of its environment, udev's `ACTION`, `DEVPATH`
//! and `PRODUCT` ([`UdevEnv`]). It answers with the same code `bbvirt` runs
//! ([`crate::context::Context::route_attach`], the gate's
//! [`crate::context::Connections::ask_gate`]), logging the same lines. When
//! that says there is nothing to do it exits 0; in every other case
//! (libvirt is needed, other words, vm.conf has an error) it `exec`s the
//! program with the words unchanged, and that `bbvirt` does and reports
//! everything as before. So the front can only ever skip a run whose
//! outcome was "nothing to do", never change one.
//!
//! The event's own device: a scan of `/sys/bus/usb/devices` reads five
//! attributes of every device (on the benchmark's 21 devices, 400 of the
//! front's 487 system calls), so an attach reads only the directory of the
//! event's device, `/sys` + udev's `DEVPATH` ([`UdevEnv`], checked by
//! [`crate::sysfs::devpath_name`] before anything is read,
//! [`crate::sysfs::Sysfs::at_devpath`]), when that device is the one the
//! words name (its `busnum`/`devnum`) and its route cannot depend on the
//! other devices ([`Context::route_alone`]): a root hub; a device that no
//! `DOMAIN_USB_` element matches, whose route is its `DOMAIN_RNG_` serial
//! or the host. When an element matches it (which element takes which
//! device depends on the others: one device each, the first in port
//! order; the most specific element first), when DEVPATH is missing,
//! refused or gone, or the device there is not the words', the front
//! scans as `bbvirt` does. Either way the route is `bbvirt`'s, from the
//! same code: a differential test (tests/it/event_diff.rs) holds the two
//! ways, and bbvirt's own attach and detach, to the same answers over
//! fixture trees, configs and the hostile serials. The readiness gate is
//! read only when a guest would be asked.
//!
//! Why not clap: at boot, on the lab's Debian 13 (emulated, the root over
//! 9p), each run reads the front's binary pages again, and a run took 2-4
//! times as long as `true` beside it in the same udev worker. Without clap
//! (and with the release profile's LTO) the binary is half the size.

use crate::actions::{ActionError, AttachRoute};
#[cfg(doc)]
use crate::cli::Cli;
use crate::cli::{Action, Opts};
use crate::config::Config;
use crate::context::Context;
use crate::daemon::{HostPaths, Readiness};
use crate::device::{DeviceArg, DeviceId, UsbId};
use crate::libvirt::{Connection, Hypervisor, VirtError};
use crate::note;
use crate::sysfs::Sysfs;

/// What the front does with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do (already logged): exit 0 without running `bbvirt`.
    Done,
    /// Run `bbvirt` with the same words.
    Run,
}

/// What udev's environment says about the event the front runs for
/// ([`UdevEnv::from_env`]; tests build it): `ACTION`, `DEVPATH` and, on
/// remove, `PRODUCT`. Untrusted input: DEVPATH is read only as
/// [`crate::sysfs::devpath_name`] takes it, PRODUCT only as two hex ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdevEnv {
    pub action: Option<String>,
    pub devpath: Option<String>,
    pub product: Option<String>,
}

impl UdevEnv {
    /// This process's (udev sets them for RUN programs).
    pub fn from_env() -> UdevEnv {
        let var = |name| std::env::var(name).ok();
        UdevEnv {
            action: var("ACTION"),
            devpath: var("DEVPATH"),
            product: var("PRODUCT"),
        }
    }

    /// The device a remove event is about; None for other events.
    pub fn removed(&self) -> Option<Removed> {
        if self.action.as_deref() != Some("remove") {
            return None;
        }
        Removed::from_event(self.product.as_deref()?, self.devpath.as_deref()?)
    }
}

/// What a udev remove event carries about the device that left (its sysfs
/// entry is gone): `PRODUCT` (`VVVV/PPPP/BCD` in hex without leading
/// zeros) and the port from `DEVPATH`'s last component (`.../1-4/1-4.2`),
/// when DEVPATH has the kernel's form ([`crate::sysfs::devpath_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub id: UsbId,
    pub port: Option<(u32, Vec<u32>)>,
}

impl Removed {
    /// From the event's `PRODUCT` and `DEVPATH`; None when `PRODUCT` is not
    /// a USB device's. A DEVPATH not of the kernel's form for a device
    /// gives no port (any port then holds).
    pub fn from_event(product: &str, devpath: &str) -> Option<Removed> {
        let mut parts = product.split('/');
        // 1-4 hex digits, as sysfs's idVendor/idProduct are read.
        let hex = |p: Option<&str>| crate::sysfs::parse_hex_id_attr(p?.as_bytes());
        let id = UsbId {
            vendor: hex(parts.next())?,
            product: hex(parts.next())?,
        };
        let port = crate::sysfs::devpath_name(devpath).and_then(crate::sysfs::parse_device_name);
        Some(Removed { id, port })
    }
}

/// The words the rule writes, `attach|detach BUS:DEV --syslog` (and the
/// same with `-C FILE` or `-v`s before them, or without `--syslog`: for
/// tests, benchmarks and a look by hand):
/// the same [`Action`] and [`Opts`] that [`Cli::parse_args`] gives for them
/// (a test compares the two). None for any other words: the front then
/// runs `bbvirt` at once. Read by hand, not with clap: clap was over a
/// third of the front's instructions (callgrind), and leaving it out of
/// the front's binary halves the pages each run reads (see the module doc).
pub fn rule_words(words: &[std::ffi::OsString]) -> Option<(Action, Opts)> {
    let mut opts = Opts::default();
    let mut words = words;
    // Before the action: `-C FILE` once, `-v`, `-vv`... (counted).
    loop {
        match words {
            [c, file, rest @ ..] if c == "-C" && opts.config.is_none() => {
                opts.config = Some(crate::cli::non_empty(file.to_str()?).ok()?);
                words = rest;
            }
            [v, rest @ ..] if verbose_count(v).is_some() => {
                opts.verbose = opts.verbose.checked_add(verbose_count(v)?)?;
                words = rest;
            }
            _ => break,
        }
    }
    let (action, device) = match words {
        [action, device] => (action, device),
        [action, device, syslog] if syslog == "--syslog" => {
            opts.syslog = true;
            (action, device)
        }
        _ => return None,
    };
    let device = device.to_str()?;
    // Only the kernel's BUSNUM:DEVNUM form (never a serial: a word the
    // rule does not write goes the long way).
    if !device.contains(':') {
        return None;
    }
    let device = crate::device::DeviceArg::Local(device.parse().ok()?);
    let action = match action.to_str()? {
        "attach" => Action::Attach {
            device,
            opts: Opts::default(),
        },
        "detach" => Action::Detach {
            device,
            opts: Opts::default(),
        },
        _ => return None,
    };
    Some((action, opts))
}

/// How many `v`s a `-v`, `-vv`, ... word holds; None for any other word.
fn verbose_count(word: &std::ffi::OsStr) -> Option<u8> {
    let vs = word.to_str()?.strip_prefix('-')?;
    (!vs.is_empty() && vs.len() < 8 && vs.bytes().all(|b| b == b'v')).then_some(vs.len() as u8)
}

/// The verdict for a parsed `attach`/`detach` on this host: vm.conf, the
/// event's device in sysfs and, only when a guest would be asked, the
/// readiness gate of a run by udev.
pub fn decide_on_host(action: &Action, opts: &Opts) -> Verdict {
    let Ok(config) = Config::load_or_empty(&crate::config::config_path(opts.config.as_deref()))
    else {
        return Verdict::Run;
    };
    let lock_dir = crate::lock::run_dir();
    let ctx = Context {
        config: &config,
        sysfs: &Sysfs::from_env(),
        hv: &NoLibvirt,
        opts,
        lock_dir: Some(&lock_dir),
        readiness: None,
    };
    match need(action, &ctx, &UdevEnv::from_env()) {
        Need::Nothing => Verdict::Done,
        Need::Bbvirt => Verdict::Run,
        Need::Gate(uris) => {
            let readiness = Readiness::detect(HostPaths::system(), crate::daemon::run_by_udev());
            let ctx = Context {
                readiness: readiness.as_ref(),
                ..ctx
            };
            gate_verdict(&ctx, uris)
        }
    }
}

/// The verdict for `action` in `ctx` (whose hypervisor is never asked),
/// for the udev event `event`.
pub fn decide(action: &Action, ctx: &Context, event: &UdevEnv) -> Verdict {
    match need(action, ctx, event) {
        Need::Nothing => Verdict::Done,
        Need::Bbvirt => Verdict::Run,
        Need::Gate(uris) => gate_verdict(ctx, uris),
    }
}

/// What an event needs, from vm.conf, sysfs and the event alone.
enum Need {
    /// Nothing (already logged).
    Nothing,
    /// Nothing unless the readiness gate opens for one of these URIs.
    Gate(Vec<Option<String>>),
    /// `bbvirt`.
    Bbvirt,
}

/// What `action` needs. An attach is routed from the event's own device
/// when its DEVPATH leads to it and the route does not depend on the
/// other devices ([`Context::route_alone`]), else from a scan
/// ([`Context::route_attach`]): bbvirt's route either way.
fn need(action: &Action, ctx: &Context, event: &UdevEnv) -> Need {
    match action {
        Action::Attach {
            device: DeviceArg::Local(device),
            ..
        } => {
            let route =
                route_from_event(ctx, device, event).unwrap_or_else(|| ctx.route_attach(device));
            match crate::actions::absent_under_udev(route, AttachRoute::Stays) {
                Ok(AttachRoute::Stays) => Need::Nothing,
                Ok(AttachRoute::To { target, .. }) => Need::Gate(vec![target.uri]),
                // `bbvirt` says it in its words.
                Err(_) => Need::Bbvirt,
            }
        }
        // A remove of a device of another kind that no DOMAIN_USB_ element
        // could have matched: bbvirt never attached it.
        Action::Detach {
            device: DeviceArg::Local(device),
            ..
        } if event
            .removed()
            .is_some_and(|r| ctx.opts.domain.is_none() && !could_be_ours(ctx, &r)) =>
        {
            note!("device {device} (removed) matches no DOMAIN_USB_ element: nothing to detach");
            Need::Nothing
        }
        // On remove the device has left sysfs: the guests to look at are
        // every configured one; none of them can be asked before the gate
        // opens for its URI.
        Action::Detach { .. } if !ctx.config.domains.is_empty() => Need::Gate(ctx.uris()),
        _ => Need::Bbvirt,
    }
}

/// bbvirt's route for `attach device` from the event's own device (udev's
/// DEVPATH, [`crate::sysfs::Sysfs::at_devpath`]) without a scan, when it
/// does not depend on the other devices ([`Context::route_alone`]); None:
/// only a scan can tell ([`Context::route_attach`]).
pub fn route_from_event(
    ctx: &Context,
    device: &DeviceId,
    event: &UdevEnv,
) -> Option<Result<AttachRoute, ActionError>> {
    let at = ctx.sysfs.at_devpath(event.devpath.as_deref()?)?;
    ctx.route_alone(&at, device)
}

/// Whether bbvirt may have attached the device a remove event is about: a
/// BitBabbler, or a device some `DOMAIN_USB_` element could have matched.
fn could_be_ours(ctx: &Context, r: &Removed) -> bool {
    r.id == crate::sysfs::BITBABBLER_ID
        || ctx
            .config
            .domains
            .iter()
            .flat_map(|d| &d.usb)
            .any(|e| e.could_match(r.id, r.port.as_ref().map(|(b, p)| (*b, p.as_slice()))))
}

/// Done when the readiness gate refuses every one of `uris` (each refusal
/// noted as `bbvirt` notes it), else Run.
fn gate_verdict(ctx: &Context, uris: Vec<Option<String>>) -> Verdict {
    if ctx.readiness.is_none() {
        return Verdict::Run;
    }
    let mut conns = ctx.connections();
    let mut any_open = false;
    for uri in uris {
        any_open |= conns.ask_gate(uri.as_deref()).is_ok();
    }
    if any_open {
        Verdict::Run
    } else {
        Verdict::Done
    }
}

/// The front's hypervisor: never connects (the front decides only what
/// needs no libvirt; anything else is `bbvirt`'s).
struct NoLibvirt;

impl Hypervisor for NoLibvirt {
    fn connect(&self, _uri: Option<&str>) -> Result<Box<dyn Connection>, VirtError> {
        Err(VirtError::Failed {
            code: -1,
            message: "bbvirt-event does not talk to libvirt".into(),
        })
    }

    fn version(&self) -> Result<u32, String> {
        Err("bbvirt-event does not load libvirt".into())
    }
}
