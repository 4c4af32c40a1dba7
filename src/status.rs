//! `bbvirt status [--json]`. (Being written.)

use crate::actions::Env;

/// Prints the status; returns the exit status.
pub fn run(env: &Env, json: bool) -> i32 {
    let _ = (env, json);
    crate::error!("status: not implemented yet");
    crate::cli::exit::FAILED
}
