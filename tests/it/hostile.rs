//! Hostile and odd USB descriptor strings, through the udev path (`bbvirt
//! attach BUS:DEV`, which reads the serial from sysfs), the hook, and the
//! command line. Whatever a device claims, it is attached nowhere, nothing
//! panics, and nothing reaches a printed command unquoted.

use crate::util::fixture::FixtureTree;
use crate::util::{bbvirt, expect_exit, write_config};
use bbvirt::exit;

/// Serial (and product) strings a malicious or broken device might report
/// (`bbvirt devices` shows them too: [`crate::devices`]).
pub fn corpus() -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = [
        "AAAAAA -D victim",
        "AAAAAA --domain=victim",
        "-D victim",
        "--connect=qemu+ssh://evil/system",
        "KWIF4Q -c test:///default",
        "KWIF4Q victim",
        " KWIF4Q",
        "KWIF4Q ",
        "KWIF4Q\tX",
        "KW'IF4Q",
        "KW\"IF4Q",
        "KWIF4Q'/><hostdev",
        "<alias name='ua-bbvirt-KWIF4Q'/>",
        "&amp;&lt;",
        "$(reboot)",
        "`reboot`",
        "${IFS}",
        "KWIF4Q;reboot",
        "KWIF4Q|reboot",
        "KWIF4Q&&reboot",
        "../../etc/passwd",
        "KWIF4Q\nDOMAIN=victim",
        "KWIF4Q\r",
        "kwif4q",
        "KWIF4QQQ",
        "KWIF",
        "ＫＷＩＦ４Ｑ",
        "KWIF4Ω",
        "💥💥💥💥💥💥",
        "%s%s%s%n",
        "\\x41\\x41",
        "*",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    c.push(vec![0xff, 0xfe, b'K', 0x80, b'W', 0x01, 0x7f]); // not UTF-8, controls
    c.push(vec![b'A'; 255]); // the longest a USB string descriptor can give
    c.push(b"KWIF4Q\x1b[2J".to_vec()); // terminal escape
    c
}

const CONF: &str = "DOMAIN_RNG_g1=( KWIF4Q AAAAAA )\nDOMAIN_RNG_victim=( JAMMB3 )\n";

#[test]
fn hostile_serials_are_attached_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), CONF);
    let conf = conf.to_str().unwrap();
    for (i, serial) in corpus().iter().enumerate() {
        let tree = FixtureTree::new()
            .root_hub(1)
            .bitbabbler("1-1", Some("JAMMB3"), 1, 2)
            .bitbabbler("1-2", None, 1, 3)
            .attr("1-2", "serial", serial)
            .attr("1-2", "product", serial)
            .attr("1-2", "manufacturer", serial);
        let what = format!("#{i} {:?}", String::from_utf8_lossy(serial));
        // The udev path: the rule passes only BUS:DEV.
        for device in ["1:3", "001:003", "1-2"] {
            let out = bbvirt(tree.root(), &["-C", conf, "attach", device, "-n", "-vvvv"]);
            let (stdout, stderr) = expect_exit(&out, exit::OK);
            assert_eq!(stdout, "", "{what}: nothing would be attached\n{stderr}");
            assert!(
                stderr.contains("no usable serial number"),
                "{what}: {stderr}"
            );
        }
        // Even told where to go, it is refused: bbvirt cannot tag it.
        let out = bbvirt(
            tree.root(),
            &["-C", conf, "attach", "1:3", "-n", "-D", "g1"],
        );
        let (stdout, _) = expect_exit(&out, exit::FAILED);
        assert_eq!(stdout, "", "{what}");
        // attach-all and the hook only ever touch the real JAMMB3.
        let out = bbvirt(
            tree.root(),
            &["-C", conf, "attach-all", "-n", "-c", "bogus:///"],
        );
        let (stdout, _) = expect_exit(&out, exit::OK);
        assert_eq!(
            stdout, "virsh -c bogus:/// attach-device victim <xml> --live\n",
            "{what}"
        );
        let before = std::fs::read(tree.device_path("1-2").join("uevent")).unwrap();
        for domain in ["g1", "victim"] {
            expect_exit(
                &bbvirt(
                    tree.root(),
                    &["-C", conf, "hook", domain, "started", "begin", "-"],
                ),
                exit::OK,
            );
        }
        let after = std::fs::read(tree.device_path("1-2").join("uevent")).unwrap();
        assert_eq!(before, after, "{what}: the hook never re-announces it");
    }
}

#[test]
fn hostile_command_line_values_are_rejected_or_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), CONF);
    let conf = conf.to_str().unwrap();
    let tree = FixtureTree::new()
        .root_hub(1)
        .bitbabbler("1-1", Some("KWIF4Q"), 1, 2);
    for s in corpus()
        .iter()
        .filter_map(|s| String::from_utf8(s.clone()).ok())
    {
        if s.is_empty() || s.contains('\0') {
            continue;
        }
        // As DEVICE: an invalid identifier (exit 2), or a serial of
        // printable ASCII that names no device (exit 4); never anything
        // else, and never more than one line.
        let out = bbvirt(tree.root(), &["-C", conf, "attach", "--", &s]);
        let code = out.status.code();
        assert!(
            code == Some(exit::USAGE) || code == Some(exit::NOT_FOUND),
            "{s:?}: {code:?}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{s:?}: {err}");
        assert!(
            !err.trim_end().chars().any(char::is_control),
            "{s:?}: {err}"
        );
        // As a domain or URI: printed shell-quoted, one line, never split.
        let out = bbvirt(
            tree.root(),
            &[
                "-C",
                conf,
                "attach",
                "KWIF4Q",
                "-n",
                &format!("--domain={s}"),
            ],
        );
        let (stdout, _) = expect_exit(&out, exit::OK);
        assert_eq!(stdout.lines().count(), 1, "{s:?}: {stdout}");
        let line = stdout.trim_end();
        assert!(line.starts_with("virsh attach-device "), "{s:?}: {line}");
        let word = line
            .strip_prefix("virsh attach-device ")
            .and_then(|l| l.strip_suffix(" <xml> --live"))
            .unwrap();
        assert_eq!(
            unquote(word),
            s,
            "the printed word is exactly the domain name"
        );
    }
}

/// What bash makes of a printed word: the dry-run lines are meant to be pasted.
fn unquote(w: &str) -> String {
    let out = std::process::Command::new("/bin/bash")
        .args(["--norc", "--noprofile", "-c", &format!("printf %s {w}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "bash rejected {w}");
    String::from_utf8(out.stdout).unwrap()
}

/// The hostile serials through DOMAIN_USB_: an element naming one exactly
/// (quoted for the shell) reads back as that serial, matches only the
/// device that carries it, and the alias bbvirt attaches it under is
/// always libvirt-safe and never a BitBabbler's.
#[test]
fn hostile_serials_through_the_usb_matcher() {
    use crate::util::fake::FakeHv;
    use bbvirt::context::Context;
    let mut routed = 0;
    for s in corpus()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
    {
        // vm.conf cannot hold NUL or a line break inside a word the native
        // parser reads in one piece; those are left to the bash corpus.
        if s.is_empty() || s.contains(['\0', '\n', '\r']) {
            continue;
        }
        let Ok(quoted) = shlex::try_quote(&s) else {
            continue;
        };
        let element = format!("id=10c4:ea60 serial={quoted}");
        let text = format!(
            "DOMAIN_USB_g1=( {} )\n",
            shlex::try_quote(&element).expect("quotable")
        );
        let cfg = match bbvirt::config::parse_native(std::path::Path::new("/t/vm.conf"), &text) {
            Ok(c) => c,
            // Outside the native subset: bash's business (its own corpus).
            Err(bbvirt::config::NativeError::NeedsBash { .. }) => continue,
            Err(e) => panic!("{s:?}: {e}"),
        };
        assert_eq!(
            cfg.domains[0].usb[0].serial.as_deref(),
            Some(s.as_str()),
            "{s:?}"
        );
        let tree = FixtureTree::new()
            .root_hub(1)
            .usb_device("1-4", "10c4", "ea60", Some(&s), 1, 4)
            .usb_device("1-5", "10c4", "ea60", Some("other"), 1, 5);
        let sysfs = tree.sysfs();
        let hv = FakeHv::new().domain(None, "g1", true);
        let opts = bbvirt::cli::Opts::default();
        let ctx = Context {
            config: &cfg,
            sysfs: &sysfs,
            hv: &hv,
            opts: &opts,
            lock_dir: None,
            readiness: None,
        };
        for dev in ["1:4", "1:5"] {
            ctx.attach(&dev.parse().unwrap()).unwrap();
        }
        let held = hv.hostdevs(None, "g1");
        // The sysfs attribute loses trailing newlines: compare with what
        // the device shows.
        let shown = tree.sysfs().scan().unwrap().usb[0].serial.clone();
        if shown.as_deref() == Some(s.as_str()) {
            assert_eq!(held.len(), 1, "{s:?}: only its device: {held:?}");
            assert_eq!((held[0].1, held[0].2), (1, 4), "{s:?}");
            let alias = &held[0].0;
            assert!(alias.starts_with("ua-bbusb-10c4ea60-g1-e0-"), "{alias}");
            routed += 1;
            assert!(
                alias[3..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{s:?}: {alias}"
            );
        }
    }
    assert!(
        routed >= 10,
        "only {routed} hostile serials went through the matcher"
    );
}
