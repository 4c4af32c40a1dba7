//! bbvirt: pass USB devices through to libvirt guests across hotplug, unplug
//! and guest restarts: BitBabbler random number generators by serial number
//! (`DOMAIN_RNG_`), any USB device by id, serial or port (`DOMAIN_USB_`).
//!
//! # Where things are
//!
//! - [`cli`]: the command line: the original bash `bbvirt`'s actions and
//!   options still work, with more actions (`sync`, `status`, `check`,
//!   `install`, ...) and options of its own; [`exit`]: the one map from a
//!   command's result ([`exit::CommandError`]) to the documented exit status.
//! - [`config`]: `/etc/bit-babbler/vm.conf`, parsed natively or through
//!   bash; it answers which guest gets a serial ([`config::Config::wins`],
//!   [`config::Config::serials_of`]) and which guest's element gets any other
//!   device ([`config::Config::element_routes`]).
//! - [`context`]: what the commands that look at guests share: config,
//!   sysfs, hypervisor, options; which guest and URI a name or serial leads
//!   to ([`context::Target`]); one connection per URI and the host lock.
//! - [`actions`]: attach, detach, sync (= attach-all), detach-all.
//! - [`status`], [`devices`] (every USB device, who has it, the
//!   `DOMAIN_USB_` element that selects it; [`report`]: what both show and
//!   how they look at it), [`check`], [`install`],
//!   [`completions`]: for the admin ([`install::apparmor`]: the rule that
//!   lets the daemon's AppArmor profile run a bbvirt outside `/usr/bin`;
//!   [`check::hook_probe`]: the installed hook run as the daemon would);
//!   [`hook`]: the libvirt qemu hook (never calls libvirt; its script,
//!   `dist/libvirt/hooks/qemu.d/bbvirt`, lets libvirt go on when bbvirt
//!   cannot run).
//! - [`saved`]: what bbvirt's hostdevs in a saved guest's XML (restore,
//!   migration, snapshot) become on this host; [`follow_up_process`]: the
//!   background `sync --after-job` the hook starts once libvirt is done.
//! - [`device`]: DEVICE identifiers (serial, `BUS:DEV`, `BUS-PORT[.PORT...]`)
//!   and USB ids; [`sysfs`]: the USB devices under `/sys/bus/usb/devices`,
//!   BitBabblers apart.
//! - [`event`]: the udev rule's front (`bbvirt-event`): answers the events
//!   that need nothing without loading libvirt, runs `bbvirt` for the rest.
//! - [`hostdev`]: the `<hostdev>` XML bbvirt writes and reads back;
//!   [`reconcile`]: which bbvirt hostdevs are stale, whether a device is
//!   attached.
//! - [`libvirt`]: a narrow trait over the hypervisor, and its `virt`
//!   implementation; [`daemon`]: under udev, ask the local daemon only once
//!   it serves; [`lock`]: one bbvirt at a time talks to libvirt.
//! - [`holders`]: which host processes hold a USB device node open;
//!   [`controllers`]: whether a guest's USB controllers can take a device;
//!   [`sockets`]: the kernel's TCP socket tables and a process's sockets
//!   (whether a remote device's stream is up, without asking QEMU).
//! - [`selector`]: `DOMAIN_USB_` elements (`id=`, `serial=`, `port=`) and
//!   who wins a device (most specific, then file order, one device each);
//!   [`seedd`]: `/etc/bit-babbler/seedd.conf`, the host's own seedd's
//!   devices.
//! - [`remote`]: USB over the network (a device served by `usbredirect`
//!   on an exporting host, a `<redirdev>` in the guest): `HOST:PORT`
//!   values, vm.conf elements, redirdev XML and the stunnel tunnels;
//!   [`serve`]: `bbvirt serve PORT`, an exporting host's supervisor of one
//!   served device; [`tunnels`]: `bbvirt tunnels`, stunnel with the
//!   host's TLS tunnels. A guest's remote devices are synced by
//!   [`actions`] (`DOMAIN_REMOTE_`).
//! - [`log`]: verbosity levels, stderr and syslog; [`text`]: escaping
//!   untrusted text for a line or a shell word; [`child`]: child processes
//!   under a deadline.
//!
//! # The path of a udev `attach BUS:DEV`
//!
//! udev's rule runs `bbvirt-event /usr/bin/bbvirt attach 3:12 --syslog` when a
//! USB device appears. [`event`] (in the `bbvirt-event` binary) asks the same
//! routing code as below whether the device goes anywhere and the daemon
//! serves; if so it `exec`s `bbvirt attach 3:12 --syslog`. Four modules then
//! carry the call from `main` to libvirt:
//!
//! 1. `main` (the binary): parses the command line ([`cli::Cli::parse_args`]),
//!    starts the deadline, loads vm.conf ([`config::Config::load`]) and
//!    builds the [`context::Context`]; `run_action` calls
//!    [`context::Context::attach`].
//! 2. [`actions`]: `attach` ([`context::Context::route_attach`]) finds the
//!    device `3:12` ([`device::DeviceId`]) in a sysfs scan
//!    ([`sysfs::Sysfs::scan`]); a BitBabbler's serial, else the
//!    `DOMAIN_USB_` elements, name its guest and bbvirt's alias for it.
//! 3. [`context`]: [`context::Context::target_for_serial`] names the guest
//!    and URI; back in `actions`, `attach_to` asks [`context::Connections`]
//!    for the connection (readiness gate, then the host lock, then one
//!    connect per URI), reads the live XML, lets [`reconcile::placement`]
//!    say whether the device is attached already or stale at an old
//!    address, and builds the hostdev XML ([`hostdev::hostdev_xml`]).
//! 4. [`libvirt`]: [`libvirt::Connection::attach_live`] (on the `virt`
//!    bindings) attaches it to the running guest.
//!
//! The result travels back as `Result<Outcome, ActionError>`, becomes a
//! [`exit::CommandError`] in `main`, and [`exit::CommandError::exit_code`]
//! gives the exit status.

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
pub mod devices;
pub mod event;
pub mod exit;
pub mod follow_up_process;
pub mod holders;
pub mod hook;
pub mod hostdev;
pub mod install;
pub mod libvirt;
pub mod lock;
pub mod log;
pub mod reconcile;
pub mod remote;
pub mod report;
pub mod saved;
pub mod seedd;
pub mod selector;
pub mod serve;
pub mod sockets;
pub mod status;
pub mod sysfs;
pub mod text;
pub mod tunnels;
