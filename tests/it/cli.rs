//! The bbvirt binary end to end, short of a running libvirtd: exit codes,
//! messages, dry-run output, the hook, the hostile-serial case, and real
//! libvirt (its in-process test driver, `test:///default`) for error mapping.

use std::fs;

use crate::util::fixture::FixtureTree;
use crate::util::{bbvirt, expect_exit, write_config};
use bbvirt::exit;

const CONF: &str = "\
# two guests
DOMAIN_RNG_g1=( KWIF4Q JAMMB3 )
DOMAIN_RNG_kbsd=( QX3TZ7A )
DOMAIN_NAME_kbsd='kbsd-unstable'
DOMAIN_URI_kbsd=\"qemu:///system\"
";

fn tree() -> FixtureTree {
    FixtureTree::new()
        .root_hub(1)
        .root_hub(3)
        .bitbabbler("1-1", Some("KWIF4Q"), 1, 4)
        .bitbabbler("1-2", Some("JAMMB3"), 1, 5)
        .usb_device("3-1", "05e3", "0608", None, 3, 2)
        .bitbabbler("3-1.2", Some("QX3TZ7A"), 3, 9)
        .bitbabbler("3-1.3", Some("UNASS1"), 3, 10)
        .bitbabbler("3-1.4", Some("AAAAAA -D g1"), 3, 11)
}

struct Setup {
    tree: FixtureTree,
    _dir: tempfile::TempDir,
    conf: String,
}

fn setup(conf: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), conf);
    Setup {
        tree: tree(),
        conf: path.to_str().unwrap().to_string(),
        _dir: dir,
    }
}

impl Setup {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["-C", &self.conf];
        all.extend_from_slice(args);
        bbvirt(self.tree.root(), &all)
    }
}

#[test]
fn help_and_version() {
    let s = setup(CONF);
    for h in ["-?", "--help"] {
        let (out, _) = expect_exit(&s.run(&[h]), exit::OK);
        assert!(out.contains("bbvirt attach|detach DEVICE"), "{out}");
        assert!(out.contains("Exit status:"), "{out}");
    }
    let (out, _) = expect_exit(&s.run(&["--version"]), exit::OK);
    assert!(out.starts_with("bbvirt "), "{out}");
    let (out, _) = expect_exit(&s.run(&["completions", "-?"]), exit::OK);
    assert!(out.contains("bbvirt completions <SHELL>"), "{out}");
}

#[test]
fn completions_come_from_the_cli_definition() {
    let s = setup(CONF);
    for (shell, marker) in [
        ("bash", "_bbvirt()"),
        ("zsh", "#compdef bbvirt"),
        ("fish", "complete -c bbvirt"),
    ] {
        let (out, _) = expect_exit(&s.run(&["completions", shell]), exit::OK);
        assert!(out.contains(marker), "{shell}: {out}");
        for word in [
            "attach-all",
            "detach-all",
            "sync",
            "status",
            "dry-run",
            "timeout",
        ] {
            assert!(out.contains(word), "{shell} completions lack {word}");
        }
        // The hidden action may appear only in prose ("the libvirt hook").
        assert_eq!(
            out.matches("hook").count(),
            out.matches("libvirt hook").count(),
            "{shell}: the hidden hook action is offered"
        );
    }
    expect_exit(&s.run(&["completions", "tcsh"]), exit::USAGE);
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let s = setup(CONF);
    for args in [
        &[][..],
        &["attach"],
        &["bogus", "X"],
        &["attach", "KWIF4Q", "--nope"],
    ] {
        expect_exit(&s.run(args), exit::USAGE);
    }
    let (_, err) = expect_exit(&s.run(&["attach", "3-1."]), exit::USAGE);
    assert_eq!(
        err,
        "bbvirt: error: invalid device identifier '3-1.': expected a serial number, \
         serial=SERIAL, BUS:DEV or BUS-PORT[.PORT...]\n"
    );
    // A word that is no BitBabbler serial is another device's serial: looked
    // up among all devices, and not there.
    let (_, err) = expect_exit(&s.run(&["attach", "kwif4q"]), exit::NOT_FOUND);
    assert_eq!(err, "bbvirt: error: device kwif4q is not present\n");
}

#[test]
fn invalid_devices_exit_2() {
    let s = setup(CONF);
    for device in ["1:2:3", "3-1.", "1234:1", "serial=", "ABC DEF"] {
        for action in ["attach", "detach"] {
            let (out, err) = expect_exit(&s.run(&[action, device]), exit::USAGE);
            assert_eq!(out, "", "{action} {device}");
            assert_eq!(
                err,
                format!(
                    "bbvirt: error: invalid device identifier '{device}': expected a serial \
                     number, serial=SERIAL, BUS:DEV or BUS-PORT[.PORT...]\n"
                ),
                "{action} {device}"
            );
        }
    }
}

#[test]
fn not_found_and_hint_mismatch_exit_4() {
    let s = setup(CONF);
    let (_, err) = expect_exit(&s.run(&["attach", "ZZZZZZ"]), exit::NOT_FOUND);
    assert_eq!(err, "bbvirt: error: device ZZZZZZ is not present\n");
    let (_, err) = expect_exit(
        &s.run(&["attach", "KWIF4Q", "--busnum", "003"]),
        exit::NOT_FOUND,
    );
    assert!(err.contains("bus number 1, but --busnum says 3"), "{err}");
    let (_, err) = expect_exit(&s.run(&["detach", "1:4", "-d", "5"]), exit::NOT_FOUND);
    assert!(
        err.contains("device number 4, but --devnum says 5"),
        "{err}"
    );
}

#[test]
fn device_gone_before_udev_attach_ran_is_nothing_to_do() {
    let s = setup(CONF);
    let under_udev = |args: &[&str]| {
        let mut all = vec!["-C", s.conf.as_str()];
        all.extend_from_slice(args);
        std::process::Command::new(env!("CARGO_BIN_EXE_bbvirt"))
            .args(&all)
            .env("BBVIRT_SYSFS_ROOT", s.tree.root())
            .env("BBVIRT_RUN_DIR", s.tree.root().join("run"))
            .env("ACTION", "add")
            .env("DEVPATH", "/devices/pci0000:00/0000:00:14.0/usb9/9-1")
            .output()
            .unwrap()
    };
    let (_, err) = expect_exit(&under_udev(&["attach", "9:99", "-v"]), exit::OK);
    assert!(
        err.contains("device 009:099 is gone already (unplugged) or a root hub"),
        "{err}"
    );
    // By hand it is an error, as before.
    expect_exit(&s.run(&["attach", "9:99"]), exit::NOT_FOUND);
}

#[test]
fn unassigned_device_or_missing_config_exit_0() {
    let s = setup(CONF);
    let (out, err) = expect_exit(&s.run(&["attach", "UNASS1", "-v"]), exit::OK);
    assert_eq!(out, "");
    assert!(
        err.contains("UNASS1 is not assigned to any domain"),
        "{err}"
    );
    let out = bbvirt(
        s.tree.root(),
        &["-C", "/nonexistent/vm.conf", "attach", "KWIF4Q", "-v"],
    );
    let (_, err) = expect_exit(&out, exit::OK);
    assert!(err.contains("/nonexistent/vm.conf does not exist"), "{err}");
}

#[test]
fn dry_run_prints_the_virsh_commands() {
    let s = setup(CONF);
    let (out, _) = expect_exit(&s.run(&["-n", "attach", "KWIF4Q"]), exit::OK);
    assert_eq!(out, "virsh attach-device g1 <xml> --live\n");
    let (out, _) = expect_exit(&s.run(&["attach", "3-1.2", "--dry-run"]), exit::OK);
    assert_eq!(
        out,
        "virsh -c qemu:///system attach-device kbsd-unstable <xml> --live\n"
    );
    let (out, _) = expect_exit(
        &s.run(&["attach", "001:005", "-n", "-D", "my guest"]),
        exit::OK,
    );
    assert_eq!(out, "virsh attach-device 'my guest' <xml> --live\n");
    // -vv adds the XML.
    let (_, err) = expect_exit(&s.run(&["-n", "-vv", "attach", "KWIF4Q"]), exit::OK);
    assert!(
        err.contains("<source startupPolicy='optional'>")
            && err.contains("<vendor id='0x0403'/>")
            && err.contains("<product id='0x7840'/>")
            && err.contains("<address bus='1' device='4'/>")
            && err.contains("<alias name='ua-bbvirt-KWIF4Q'/>"),
        "{err}"
    );
    // -vvv adds how the domain was chosen.
    let (_, err) = expect_exit(&s.run(&["-n", "-vvv", "attach", "QX3TZ7A"]), exit::OK);
    assert!(
        err.contains("DOMAIN_RNG_kbsd -> domain 'kbsd-unstable' at qemu:///system"),
        "{err}"
    );
    // attach-all (= sync) asks libvirt what is there; when libvirt cannot
    // be reached it shows the attach requests it would make.
    let s = setup("DOMAIN_RNG_g1=( KWIF4Q ABSENT JAMMB3 )\nDOMAIN_RNG_g2=( QX3TZ7A )\n");
    let (out, err) = expect_exit(&s.run(&["attach-all", "-n", "-c", "bogus:///x"]), exit::OK);
    assert_eq!(
        out,
        "virsh -c bogus:///x attach-device g1 <xml> --live\n\
         virsh -c bogus:///x attach-device g1 <xml> --live\n\
         virsh -c bogus:///x attach-device g2 <xml> --live\n"
    );
    assert!(err.contains("ABSENT (for 'g1') is not plugged in"), "{err}");
    assert!(err.contains("showing the attach requests only"), "{err}");
    // detach and detach-all too: the detaches of the present devices, and
    // that libvirt could not be asked whether they are attached.
    let (out, err) = expect_exit(&s.run(&["detach-all", "-n", "-c", "bogus:///x"]), exit::OK);
    assert_eq!(
        out,
        "virsh -c bogus:///x detach-device g1 <xml> --live\n\
         virsh -c bogus:///x detach-device g1 <xml> --live\n\
         virsh -c bogus:///x detach-device g2 <xml> --live\n"
    );
    assert!(
        err.contains("libvirt could not be asked whether these are attached to 'g1'"),
        "{err}"
    );
    assert!(!err.contains("is not attached to any guest"), "{err}");
    let (out, err) = expect_exit(
        &s.run(&["detach", "QX3TZ7A", "-n", "-vv", "-c", "bogus:///x"]),
        exit::OK,
    );
    assert_eq!(out, "virsh -c bogus:///x detach-device g2 <xml> --live\n");
    assert!(
        err.contains("libvirt could not be asked whether these are attached to 'g2'")
            && err.contains("<alias name='ua-bbvirt-QX3TZ7A'/>"),
        "{err}"
    );
    // Not plugged in: nothing to show, and no claim that it is attached nowhere.
    let (out, err) = expect_exit(
        &s.run(&["detach", "ABSENT", "-n", "-c", "bogus:///x"]),
        exit::OK,
    );
    assert_eq!(out, "");
    assert!(err.contains("no detach request to show"), "{err}");
    assert!(!err.contains("is not attached to any guest"), "{err}");
    // Guests that libvirt does not know: nothing would be done.
    let (out, err) = expect_exit(&s.run(&["sync", "-n", "-c", "test:///default"]), exit::OK);
    assert_eq!(out, "");
    assert!(err.contains("domain 'g1' is not defined"), "{err}");
}

#[test]
fn hostile_serial_cannot_choose_the_domain() {
    // The device at 3:11 claims the serial "AAAAAA -D g1". udev's rule passes
    // only BUS:DEV; bbvirt reads the serial itself and never routes it, even
    // to a domain whose list holds AAAAAA or the whole string.
    let s = setup("DOMAIN_RNG_g1=( AAAAAA 'AAAAAA -D g1' )\nDOMAIN_RNG_g2=( KWIF4Q )\n");
    let (out, err) = expect_exit(&s.run(&["attach", "3:11", "-n"]), exit::OK);
    assert_eq!(out, "", "nothing would be attached");
    assert!(err.contains("no usable serial number"), "{err}");
    let (out, _) = expect_exit(&s.run(&["attach-all", "-n", "-c", "bogus:///"]), exit::OK);
    assert_eq!(out, "virsh -c bogus:/// attach-device g2 <xml> --live\n");
    // And the installed rule never puts a descriptor string on a RUN line.
    let rules = fs::read_to_string("dist/udev/rules.d/60-bbvirt.rules").unwrap();
    for line in rules.lines().filter(|l| l.contains("RUN")) {
        assert!(
            !line.contains("$attr") && !line.contains("ID_SERIAL") && !line.contains("%s{"),
            "{line}"
        );
    }
}

#[test]
fn real_libvirt_errors_are_mapped_by_code() {
    // libvirt's test driver runs in-process: a running domain "test" that
    // supports no device attach.
    let s = setup(CONF);
    let (_, err) = expect_exit(
        &s.run(&[
            "attach",
            "KWIF4Q",
            "-c",
            "test:///default",
            "-D",
            "nosuch",
            "-v",
        ]),
        exit::OK,
    );
    assert!(err.contains("domain 'nosuch' is not defined"), "{err}");
    let (_, err) = expect_exit(
        &s.run(&["attach", "KWIF4Q", "-c", "test:///default", "-D", "test"]),
        exit::FAILED,
    );
    assert!(
        err.contains("attaching KWIF4Q on domain 'test'") && err.contains("not supported"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    // Nothing bbvirt's own is in "test": detach is a no-op.
    expect_exit(
        &s.run(&["detach", "KWIF4Q", "-c", "test:///default", "-D", "test"]),
        exit::OK,
    );
    // No daemon behind the socket (here: none at all): nothing to do, the
    // guest's start brings the device later.
    let (_, err) = expect_exit(
        &s.run(&[
            "attach",
            "KWIF4Q",
            "-c",
            "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
            "-D",
            "test",
        ]),
        exit::OK,
    );
    assert!(err.contains("warning: libvirt is not running at"), "{err}");
    // Any other connection failure is one.
    let (_, err) = expect_exit(
        &s.run(&["attach", "KWIF4Q", "-c", "qemu://[x/system", "-D", "test"]),
        exit::FAILED,
    );
    assert!(
        err.contains("connecting to libvirt at qemu://[x/system"),
        "{err}"
    );
}

#[test]
fn bad_config_exits_3_naming_file_and_line() {
    let s = setup("DOMAIN_RNG_g1=( KWIF4Q\n\nDOMAIN_URI_g1=\"unterminated\n");
    let (_, err) = expect_exit(&s.run(&["attach", "KWIF4Q"]), exit::CONFIG);
    assert!(
        err.starts_with(&format!("bbvirt: error: {}:", s.conf)),
        "{err}"
    );
}

#[test]
fn hook_triggers_change_events_for_the_guests_devices_only() {
    let s = setup(CONF);
    // In sysfs, a write to `uevent` triggers the event; in the fixture it
    // overwrites the start of the file (no truncation, as on a real sysfs).
    let uevent = |name: &str| fs::read_to_string(s.tree.device_path(name).join("uevent")).unwrap();
    let triggered = |name: &str| uevent(name).starts_with("change");
    let before: Vec<String> = ["1-1", "1-2", "3-1.2", "3-1.3"]
        .iter()
        .map(|n| uevent(n))
        .collect();
    // Other operations do nothing to the devices (restore and migrate
    // rewrite the XML and start a follow-up: tests/it/saved.rs).
    for op in ["prepare", "start", "stopped", "release"] {
        expect_exit(&s.run(&["hook", "g1", op, "begin", "-"]), exit::OK);
    }
    assert_eq!(uevent("1-1"), before[0]);
    expect_exit(&s.run(&["hook", "g1", "started", "begin", "-"]), exit::OK);
    assert!(triggered("1-1"));
    assert!(triggered("1-2"));
    assert_eq!(uevent("3-1.2"), before[2], "kbsd's device untouched");
    assert_eq!(uevent("3-1.3"), before[3], "unassigned device untouched");
    // The hook gets the libvirt name: DOMAIN_NAME_ maps it back to kbsd; the
    // config id itself is not a libvirt name here.
    expect_exit(
        &s.run(&["hook", "kbsd", "reconnect", "begin", "-"]),
        exit::OK,
    );
    assert_eq!(uevent("3-1.2"), before[2]);
    expect_exit(
        &s.run(&["hook", "kbsd-unstable", "reconnect", "begin", "-"]),
        exit::OK,
    );
    assert!(triggered("3-1.2"));
}

#[test]
fn hook_always_exits_0() {
    let s = setup("DOMAIN_RNG_g1=( KWIF4Q\n");
    for args in [
        &["hook"][..],
        &["hook", "g1"],
        &["hook", "g1", "started", "begin", "-"],
        &["hook", "--weird", "-x", "--", "started"],
    ] {
        expect_exit(&s.run(args), exit::OK);
    }
}

/// The exit statuses that `--help`, the README and bbvirt(1) list are the
/// ones the code defines, no more, no fewer.
#[test]
fn documented_exit_statuses_are_the_codes() {
    let defined: Vec<i32> = exit::ALL.to_vec();
    let sorted = |mut v: Vec<i32>| {
        v.sort();
        v.dedup();
        v
    };
    // --help: "Exit status:" then lines "  N  meaning".
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_bbvirt"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let block = help
        .split("Exit status:")
        .nth(1)
        .expect("an exit status block");
    let in_help: Vec<i32> = block
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split("  ").next()?.parse().ok())
        .collect();
    assert_eq!(sorted(in_help), defined, "--help:\n{block}");
    // README: the table under "## Exit codes", rows "| N | meaning |".
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## Exit codes").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let in_readme: Vec<i32> = section
        .lines()
        .filter_map(|l| l.strip_prefix('|')?.split('|').next()?.trim().parse().ok())
        .collect();
    assert_eq!(sorted(in_readme), defined, "README:\n{section}");
    // bbvirt(1): ".TP" then ".B N" under ".SH EXIT STATUS".
    let man = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/bbvirt.1")).unwrap();
    let section = man.split(".SH EXIT STATUS").nth(1).unwrap();
    let section = section.split("\n.SH ").next().unwrap();
    let lines: Vec<&str> = section.lines().collect();
    let in_man: Vec<i32> = lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .filter_map(|w| w[1].strip_prefix(".B ")?.trim().parse().ok())
        .collect();
    assert_eq!(sorted(in_man), defined, "bbvirt(1):\n{section}");
}

#[test]
fn stderr_that_is_the_journal_is_left_to_syslog() {
    // Under systemd, a unit's stderr is a journal stream that JOURNAL_STREAM
    // names (DEVICE:INODE) and syslog reaches the journal too: with
    // --syslog, a line goes to syslog only. Here fd 2 is a file, named or
    // not by the variable.
    use std::os::unix::fs::MetadataExt;
    let s = setup(CONF);
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, syslog: bool, journal_stream: Option<&str>| {
        let path = dir.path().join(name);
        let file = fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let id = format!("{}:{}", meta.dev(), meta.ino());
        let mut args = vec!["-C", s.conf.as_str(), "attach", "UNASS1", "-v"];
        if syslog {
            args.push("--syslog");
        }
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bbvirt"));
        cmd.args(&args)
            .env("BBVIRT_SYSFS_ROOT", s.tree.root())
            .env("BBVIRT_RUN_DIR", s.tree.root().join("run"))
            .env_remove("JOURNAL_STREAM")
            .stderr(file);
        if let Some(js) = journal_stream {
            cmd.env("JOURNAL_STREAM", js.replace("ID", &id));
        }
        let status = cmd.status().unwrap();
        assert_eq!(status.code(), Some(exit::OK), "{name}");
        fs::read_to_string(&path).unwrap()
    };
    let line = "bbvirt: UNASS1 is not assigned to any domain";
    assert_eq!(run("unit", true, Some("ID")), "", "stderr is the journal");
    for (name, syslog, js) in [
        ("unit-without-syslog", false, Some("ID")),
        ("terminal", true, None),
        ("inherited", true, Some("1:1")),
        ("malformed", true, Some("ID:")),
    ] {
        let err = run(name, syslog, js);
        assert!(err.contains(line), "{name}: {err}");
    }
}

#[test]
fn empty_or_blank_values_are_usage_errors_naming_the_option() {
    // `attach KWIF4Q -n -D ''` once planned an attach to a guest named "".
    let s = setup(CONF);
    let (out, _) = expect_exit(&s.run(&["attach", "KWIF4Q", "-n"]), exit::OK);
    assert_eq!(out, "virsh attach-device g1 <xml> --live\n");
    for blank in ["", " ", "\t", " \n "] {
        let cases: &[(&[&str], &str)] = &[
            (
                &["attach", "KWIF4Q", "-n", "-D", blank],
                "'--domain <NAME>'",
            ),
            (
                &["-D", blank, "attach", "KWIF4Q", "-n"],
                "'--domain <NAME>'",
            ),
            (
                &["detach", "KWIF4Q", "-n", "--domain", blank],
                "'--domain <NAME>'",
            ),
            (
                &["attach", "KWIF4Q", "-n", "-c", blank],
                "'--connect <URI>'",
            ),
            (&["sync", "-n", "--connect", blank], "'--connect <URI>'"),
            (&["status", "-C", blank], "'--config <FILE>'"),
            (&["attach", "KWIF4Q", "-b", blank], "'--busnum <N>'"),
            (&["attach", "KWIF4Q", "-d", blank], "'--devnum <N>'"),
            (&["attach-all", "--timeout", blank], "'--timeout <SECS>'"),
            (
                &["check", "--seedd-config", blank],
                "'--seedd-config <FILE>'",
            ),
            (&["install", "--root", blank, "-n"], "'--root <DIR>'"),
            (&["uninstall", "--root", blank, "-n"], "'--root <DIR>'"),
            (&["attach-all", blank, "-n"], "'[DOMAIN]'"),
            (&["sync", blank, "-n"], "'[DOMAIN]'"),
            (&["detach-all", blank, "-n"], "'[DOMAIN]'"),
        ];
        for (args, option) in cases {
            let (out, err) = expect_exit(&s.run(args), exit::USAGE);
            assert_eq!(out, "", "{args:?}: nothing planned");
            assert!(
                err.contains(&format!("invalid value '{blank}' for {option}")),
                "{args:?}: {err}"
            );
            let why = if blank.is_empty() {
                "the value is empty"
            } else {
                "the value is only whitespace"
            };
            assert!(err.contains(why), "{args:?}: {err}");
        }
        // The --opt=value form, and the config's own option before -C's.
        let (_, err) = expect_exit(
            &bbvirt(s.tree.root(), &[&format!("--config={blank}"), "status"]),
            exit::USAGE,
        );
        assert!(err.contains("'--config <FILE>'"), "{err}");
    }
    // A value with spaces in it is a value (a guest may be named so).
    let (out, _) = expect_exit(
        &s.run(&["attach", "KWIF4Q", "-n", "-D", " my guest "]),
        exit::OK,
    );
    assert_eq!(out, "virsh attach-device ' my guest ' <xml> --live\n");
}

#[test]
fn help_says_where_any_usb_device_goes() {
    // Each paragraph of --help that speaks of BitBabblers speaks of
    // DOMAIN_USB_ too: bbvirt passes any USB device.
    let s = setup(CONF);
    let (out, _) = expect_exit(&s.run(&["--help"]), exit::OK);
    for para in out.split("\n\n").filter(|p| p.contains("BitBabbler")) {
        assert!(para.contains("DOMAIN_USB_"), "{para}");
    }
    assert!(
        out.contains("any USB device to the\nguest whose DOMAIN_USB_<id> element selects it"),
        "{out}"
    );
    // As it says: --domain sends a BitBabbler elsewhere, not a device that
    // an element gives to its guest, nor one that nothing gives a guest.
    let s = setup("DOMAIN_RNG_g1=( KWIF4Q )\nDOMAIN_USB_g2=( \"id=05e3:0608\" )\n");
    let (out, _) = expect_exit(&s.run(&["attach", "KWIF4Q", "-n", "-D", "g2"]), exit::OK);
    assert_eq!(out, "virsh attach-device g2 <xml> --live\n");
    let (out, _) = expect_exit(&s.run(&["attach", "3-1", "-n", "-D", "g1"]), exit::OK);
    assert_eq!(out, "virsh attach-device g2 <xml> --live\n");
    let s = setup("DOMAIN_RNG_g1=( KWIF4Q )\n");
    let (out, err) = expect_exit(&s.run(&["attach", "3-1", "-n", "-D", "g1"]), exit::OK);
    assert_eq!(out, "", "{err}");
    assert!(err.contains("matches no DOMAIN_USB_ element"), "{err}");
}
