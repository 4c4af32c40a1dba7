//! USB discovery from sysfs. (Being written.)

use std::path::{Path, PathBuf};

use crate::device::DeviceId;

/// A BitBabbler found under `<root>/bus/usb/devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDevice {
    /// The sysfs device name, e.g. `3-1.4.2`.
    pub name: String,
    /// The `serial` attribute (trailing newline removed; lossy UTF-8), if any.
    pub serial: Option<String>,
    /// `busnum`, decimal.
    pub busnum: u32,
    /// `devnum`, decimal.
    pub devnum: u32,
    /// Hub ports from the root hub down, parsed from `name` (`[1, 4, 2]`).
    pub ports: Vec<u32>,
    /// `<root>/bus/usb/devices/<name>`.
    pub path: PathBuf,
}

/// Errors reading sysfs (a vanished device is not one: it is simply absent).
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// sysfs, rooted at a directory that stands for `/sys`.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// `$BBVIRT_SYSFS_ROOT`, or `/sys`.
    pub fn from_env() -> Sysfs {
        Sysfs::new(std::env::var_os("BBVIRT_SYSFS_ROOT").unwrap_or_else(|| "/sys".into()))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every BitBabbler present, sorted by sysfs name.
    pub fn bitbabblers(&self) -> Result<Vec<UsbDevice>, SysfsError> {
        Ok(Vec::new())
    }

    /// The BitBabbler that `id` names, if present.
    pub fn find(&self, id: &DeviceId) -> Result<Option<UsbDevice>, SysfsError> {
        let _ = id;
        Ok(None)
    }

    /// Asks udev to re-run its rules for `dev` by writing `change` to its
    /// `uevent` file, as `udevadm trigger -c change` does.
    pub fn trigger_change(&self, dev: &UsbDevice) -> Result<(), SysfsError> {
        let _ = dev;
        Ok(())
    }
}
