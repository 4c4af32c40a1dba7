//! vm.conf: which BitBabbler serials belong to which libvirt guest.
//! (Being written: see the module plan in the README.)

use std::path::{Path, PathBuf};

/// One guest as vm.conf describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConf {
    /// The shell identifier `<id>` of `DOMAIN_RNG_<id>`.
    pub id: String,
    /// `DOMAIN_NAME_<id>`: the libvirt domain name when it differs from `id`.
    pub name: Option<String>,
    /// `DOMAIN_URI_<id>`: the libvirt connection URI for this guest.
    pub uri: Option<String>,
    /// `DOMAIN_RNG_<id>`: the serial numbers assigned to this guest, in order.
    pub serials: Vec<String>,
}

impl DomainConf {
    /// The libvirt domain name: `DOMAIN_NAME_<id>` if set, else the id.
    pub fn libvirt_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// The whole of vm.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Every id that has any DOMAIN_* variable, in order of first appearance.
    pub domains: Vec<DomainConf>,
}

/// Errors reading vm.conf.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}:{line}: {msg}")]
    Syntax {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

impl Config {
    /// Reads and parses `path`. `Ok(None)` when the file does not exist.
    pub fn load(_path: &Path) -> Result<Option<Config>, ConfigError> {
        Ok(None)
    }

    /// The domain a serial is assigned to: the first in file order.
    pub fn domain_for_serial(&self, serial: &str) -> Option<&DomainConf> {
        self.domains
            .iter()
            .find(|d| d.serials.iter().any(|s| s == serial))
    }

    /// The domain with config id or libvirt name `name`.
    pub fn find_domain(&self, name: &str) -> Option<&DomainConf> {
        self.domains
            .iter()
            .find(|d| d.id == name)
            .or_else(|| self.domains.iter().find(|d| d.libvirt_name() == name))
    }
}
