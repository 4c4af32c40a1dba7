//! A builder for fake sysfs trees in a temporary directory, laid out like the
//! real one: device directories nested under
//! `devices/pci0000:00/0000:00:NN.0/usbB/B-P/B-P.Q/...`, and relative symlinks
//! to them in `bus/usb/devices/`.
//!
//! ```ignore
//! let tree = crate::util::fixture::FixtureTree::new()
//!     .root_hub(3)
//!     .usb_device("3-1", "05e3", "0608", None, 3, 2)
//!     .bitbabbler("3-1.4", Some("KWIF4Q"), 3, 5)
//!     .interface("3-1.4:1.0");
//! let sysfs = tree.sysfs(); // or Sysfs::new(tree.root())
//! ```
//!
//! This is test code: it panics on any I/O error.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use bbvirt::sysfs::Sysfs;
use tempfile::TempDir;

/// A fake sysfs tree; removed when dropped.
pub struct FixtureTree {
    dir: TempDir,
}

impl Default for FixtureTree {
    fn default() -> Self {
        Self::new()
    }
}

impl FixtureTree {
    /// An empty tree with `bus/usb/devices/` and `devices/` (no USB devices).
    pub fn new() -> FixtureTree {
        let dir = tempfile::Builder::new()
            .prefix("bbvirt-sysfs-")
            .tempdir()
            .expect("creating a temporary directory");
        fs::create_dir_all(dir.path().join("bus/usb/devices")).expect("creating bus/usb/devices");
        fs::create_dir_all(dir.path().join("devices/pci0000:00")).expect("creating devices/");
        FixtureTree { dir }
    }

    /// The directory that stands for `/sys`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A [`Sysfs`] rooted at this tree.
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.root())
    }

    /// `<root>/bus/usb/devices/<name>` (the symlink).
    pub fn link_path(&self, name: &str) -> PathBuf {
        self.root().join("bus/usb/devices").join(name)
    }

    /// The real directory of device, root hub or interface `name`.
    pub fn device_path(&self, name: &str) -> PathBuf {
        self.root().join(device_rel_path(name))
    }

    /// Root hub `usb<bus>` (Linux Foundation 1d6b:0002, devnum 1).
    pub fn root_hub(self, bus: u32) -> FixtureTree {
        let name = format!("usb{bus}");
        self.make_entry(&name);
        let controller = controller(bus);
        self.write_attrs(
            &name,
            &[
                ("idVendor", "1d6b\n".into()),
                ("idProduct", "0002\n".into()),
                ("bcdDevice", "0601\n".into()),
                ("serial", format!("{controller}\n")),
                ("busnum", format!("{bus}\n")),
                ("devnum", "1\n".into()),
                ("devpath", "0\n".into()),
                ("product", "EHCI Host Controller\n".into()),
                ("manufacturer", "Linux 6.1.0-18-amd64 ehci_hcd\n".into()),
                ("maxchild", "6\n".into()),
                ("uevent", uevent(bus, 1, 0x1d6b, 0x0002, 0x0601)),
            ],
        );
        self
    }

    /// USB device `name` (`B-P[.P...]`, or anything else for garbage tests)
    /// with the given hex IDs (written as given), optional serial (written
    /// with a trailing newline) and bus/device numbers.
    pub fn usb_device(
        self,
        name: &str,
        vendor: &str,
        product: &str,
        serial: Option<&str>,
        busnum: u32,
        devnum: u32,
    ) -> FixtureTree {
        self.make_entry(name);
        let hex = |s: &str| u16::from_str_radix(s.trim(), 16).unwrap_or(0);
        let devpath = name.split_once('-').map_or("0", |(_, ports)| ports);
        self.write_attrs(
            name,
            &[
                ("idVendor", format!("{vendor}\n")),
                ("idProduct", format!("{product}\n")),
                ("bcdDevice", "0100\n".into()),
                ("busnum", format!("{busnum}\n")),
                ("devnum", format!("{devnum}\n")),
                ("devpath", format!("{devpath}\n")),
                ("product", "USB Device\n".into()),
                ("manufacturer", "Some Vendor\n".into()),
                ("maxchild", "0\n".into()),
                (
                    "uevent",
                    uevent(busnum, devnum, hex(vendor), hex(product), 0x0100),
                ),
            ],
        );
        match serial {
            Some(serial) => self.attr(name, "serial", format!("{serial}\n")),
            None => self,
        }
    }

    /// A BitBabbler (0403:7840) with its usual product strings.
    pub fn bitbabbler(
        self,
        name: &str,
        serial: Option<&str>,
        busnum: u32,
        devnum: u32,
    ) -> FixtureTree {
        self.usb_device(name, "0403", "7840", serial, busnum, devnum)
            .attr(name, "product", "BitBabbler White\n")
            .attr(name, "manufacturer", "Voicetronix\n")
    }

    /// Interface `B-P[.P...]:C.I` of a device added before.
    pub fn interface(self, name: &str) -> FixtureTree {
        self.make_entry(name);
        let number = name.rsplit_once('.').map_or("0", |(_, i)| i);
        self.write_attrs(
            name,
            &[
                ("bInterfaceNumber", format!("{number:0>2}\n")),
                ("bAlternateSetting", " 0\n".into()),
                ("bInterfaceClass", "ff\n".into()),
                ("bNumEndpoints", "02\n".into()),
                (
                    "uevent",
                    "DEVTYPE=usb_interface\nDRIVER=ftdi_sio\nINTERFACE=255/255/255\n".into(),
                ),
            ],
        );
        self
    }

    /// Binds interface `name` (added before) to kernel driver `driver`: a
    /// `driver` link to `bus/usb/drivers/<driver>`, as the kernel makes it.
    pub fn driver(self, name: &str, driver: &str) -> FixtureTree {
        let dir = self.root().join("bus/usb/drivers").join(driver);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let link = self.device_path(name).join("driver");
        symlink(&dir, &link).unwrap_or_else(|e| panic!("linking {}: {e}", link.display()));
        self
    }

    /// Writes (or overwrites) attribute `attr` of entry `name` with exactly
    /// `contents` (no newline added).
    pub fn attr(self, name: &str, attr: &str, contents: impl AsRef<[u8]>) -> FixtureTree {
        let path = self.device_path(name).join(attr);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self
    }

    /// Removes attribute `attr` of entry `name`.
    pub fn remove_attr(self, name: &str, attr: &str) -> FixtureTree {
        let path = self.device_path(name).join(attr);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
        self
    }

    /// Simulates an unplug between listing and reading: removes the device
    /// directory (and everything below it) but leaves its symlink in
    /// `bus/usb/devices/` dangling.
    pub fn vanish(self, name: &str) -> FixtureTree {
        let path = self.device_path(name);
        fs::remove_dir_all(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
        self
    }

    /// Creates the directory of `name` (and missing parents) and its symlink.
    fn make_entry(&self, name: &str) {
        let rel = device_rel_path(name);
        let dir = self.root().join(&rel);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let link = self.link_path(name);
        let target = Path::new("../../..").join(&rel);
        symlink(&target, &link).unwrap_or_else(|e| panic!("linking {}: {e}", link.display()));
    }

    fn write_attrs(&self, name: &str, attrs: &[(&str, String)]) {
        let dir = self.device_path(name);
        for (attr, contents) in attrs {
            let path = dir.join(attr);
            fs::write(&path, contents)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
    }
}

/// The PCI function of the host controller for `bus`.
fn controller(bus: u32) -> String {
    format!("0000:00:{:02x}.0", 0x10 + bus)
}

/// Where entry `name` lives relative to the root: `usbB` under its
/// controller, `B-P.Q` under `usbB/B-P/`, `B-P.Q:C.I` under `B-P.Q/`; names
/// that are none of these under `devices/virtual/usb/`.
fn device_rel_path(name: &str) -> PathBuf {
    let base = PathBuf::from("devices/pci0000:00");
    if let Some(bus) = name.strip_prefix("usb").and_then(|b| b.parse::<u32>().ok()) {
        return base.join(controller(bus)).join(name);
    }
    if let Some((device, _)) = name.split_once(':') {
        return device_rel_path(device).join(name);
    }
    let parsed = name.split_once('-').and_then(|(bus, ports)| {
        let bus = bus.parse::<u32>().ok()?;
        let ports: Vec<&str> = ports.split('.').collect();
        ports
            .iter()
            .all(|p| p.parse::<u32>().is_ok())
            .then_some((bus, ports))
    });
    let Some((bus, ports)) = parsed else {
        return PathBuf::from("devices/virtual/usb").join(name);
    };
    let mut path = base.join(controller(bus)).join(format!("usb{bus}"));
    for depth in 1..=ports.len() {
        path.push(format!("{bus}-{}", ports[..depth].join(".")));
    }
    path
}

/// A USB device's `uevent` contents, as the kernel shows them.
fn uevent(bus: u32, dev: u32, vendor: u16, product: u16, bcd: u16) -> String {
    let minor = (bus.saturating_sub(1)) * 128 + dev.saturating_sub(1);
    format!(
        "MAJOR=189\nMINOR={minor}\nDEVNAME=bus/usb/{bus:03}/{dev:03}\nDEVTYPE=usb_device\n\
         DRIVER=usb\nPRODUCT={vendor:x}/{product:x}/{bcd:x}\nTYPE=0/0/0\n\
         BUSNUM={bus:03}\nDEVNUM={dev:03}\n"
    )
}
