//! bbvirt's entry point: parse, then run the action under a deadline, then
//! map the result to the documented exit status (see `bbvirt --help`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bbvirt::actions::{ActionError, Outcome};
use bbvirt::cli::{Action, Cli, Opts};
use bbvirt::config::{self, Config, ConfigError};
use bbvirt::context::Context;
use bbvirt::daemon::{HostPaths, Readiness};
use bbvirt::device::DeviceArg;
use bbvirt::exit::{self, CommandError};
use bbvirt::libvirt::Libvirt;
use bbvirt::sysfs::Sysfs;
use bbvirt::{error, hook, log};

/// The hook's own bound: it only reads files and writes to sysfs.
const HOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline in seconds from the start: `--timeout`, else vm.conf's
/// `BBVIRT_TIMEOUT` once the config is read, else 20 s; plus
/// [`WAIT_SECS`].
static DEADLINE_SECS: AtomicU64 = AtomicU64::new(0);

/// Seconds a run may wait before its work starts (the hook's follow-up:
/// [`bbvirt::follow_up_process::WAIT`]), added to its deadline.
static WAIT_SECS: AtomicU64 = AtomicU64::new(0);

fn main() -> ExitCode {
    ExitCode::from(run().clamp(0, 255) as u8)
}

fn run() -> i32 {
    // Die quietly on a closed pipe (`bbvirt status | head`), as other
    // command-line tools do, instead of failing a write.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let (action, opts) = match Cli::parse_args(std::env::args_os()) {
        Ok(parsed) => parsed,
        // An invalid DEVICE, in bbvirt's words (as when it was parsed later).
        Err(e) if Cli::invalid_device(&e).is_some() => {
            if let Some(invalid) = Cli::invalid_device(&e) {
                error!("{invalid}");
            }
            return exit::USAGE;
        }
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let is_hook = matches!(action, Action::Hook { .. });
    // The hook runs under libvirtd, whose stderr nobody reads: always syslog.
    log::init(opts.verbosity(), opts.syslog || is_hook);
    // The hook's follow-up waits for libvirt's job first, then syncs.
    if let Action::Sync {
        after_job: true, ..
    } = action
    {
        WAIT_SECS.store(bbvirt::follow_up_process::WAIT.as_secs(), Ordering::SeqCst);
    }
    // serve and tunnels run until they are stopped: no deadline.
    if matches!(action, Action::Serve { .. } | Action::Tunnels { .. }) {
        return execute(action, &opts);
    }
    let limit = if is_hook {
        HOOK_TIMEOUT
    } else {
        opts.timeout() + Duration::from_secs(WAIT_SECS.load(Ordering::SeqCst))
    };
    DEADLINE_SECS.store(limit.as_secs(), Ordering::SeqCst);
    let start = Instant::now();

    // Everything that may block (bash evaluating vm.conf, libvirt) runs in a
    // worker; when the deadline passes, the process exits, taking it along.
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("bbvirt".into())
        .spawn(move || {
            let _ = tx.send(execute(action, &opts));
        });
    let worker = match worker {
        Ok(w) => w,
        Err(e) => {
            error!("starting the worker thread: {e}");
            return exit::FAILED;
        }
    };
    loop {
        let limit = Duration::from_secs(DEADLINE_SECS.load(Ordering::SeqCst));
        let left = limit.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(code) => {
                // The worker's last act was sending: let it end (its
                // thread-local libvirt state is freed then) before the
                // process exits and libraries run their destructors. Exiting
                // while it was still ending corrupted the heap (seen in the
                // lab: "malloc_consolidate(): invalid chunk size").
                let _ = worker.join();
                return code;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if start.elapsed() < limit => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                error!(
                    "timed out after {} s {}",
                    limit.as_secs(),
                    log::current_step()
                );
                abandon(if is_hook { exit::OK } else { exit::FAILED });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                error!("internal error while {}", log::current_step());
                abandon(if is_hook { exit::OK } else { exit::FAILED });
            }
        }
    }
}

/// Ends the process now, leaving the worker where it is (blocked in libvirt
/// or gone wrong): `_exit` runs no library destructors under its feet.
fn abandon(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; nothing runs after it.
    unsafe { libc::_exit(code.clamp(0, 255)) }
}

fn config_path(opts: &Opts) -> PathBuf {
    config::config_path(opts.config.as_deref())
}

/// Loads the config ([`Config::load_or_empty`]).
/// `BBVIRT_TIMEOUT` applies unless `--timeout` was given, and never to the
/// hook, which keeps its own short bound ([`HOOK_TIMEOUT`]).
fn load_config(opts: &Opts, is_hook: bool) -> Result<Config, ConfigError> {
    let path = config_path(opts);
    log::step(&format!("reading {}", path.display()));
    let c = Config::load_or_empty(&path)?;
    if let (false, None, Some(secs)) = (is_hook, opts.timeout, c.timeout) {
        DEADLINE_SECS.store(secs + WAIT_SECS.load(Ordering::SeqCst), Ordering::SeqCst);
    }
    Ok(c)
}

/// Runs the action and maps its result to the exit status, logging its
/// errors (the one exit path: [`CommandError`]).
fn execute(action: Action, opts: &Opts) -> i32 {
    let result = run_action(&action, opts);
    if let Err(e) = &result {
        for line in e.messages() {
            error!("{line}");
        }
    }
    exit::code_of(&result)
}

fn run_action(action: &Action, opts: &Opts) -> Result<(), CommandError> {
    let sysfs = Sysfs::from_env();
    // Actions that do not need a valid config, or report on it themselves.
    match action {
        Action::Completions { shell, .. } => {
            bbvirt::completions::print(*shell, &mut std::io::stdout());
            return Ok(());
        }
        Action::Check { seedd_config, .. } => {
            return bbvirt::check::run(
                &config_path(opts),
                seedd_config,
                opts,
                &sysfs,
                &Libvirt::new(),
            );
        }
        // Lists the devices whatever vm.conf says (bbvirt::devices).
        Action::Devices { json, .. } => {
            return bbvirt::devices::run(&config_path(opts), opts, &sysfs, &Libvirt::new(), *json);
        }
        Action::Install {
            root,
            apparmor_only,
            ..
        } => return Ok(bbvirt::install::install(root, *apparmor_only, opts)?),
        Action::Uninstall {
            root,
            apparmor_only,
            ..
        } => return Ok(bbvirt::install::uninstall(root, *apparmor_only, opts)?),
        // Long-running: they run until systemd stops them (no deadline).
        Action::Serve { port, .. } => {
            let config = load_config(opts, false)?;
            return Ok(bbvirt::serve::run(&config, &sysfs, *port)?);
        }
        Action::Tunnels { print, .. } => {
            let config = load_config(opts, false)?;
            return Ok(bbvirt::tunnels::run(&config, *print)?);
        }
        Action::Hook { args } => {
            // A config problem never stops a guest: it is logged, and the
            // hook goes on without (or parks devices, see bbvirt::hook).
            let loaded = load_config(opts, true).map_err(|e| log::chain(&e));
            let follow_ups = bbvirt::follow_up_process::Detached {
                run_dir: bbvirt::lock::run_dir(),
                exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/bbvirt")),
                config: opts.config.clone(),
            };
            let proc_root = bbvirt::holders::proc_root();
            let env = hook::HookEnv {
                config: loaded.as_ref().map_err(Clone::clone),
                sysfs: &sysfs,
                proc_root: &proc_root,
                follow_ups: &follow_ups,
            };
            let code = hook::run(
                args,
                &env,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
            );
            return if code == 0 {
                Ok(())
            } else {
                Err(CommandError::HookRefused)
            };
        }
        _ => {}
    }
    let config = load_config(opts, false)?;
    let hv = Libvirt::new();
    let lock_dir = bbvirt::lock::run_dir();
    // Under udev, never wait on a daemon that is not ready (bbvirt::daemon).
    let readiness = Readiness::detect(HostPaths::system(), bbvirt::daemon::run_by_udev());
    let ctx = Context {
        config: &config,
        sysfs: &sysfs,
        hv: &hv,
        opts,
        lock_dir: Some(&lock_dir),
        readiness: readiness.as_ref(),
    };
    let result: Result<Outcome, ActionError> = match action {
        Action::Attach { device, .. } => match device {
            DeviceArg::Local(id) => ctx.attach(id),
            DeviceArg::Remote(endpoint) => ctx.attach_endpoint(endpoint),
        },
        Action::Detach { device, .. } => match device {
            DeviceArg::Local(id) => ctx.detach(id),
            DeviceArg::Remote(endpoint) => ctx.detach_endpoint(endpoint),
        },
        Action::Sync {
            domain: Some(name),
            after_job: true,
            ..
        } => ctx.follow_up(name),
        Action::AttachAll { domain, .. } | Action::Sync { domain, .. } => {
            ctx.sync(domain.as_deref())
        }
        Action::DetachAll { domain, .. } => ctx.detach_all(domain.as_deref()),
        Action::Status { json, .. } => return bbvirt::status::run(&ctx, *json),
        Action::Hook { .. }
        | Action::Devices { .. }
        | Action::Completions { .. }
        | Action::Check { .. }
        | Action::Install { .. }
        | Action::Uninstall { .. }
        | Action::Serve { .. }
        | Action::Tunnels { .. } => Ok(Outcome::NothingToDo),
    };
    let result = match action {
        Action::Attach { .. } => bbvirt::actions::absent_under_udev(result, Outcome::NothingToDo),
        _ => result,
    };
    result.map(|_| ()).map_err(Into::into)
}
