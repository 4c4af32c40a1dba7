//! `bbvirt install` and `bbvirt uninstall`. (Being written.)

use std::path::Path;

use crate::cli::Opts;

/// Installs under `root`; returns the exit status.
pub fn install(root: &Path, opts: &Opts) -> i32 {
    let _ = (root, opts);
    crate::error!("install: not implemented yet");
    crate::cli::exit::FAILED
}

/// Uninstalls under `root`; returns the exit status.
pub fn uninstall(root: &Path, opts: &Opts) -> i32 {
    let _ = (root, opts);
    crate::error!("uninstall: not implemented yet");
    crate::cli::exit::FAILED
}
