//! `bbvirt-event PROGRAM WORDS...`: the udev rule's front for `bbvirt`
//! (see [`bbvirt::event`]). Exits 0 when the event needs nothing; else
//! becomes `PROGRAM WORDS...` (exec, same pid, same environment).
//!
//! Exit status: 0 nothing to do (or whatever PROGRAM returns once exec'd);
//! 1 PROGRAM could not be run; 2 usage (no absolute PROGRAM).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

use bbvirt::event::{self, Verdict};
use bbvirt::{error, log};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some((program, words)) = args
        .split_first()
        .filter(|(p, _)| Path::new(p).is_absolute())
    else {
        eprintln!("usage: bbvirt-event /PATH/TO/bbvirt ACTION DEVICE [OPTIONS]");
        return ExitCode::from(2);
    };
    if let Some((action, opts)) = event::rule_words(words) {
        log::init(opts.verbosity(), opts.syslog);
        if event::decide_on_host(&action, &opts) == Verdict::Done {
            return ExitCode::SUCCESS;
        }
    }
    let err = std::process::Command::new(program).args(words).exec();
    log::init(0, true);
    error!(
        "bbvirt-event: cannot run {}: {err}",
        Path::new(program).display()
    );
    ExitCode::from(1)
}
