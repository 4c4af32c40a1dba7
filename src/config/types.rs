//! What vm.conf says, as types: a guest ([`DomainConf`]), the whole file
//! ([`Config`]) and where each setting is in it ([`SourceLines`]). Kept
//! apart from how the file is read ([`super::load`], [`mod@super::validate`])
//! and from the questions asked of it ([`super::routes`]), so that the
//! shape of a configuration can be read in one place.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::remote::element::RemoteElement;
use crate::selector::Selector;

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
    /// `DOMAIN_USB_<id>`: the USB devices of any kind assigned to this
    /// guest, one element per device ([`crate::selector`]).
    pub usb: Vec<Selector>,
    /// `DOMAIN_REMOTE_<id>`: the devices served by other hosts that this
    /// guest gets over the network, one `HOST:PORT [tls=yes|no]` element
    /// each ([`crate::remote`]).
    pub remote: Vec<RemoteElement>,
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
    /// Every id that has any DOMAIN_* variable: in order of first appearance
    /// in the file (native parse) or alphabetical by id (bash evaluation).
    pub domains: Vec<DomainConf>,
    /// `BBVIRT_TIMEOUT`: seconds allowed for libvirt's work (bbvirt's own
    /// setting; `--timeout` overrides it).
    pub timeout: Option<u64>,
    /// Where the variables are set, for messages (native parse only: empty
    /// when bash evaluated the file).
    pub lines: SourceLines,
    /// `SERVE_USB_<port>`: the devices this host serves to guests on other
    /// hosts, by TCP port, in port order ([`super::serve`]).
    pub serve: Vec<(
        crate::remote::endpoint::Port,
        crate::remote::element::ServeElement,
    )>,
    /// `DOMAIN_USB_` elements left out as malformed, as (guest id, index
    /// in the file's array): only in a config read leniently
    /// ([`super::load_lenient`], for `check`); empty in any config bbvirt acts on.
    pub usb_left_out: Vec<(String, usize)>,
}

/// Where the native parser found each variable set, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceLines {
    pub(super) vars: BTreeMap<String, VarLines>,
}

/// Where one variable is set: its first assignment, and the line each of
/// its elements starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VarLines {
    pub(super) first: usize,
    pub(super) elements: Vec<usize>,
}

impl SourceLines {
    /// The 1-based line of the first assignment to `var`.
    pub fn first_assignment(&self, var: &str) -> Option<usize> {
        self.vars.get(var).map(|v| v.first)
    }

    /// The 1-based line element `index` of `var` starts on.
    pub fn element(&self, var: &str, index: usize) -> Option<usize> {
        self.vars.get(var)?.elements.get(index).copied()
    }
}

impl Config {
    /// The line where `d` lists `serial` (its first listing), if known.
    pub fn serial_line(&self, d: &DomainConf, serial: &str) -> Option<usize> {
        let i = d.serials.iter().position(|s| s == serial)?;
        self.lines.element(&format!("DOMAIN_RNG_{}", d.id), i)
    }

    /// The index in the file's `DOMAIN_USB_<id>` array of `d.usb[e]`: `e`,
    /// unless malformed elements before it were left out
    /// ([`Config::usb_left_out`]).
    pub fn usb_index(&self, d: &DomainConf, e: usize) -> usize {
        let mut left: Vec<usize> = self
            .usb_left_out
            .iter()
            .filter(|(id, _)| *id == d.id)
            .map(|&(_, i)| i)
            .collect();
        left.sort_unstable();
        left.into_iter()
            .fold(e, |i, l| if l <= i { i + 1 } else { i })
    }

    /// The line of the first assignment to any of `d`'s variables, if known.
    pub fn domain_line(&self, d: &DomainConf) -> Option<usize> {
        [
            "DOMAIN_RNG_",
            "DOMAIN_URI_",
            "DOMAIN_NAME_",
            "DOMAIN_USB_",
            "DOMAIN_REMOTE_",
        ]
        .iter()
        .filter_map(|p| self.lines.first_assignment(&format!("{p}{}", d.id)))
        .min()
    }
}
