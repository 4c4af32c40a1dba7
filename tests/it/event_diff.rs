//! The udev front's decision from the event's own device (DEVPATH), held
//! against bbvirt's: over the committed fixture trees, trees from the
//! builder (twins by port, serial-less devices, an FTDI chip with a
//! BitBabbler's serial) and one tree per hostile serial of the corpus,
//! with configs of `DOMAIN_RNG_` serials (listed twice, hostile ones) and
//! `DOMAIN_USB_` elements (twins told apart by port, one element for two
//! twins, overlapping elements of different specificity, serial= elements,
//! a guest at a remote URI), with no readiness gate, a closed one and an
//! open one. For every device of a tree, and every DEVPATH of the tree
//! (interfaces, root hubs, refused paths too):
//!
//! - `attach BUS:DEV` for every address of the tree (and one absent): the
//!   route decided from DEVPATH, when the front decides it so, is the
//!   scan's ([`Context::route_attach`]) exactly; the front's verdict with
//!   DEVPATH is its verdict without (the scan's); and it says "nothing to
//!   do" exactly when bbvirt's own `attach`, on a fake libvirt where every
//!   guest runs, changes nothing and never connects.
//! - `detach BUS:DEV` after the device left (its directory gone, udev's
//!   PRODUCT and DEVPATH in the event): when the front says "nothing to
//!   do", bbvirt's own `detach` changes nothing, on a fake libvirt that
//!   holds every device bbvirt attached while they were all plugged.
//!
//! And through the built binary, under udev's environment: the front with
//! DEVPATH and the front made to scan (a DEVPATH it refuses) exit alike,
//! run bbvirt alike and log the same lines at `-vvv`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::fake::FakeHv;
use crate::util::fixture::FixtureTree;
use crate::util::scene::gated_host;
use crate::util::{expect_exit, write_config};
use bbvirt::actions::Outcome;
use bbvirt::cli::{Action, Opts};
use bbvirt::config::Config;
use bbvirt::context::{Context, Target};
use bbvirt::daemon::{HostPaths, Readiness};
use bbvirt::device::DeviceArg;
use bbvirt::event::{self, UdevEnv, Verdict};
use bbvirt::sysfs::Sysfs;

/// The vm.confs every tree is tried with.
const CONFS: &[&str] = &[
    "",
    // Serials, KWIF4Q listed twice (the first guest wins).
    "DOMAIN_RNG_g1=( KWIF4Q JAMMB3 )\nDOMAIN_RNG_g2=( QX3TZ7A KWIF4Q B7GHR2 )\n",
    // Hostile and unusable serials in a list.
    "DOMAIN_RNG_g1=( 'AAAAAA -D victim' AAAAAA KWIF4Q '' )\nDOMAIN_RNG_victim=( JAMMB3 )\n",
    // Twins told apart by port; one element for two twins (port order).
    "DOMAIN_USB_ha=( \"id=10c4:ea60 port=1-5\" \"id=10c4:ea60 port=1-4\" )\n\
     DOMAIN_USB_zw=( \"id=0658:0200\" )\n",
    // Overlapping elements: id only, id+port, id+serial, port only; a
    // BitBabbler element beside a serial.
    "DOMAIN_USB_a=( \"id=10c4:ea60\" \"id=0403:7840\" )\n\
     DOMAIN_USB_b=( \"id=10c4:ea60 port=1-5\" \"id=10c4:ea60 serial=0001\" \"port=2-4\" )\n\
     DOMAIN_RNG_b=( JAMMB3 )\n",
    // serial= elements, a hostile one among them; a port element on a
    // serial-less BitBabbler.
    "DOMAIN_USB_s=( \"id=0403:6001 serial=KWIF4Q\" \"id=0403:6001 serial=A50285BI\" \
     \"id=0403:7840 serial='AAAAAA -D victim'\" \"id=10c4:ea60 serial='AAAAAA -D victim'\" \
     \"port=3-1.4.3\" )\nDOMAIN_RNG_s=( QX3TZ7A )\n",
    // A guest at a remote URI (never behind the local gate) and one at
    // the default URI.
    "DOMAIN_RNG_far=( KWIF4Q QX3TZ7A )\nDOMAIN_URI_far=\"qemu+ssh://far/system\"\n\
     DOMAIN_USB_far=( \"id=046d:c52b\" )\n\
     DOMAIN_RNG_near=( JAMMB3 B7GHR2 )\nDOMAIN_USB_near=( \"id=046d:c31c\" \"port=1-1\" )\n",
    // Hubs and root hubs named by elements (a root hub is never passed).
    "DOMAIN_USB_h=( \"id=05e3:0608\" \"id=1d6b:0002\" \"port=1-6\" \"port=3-1\" )\n",
];

fn parse(text: &str) -> Config {
    bbvirt::config::parse_native(Path::new("/etc/bit-babbler/vm.conf"), text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A committed fixture tree.
fn committed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(name)
}

/// Twins by port (two CP210x with one serial), a serial-less CP210x, two
/// Z-Wave sticks, a keyboard, a hub with an FTDI chip carrying a
/// BitBabbler's serial and two BitBabblers, a serial-less BitBabbler.
fn twins() -> FixtureTree {
    FixtureTree::new()
        .root_hub(1)
        .root_hub(2)
        .usb_device("1-4", "10c4", "ea60", Some("0001"), 1, 4)
        .interface("1-4:1.0")
        .usb_device("1-5", "10c4", "ea60", Some("0001"), 1, 5)
        .usb_device("2-1", "10c4", "ea60", None, 2, 2)
        .usb_device("2-2", "0658", "0200", None, 2, 3)
        .usb_device("2-3", "0658", "0200", None, 2, 4)
        .usb_device("2-4", "046d", "c52b", None, 2, 5)
        .usb_device("1-6", "05e3", "0608", None, 1, 6)
        .usb_device("1-6.1", "0403", "6001", Some("KWIF4Q"), 1, 7)
        .bitbabbler("1-6.2", Some("KWIF4Q"), 1, 8)
        .bitbabbler("1-6.3", Some("JAMMB3"), 1, 9)
        .bitbabbler("2-5", None, 2, 6)
}

/// A BitBabbler and a CP210x that both carry `serial`, beside JAMMB3.
fn hostile(serial: &[u8]) -> FixtureTree {
    FixtureTree::new()
        .root_hub(1)
        .bitbabbler("1-1", Some("JAMMB3"), 1, 2)
        .bitbabbler("1-2", None, 1, 3)
        .attr("1-2", "serial", serial)
        .usb_device("1-3", "10c4", "ea60", None, 1, 4)
        .attr("1-3", "serial", serial)
}

/// One entry of a tree's `bus/usb/devices`, as udev's event gives it.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    /// DEVPATH: the entry's directory below the root.
    devpath: String,
    /// `busnum`, `devnum` when they read as numbers.
    addr: Option<(u32, u32)>,
    /// PRODUCT (`vvvv/pppp/bcd`) when the ids read.
    product: Option<String>,
}

fn entries(root: &Path) -> Vec<Entry> {
    let base = std::fs::canonicalize(root).unwrap();
    let mut out: Vec<Entry> = std::fs::read_dir(root.join("bus/usb/devices"))
        .map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|link| {
            let real = std::fs::canonicalize(&link).unwrap();
            let read = |a: &str| std::fs::read(real.join(a)).ok();
            let num = |a| read(a).and_then(|b| bbvirt::sysfs::parse_decimal_attr(&b));
            let hex = |a| read(a).and_then(|b| bbvirt::sysfs::parse_hex_id_attr(&b));
            Entry {
                name: link.file_name().unwrap().to_string_lossy().into_owned(),
                devpath: format!("/{}", real.strip_prefix(&base).unwrap().display()),
                addr: num("busnum").zip(num("devnum")),
                product: hex("idVendor")
                    .zip(hex("idProduct"))
                    .map(|(v, p)| format!("{v:x}/{p:x}/100")),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// DEVPATHs the front must refuse (then it scans), beside the real ones.
fn refused(entries: &[Entry]) -> Vec<String> {
    let mut out = vec![String::new(), "/".into(), "/devices/virtual/none".into()];
    for e in entries.iter().filter(|e| !e.name.starts_with("usb")) {
        let (parent, last) = e.devpath.rsplit_once('/').unwrap();
        out.push(format!(
            "{parent}/../{}/{last}",
            parent.rsplit('/').next().unwrap()
        ));
        out.push(format!("{parent}/./{last}"));
        out.push(e.devpath[1..].to_string());
        out.push(format!("/sys{}", e.devpath));
    }
    out
}

/// The readiness gates tried: none (no systemd), closed (the daemon has
/// not served a bbvirt yet), open.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Gate {
    None,
    Closed,
    Open,
}

fn gate(dir: &Path, g: Gate) -> Option<Readiness> {
    let paths: HostPaths = gated_host(dir);
    let ready = paths.run_dir.join("ready");
    match g {
        Gate::None => return None,
        Gate::Closed => {
            let _ = std::fs::remove_file(&ready);
        }
        Gate::Open => {
            std::fs::create_dir_all(&paths.run_dir).unwrap();
            std::fs::write(&ready, "812 5000\n").unwrap();
        }
    }
    Readiness::detect(paths, true)
}

/// A fake libvirt where every guest of `cfg` runs, at its URI.
fn hypervisor(cfg: &Config) -> FakeHv {
    cfg.domains.iter().fold(FakeHv::new(), |hv, d| {
        let t = Target::of(d, None);
        hv.domain(t.uri.as_deref(), &t.name, true)
    })
}

fn rule(line: &str) -> (Action, Opts) {
    let words: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
    event::rule_words(&words).unwrap_or_else(|| panic!("{line}"))
}

fn ctx<'a>(
    cfg: &'a Config,
    sysfs: &'a Sysfs,
    hv: &'a FakeHv,
    opts: &'a Opts,
    readiness: Option<&'a Readiness>,
) -> Context<'a> {
    Context {
        config: cfg,
        sysfs,
        hv,
        opts,
        lock_dir: None,
        readiness,
    }
}

/// A route or error, compared as bbvirt would show them.
fn show<T: std::fmt::Debug, E: std::fmt::Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(route) => format!("{route:?}"),
        Err(e) => format!("error: {e}"),
    }
}

/// How often the front decided from DEVPATH alone, and fell back to a scan.
#[derive(Debug, Default)]
struct Tally {
    alone: usize,
    scanned: usize,
    done: usize,
    removes_done: usize,
}

/// Every attach of `root`'s addresses from every DEVPATH, and every
/// remove, under `cfg` and each gate.
fn check_tree(what: &str, root: &Path, cfg: &Config, gates: &[Gate], tally: &mut Tally) {
    let sysfs = Sysfs::new(root);
    let all = entries(root);
    let mut words: Vec<String> = all
        .iter()
        .filter_map(|e| e.addr)
        .map(|(b, d)| format!("{b}:{d}"))
        .collect();
    words.push("9:99".into());
    let mut devpaths: Vec<String> = all.iter().map(|e| e.devpath.clone()).collect();
    devpaths.extend(refused(&all));
    let gate_dir = tempfile::tempdir().unwrap();
    for &g in gates {
        let readiness = gate(gate_dir.path(), g);
        for address in &words {
            let (action, opts) = rule(&format!("attach {address} --syslog"));
            let Action::Attach {
                device: DeviceArg::Local(device),
                ..
            } = &action
            else {
                unreachable!()
            };
            // bbvirt's own attach on a fake libvirt where every guest runs.
            let hv = hypervisor(cfg);
            let bbvirt = ctx(cfg, &sysfs, &hv, &opts, readiness.as_ref()).attach(device);
            let needs_nothing = matches!(bbvirt, Ok(Outcome::NothingToDo))
                && hv.connects().is_empty()
                && hv.calls().is_empty();
            let quiet = FakeHv::new();
            let c = ctx(cfg, &sysfs, &quiet, &opts, readiness.as_ref());
            let scan_route = show(&c.route_attach(device));
            let scan_verdict = event::decide(&action, &c, &UdevEnv::default());
            let case = |devpath: &str| {
                format!("{what}, gate {g:?}, attach {address}, DEVPATH {devpath:?}")
            };
            assert_eq!(
                scan_verdict == Verdict::Done,
                needs_nothing,
                "{}: the front without DEVPATH; bbvirt: {}",
                case(""),
                show(&bbvirt)
            );
            for devpath in &devpaths {
                let udev = UdevEnv {
                    action: Some("add".into()),
                    devpath: Some(devpath.clone()),
                    product: None,
                };
                let own = all.iter().any(|e| {
                    e.devpath == *devpath
                        && e.addr.is_some_and(|(b, d)| format!("{b}:{d}") == *address)
                });
                match event::route_from_event(&c, device, &udev) {
                    Some(route) => {
                        tally.alone += 1;
                        assert_eq!(show(&route), scan_route, "{}", case(devpath));
                    }
                    // Then the front scans: the verdict is the scan's (asked
                    // below for the event's own DEVPATH, skipped for the
                    // others: a scan each).
                    None if !own => {
                        tally.scanned += 1;
                        continue;
                    }
                    None => tally.scanned += 1,
                }
                let verdict = event::decide(&action, &c, &udev);
                assert_eq!(verdict, scan_verdict, "{}", case(devpath));
                if verdict == Verdict::Done {
                    tally.done += 1;
                }
            }
        }
    }
}

/// A hostdev in a guest: (URI, guest, alias, bus, dev).
type Held = (Option<String>, String, String, u32, u32);

/// Every device's remove under each of `confs`, after bbvirt attached
/// what it attaches while all were plugged.
fn check_removes(what: &str, root: &Path, confs: &[Config], gates: &[Gate], tally: &mut Tally) {
    let gate_dir = tempfile::tempdir().unwrap();
    let plugged = Sysfs::new(root);
    let opts = Opts::default();
    let all = entries(root);
    // Per conf: the hostdevs bbvirt attached while all were plugged (the
    // daemon served then).
    let held: Vec<Vec<Held>> = confs
        .iter()
        .map(|cfg| {
            let hv = hypervisor(cfg);
            for (bus, dev) in all.iter().filter_map(|e| e.addr) {
                let (action, _) = rule(&format!("attach {bus}:{dev}"));
                let Action::Attach {
                    device: DeviceArg::Local(device),
                    ..
                } = &action
                else {
                    unreachable!()
                };
                let _ = ctx(cfg, &plugged, &hv, &opts, None).attach(device);
            }
            let mut held = Vec::new();
            for d in &cfg.domains {
                let t = Target::of(d, None);
                for (alias, bus, dev) in hv.hostdevs(t.uri.as_deref(), &t.name) {
                    held.push((t.uri.clone(), t.name.clone(), alias, bus, dev));
                }
            }
            held
        })
        .collect();
    for gone in all.iter().filter(|e| !e.name.contains(':')) {
        let (Some((bus, dev)), Some(product)) = (gone.addr, &gone.product) else {
            continue;
        };
        // The tree after the unplug: the device's directory and link gone.
        let after = tempfile::tempdir().unwrap();
        let status = Command::new("cp")
            .args(["-a", &format!("{}/.", root.display())])
            .arg(after.path())
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::remove_dir_all(after.path().join(&gone.devpath[1..])).unwrap();
        std::fs::remove_file(after.path().join("bus/usb/devices").join(&gone.name)).unwrap();
        let unplugged = Sysfs::new(after.path());
        let (action, opts) = rule(&format!("detach {bus}:{dev} --syslog"));
        let Action::Detach {
            device: DeviceArg::Local(device),
            ..
        } = &action
        else {
            unreachable!()
        };
        let udev = UdevEnv {
            action: Some("remove".into()),
            devpath: Some(gone.devpath.clone()),
            product: Some(product.clone()),
        };
        for (c, cfg) in confs.iter().enumerate() {
            for &g in gates {
                let readiness = gate(gate_dir.path(), g);
                let quiet = FakeHv::new();
                let verdict = event::decide(
                    &action,
                    &ctx(cfg, &unplugged, &quiet, &opts, readiness.as_ref()),
                    &udev,
                );
                if verdict != Verdict::Done {
                    continue;
                }
                tally.removes_done += 1;
                let hv = held[c]
                    .iter()
                    .fold(hypervisor(cfg), |hv, (uri, name, alias, b, d)| {
                        hv.with_hostdev(uri.as_deref(), name, alias, *b, *d)
                    });
                let bbvirt = ctx(cfg, &unplugged, &hv, &opts, readiness.as_ref()).detach(device);
                assert!(
                    hv.calls().is_empty() && bbvirt.is_ok(),
                    "{what}, conf #{c}, gate {g:?}, remove of {} ({bus}:{dev}): the front says \
                     nothing to do, bbvirt: {} {:?}",
                    gone.name,
                    show(&bbvirt),
                    hv.call_lines()
                );
            }
        }
    }
}

#[test]
fn the_front_decides_from_devpath_as_bbvirt_does_on_the_fixture_trees() {
    let twins = twins();
    let scene = crate::util::scene::tree();
    let trees: Vec<(&str, PathBuf)> = vec![
        ("host", committed("host")),
        ("one-bitbabbler", committed("one-bitbabbler")),
        ("no-usb", committed("no-usb")),
        ("scene", scene.root().to_path_buf()),
        ("twins", twins.root().to_path_buf()),
    ];
    let mut tally = Tally::default();
    let confs: Vec<Config> = CONFS.iter().map(|t| parse(t)).collect();
    for (name, root) in &trees {
        for (i, cfg) in confs.iter().enumerate() {
            let gates = [Gate::None, Gate::Closed, Gate::Open];
            check_tree(
                &format!("tree {name}, conf #{i}"),
                root,
                cfg,
                &gates,
                &mut tally,
            );
        }
        let gates = [Gate::None, Gate::Closed];
        check_removes(&format!("tree {name}"), root, &confs, &gates, &mut tally);
    }
    // The fast way was taken, and so was the scan, and both said "nothing
    // to do" for some.
    assert!(tally.alone > 500 && tally.scanned > 500, "{tally:?}");
    assert!(tally.done > 0 && tally.removes_done > 0, "{tally:?}");
}

#[test]
fn the_front_decides_from_devpath_as_bbvirt_does_for_hostile_serials() {
    let mut tally = Tally::default();
    let confs: Vec<Config> = CONFS.iter().map(|t| parse(t)).collect();
    let gates = [Gate::None, Gate::Closed];
    for (i, serial) in crate::hostile::corpus().iter().enumerate() {
        let tree = hostile(serial);
        let what = format!("hostile serial #{i} {:?}", String::from_utf8_lossy(serial));
        for (c, cfg) in confs.iter().enumerate() {
            check_tree(
                &format!("{what}, conf #{c}"),
                tree.root(),
                cfg,
                &gates,
                &mut tally,
            );
        }
        check_removes(&what, tree.root(), &confs, &gates, &mut tally);
    }
    assert!(
        tally.alone > 0 && tally.done > 0 && tally.removes_done > 0,
        "{tally:?}"
    );
}

#[test]
fn what_the_front_decides_alone_and_what_it_scans_for() {
    // On the twins tree with twins told apart by port and one element for
    // the two Z-Wave sticks.
    let tree = twins();
    let cfg = parse(CONFS[3]);
    let sysfs = tree.sysfs();
    let hv = FakeHv::new();
    let all = entries(tree.root());
    let alone = |name: &str| {
        let e = all.iter().find(|e| e.name == name).unwrap();
        let (bus, dev) = e.addr.unwrap();
        let (action, opts) = rule(&format!("attach {bus}:{dev} --syslog"));
        let Action::Attach {
            device: DeviceArg::Local(device),
            ..
        } = &action
        else {
            unreachable!()
        };
        let udev = UdevEnv {
            action: Some("add".into()),
            devpath: Some(e.devpath.clone()),
            product: None,
        };
        let opts = opts.clone();
        let c = ctx(&cfg, &sysfs, &hv, &opts, None);
        event::route_from_event(&c, device, &udev).is_some()
    };
    // No element matches them: their own directory says where they go.
    for name in ["usb1", "2-1", "2-4", "1-6", "1-6.1", "1-6.2", "2-5"] {
        assert!(alone(name), "{name}");
    }
    // An element matches them: which one takes which depends on the others.
    for name in ["1-4", "1-5", "2-2", "2-3"] {
        assert!(!alone(name), "{name}");
    }
}

/// Runs the built front as udev would for `attach BUS:DEV` (ACTION=add,
/// DEVPATH), with `/bin/echo` standing in for bbvirt.
fn front(root: &Path, conf: &Path, address: &str, devpath: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bbvirt-event"))
        .args(["/bin/echo", "-C"])
        .arg(conf)
        .args(["-vvv", "attach", address])
        .env("BBVIRT_SYSFS_ROOT", root)
        .env("BBVIRT_RUN_DIR", root.join("run"))
        .env("BBVIRT_PROC_ROOT", root.join("proc"))
        .env("ACTION", "add")
        .env("DEVPATH", devpath)
        .env_remove("PRODUCT")
        .output()
        .expect("running bbvirt-event");
    expect_exit(&out, 0)
}

#[test]
fn the_front_logs_the_same_lines_with_devpath_as_with_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let twins = twins();
    let scene = crate::util::scene::tree();
    let mut trees: Vec<(String, PathBuf, Option<FixtureTree>)> = vec![
        ("host".into(), committed("host"), None),
        ("scene".into(), scene.root().to_path_buf(), None),
        ("twins".into(), twins.root().to_path_buf(), None),
    ];
    for (i, serial) in crate::hostile::corpus().iter().enumerate() {
        let t = hostile(serial);
        trees.push((format!("hostile #{i}"), t.root().to_path_buf(), Some(t)));
    }
    let mut compared = 0;
    for (c, text) in [CONFS[2], CONFS[4], CONFS[6]].iter().enumerate() {
        let conf = write_config(dir.path(), text);
        for (name, root, _) in &trees {
            if name.starts_with("hostile") && c > 0 {
                continue;
            }
            for e in entries(root) {
                let Some((bus, dev)) = e.addr else { continue };
                let address = format!("{bus}:{dev}");
                let fast = front(root, &conf, &address, &e.devpath);
                let scan = front(root, &conf, &address, "/devices/virtual/none");
                assert_eq!(
                    fast, scan,
                    "{name}, conf {c}, attach {address} at {}",
                    e.devpath
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 50, "{compared}");
}
