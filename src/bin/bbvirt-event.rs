//! `bbvirt-event PROGRAM WORDS...`: the udev rule's front for `bbvirt`
//! (see [`bbvirt::event`]). Exits 0 when the event needs nothing; else
//! becomes `PROGRAM WORDS...` (exec, same pid, same environment).
//!
//! Exit status: 0 nothing to do (or whatever PROGRAM returns once exec'd);
//! 1 PROGRAM could not be run; 2 usage (no absolute PROGRAM); 101 a panic,
//! as a Rust `main` gives.
//!
//! Start-up: udev runs this for every USB device event, and most need
//! nothing, so its start is most of its cost (BENCHMARKS.md). Two
//! decisions make it cost about what `/bin/true`'s does:
//!
//! - **No Rust runtime start** (`#![no_main]`, libc calls `main` below):
//!   std's start reads `/proc/self/maps` for the main thread's stack guard
//!   (a fifth of the front's instructions) and sets up a signal stack. What
//!   of it a run needs is done here as std does it: the standard
//!   descriptors opened on `/dev/null` when closed, SIGPIPE ignored (a
//!   `Command` resets it for the program it runs), a panic caught and
//!   turned into exit status 101. The arguments come from std as usual
//!   (glibc hands them to std before `main`).
//! - **The unwinder linked in** (`libgcc_eh.a`, from gcc, below) instead
//!   of `libgcc_s.so.1`: one shared library less to find, map and
//!   relocate, and its constructor (CPUID, slow in a VM) not run. Only
//!   `libc.so.6` is left (a test reads the ELF `NEEDED` entries).

// (A test build keeps libtest's `main`.)
#![cfg_attr(not(test), no_main)]

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

use bbvirt::event::{self, Verdict};
use bbvirt::{error, log};

/// What libc calls: std's start-up as this program needs it (see the
/// module doc), then [`front`].
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: plain libc calls on the standard descriptors and a signal
    // disposition, before anything else runs.
    unsafe {
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        if libc::poll(fds.as_mut_ptr(), 3, 0) != -1 {
            for pfd in fds {
                if pfd.revents & libc::POLLNVAL != 0
                    && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == -1
                {
                    libc::abort();
                }
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    std::panic::catch_unwind(front).unwrap_or(101)
}

/// The front: exit status 0 for an event that needs nothing, else `exec`.
#[cfg_attr(test, allow(dead_code))]
fn front() -> libc::c_int {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some((program, words)) = args
        .split_first()
        .filter(|(p, _)| Path::new(p).is_absolute())
    else {
        eprintln!("usage: bbvirt-event /PATH/TO/bbvirt ACTION DEVICE [OPTIONS]");
        return 2;
    };
    if let Some((action, opts)) = event::rule_words(words) {
        log::init(opts.verbosity(), opts.syslog);
        if event::decide_on_host(&action, &opts) == Verdict::Done {
            return 0;
        }
    }
    let err = std::process::Command::new(program).args(words).exec();
    log::init(0, true);
    error!(
        "bbvirt-event: cannot run {}: {err}",
        Path::new(program).display()
    );
    1
}

// The unwinder, from gcc's static library: resolved before std's own
// request for `libgcc_s.so.1`, which `--as-needed` then leaves out.
#[link(name = "gcc_eh", kind = "static")]
unsafe extern "C" {}
