//! sysfs discovery against the static trees in `tests/fixtures/sysfs/` and
//! trees built on the fly by `sysfs_fixture`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::util::fixture::FixtureTree;
use bbvirt::device::{DeviceId, is_valid_serial};
use bbvirt::sysfs::{Scan, Sysfs, SysfsError, Trigger, UsbDevice, with_serial};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(name)
}

fn host() -> Sysfs {
    Sysfs::new(fixture("host"))
}

fn names(devs: &[UsbDevice]) -> Vec<&str> {
    devs.iter().map(|d| d.name.as_str()).collect()
}

fn find(sysfs: &Sysfs, id: &str) -> Option<String> {
    let id = id.parse::<DeviceId>().unwrap();
    sysfs.find(&id).unwrap().map(|d| d.name)
}

// --- the static host tree ---------------------------------------------------

#[test]
fn host_lists_bitbabblers_sorted_by_bus_then_ports() {
    let devs = host().bitbabblers().unwrap();
    assert_eq!(
        names(&devs),
        ["1-2", "1-4", "3-1.4.2", "3-1.4.3", "3-1.4.4", "4-1"]
    );
    let dev = &devs[2];
    assert_eq!(
        *dev,
        UsbDevice {
            name: "3-1.4.2".into(),
            id: bbvirt::sysfs::BITBABBLER_ID,
            serial: Some("QX3TZ7A".into()),
            busnum: 3,
            devnum: 12,
            ports: vec![1, 4, 2],
            path: fixture("host").join("bus/usb/devices/3-1.4.2"),
        }
    );
    assert_eq!(devs[0].serial.as_deref(), Some("KWIF4Q"));
    assert_eq!((devs[0].busnum, devs[0].devnum), (1, 3));
    assert_eq!(devs[5].ports, [1]);
}

#[test]
fn host_skips_other_devices_hubs_and_interfaces() {
    let devs = host().bitbabblers().unwrap();
    // 1-1 is an FTDI 0403:6001 (same vendor), 1-3 a keyboard, 3-1 and 3-1.4
    // hubs, usbN root hubs, B-P:C.I interfaces.
    for name in ["1-1", "1-3", "3-1", "3-1.4", "usb1", "1-2:1.0"] {
        assert!(!names(&devs).contains(&name), "{name}");
    }
}

#[test]
fn host_warns_about_garbage() {
    let Scan {
        devices, warnings, ..
    } = host().scan().unwrap();
    assert_eq!(devices.len(), 6);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("devices/2-1:"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("busnum is not a number: \"two\\n\""),
        "{}",
        warnings[0]
    );
    assert!(warnings[1].contains("devices/4-2:"), "{}", warnings[1]);
    assert!(
        warnings[1].contains("the name says bus 4 but busnum is 3"),
        "{}",
        warnings[1]
    );
}

#[test]
fn host_serial_attributes() {
    let devs = host().bitbabblers().unwrap();
    let serial = |name: &str| devs.iter().find(|d| d.name == name).unwrap().serial.clone();
    // Passed through verbatim: validation is the caller's job.
    let hostile = serial("1-4").unwrap();
    assert_eq!(hostile, "AAAAAA -D victim");
    assert!(!is_valid_serial(&hostile));
    // No serial attribute.
    assert_eq!(serial("3-1.4.3"), None);
    // Invalid UTF-8 and two trailing newlines.
    assert_eq!(serial("3-1.4.4").as_deref(), Some("K\u{fffd}W"));
}

#[test]
fn host_find_by_serial() {
    let sysfs = host();
    assert_eq!(find(&sysfs, "KWIF4Q").as_deref(), Some("1-2"));
    assert_eq!(find(&sysfs, "QX3TZ7A").as_deref(), Some("3-1.4.2"));
    assert_eq!(find(&sysfs, "B7GHR2").as_deref(), Some("4-1"));
    // Not present at all; the FTDI adapter's serial; skipped devices.
    for id in ["ABCDEF", "A50285BI", "ZZBUS1", "ZZBUS2", "kwif4q"] {
        let id = DeviceId::Serial(id.into());
        assert_eq!(sysfs.find(&id).unwrap(), None, "{id:?}");
    }
    // The hostile serial is never a valid DEVICE, but matches exactly.
    assert!("AAAAAA -D victim".parse::<DeviceId>().is_err());
    let id = DeviceId::Serial("AAAAAA -D victim".into());
    assert_eq!(sysfs.find(&id).unwrap().unwrap().name, "1-4");
    let id = DeviceId::Serial("AAAAAA".into());
    assert_eq!(sysfs.find(&id).unwrap(), None);
}

#[test]
fn host_find_by_address() {
    let sysfs = host();
    assert_eq!(find(&sysfs, "1:3").as_deref(), Some("1-2"));
    assert_eq!(find(&sysfs, "003:012").as_deref(), Some("3-1.4.2"));
    assert_eq!(find(&sysfs, "3:13").as_deref(), Some("3-1.4.3"));
    // The FTDI adapter, a hub, the root hub, garbage, nothing.
    for id in ["1:2", "3:7", "1:1", "2:2", "3:9", "4:9", "9:9", "3:2"] {
        assert_eq!(find(&sysfs, id), None, "{id}");
    }
}

#[test]
fn host_find_by_physical_address() {
    let sysfs = host();
    assert_eq!(find(&sysfs, "3-1.4.2").as_deref(), Some("3-1.4.2"));
    assert_eq!(find(&sysfs, "3-1.4.3").as_deref(), Some("3-1.4.3"));
    assert_eq!(find(&sysfs, "1-4").as_deref(), Some("1-4"));
    assert_eq!(find(&sysfs, "4-1").as_deref(), Some("4-1"));
    // A hub, a deeper/shallower path, another bus, the FTDI, skipped ones.
    for id in ["3-1.4", "3-1", "3-1.4.2.1", "1-1.4.2", "1-1", "2-1", "4-2"] {
        assert_eq!(find(&sysfs, id), None, "{id}");
    }
}

#[test]
fn host_serials_and_with_serial() {
    let devices = host().bitbabblers().unwrap();
    let mut keys: Vec<&str> = devices.iter().filter_map(|d| d.serial.as_deref()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys,
        [
            "AAAAAA -D victim",
            "B7GHR2",
            "KWIF4Q",
            "K\u{fffd}W",
            "QX3TZ7A"
        ]
    );
    assert_eq!(with_serial(&devices, "KWIF4Q").unwrap().name, "1-2");
}

#[test]
fn one_bitbabbler() {
    let sysfs = Sysfs::new(fixture("one-bitbabbler"));
    let Scan {
        devices, warnings, ..
    } = sysfs.scan().unwrap();
    assert_eq!(names(&devices), ["1-1"]);
    assert!(warnings.is_empty());
    assert_eq!(devices[0].serial.as_deref(), Some("KWIF4Q"));
    assert_eq!(devices[0].address().to_string(), "001:004");
    assert_eq!(find(&sysfs, "1-1").as_deref(), Some("1-1"));
}

#[test]
fn no_usb_is_empty_not_an_error() {
    for root in [fixture("no-usb"), fixture("does-not-exist")] {
        let sysfs = Sysfs::new(&root);
        assert_eq!(sysfs.scan().unwrap(), Scan::default(), "{}", root.display());
        assert_eq!(
            sysfs.find(&"KWIF4Q".parse::<DeviceId>().unwrap()).unwrap(),
            None
        );
        assert!(sysfs.bitbabblers().unwrap().is_empty());
    }
}

// --- trees built on the fly ---------------------------------------------------

#[test]
fn builder_tree() {
    let tree = FixtureTree::new()
        .root_hub(3)
        .usb_device("3-1", "05e3", "0608", None, 3, 2)
        .interface("3-1:1.0")
        .bitbabbler("3-1.4", Some("KWIF4Q"), 3, 5)
        .interface("3-1.4:1.0")
        // Upper-case hex IDs are still a BitBabbler.
        .usb_device("3-1.2", "0403", "7840", Some("ABC1234"), 3, 4)
        .attr("3-1.2", "idVendor", "0403\n")
        .attr("3-1.2", "idProduct", "7840\n")
        .usb_device("3-2", "0403", "6001", Some("FTDI01"), 3, 6);
    assert!(tree.link_path("3-1.4").is_symlink());
    assert!(tree.device_path("3-1.4").ends_with("usb3/3-1/3-1.4"));
    let devs = tree.sysfs().bitbabblers().unwrap();
    assert_eq!(names(&devs), ["3-1.2", "3-1.4"]);
    assert_eq!(devs[1].path, tree.root().join("bus/usb/devices/3-1.4"));
    let tree = tree.attr("3-1.2", "idProduct", "7840 \n\n");
    assert_eq!(tree.sysfs().bitbabblers().unwrap().len(), 2);
    let tree = tree.attr("3-1.2", "idVendor", "0x0403\n");
    assert_eq!(names(&tree.sysfs().bitbabblers().unwrap()), ["3-1.4"]);
}

#[test]
fn numeric_sort_order() {
    let tree = FixtureTree::new()
        .bitbabbler("10-1", Some("BUSTEN"), 10, 2)
        .bitbabbler("2-1.10", Some("PORTTN"), 2, 3)
        .bitbabbler("2-1.9", Some("PORTNI"), 2, 4)
        .bitbabbler("2-1", Some("PORTON"), 2, 5)
        .bitbabbler("2-2", Some("PORTTW"), 2, 6);
    let devs = tree.sysfs().bitbabblers().unwrap();
    assert_eq!(names(&devs), ["2-1", "2-1.9", "2-1.10", "2-2", "10-1"]);
}

#[test]
fn vanished_device_is_absent() {
    let tree = FixtureTree::new()
        .root_hub(1)
        .bitbabbler("1-1", Some("KWIF4Q"), 1, 2)
        .interface("1-1:1.0")
        .bitbabbler("1-2", Some("ABCDEF"), 1, 3)
        .vanish("1-1");
    // Its symlink is still listed, but dangles.
    assert!(tree.link_path("1-1").is_symlink());
    assert!(!tree.link_path("1-1").exists());
    let sysfs = tree.sysfs();
    let Scan {
        devices, warnings, ..
    } = sysfs.scan().unwrap();
    assert_eq!(names(&devices), ["1-2"]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(find(&sysfs, "KWIF4Q"), None);
    assert_eq!(find(&sysfs, "1:2"), None);
    assert_eq!(find(&sysfs, "1-1"), None);
}

#[test]
fn device_vanishing_mid_read_is_absent() {
    // The directory is half gone: idVendor/idProduct/serial read, then busnum
    // or devnum missing.
    for attr in ["busnum", "devnum", "idProduct", "idVendor"] {
        let tree = FixtureTree::new()
            .bitbabbler("1-1", Some("KWIF4Q"), 1, 2)
            .remove_attr("1-1", attr);
        let scan = tree.sysfs().scan().unwrap();
        assert_eq!(scan, Scan::default(), "{attr}");
    }
}

#[test]
fn missing_serial_is_none() {
    let tree = FixtureTree::new()
        .bitbabbler("1-1", Some("KWIF4Q"), 1, 2)
        .remove_attr("1-1", "serial")
        .bitbabbler("1-2", Some(""), 1, 3);
    let devs = tree.sysfs().bitbabblers().unwrap();
    assert_eq!(devs[0].serial, None);
    assert_eq!(devs[1].serial.as_deref(), Some(""));
    assert_eq!(find(&tree.sysfs(), "1:2").as_deref(), Some("1-1"));
}

#[test]
fn garbage_is_skipped_with_warnings() {
    let long_serial = "X".repeat(100_000);
    let tree = FixtureTree::new()
        .bitbabbler("1-1", Some("GOOD01"), 1, 2)
        .bitbabbler("1-2", Some("BADDEV"), 1, 3)
        .attr("1-2", "devnum", b"\xff\0\n")
        .bitbabbler("1-3", Some("BADBUS"), 1, 4)
        .attr("1-3", "busnum", "")
        .bitbabbler("weird", Some("BADNAM"), 1, 5)
        .bitbabbler("1-4", Some(long_serial.as_str()), 1, 6)
        .bitbabbler("1-5", Some("BIGNUM"), 1, 7)
        .attr("1-5", "busnum", "99999999999999999999\n");
    let Scan {
        devices, warnings, ..
    } = tree.sysfs().scan().unwrap();
    assert_eq!(names(&devices), ["1-1", "1-4"]);
    // Attribute reads are capped.
    assert_eq!(devices[1].serial.as_ref().map(String::len), Some(4096));
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    let joined = warnings.join("\n");
    assert!(
        joined.contains("1-2: devnum is not a number: \"\u{fffd}\\0\\n\""),
        "{joined}"
    );
    assert!(
        joined.contains("1-3: busnum is not a number: \"\""),
        "{joined}"
    );
    assert!(
        joined.contains("weird: the name is not BUS-PORT[.PORT...]"),
        "{joined}"
    );
    assert!(joined.contains("1-5: busnum is not a number"), "{joined}");
}

#[test]
fn duplicate_serials_first_wins_with_a_warning() {
    let tree = FixtureTree::new()
        .bitbabbler("3-1", Some("KWIF4Q"), 3, 2)
        .bitbabbler("1-7", Some("KWIF4Q"), 1, 2);
    let sysfs = tree.sysfs();
    assert_eq!(find(&sysfs, "KWIF4Q").as_deref(), Some("1-7"));
    let devices = sysfs.bitbabblers().unwrap();
    assert_eq!(with_serial(&devices, "KWIF4Q").unwrap().name, "1-7");
    let scan = sysfs.scan().unwrap();
    assert_eq!(
        scan.warnings,
        ["serial \"KWIF4Q\" is shared by devices 1-7, 3-1; using 1-7"]
    );
}

#[test]
fn trigger_change_writes_change() {
    let tree = FixtureTree::new().bitbabbler("1-1", Some("KWIF4Q"), 1, 2);
    let sysfs = tree.sysfs();
    let dev = sysfs.bitbabblers().unwrap().remove(0);
    let uevent = tree.device_path("1-1").join("uevent");
    sysfs.trigger_change(&dev).unwrap();
    // Written in place, not truncated (sysfs files cannot be truncated).
    let contents = fs::read_to_string(&uevent).unwrap();
    assert!(contents.starts_with("change"), "{contents:?}");
    assert_eq!(sysfs.try_trigger_change(&dev).unwrap(), Trigger::Sent);
}

#[test]
fn trigger_change_on_vanished_device_is_ok() {
    let tree = FixtureTree::new().bitbabbler("1-1", Some("KWIF4Q"), 1, 2);
    let sysfs = tree.sysfs();
    let dev = sysfs.bitbabblers().unwrap().remove(0);
    // uevent gone but directory there: nothing may be created.
    let tree = tree.remove_attr("1-1", "uevent");
    assert_eq!(sysfs.try_trigger_change(&dev).unwrap(), Trigger::Vanished);
    assert!(!tree.device_path("1-1").join("uevent").exists());
    // Whole device gone.
    let tree = tree.vanish("1-1");
    sysfs.trigger_change(&dev).unwrap();
    assert_eq!(sysfs.try_trigger_change(&dev).unwrap(), Trigger::Vanished);
    assert!(!tree.device_path("1-1").exists());
}

// --- real errors ------------------------------------------------------------------

#[test]
fn devices_dir_not_a_directory_is_an_error() {
    let tree = FixtureTree::new();
    let dir = tree.root().join("bus/usb/devices");
    fs::remove_dir(&dir).unwrap();
    fs::write(&dir, "").unwrap();
    let err = tree.sysfs().scan().unwrap_err();
    assert_eq!(err.path(), dir);
    assert_eq!(err.to_string(), format!("reading {}", dir.display()));
    assert!(matches!(err, SysfsError::Io { .. }));
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn unreadable_attribute_is_an_error_naming_it() {
    // An attribute that is a directory gives EISDIR: not "vanished".
    let tree = FixtureTree::new()
        .bitbabbler("1-1", Some("KWIF4Q"), 1, 2)
        .bitbabbler("1-2", Some("ABCDEF"), 1, 3)
        .remove_attr("1-2", "serial");
    let serial = tree.device_path("1-2").join("serial");
    fs::create_dir(&serial).unwrap();
    let err = tree.sysfs().bitbabblers().unwrap_err();
    let expected = tree.root().join("bus/usb/devices/1-2/serial");
    assert_eq!(err.to_string(), format!("reading {}", expected.display()));
    assert!(err.to_string().ends_with("/bus/usb/devices/1-2/serial"));
}

#[test]
fn unwritable_uevent_is_an_error() {
    let tree = FixtureTree::new()
        .bitbabbler("1-1", Some("KWIF4Q"), 1, 2)
        .remove_attr("1-1", "uevent");
    let sysfs = tree.sysfs();
    let dev = sysfs.bitbabblers().unwrap().remove(0);
    fs::create_dir(tree.device_path("1-1").join("uevent")).unwrap();
    let err = sysfs.trigger_change(&dev).unwrap_err();
    assert!(matches!(err, SysfsError::Write { .. }));
    assert_eq!(
        err.to_string(),
        format!("writing {}", dev.path.join("uevent").display())
    );
}

#[test]
fn permission_denied_is_an_error() {
    let tree = FixtureTree::new().bitbabbler("1-1", Some("KWIF4Q"), 1, 2);
    let dir = tree.root().join("bus/usb/devices");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o000)).unwrap();
    let denied = fs::read_dir(&dir).is_err();
    let result = tree.sysfs().scan();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    if !denied {
        // Running as root (CAP_DAC_OVERRIDE): cannot provoke EACCES; the
        // message format is covered by the unit tests and the tests above.
        return;
    }
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), format!("reading {}", dir.display()));
}

// --- every USB device (DOMAIN_USB_) ------------------------------------------

#[test]
fn scan_lists_every_usb_device_with_its_id_and_bitbabblers_apart() {
    let tree = FixtureTree::new()
        .root_hub(1)
        .usb_device("1-4", "10c4", "ea60", Some("0001"), 1, 4)
        .usb_device("1-5", "10c4", "ea60", Some("0001"), 1, 5)
        .usb_device("1-6", "0658", "0200", None, 1, 6)
        .bitbabbler("1-7", Some("KWIF4Q"), 1, 7)
        .usb_device("1-8", "046d", "c52b", Some("K1"), 1, 8)
        .attr("1-8", "busnum", "eight\n");
    let scan = tree.sysfs().scan().unwrap();
    assert_eq!(names(&scan.usb), ["1-4", "1-5", "1-6", "1-7"]);
    assert_eq!(names(&scan.devices), ["1-7"], "BitBabblers as before");
    assert_eq!(scan.usb[0].id.to_string(), "10c4:ea60");
    assert_eq!(
        scan.usb[1].serial.as_deref(),
        Some("0001"),
        "twins share it"
    );
    assert_eq!(scan.usb[2].serial, None);
    assert!(scan.usb[3].is_bitbabbler() && !scan.usb[0].is_bitbabbler());
    // Garbage in a device of another kind is nobody's business: no warning
    // (and the twins' shared serial is not a BitBabbler's either).
    assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);
}

/// `bbvirt devices`' details: strings as sent, interface drivers in order
/// and once each, an unbound interface adding none, a vanished device
/// giving no strings rather than an error.
#[test]
fn details_strings_and_interface_drivers() {
    let tree = FixtureTree::new()
        .root_hub(1)
        .usb_device("1-1", "10c4", "ea60", Some("0001"), 1, 2)
        .attr("1-1", "product", "CP2102N\n\n")
        .remove_attr("1-1", "manufacturer")
        .interface("1-1:1.2")
        .driver("1-1:1.2", "usbfs")
        .interface("1-1:1.0")
        .driver("1-1:1.0", "cp210x")
        .interface("1-1:1.1")
        .driver("1-1:1.1", "cp210x")
        .interface("1-1:1.3");
    let sysfs = tree.sysfs();
    let dev = sysfs.scan().unwrap().usb.remove(0);
    let d = sysfs.details(&dev).unwrap();
    assert_eq!(d.manufacturer, None);
    assert_eq!(d.product.as_deref(), Some("CP2102N"));
    assert_eq!(d.drivers, ["cp210x", "usbfs"]);
    let tree = tree.vanish("1-1");
    assert_eq!(
        tree.sysfs().details(&dev).unwrap(),
        bbvirt::sysfs::Details::default()
    );
}
