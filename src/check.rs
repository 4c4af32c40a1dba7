//! `bbvirt check`. (Being written.)

use std::path::Path;

use crate::cli::Opts;
use crate::libvirt::Hypervisor;
use crate::sysfs::Sysfs;

/// Checks the config and the installation; returns the exit status.
pub fn run(config: &Path, opts: &Opts, sysfs: &Sysfs, hv: &dyn Hypervisor) -> i32 {
    let _ = (config, opts, sysfs, hv);
    crate::error!("check: not implemented yet");
    crate::cli::exit::FAILED
}
