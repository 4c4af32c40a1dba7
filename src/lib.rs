//! bbvirt: pass BitBabbler USB random number generators through to libvirt
//! guests, by serial number, across hotplug, unplug and guest restarts.
//!
//! One module per concern:
//! - [`cli`]: the command line (same as the original bash `bbvirt`).
//! - [`config`]: `/etc/bit-babbler/vm.conf`, parsed natively or through bash.
//! - [`device`]: DEVICE identifiers (serial, `BUS:DEV`, `BUS-PORT[.PORT...]`).
//! - [`sysfs`]: finding BitBabblers under `/sys/bus/usb/devices`.
//! - [`hostdev`]: the `<hostdev>` XML bbvirt writes and reads back.
//! - [`libvirt`]: a narrow trait over the hypervisor, and its `virt` implementation.
//! - [`actions`]: attach, detach, attach-all, detach-all on top of the traits.
//! - [`hook`]: the libvirt qemu hook (never calls libvirt).
//! - [`lock`]: one bbvirt at a time talks to libvirt.
//! - [`daemon`]: under udev, ask the local daemon only once it serves.
//! - [`holders`]: which host processes hold a USB device node open.
//! - [`controllers`]: whether a guest's USB controllers can take a device.
//! - [`selector`]: `DOMAIN_USB_` elements (`id=`, `serial=`, `port=`) and who wins a device.
//! - [`seedd`]: `/etc/bit-babbler/seedd.conf`, the host's own seedd's devices.
//! - [`reconcile`]: which bbvirt hostdevs are stale, which devices missing.
//! - [`status`], [`check`], [`install`], [`completions`]: for the admin.
//! - [`log`]: verbosity levels, stderr and syslog.

pub mod actions;
pub mod check;
pub mod child;
pub mod cli;
pub mod completions;
pub mod config;
pub mod context;
pub mod controllers;
pub mod daemon;
pub mod device;
pub mod exit;
pub mod holders;
pub mod hook;
pub mod hostdev;
pub mod install;
pub mod libvirt;
pub mod lock;
pub mod log;
pub mod reconcile;
pub mod seedd;
pub mod selector;
pub mod status;
pub mod sysfs;
pub mod text;
