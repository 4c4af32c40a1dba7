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
//! --syslog`. `bbvirt-event` parses the words after the program exactly as
//! `bbvirt` does ([`crate::cli::Cli::parse_args`]) and answers with the
//! same code `bbvirt` runs ([`crate::context::Context::route_attach`], the
//! gate's [`crate::context::Connections::ask_gate`]), logging the same
//! lines. When that says there is nothing to do it exits 0; in every other
//! case (libvirt is needed, the words do not parse, vm.conf has an error,
//! a dry run) it `exec`s the program with the words unchanged, and that
//! `bbvirt` does and reports everything as before. So the front can only
//! ever skip a run whose outcome was "nothing to do", never change one.

use crate::cli::{Action, Cli, Opts};
use crate::config::Config;
use crate::context::Context;
use crate::daemon::{HostPaths, Readiness};
use crate::libvirt::{Connection, Hypervisor, VirtError};
use crate::sysfs::Sysfs;

/// What the front does with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do (already logged): exit 0 without running `bbvirt`.
    Done,
    /// Run `bbvirt` with the same words.
    Run,
}

/// The command line after the program, parsed as `bbvirt` parses it; None
/// for anything the front leaves to `bbvirt` unread (it does not parse, or
/// is not an `attach`/`detach`, or is a dry run).
pub fn parse(words: &[std::ffi::OsString]) -> Option<(Action, Opts)> {
    let argv = std::iter::once(std::ffi::OsString::from("bbvirt")).chain(words.iter().cloned());
    let (action, opts) = Cli::parse_args(argv).ok()?;
    let wanted = matches!(action, Action::Attach { .. } | Action::Detach { .. });
    (wanted && !opts.dry_run).then_some((action, opts))
}

/// The verdict for a parsed `attach`/`detach` on this host: vm.conf, sysfs
/// and the readiness gate of a run by udev.
pub fn decide_on_host(action: &Action, opts: &Opts) -> Verdict {
    let Ok(config) = Config::load_or_empty(&crate::config::config_path(opts.config.as_deref()))
    else {
        return Verdict::Run;
    };
    let readiness = Readiness::detect(HostPaths::system(), crate::daemon::run_by_udev());
    let lock_dir = crate::lock::run_dir();
    let ctx = Context {
        config: &config,
        sysfs: &Sysfs::from_env(),
        hv: &NoLibvirt,
        opts,
        lock_dir: Some(&lock_dir),
        readiness: readiness.as_ref(),
    };
    decide(action, &ctx)
}

/// The verdict for `action` in `ctx` (whose hypervisor is never asked).
pub fn decide(action: &Action, ctx: &Context) -> Verdict {
    use crate::actions::AttachRoute;
    match action {
        Action::Attach { device, .. } => match ctx.route_attach(device) {
            Ok(AttachRoute::Stays) => Verdict::Done,
            Ok(AttachRoute::To { target, .. }) => {
                gate_verdict(ctx, std::iter::once(target.uri.clone()))
            }
            // `bbvirt` says it in its words (a device gone under udev is a
            // note there, other errors are errors).
            Err(_) => Verdict::Run,
        },
        // On remove the device has left sysfs: the guests to look at are
        // every configured one; none of them can be asked before the gate
        // opens for its URI.
        Action::Detach { .. } if !ctx.config.domains.is_empty() => gate_verdict(ctx, ctx.uris()),
        _ => Verdict::Run,
    }
}

/// Done when the readiness gate refuses every one of `uris` (each refusal
/// noted as `bbvirt` notes it), else Run.
fn gate_verdict(ctx: &Context, uris: impl IntoIterator<Item = Option<String>>) -> Verdict {
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
