//! USB discovery from sysfs.
//!
//! The kernel lists every USB device under `/sys/bus/usb/devices/`, as
//! symlinks into the `devices/` hierarchy: root hubs (`usb3`), devices named
//! by bus and hub ports (`3-1.4.2`) and their interfaces (`3-1.4.2:1.0`). A
//! BitBabbler is a device whose `idVendor` is `0403` and `idProduct` `7840`.
//! A scan reads every device ([`Scan::usb`], for `DOMAIN_USB_` elements) and
//! keeps the BitBabblers apart ([`Scan::devices`]). [`Sysfs::details`] reads
//! what `bbvirt devices` shows besides: a device's strings and the drivers
//! of its interfaces.
//!
//! Design decisions:
//!
//! - **The sysfs root is a parameter** ([`Sysfs::new`]), not a hard-coded
//!   `/sys`, so that tests and the lab can point bbvirt at a fake tree
//!   (`BBVIRT_SYSFS_ROOT`, see [`Sysfs::from_env`]).
//! - **Vanished means absent.** USB devices come and go at any time, also
//!   while we read them, and bbvirt runs exactly then (from udev rules). Any
//!   `ENOENT` or `ENODEV` while reading a device's attributes, a dangling
//!   symlink, or a missing `bus/usb/devices` directory (a host without USB)
//!   just means "not there": never an error, never a panic. A device that
//!   vanishes after we read it is still returned; whoever uses it next (udev,
//!   libvirt) sees it gone and fails on its own terms.
//! - **Garbage is skipped, not fatal.** A BitBabbler whose `busnum` or `devnum`
//!   is not a decimal number, whose name does not parse as `BUS-PORT[.PORT...]`,
//!   or whose name's bus disagrees with `busnum`, is left out of the result and
//!   a line is added to [`Scan::warnings`] (there is no logging here; callers
//!   decide whether to print them). One broken device must not stop the
//!   others from being passed through.
//! - **Other I/O errors are errors** ([`SysfsError`], naming the path), for
//!   example `EACCES` on the devices directory: those point at a
//!   misconfiguration that should be reported rather than hidden.
//! - **Serials are not validated here.** The `serial` attribute is whatever
//!   bytes the device sent: trailing newlines are removed and it is converted
//!   with lossy UTF-8, nothing more. Callers must check it with
//!   [`crate::device::is_valid_serial`] before routing on it or putting it
//!   into XML, a command line or a log.
//!
//! Attribute reads are capped at [`MAX_ATTR_LEN`] bytes (sysfs attributes are
//! at most a page), so that a fake tree cannot make us read a huge file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub use crate::device::{BITBABBLER_ID, BITBABBLER_PRODUCT, BITBABBLER_VENDOR};
use crate::device::{DeviceId, UsbId};
/// The most bytes read from one attribute file.
pub const MAX_ATTR_LEN: u64 = 4096;

/// A USB device found under `<root>/bus/usb/devices` (a BitBabbler when
/// its `id` is [`BITBABBLER_VENDOR`]:[`BITBABBLER_PRODUCT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDevice {
    /// The sysfs device name, e.g. `3-1.4.2`.
    pub name: String,
    /// `idVendor`:`idProduct`.
    pub id: UsbId,
    /// The `serial` attribute (trailing newline removed; lossy UTF-8), if any.
    /// Not validated: see [`crate::device::is_valid_serial`].
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

impl UsbDevice {
    /// True when `id` names this device: the exact serial, the same
    /// `busnum`/`devnum`, or the same bus and port chain.
    pub fn matches(&self, id: &DeviceId) -> bool {
        match id {
            DeviceId::Serial(s) => self.serial.as_deref() == Some(s.as_str()),
            DeviceId::Address { bus, dev } => self.busnum == *bus && self.devnum == *dev,
            DeviceId::Physical { bus, ports } => self.busnum == *bus && self.ports == *ports,
        }
    }

    /// The logical address `BUS:DEV` of this device.
    pub fn address(&self) -> DeviceId {
        DeviceId::Address {
            bus: self.busnum,
            dev: self.devnum,
        }
    }

    /// The physical address `BUS-PORT[.PORT...]` of this device.
    pub fn physical(&self) -> DeviceId {
        DeviceId::Physical {
            bus: self.busnum,
            ports: self.ports.clone(),
        }
    }
}

/// Errors reading sysfs (a vanished device is not one: it is simply absent).
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("reading {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SysfsError {
    /// The file or directory the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SysfsError::Io { path, .. } | SysfsError::Write { path, .. } => path,
        }
    }
}

/// The result of a scan: the BitBabblers found, sorted by bus then ports,
/// and one line for each BitBabbler-looking entry that was skipped because
/// of garbage (and for serials shared by several devices); and every USB
/// device, BitBabblers included, in the same order (an entry of another
/// kind with garbage attributes is left out silently: it is nobody's
/// business until an element names it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub devices: Vec<UsbDevice>,
    pub warnings: Vec<String>,
    pub usb: Vec<UsbDevice>,
}

impl UsbDevice {
    /// Whether this is a BitBabbler (by its vendor and product ids).
    pub fn is_bitbabbler(&self) -> bool {
        self.id.vendor == BITBABBLER_VENDOR && self.id.product == BITBABBLER_PRODUCT
    }

    /// This device in messages, whatever its kind: `VVVV:PPPP "SERIAL" at
    /// BUS-PORT` (the serial escaped: it is whatever bytes the device sent;
    /// no serial, no quotes). Attach, sync and the hook all name a device
    /// other than a routed BitBabbler this way.
    pub fn describe(&self) -> String {
        let serial = match &self.serial {
            Some(s) => format!(" \"{}\"", s.escape_debug()),
            None => String::new(),
        };
        format!("{}{serial} at {}", self.id, self.name)
    }

    /// What a `DOMAIN_USB_` element looks at ([`crate::selector`]).
    pub fn candidate(&self) -> crate::selector::Candidate<'_> {
        crate::selector::Candidate {
            id: self.id,
            serial: self.serial.as_deref(),
            bus: self.busnum,
            ports: &self.ports,
        }
    }
}

/// What [`Sysfs::try_trigger_change`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `change` was written to the device's `uevent` file.
    Sent,
    /// The device (its `uevent` file) was gone: nothing to trigger.
    Vanished,
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

    /// `<root>/bus/usb/devices`.
    pub fn devices_dir(&self) -> PathBuf {
        self.root.join("bus/usb/devices")
    }

    /// Every BitBabbler present, sorted by bus then ports, with warnings
    /// about skipped entries. See the module documentation for what is
    /// skipped and what is an error.
    pub fn scan(&self) -> Result<Scan, SysfsError> {
        let dir = self.devices_dir();
        let io_err = |source| SysfsError::Io {
            path: dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if is_vanished(&e) => return Ok(Scan::default()),
            Err(e) => return Err(io_err(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if is_vanished(&e) => continue,
                Err(e) => return Err(io_err(e)),
            };
            // A name that is not UTF-8 is not one the kernel gives USB
            // devices; it cannot be ours.
            if let Ok(name) = entry.file_name().into_string()
                && is_device_name_candidate(&name)
            {
                names.push(name);
            }
        }
        // Read in name order so that warnings come out the same every time.
        names.sort();
        let mut scan = Scan::default();
        for name in &names {
            match read_device(&dir.join(name), name)? {
                Entry::Absent | Entry::Other => {}
                Entry::Skipped(warning) => scan.warnings.push(warning),
                Entry::Device(dev) => {
                    if dev.is_bitbabbler() {
                        scan.devices.push(dev.clone());
                    }
                    scan.usb.push(dev);
                }
            }
        }
        for list in [&mut scan.devices, &mut scan.usb] {
            list.sort_by(|a, b| (a.busnum, &a.ports, &a.name).cmp(&(b.busnum, &b.ports, &b.name)));
        }
        scan.warnings
            .extend(duplicate_serial_warnings(&scan.devices));
        Ok(scan)
    }

    /// Every BitBabbler present, sorted by bus then ports. Entries with
    /// garbage attributes are left out silently (use [`Sysfs::scan`] to see
    /// them).
    pub fn bitbabblers(&self) -> Result<Vec<UsbDevice>, SysfsError> {
        Ok(self.scan()?.devices)
    }

    /// The BitBabbler that `id` names, if present. When several devices
    /// match (only possible for a serial shared by several devices), the
    /// first in bus/ports order is returned; [`Sysfs::scan`] warns about
    /// such duplicates.
    pub fn find(&self, id: &DeviceId) -> Result<Option<UsbDevice>, SysfsError> {
        Ok(find_in(&self.bitbabblers()?, id).cloned())
    }

    /// Asks udev to re-run its rules for `dev` by writing `change` to its
    /// `uevent` file, as `udevadm trigger -c change` does. A device that has
    /// vanished meanwhile is not an error (`Ok(())`): its removal is an event
    /// of its own. Use [`Sysfs::try_trigger_change`] to tell the two apart.
    pub fn trigger_change(&self, dev: &UsbDevice) -> Result<(), SysfsError> {
        self.try_trigger_change(dev).map(|_| ())
    }

    /// Like [`Sysfs::trigger_change`], but says whether the device was gone.
    /// The `uevent` file is opened for writing only: never created nor
    /// truncated.
    pub fn try_trigger_change(&self, dev: &UsbDevice) -> Result<Trigger, SysfsError> {
        let path = dev.path.join("uevent");
        let result = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"change"));
        match result {
            Ok(()) => Ok(Trigger::Sent),
            Err(e) if is_vanished(&e) => Ok(Trigger::Vanished),
            Err(source) => Err(SysfsError::Write { path, source }),
        }
    }
}

/// What udev's `DEVPATH` names, read from that device's own directory
/// ([`Sysfs::at_devpath`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtDevpath {
    /// A root hub `usbB`: never in a scan (it has no port to pass).
    RootHub { busnum: u32, devnum: u32 },
    /// A USB device, as [`Sysfs::scan`] gives it in [`Scan::usb`].
    Device(UsbDevice),
}

impl Sysfs {
    /// The root hub or USB device at udev's `DEVPATH` (`/devices/.../usb1/1-4`),
    /// read from its own directory (`<root>` + DEVPATH) without listing any
    /// other device: the udev front's way to its event's device
    /// ([`crate::event`]).
    ///
    /// DEVPATH comes from the environment: it is read only when
    /// [`devpath_name`] takes it (a plain path under `/devices` ending in a
    /// device or root hub name below its hub). A device is read exactly as a
    /// scan reads it (the same attributes, the same checks, its `path` the
    /// scan's `bus/usb/devices/NAME`), so it equals the entry a scan gives
    /// for it. None when DEVPATH is refused, the directory is gone or
    /// unreadable, or its attributes are not those of a device a scan
    /// would take (garbage, a name that disagrees with `busnum`): the
    /// caller then scans.
    pub fn at_devpath(&self, devpath: &str) -> Option<AtDevpath> {
        let name = devpath_name(devpath)?;
        let dir = self.root.join(devpath.strip_prefix('/')?);
        if let Some(bus) = name.strip_prefix("usb") {
            let busnum = parse_decimal_attr(&read_attr(&dir, "busnum").ok()??)?;
            let devnum = parse_decimal_attr(&read_attr(&dir, "devnum").ok()??)?;
            return (bus == busnum.to_string()).then_some(AtDevpath::RootHub { busnum, devnum });
        }
        match read_device(&dir, name).ok()? {
            Entry::Device(dev) => Some(AtDevpath::Device(UsbDevice {
                path: self.devices_dir().join(name),
                ..dev
            })),
            Entry::Absent | Entry::Other | Entry::Skipped(_) => None,
        }
    }
}

/// The kernel's name of the USB device or root hub that udev's `DEVPATH`
/// names (`/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4.2` names
/// `1-4.2`), when DEVPATH has the kernel's form for one: at most
/// `PATH_MAX` bytes, under `/devices/`, no empty, `.` or `..` component,
/// and ending in a root hub `usbB` or a device `B-P[.P...]` whose parent
/// component is its hub (`usbB` for `B-P`, `B-P` for `B-P.Q`). None for
/// anything else (an interface `B-P:C.I`, a path that climbs out): DEVPATH
/// is untrusted input from the environment.
pub fn devpath_name(devpath: &str) -> Option<&str> {
    if devpath.len() >= libc::PATH_MAX as usize {
        return None;
    }
    let rest = devpath.strip_prefix("/devices/")?;
    let components: Vec<&str> = rest.split('/').collect();
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return None;
    }
    let (&name, above) = components.split_last()?;
    if let Some(bus) = name.strip_prefix("usb") {
        let root_hub = parse_decimal(bus).is_some_and(|b| format!("usb{b}") == name);
        return root_hub.then_some(name);
    }
    parse_device_name(name)?;
    let hub = match name.rsplit_once('.') {
        Some((hub, _)) => hub.to_string(),
        None => format!("usb{}", name.split_once('-')?.0),
    };
    (above.last() == Some(&hub.as_str())).then_some(name)
}

/// What `bbvirt devices` shows of a device besides its [`UsbDevice`]
/// fields ([`Sysfs::details`]): its string descriptors and the kernel
/// drivers bound to its interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// The `manufacturer` attribute (trailing newlines removed, lossy
    /// UTF-8, as the serial: whatever the device sent), None when absent.
    pub manufacturer: Option<String>,
    /// The `product` attribute, likewise.
    pub product: Option<String>,
    /// The drivers bound to its interfaces (the last component of each
    /// interface's `driver` link), in interface order, each once:
    /// `cp210x`, `usbhid`, `hub`, or `usbfs` when a program holds an
    /// interface through libusb (QEMU does for a device it passes
    /// through). The device's own driver, `usb` for every configured
    /// device, is left out.
    pub drivers: Vec<String>,
}

impl Sysfs {
    /// The [`Details`] of `dev`. What vanishes while it is read is absent
    /// (an unbound interface has no driver, a device unplugged meanwhile
    /// no strings); other I/O errors are errors, naming the path.
    pub fn details(&self, dev: &UsbDevice) -> Result<Details, SysfsError> {
        let string = |attr: &str| -> Result<Option<String>, SysfsError> {
            Ok(read_attr(&dev.path, attr)?.map(|b| parse_serial_attr(&b)))
        };
        let mut details = Details {
            manufacturer: string("manufacturer")?,
            product: string("product")?,
            drivers: Vec::new(),
        };
        let entries = match std::fs::read_dir(&dev.path) {
            Ok(entries) => entries,
            Err(e) if is_vanished(&e) => return Ok(details),
            Err(source) => {
                return Err(SysfsError::Io {
                    path: dev.path.clone(),
                    source,
                });
            }
        };
        // Interfaces are the subdirectories B-P:C.I of the device's.
        let prefix = format!("{}:", dev.name);
        let mut interfaces: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        interfaces.sort();
        for interface in interfaces {
            let link = dev.path.join(&interface).join("driver");
            match std::fs::read_link(&link) {
                Ok(target) => {
                    let name = target
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if !name.is_empty() && !details.drivers.contains(&name) {
                        details.drivers.push(name);
                    }
                }
                Err(e) if is_vanished(&e) => {}
                Err(source) => return Err(SysfsError::Io { path: link, source }),
            }
        }
        Ok(details)
    }
}

/// The first device in `devices` whose serial is `serial`: the one place
/// that finds a present device by its serial.
pub fn with_serial<'a>(devices: &'a [UsbDevice], serial: &str) -> Option<&'a UsbDevice> {
    devices.iter().find(|d| d.serial.as_deref() == Some(serial))
}

/// The first device in `devices` that `id` names.
pub fn find_in<'a>(devices: &'a [UsbDevice], id: &DeviceId) -> Option<&'a UsbDevice> {
    devices.iter().find(|d| d.matches(id))
}

/// Parses a sysfs USB device name `BUS-PORT[.PORT...]` (`3-1.4.2` is bus 3,
/// ports 1, 4, 2). Root hubs (`usb3`), interfaces (`3-1.4.2:1.0`) and
/// anything else give `None`.
pub fn parse_device_name(name: &str) -> Option<(u32, Vec<u32>)> {
    match name.parse::<DeviceId>() {
        Ok(DeviceId::Physical { bus, ports }) => Some((bus, ports)),
        _ => None,
    }
}

/// Parses a decimal attribute such as `busnum` (`"3\n"`): ASCII digits only,
/// surrounding whitespace ignored, must fit a `u32`.
pub fn parse_decimal_attr(bytes: &[u8]) -> Option<u32> {
    parse_decimal(std::str::from_utf8(bytes).ok()?.trim_ascii())
}

/// Parses a 16-bit hex ID attribute such as `idVendor` (`"0403\n"`): 1-4 hex
/// digits of either case, surrounding whitespace ignored.
pub fn parse_hex_id_attr(bytes: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(bytes).ok()?.trim_ascii();
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// Turns a `serial` attribute (or another string descriptor's:
/// `manufacturer`, `product`) into a string: trailing newlines removed,
/// lossy UTF-8, nothing else (no validation).
pub fn parse_serial_attr(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|&b| b != b'\n').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Digits only (no sign, no spaces), fitting a `u32`.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether a `bus/usb/devices` entry may be a USB device (as opposed to a
/// root hub `usbN` or an interface `B-P:C.I`). Cheap filter before reading.
fn is_device_name_candidate(name: &str) -> bool {
    !name.contains(':') && !name.starts_with("usb")
}

/// `ENOENT` or `ENODEV`: the thing is gone (or never was).
fn is_vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// Reads `<dir>/<attr>`, at most [`MAX_ATTR_LEN`] bytes. `Ok(None)` when it
/// does not exist (or its device vanished).
fn read_attr(dir: &Path, attr: &str) -> Result<Option<Vec<u8>>, SysfsError> {
    let path = dir.join(attr);
    let mut buf = Vec::new();
    let result = File::open(&path).and_then(|f| f.take(MAX_ATTR_LEN).read_to_end(&mut buf));
    match result {
        Ok(_) => Ok(Some(buf)),
        Err(e) if is_vanished(&e) => Ok(None),
        Err(source) => Err(SysfsError::Io { path, source }),
    }
}

/// What one `bus/usb/devices` entry turned out to be.
enum Entry {
    /// Gone while being read (or never had the attributes of a device).
    Absent,
    /// Not a USB device bbvirt can name (garbage in a device that is not
    /// a BitBabbler).
    Other,
    /// A BitBabbler with garbage attributes; the warning says why.
    Skipped(String),
    Device(UsbDevice),
}

fn read_device(path: &Path, name: &str) -> Result<Entry, SysfsError> {
    macro_rules! attr {
        ($attr:expr) => {
            match read_attr(path, $attr)? {
                Some(bytes) => bytes,
                None => return Ok(Entry::Absent),
            }
        };
    }
    let vendor = parse_hex_id_attr(&attr!("idVendor"));
    let product = parse_hex_id_attr(&attr!("idProduct"));
    let (Some(vendor), Some(product)) = (vendor, product) else {
        return Ok(Entry::Other);
    };
    let bitbabbler = vendor == BITBABBLER_VENDOR && product == BITBABBLER_PRODUCT;
    // Read before busnum/devnum: if the device vanished, a missing serial is
    // then told apart from a vanished device by the reads that follow.
    let serial = read_attr(path, "serial")?.map(|b| parse_serial_attr(&b));
    let busnum_raw = attr!("busnum");
    let devnum_raw = attr!("devnum");

    let skip = |why: String| {
        Ok(if bitbabbler {
            Entry::Skipped(format!(
                "skipping {}: {why}",
                path.display().to_string().escape_debug()
            ))
        } else {
            Entry::Other
        })
    };
    let Some(busnum) = parse_decimal_attr(&busnum_raw) else {
        return skip(format!("busnum is not a number: {}", show(&busnum_raw)));
    };
    let Some(devnum) = parse_decimal_attr(&devnum_raw) else {
        return skip(format!("devnum is not a number: {}", show(&devnum_raw)));
    };
    let Some((bus, ports)) = parse_device_name(name) else {
        return skip("the name is not BUS-PORT[.PORT...]".to_string());
    };
    if bus != busnum {
        return skip(format!("the name says bus {bus} but busnum is {busnum}"));
    }
    Ok(Entry::Device(UsbDevice {
        name: name.to_string(),
        id: UsbId { vendor, product },
        serial,
        busnum,
        devnum,
        ports,
        path: path.to_path_buf(),
    }))
}

/// An attribute's bytes, quoted and escaped for a warning.
fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", String::from_utf8_lossy(bytes).escape_debug())
}

fn duplicate_serial_warnings(devices: &[UsbDevice]) -> Vec<String> {
    let mut by_serial: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for dev in devices {
        if let Some(serial) = &dev.serial {
            by_serial.entry(serial).or_default().push(&dev.name);
        }
    }
    by_serial
        .into_iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|(serial, names)| {
            format!(
                "serial \"{}\" is shared by devices {}; using {}",
                serial.escape_debug(),
                names.join(", "),
                names[0]
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(parse_device_name("3-1.4.2"), Some((3, vec![1, 4, 2])));
        assert_eq!(parse_device_name("1-1"), Some((1, vec![1])));
        assert_eq!(parse_device_name("10-12"), Some((10, vec![12])));
        assert_eq!(
            parse_device_name("2-1.2.3.4.5.6.7"),
            Some((2, vec![1, 2, 3, 4, 5, 6, 7]))
        );
        for bad in [
            "",
            "usb3",
            "3-1.4.2:1.0",
            "3-1:1.0",
            "3-",
            "-1",
            "3-1.",
            "3-.1",
            "3-1..2",
            "3-+1",
            "+3-1",
            "3-1 ",
            " 3-1",
            "3-1-2",
            "a-1",
            "3-1.x",
            "99999999999-1",
            "3-99999999999",
            "٣-1",
        ] {
            assert_eq!(parse_device_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn devpaths() {
        let pci = "/devices/pci0000:00/0000:00:14.0";
        for (devpath, name) in [
            (format!("{pci}/usb1"), "usb1"),
            (format!("{pci}/usb12"), "usb12"),
            (format!("{pci}/usb1/1-4"), "1-4"),
            (format!("{pci}/usb1/1-4/1-4.2"), "1-4.2"),
            (format!("{pci}/usb3/3-1/3-1.4/3-1.4.2"), "3-1.4.2"),
            ("/devices/platform/dummy_hcd.0/usb3/3-1".into(), "3-1"),
        ] {
            assert_eq!(devpath_name(&devpath), Some(name), "{devpath}");
        }
        let long = format!("/devices/{}/usb1/1-1", "x/".repeat(2100));
        for bad in [
            "",
            "/",
            "/devices",
            "/devices/",
            "devices/x/usb1/1-4",
            "/sys/devices/x/usb1/1-4",
            "/devices/x/usb1/1-4/",
            "/devices/x//usb1/1-4",
            "/devices/x/./usb1/1-4",
            "/devices/x/usb1/../usb1/1-4",
            "/devices/../bus/usb/devices/usb1/1-4",
            "/devices/x/usb1/1-4:1.0",
            "/devices/x/usb1/1-4/1-4:1.0",
            "/devices/x/usb2/1-4",
            "/devices/x/usb1/1-4.2",
            "/devices/x/usb1/1-3/1-4.2",
            "/devices/x/1-4",
            "/devices/1-4",
            "/devices/x/usb01",
            "/devices/x/usb",
            "/devices/x/usb+1",
            "/devices/x/usbx",
            "/devices/x/usb1/1-4\0",
            "/devices/x/usb1/1-4\n",
            long.as_str(),
        ] {
            assert_eq!(devpath_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decimal_attrs() {
        assert_eq!(parse_decimal_attr(b"3\n"), Some(3));
        assert_eq!(parse_decimal_attr(b"12"), Some(12));
        assert_eq!(parse_decimal_attr(b"012\n"), Some(12));
        assert_eq!(parse_decimal_attr(b" 7 \n\n"), Some(7));
        assert_eq!(parse_decimal_attr(b"4294967295\n"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"\n",
            b"two\n",
            b"-1\n",
            b"+1\n",
            b"1 2\n",
            b"0x3\n",
            b"4294967296\n",
            b"3\xff\n",
            b"\xff",
        ] {
            assert_eq!(parse_decimal_attr(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hex_id_attrs() {
        assert_eq!(parse_hex_id_attr(b"0403\n"), Some(0x0403));
        assert_eq!(parse_hex_id_attr(b"7840\n"), Some(0x7840));
        assert_eq!(parse_hex_id_attr(b"c31C\n"), Some(0xc31c));
        assert_eq!(parse_hex_id_attr(b"FFFF"), Some(0xffff));
        assert_eq!(parse_hex_id_attr(b"403\n"), Some(0x0403));
        for bad in [
            &b""[..],
            b"\n",
            b"00403\n",
            b"0x403\n",
            b"+403\n",
            b"04 03\n",
            b"g403\n",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_hex_id_attr(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn serial_attrs() {
        assert_eq!(parse_serial_attr(b"KWIF4Q\n"), "KWIF4Q");
        assert_eq!(parse_serial_attr(b"KWIF4Q"), "KWIF4Q");
        assert_eq!(parse_serial_attr(b"KWIF4Q\n\n\n"), "KWIF4Q");
        assert_eq!(parse_serial_attr(b""), "");
        assert_eq!(parse_serial_attr(b"\n"), "");
        // Only trailing newlines go; everything else is kept as is.
        assert_eq!(parse_serial_attr(b" KW\nIF \r\n"), " KW\nIF \r");
        assert_eq!(parse_serial_attr(b"AAAAAA -D victim\n"), "AAAAAA -D victim");
        assert_eq!(parse_serial_attr(b"K\xffW\n"), "K\u{fffd}W");
        assert_eq!(parse_serial_attr(b"\0\0\n"), "\0\0");
    }

    #[test]
    fn candidates() {
        assert!(is_device_name_candidate("3-1.4.2"));
        assert!(is_device_name_candidate("garbage"));
        assert!(!is_device_name_candidate("usb3"));
        assert!(!is_device_name_candidate("3-1.4.2:1.0"));
    }

    fn dev(name: &str, serial: Option<&str>, busnum: u32, devnum: u32) -> UsbDevice {
        let (bus, ports) = parse_device_name(name).unwrap();
        assert_eq!(bus, busnum);
        UsbDevice {
            name: name.into(),
            id: crate::sysfs::BITBABBLER_ID,
            serial: serial.map(Into::into),
            busnum,
            devnum,
            ports,
            path: PathBuf::from("/sys/bus/usb/devices").join(name),
        }
    }

    #[test]
    fn matching() {
        let devs = [
            dev("1-2", Some("KWIF4Q"), 1, 3),
            dev("3-1.4.2", None, 3, 12),
            dev("3-1.4.3", Some("KWIF4Q"), 3, 13),
        ];
        let find = |s: &str| find_in(&devs, &s.parse::<DeviceId>().unwrap()).map(|d| &d.name[..]);
        assert_eq!(find("KWIF4Q"), Some("1-2"));
        assert_eq!(find("ABCDEF"), None);
        assert_eq!(find("3:12"), Some("3-1.4.2"));
        assert_eq!(find("003:013"), Some("3-1.4.3"));
        assert_eq!(find("1:12"), None);
        assert_eq!(find("3-1.4.2"), Some("3-1.4.2"));
        assert_eq!(find("3-1.4"), None);
        assert_eq!(find("3-1.4.2.1"), None);
        assert_eq!(find("1-1.4.2"), None);
        assert_eq!(devs[1].address().to_string(), "003:012");
        assert_eq!(devs[1].physical().to_string(), "3-1.4.2");
        // Serials compare exactly.
        assert!(!devs[0].matches(&DeviceId::Serial("kwif4q".into())));
        assert!(!devs[1].matches(&DeviceId::Serial(String::new())));
    }

    #[test]
    fn duplicate_serials() {
        let devs = [
            dev("1-2", Some("KWIF4Q"), 1, 3),
            dev("3-1", None, 3, 2),
            dev("3-2", Some("KWIF4Q"), 3, 4),
            dev("4-1", Some("ABCDEF"), 4, 2),
        ];
        assert_eq!(
            duplicate_serial_warnings(&devs),
            ["serial \"KWIF4Q\" is shared by devices 1-2, 3-2; using 1-2"]
        );
    }

    #[test]
    fn vanished_errors() {
        assert!(is_vanished(&io::Error::from_raw_os_error(libc::ENOENT)));
        assert!(is_vanished(&io::Error::from_raw_os_error(libc::ENODEV)));
        assert!(!is_vanished(&io::Error::from_raw_os_error(libc::EACCES)));
        assert!(!is_vanished(&io::Error::from_raw_os_error(libc::EIO)));
    }
}
