//! The udev front (`bbvirt-event`, bbvirt::event): it skips only the runs
//! whose outcome is "nothing to do", runs `bbvirt` with the same words in
//! every other case, and does not link libvirt.

use std::process::{Command, Output};

use crate::util::expect_exit;
use crate::util::scene::{config, dom, gated_host, tree, two_guests};
use bbvirt::cli::{Action, Opts};
use bbvirt::config::Config;
use bbvirt::context::Context;
use bbvirt::daemon::{HostPaths, Readiness};
use bbvirt::event::{self, UdevEnv, Verdict};

fn words(line: &str) -> Vec<std::ffi::OsString> {
    line.split_whitespace().map(Into::into).collect()
}

/// `line` as `bbvirt` reads it (the front decides on what that gives).
fn parsed(line: &str) -> (Action, Opts) {
    let argv = std::iter::once("bbvirt").chain(line.split_whitespace());
    bbvirt::cli::Cli::parse_args(argv).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// The verdict on `line` (bbvirt's words) with `cfg`, the shared fixture
/// tree and, when given, the readiness gate of a run by udev.
fn verdict(cfg: &Config, gate: Option<&HostPaths>, line: &str) -> Verdict {
    let (action, opts) = parsed(line);
    let tree = tree();
    let sysfs = tree.sysfs();
    let gate = gate.map(|p| Readiness::detect(p.clone(), true).expect("gate applies"));
    let lock = tree.root().join("run");
    let ctx = Context {
        config: cfg,
        sysfs: &sysfs,
        hv: &crate::util::fake::FakeHv::new(),
        opts: &opts,
        lock_dir: Some(&lock),
        readiness: gate.as_ref(),
    };
    event::decide(&action, &ctx, &UdevEnv::default())
}

#[test]
fn the_front_reads_only_the_rules_words() {
    assert!(matches!(
        event::rule_words(&words("attach 1:4 --syslog")),
        Some((Action::Attach { .. }, Opts { syslog: true, .. }))
    ));
    assert!(matches!(
        event::rule_words(&words("-C /x.conf -v detach 1:4")),
        Some((Action::Detach { .. }, Opts { verbose: 1, .. }))
    ));
    // Anything else goes to bbvirt unread: other actions, a dry run, a
    // serial, options after the device, -C twice.
    for line in [
        "attach 1:4 -n",
        "-n attach 1:4",
        "attach KWIF4Q --syslog",
        "attach 1:4 --syslog -v",
        "attach 1:4 -D g1",
        "-C /a -C /b attach 1:4",
        "-vx attach 1:4",
        "sync",
        "status",
        "attach",
        "attach 1:4 --bogus",
        "",
    ] {
        assert!(event::rule_words(&words(line)).is_none(), "{line:?}");
    }
}

#[test]
fn a_device_that_stays_with_the_host_needs_no_bbvirt() {
    let cfg = two_guests();
    // UNASS1 at 3:10 is nobody's; so is everything with an empty config.
    assert_eq!(verdict(&cfg, None, "attach 3:10"), Verdict::Done);
    assert_eq!(verdict(&cfg, None, "attach UNASS1"), Verdict::Done);
    assert_eq!(verdict(&config(vec![]), None, "attach 1:4"), Verdict::Done);
    // Assigned: bbvirt attaches it.
    assert_eq!(verdict(&cfg, None, "attach 1:4"), Verdict::Run);
    // --domain sends even an unassigned device: bbvirt's job.
    assert_eq!(verdict(&cfg, None, "attach 3:10 -D g2"), Verdict::Run);
    // Errors are bbvirt's to report in its words: a device gone, a hint
    // that does not match.
    assert_eq!(verdict(&cfg, None, "attach 9:99"), Verdict::Run);
    assert_eq!(verdict(&cfg, None, "attach 1:4 --busnum 2"), Verdict::Run);
    // A remove without the gate: only libvirt's live XML can tell.
    assert_eq!(verdict(&cfg, None, "detach 1:4"), Verdict::Run);
}

#[test]
fn before_the_daemon_served_udev_events_need_no_bbvirt_and_after_they_do() {
    let dir = tempfile::tempdir().unwrap();
    let paths = gated_host(dir.path());
    let cfg = two_guests();
    assert_eq!(verdict(&cfg, Some(&paths), "attach 1:4"), Verdict::Done);
    assert_eq!(verdict(&cfg, Some(&paths), "detach 1:4"), Verdict::Done);
    // A guest at another URI is not behind the local daemon's gate.
    let remote = config(vec![
        dom("g1", None, None, &["KWIF4Q"]),
        dom("r", None, Some("qemu+ssh://far/system"), &["JAMMB3"]),
    ]);
    assert_eq!(verdict(&remote, Some(&paths), "attach 1:5"), Verdict::Run);
    assert_eq!(verdict(&remote, Some(&paths), "detach 1:5"), Verdict::Run);
    assert_eq!(verdict(&remote, Some(&paths), "attach 1:4"), Verdict::Done);

    // bbvirt-sync.service recorded the daemon (pid 812, start 5000).
    std::fs::create_dir_all(&paths.run_dir).unwrap();
    std::fs::write(paths.run_dir.join("ready"), "812 5000\n").unwrap();
    assert_eq!(verdict(&cfg, Some(&paths), "attach 1:4"), Verdict::Run);
    assert_eq!(verdict(&cfg, Some(&paths), "detach 1:4"), Verdict::Run);
    assert_eq!(verdict(&cfg, Some(&paths), "attach 3:10"), Verdict::Done);
    assert!(
        !paths.run_dir.join("lock").exists(),
        "the front never takes the host lock"
    );
}

/// Runs the built `bbvirt-event` with the shared fixture tree.
fn front(args: &[&str]) -> Output {
    let tree = tree();
    Command::new(env!("CARGO_BIN_EXE_bbvirt-event"))
        .args(args)
        .env("BBVIRT_SYSFS_ROOT", tree.root())
        .env("BBVIRT_RUN_DIR", tree.root().join("run"))
        .env("BBVIRT_PROC_ROOT", tree.root().join("proc"))
        .env_remove("ACTION")
        .env_remove("DEVPATH")
        .output()
        .expect("running bbvirt-event")
}

const CONF: &str = "DOMAIN_RNG_g1=( KWIF4Q )\n";

#[test]
fn the_binary_execs_bbvirt_with_the_same_words_or_exits_0() {
    let conf = tempfile::tempdir().unwrap();
    let c = crate::util::write_config(conf.path(), CONF);
    let c = c.to_str().unwrap();
    // /bin/echo stands in for bbvirt: it prints the words it was given.
    let out = front(&["/bin/echo", "attach", "1:4", "-C", c, "--syslog"]);
    let (stdout, _) = expect_exit(&out, 0);
    assert_eq!(stdout, format!("attach 1:4 -C {c} --syslog\n"));
    let out = front(&["/bin/echo", "-C", c, "attach", "1:4", "--syslog"]);
    let (stdout, _) = expect_exit(&out, 0);
    assert_eq!(stdout, format!("-C {c} attach 1:4 --syslog\n"));
    // The unassigned UNASS1 (3:10): nothing runs.
    let out = front(&["/bin/echo", "-C", c, "-v", "attach", "3:10"]);
    let (stdout, stderr) = expect_exit(&out, 0);
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("UNASS1 is not assigned to any domain"),
        "the same note as bbvirt's: {stderr}"
    );
    // Words it does not read, or a config with an error: bbvirt's job.
    let out = front(&["/bin/echo", "attach", "3:10", "--bogus"]);
    assert_eq!(expect_exit(&out, 0).0, "attach 3:10 --bogus\n");
    std::fs::write(conf.path().join("bad.conf"), "DOMAIN_RNG_g1=( KWIF4Q\n").unwrap();
    let bad = conf.path().join("bad.conf");
    let bad = bad.to_str().unwrap();
    let out = front(&["/bin/echo", "-C", bad, "attach", "3:10"]);
    assert_eq!(expect_exit(&out, 0).0, format!("-C {bad} attach 3:10\n"));
    // The same unassigned device named as bbvirt reads it but not as the
    // rule writes it: bbvirt decides (it would say "nothing to do").
    let out = front(&["/bin/echo", "attach", "3:10", "-C", c]);
    assert_eq!(expect_exit(&out, 0).0, format!("attach 3:10 -C {c}\n"));
}

#[test]
fn the_binary_reports_a_missing_or_relative_program() {
    let conf = tempfile::tempdir().unwrap();
    let c = crate::util::write_config(conf.path(), CONF);
    let c = c.to_str().unwrap();
    let out = front(&["/nonexistent/bbvirt", "attach", "1:4", "-C", c]);
    let (_, stderr) = expect_exit(&out, 1);
    assert!(
        stderr.contains("cannot run /nonexistent/bbvirt"),
        "{stderr}"
    );
    let out = front(&["bbvirt", "attach", "1:4"]);
    let (_, stderr) = expect_exit(&out, 2);
    assert!(
        stderr.contains("usage: bbvirt-event /PATH/TO/bbvirt"),
        "{stderr}"
    );
}

#[test]
fn the_binary_opens_closed_standard_descriptors_on_dev_null() {
    // As a Rust `main` does (the front starts without std's runtime): the
    // program it runs finds /dev/null where udev gave nothing.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fds");
    let status = Command::new("/bin/sh")
        .args([
            "-c",
            r#"exec "$0" /bin/sh -c 'readlink /proc/self/fd/0 /proc/self/fd/2 > "$0"' "$1" <&- >&- 2>&-"#,
            env!("CARGO_BIN_EXE_bbvirt-event"),
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "/dev/null\n/dev/null\n"
    );
}

/// The shared libraries an ELF file needs (`readelf -d`, from binutils).
fn needed(path: &str) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-d", "--wide", path])
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {path}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect()
}

#[test]
fn the_front_does_not_link_libvirt_and_bbvirt_does() {
    let front = needed(env!("CARGO_BIN_EXE_bbvirt-event"));
    let full = needed(env!("CARGO_BIN_EXE_bbvirt"));
    assert!(full.iter().any(|l| l.starts_with("libvirt")), "{full:?}");
    assert!(!front.iter().any(|l| l.starts_with("libvirt")), "{front:?}");
    // Its unwinder is linked in (libgcc_eh.a): one library less to load.
    assert!(
        !front.iter().any(|l| l.starts_with("libgcc_s")),
        "{front:?}"
    );
    assert!(front.len() < full.len(), "{front:?} vs {full:?}");
}

#[test]
fn a_remove_event_says_vendor_product_and_port() {
    use bbvirt::event::Removed;
    let r = Removed::from_event(
        "10c4/ea60/100",
        "/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4.2",
    )
    .unwrap();
    assert_eq!(r.id.to_string(), "10c4:ea60");
    assert_eq!(r.port, Some((1, vec![4, 2])));
    let r = Removed::from_event("403/7840/600", "/devices/x/usb3/3-1:1.0").unwrap();
    assert_eq!(r.id, bbvirt::sysfs::BITBABBLER_ID);
    assert_eq!(r.port, None, "an interface's path names no device port");
    // A DEVPATH not of the kernel's form names no port: any port holds.
    for odd in [
        "/devices/usb1/1-4.2",
        "/devices/x/usb1/../usb1/1-4",
        "devices/x/usb1/1-4",
        "/sys/devices/x/usb1/1-4",
        "/devices/x/usb2/1-4",
        "",
    ] {
        let r = Removed::from_event("10c4/ea60/100", odd).unwrap();
        assert_eq!(r.port, None, "{odd:?}");
    }
    for bad in ["", "10c4", "zz/ea60/1", "10c4a/ea60/1"] {
        assert!(
            Removed::from_event(bad, "/devices/usb1/1-4").is_none(),
            "{bad:?}"
        );
    }
}

#[test]
fn removes_that_no_element_could_have_matched_need_no_bbvirt() {
    use bbvirt::event::Removed;
    let cfg = bbvirt::config::parse_native(
        std::path::Path::new("/etc/bit-babbler/vm.conf"),
        "DOMAIN_USB_g1=( \"id=10c4:ea60 port=1-4\" )\nDOMAIN_RNG_g2=( KWIF4Q )\n",
    )
    .unwrap();
    let tree = tree();
    let sysfs = tree.sysfs();
    let verdict = |line: &str, product: &str, devpath: &str| {
        let (action, opts) = parsed(line);
        let ctx = Context {
            config: &cfg,
            sysfs: &sysfs,
            hv: &crate::util::fake::FakeHv::new(),
            opts: &opts,
            lock_dir: None,
            readiness: None,
        };
        assert!(Removed::from_event(product, devpath).is_some());
        let event = UdevEnv {
            action: Some("remove".into()),
            devpath: Some(devpath.into()),
            product: Some(product.into()),
        };
        event::decide(&action, &ctx, &event)
    };
    // A keyboard, and a CP210x in a port the element does not name.
    assert_eq!(
        verdict("detach 1:7", "46d/c52b/1", "/devices/usb1/1-7"),
        Verdict::Done
    );
    assert_eq!(
        verdict("detach 1:9", "10c4/ea60/1", "/devices/usb1/1-9"),
        Verdict::Done
    );
    // The element's device, and any BitBabbler: bbvirt looks at the guests.
    assert_eq!(
        verdict("detach 1:4", "10c4/ea60/1", "/devices/usb1/1-4"),
        Verdict::Run
    );
    assert_eq!(
        verdict("detach 1:8", "403/7840/1", "/devices/usb1/1-8"),
        Verdict::Run
    );
    // --domain by hand: bbvirt's job.
    assert_eq!(
        verdict("detach 1:7 -D g1", "46d/c52b/1", "/devices/usb1/1-7"),
        Verdict::Run
    );
}

#[test]
fn the_rules_words_read_fast_as_clap_reads_them() {
    for line in [
        "attach 1:4 --syslog",
        "detach 003:012 --syslog",
        "attach 1:4:5 --syslog",
        "attach 1:4 --sys",
        "-C /etc/x.conf attach 1:4 --syslog",
        "-C /etc/x.conf detach 1:4",
        "-v attach 1:4",
        "-vv -C /etc/x.conf -v detach 2:3 --syslog",
        "-vvvv attach 1:4 --syslog",
        "attach 1:4",
    ] {
        let fast = event::rule_words(&words(line));
        let argv = std::iter::once("bbvirt").chain(line.split(' '));
        let clap = bbvirt::cli::Cli::parse_args(argv).ok();
        assert_eq!(fast, clap, "{line}");
    }
    // An empty or blank FILE is a usage error (bbvirt says so, exit 2):
    // the front does not read such words.
    for argv in [
        ["-C", "", "attach", "1:4", "--syslog"],
        ["-C", " ", "detach", "1:4", "--syslog"],
    ] {
        let fast = event::rule_words(&argv.map(std::ffi::OsString::from));
        let clap = bbvirt::cli::Cli::parse_args(std::iter::once("bbvirt").chain(argv)).ok();
        assert_eq!((&fast, &clap), (&None, &None), "{argv:?}");
    }
}
