//! Saved guest state (issue 15): the hook's rewrite of bbvirt's hostdevs in
//! a restore's or migration's XML, the start it refuses, and the follow-up
//! that syncs the guest once libvirt is done with it. The XML is libvirt's
//! own, captured in the lab (tests/fixtures/libvirt/README.md).

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use bbvirt::actions::{Bounds, Outcome};
use bbvirt::cli::Opts;
use bbvirt::config::Config;
use bbvirt::context::Context;
use bbvirt::follow_up_process::FollowUps;
use bbvirt::hook::{self, HookEnv};
use bbvirt::hostdev::usb_hostdevs;
use bbvirt::saved::{self, Fate, ParkReason, Verdict};
use bbvirt::sysfs::UsbDevice;

use crate::util::fake::FakeHv;
use crate::util::fixture::FixtureTree;
use crate::util::scene::{config, dom, running};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/libvirt")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The host of these tests: KWIF4Q (guestA's) now at 1:3 after a replug,
/// ABC1234 (guestA's) at 1:4, LONER01 (nobody's) at 1:2 where KWIF4Q was
/// when the guest was saved, and a CP210x stick guestA gets by id.
fn host() -> FixtureTree {
    FixtureTree::new()
        .root_hub(1)
        .bitbabbler("1-1", Some("LONER01"), 1, 2)
        .bitbabbler("1-2", Some("KWIF4Q"), 1, 3)
        .bitbabbler("1-3", Some("ABC1234"), 1, 4)
        .usb_device("1-4", "10c4", "ea60", Some("0001"), 1, 5)
}

fn guest_a() -> Config {
    let mut d = dom("guestA", None, None, &["KWIF4Q", "ABC1234"]);
    d.usb = vec!["id=10c4:ea60".parse().unwrap()];
    config(vec![d, dom("guestB", None, None, &["BRAVO01"])])
}

/// The devices this host gives `name`, as the hook computes them.
fn assigned<'s>(
    cfg: &Config,
    name: &str,
    scan: &'s bbvirt::sysfs::Scan,
) -> Vec<(String, &'s UsbDevice)> {
    cfg.guest_named(name)
        .map(|i| cfg.guest_devices(i, scan))
        .unwrap_or_default()
}

fn nobody(_: &UsbDevice) -> Option<String> {
    None
}

/// The XML with every bbvirt `<source>` element cut out: what must stay
/// byte for byte.
fn without_bbvirt_sources(xml: &str) -> String {
    let mut ranges: Vec<_> = usb_hostdevs(xml)
        .unwrap()
        .into_iter()
        .filter(|h| h.is_bbvirts())
        .filter_map(|h| h.source_range)
        .collect();
    ranges.sort_by_key(|r| r.start);
    let mut out = String::new();
    let mut at = 0;
    for r in ranges {
        out.push_str(&xml[at..r.start]);
        out.push_str("<SOURCE/>");
        at = r.end;
    }
    out.push_str(&xml[at..]);
    out
}

#[test]
fn a_restore_gets_the_devices_current_addresses_and_nothing_else_changes() {
    let xml = fixture("save-image-guestA.xml");
    let scan = host().sysfs().scan().unwrap();
    let cfg = guest_a();
    let a = assigned(&cfg, "guestA", &scan);
    let r = saved::rewrite(&xml, Some(&a), &nobody).unwrap();
    let out = r.xml.expect("KWIF4Q moved: the XML changes");
    // Only bbvirt's <source> elements differ.
    assert_eq!(without_bbvirt_sources(&xml), without_bbvirt_sources(&out));
    let before = usb_hostdevs(&xml).unwrap();
    let after = usb_hostdevs(&out).unwrap();
    assert_eq!(
        before.len(),
        after.len(),
        "libvirt refuses another device count"
    );
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((&b.alias, &b.guest_port), (&a.alias, &a.guest_port));
        if !b.is_bbvirts() {
            assert_eq!(b, a, "the admin's hostdev is untouched");
        }
    }
    let kw = after
        .iter()
        .find(|h| h.alias.as_deref() == Some("ua-bbvirt-KWIF4Q"))
        .unwrap();
    assert_eq!((kw.bus, kw.device), (Some(1), Some(3)), "its new address");
    assert_eq!(kw.id, Some(bbvirt::sysfs::BITBABBLER_ID));
    assert!(kw.optional);
    assert_eq!(
        r.changes
            .iter()
            .find(|c| c.alias == "ua-bbvirt-KWIF4Q")
            .map(|c| (&c.fate, c.changed)),
        Some((&Fate::At { bus: 1, dev: 3 }, true))
    );
    // Rewriting what was rewritten changes nothing.
    let again = saved::rewrite(&out, Some(&a), &nobody).unwrap();
    assert_eq!(again.xml, None);
}

#[test]
fn devices_this_host_does_not_give_the_guest_are_parked_never_passed() {
    let xml = fixture("save-image-guestA.xml");
    let scan = host().sysfs().scan().unwrap();
    // Another host's vm.conf (a migration's destination): guestA gets
    // LONER01 there, not KWIF4Q.
    let cfg = config(vec![dom("guestA", None, None, &["LONER01"])]);
    let a = assigned(&cfg, "guestA", &scan);
    let r = saved::rewrite(&xml, Some(&a), &nobody).unwrap();
    let out = r.xml.unwrap();
    let kw = usb_hostdevs(&out)
        .unwrap()
        .into_iter()
        .find(|h| h.alias.as_deref() == Some("ua-bbvirt-KWIF4Q"))
        .unwrap();
    assert!(kw.is_parked() && kw.optional, "{kw:?}");
    assert_eq!(kw.bus, Some(1), "on its bus, at a number no device has");
    // Each parked entry its own number: libvirt refuses two hostdevs with
    // one source ("Hostdev already exists in the domain configuration").
    let parked: Vec<_> = usb_hostdevs(&out)
        .unwrap()
        .into_iter()
        .filter(|h| h.is_parked())
        .map(|h| (h.bus, h.device))
        .collect();
    assert_eq!(parked, [(Some(1), Some(200)), (Some(1), Some(201))]);
    assert_eq!(kw.id, Some(bbvirt::sysfs::BITBABBLER_ID));
    assert!(
        r.changes
            .iter()
            .all(|c| c.fate == Fate::Parked(ParkReason::NotAssigned)),
        "{:?}",
        r.changes
    );
    // A guest vm.conf does not name gets nothing either; nor does any guest
    // when vm.conf or sysfs cannot be read.
    for (cfg, assigned) in [(config(vec![]), Some(Vec::new())), (guest_a(), None)] {
        let _ = cfg;
        let r = saved::rewrite(&xml, assigned.as_deref(), &nobody).unwrap();
        let out = r.xml.unwrap();
        assert!(
            usb_hostdevs(&out)
                .unwrap()
                .iter()
                .filter(|h| h.is_bbvirts())
                .all(|h| h.is_parked())
        );
    }
}

#[test]
fn a_device_another_guests_qemu_holds_is_parked() {
    let xml = fixture("save-image-guestA.xml");
    let scan = host().sysfs().scan().unwrap();
    let cfg = guest_a();
    let a = assigned(&cfg, "guestA", &scan);
    let held = |d: &UsbDevice| {
        (d.serial.as_deref() == Some("KWIF4Q")).then(|| "guest \"x\"'s QEMU".to_string())
    };
    let r = saved::rewrite(&xml, Some(&a), &held).unwrap();
    let c = r
        .changes
        .iter()
        .find(|c| c.alias == "ua-bbvirt-KWIF4Q")
        .unwrap();
    assert_eq!(
        c.fate,
        Fate::Parked(ParkReason::Held("guest \"x\"'s QEMU".into()))
    );
    assert!(c.describe().contains("parked"), "{}", c.describe());
}

#[test]
fn an_image_saved_by_the_bbvirt_of_before_restores_the_same_way() {
    // A bare address, no vendor/product, no startupPolicy: as bbvirt wrote
    // hostdevs before saved state was handled.
    let xml = fixture("save-image-guestA-old.xml");
    let old = usb_hostdevs(&xml).unwrap();
    assert!(
        old.iter()
            .any(|h| h.is_bbvirts() && h.id.is_none() && !h.optional)
    );
    let scan = host().sysfs().scan().unwrap();
    let cfg = guest_a();
    let a = assigned(&cfg, "guestA", &scan);
    // As it is, libvirt would take LONER01, which sits where KWIF4Q was.
    let judged = saved::judge(&xml, &a, &scan.usb).unwrap();
    assert!(
        matches!(&judged[0].verdict, Verdict::Wrong { serial: Some(s), .. } if s == "LONER01"),
        "{judged:?}"
    );
    let out = saved::rewrite(&xml, Some(&a), &nobody)
        .unwrap()
        .xml
        .unwrap();
    let kw = &usb_hostdevs(&out).unwrap()[0];
    assert_eq!(
        (kw.bus, kw.device, kw.id.is_some(), kw.optional),
        (Some(1), Some(3), true, true)
    );
    assert_eq!(
        saved::judge(&out, &a, &scan.usb).unwrap()[0].verdict,
        Verdict::Own
    );
}

#[test]
fn judging_a_saved_xml_as_libvirt_would_take_it() {
    let scan = host().sysfs().scan().unwrap();
    let cfg = guest_a();
    let a = assigned(&cfg, "guestA", &scan);
    let hd = |alias: &str, source: &str| {
        format!(
            "<domain><devices><hostdev mode='subsystem' type='usb'>{source}\
             <alias name='{alias}'/></hostdev></devices></domain>"
        )
    };
    let verdict = |xml: String| {
        saved::judge(&xml, &a, &scan.usb).unwrap()[0]
            .verdict
            .clone()
    };
    let bb = "<vendor id='0x0403'/><product id='0x7840'/>";
    // its own device at its address
    assert_eq!(
        verdict(hd(
            "ua-bbvirt-KWIF4Q",
            &format!("<source startupPolicy='optional'>{bb}<address bus='1' device='3'/></source>")
        )),
        Verdict::Own
    );
    // nothing there: fails, unless optional
    assert_eq!(
        verdict(hd(
            "ua-bbvirt-KWIF4Q",
            "<source><address bus='1' device='9'/></source>"
        )),
        Verdict::Fails
    );
    assert_eq!(
        verdict(hd(
            "ua-bbvirt-KWIF4Q",
            &format!("<source startupPolicy='optional'>{bb}<address bus='1' device='9'/></source>")
        )),
        Verdict::Dropped
    );
    // a twin there: taken (the snapshot revert's hazard)
    assert!(matches!(
        verdict(hd(
            "ua-bbvirt-KWIF4Q",
            &format!("<source startupPolicy='optional'>{bb}<address bus='1' device='2'/></source>")
        )),
        Verdict::Wrong { .. }
    ));
    // another model there: vendor:product keeps libvirt off it
    assert_eq!(
        verdict(hd(
            "ua-bbvirt-KWIF4Q",
            &format!("<source startupPolicy='optional'>{bb}<address bus='1' device='5'/></source>")
        )),
        Verdict::Dropped
    );
    // ... but a bare address takes anything
    assert!(matches!(
        verdict(hd(
            "ua-bbvirt-KWIF4Q",
            "<source><address bus='1' device='5'/></source>"
        )),
        Verdict::Wrong { .. }
    ));
    // parked: dropped
    assert_eq!(
        verdict(hd(
            "ua-bbvirt-KWIF4Q",
            &format!(
                "<source startupPolicy='optional'>{bb}<address bus='1' device='200'/></source>"
            )
        )),
        Verdict::Dropped
    );
    // not bbvirt's: not judged
    assert!(
        saved::judge(
            &hd("hostdev0", "<source><address bus='1' device='2'/></source>"),
            &a,
            &scan.usb
        )
        .unwrap()
        .is_empty()
    );
}

#[test]
fn unreadable_xml_is_an_error_not_a_panic() {
    for bad in [
        "",
        "<domain>",
        "<domain><devices><hostdev type='usb'>",
        "\u{0}",
    ] {
        assert!(saved::rewrite(bad, Some(&[]), &nobody).is_err(), "{bad:?}");
        assert!(saved::judge(bad, &[], &[]).is_err(), "{bad:?}");
        assert!(!saved::holds_bbvirt_hostdevs(bad));
    }
}

/// Follow-ups recorded, none started.
#[derive(Default)]
struct Recorded {
    started: RefCell<Vec<String>>,
    pending: Vec<String>,
}

impl FollowUps for Recorded {
    fn pending(&self, domain: &str) -> bool {
        self.pending.iter().any(|d| d == domain)
            || self.started.borrow().iter().any(|d| d == domain)
    }
    fn start(&self, domain: &str) -> Result<bool, String> {
        let fresh = !self.pending(domain);
        self.started.borrow_mut().push(domain.to_string());
        Ok(fresh)
    }
}

fn hook_run(
    cfg: Result<&Config, String>,
    tree: &FixtureTree,
    follow: &Recorded,
    args: &[&str],
    stdin: &str,
) -> (i32, String) {
    let sysfs = tree.sysfs();
    let proc_root = tree.root().join("proc");
    let env = HookEnv {
        config: cfg,
        sysfs: &sysfs,
        proc_root: &proc_root,
        follow_ups: follow,
    };
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    let code = hook::run(&args, &env, &mut stdin.as_bytes(), &mut out);
    (code, String::from_utf8(out).unwrap())
}

fn uevent(tree: &FixtureTree, name: &str) -> String {
    std::fs::read_to_string(tree.device_path(name).join("uevent")).unwrap()
}

#[test]
fn the_hook_filters_restore_and_migrate_and_starts_the_follow_up() {
    let xml = fixture("save-image-guestA.xml");
    let tree = host();
    let cfg = guest_a();
    for op in ["restore", "migrate"] {
        let follow = Recorded::default();
        let (code, out) = hook_run(
            Ok(&cfg),
            &tree,
            &follow,
            &["guestA", op, "begin", "-"],
            &xml,
        );
        assert_eq!(code, 0);
        let kw = usb_hostdevs(&out)
            .unwrap()
            .into_iter()
            .find(|h| h.alias.as_deref() == Some("ua-bbvirt-KWIF4Q"))
            .unwrap();
        assert_eq!((kw.bus, kw.device), (Some(1), Some(3)), "{op}");
        assert_eq!(*follow.started.borrow(), ["guestA"], "{op}");
    }
    // Unreadable XML: nothing printed (libvirt keeps its own), exit 0.
    let follow = Recorded::default();
    let (code, out) = hook_run(
        Ok(&cfg),
        &tree,
        &follow,
        &["guestA", "restore", "begin", "-"],
        "<domain><dev",
    );
    assert_eq!((code, out.as_str()), (0, ""));
    // vm.conf unusable: every bbvirt device parked, never passed on.
    let (code, out) = hook_run(
        Err("vm.conf: line 3: unterminated".into()),
        &tree,
        &follow,
        &["guestA", "restore", "begin", "-"],
        &xml,
    );
    assert_eq!(code, 0);
    assert!(
        usb_hostdevs(&out)
            .unwrap()
            .iter()
            .filter(|h| h.is_bbvirts())
            .all(|h| h.is_parked())
    );
    // No bbvirt device: nothing printed, the follow-up still comes (this
    // host may have devices for the guest).
    let plain = "<domain type='qemu'><name>guestA</name><devices></devices></domain>";
    let follow = Recorded::default();
    let (code, out) = hook_run(
        Ok(&cfg),
        &tree,
        &follow,
        &["guestA", "migrate", "begin", "-"],
        plain,
    );
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(*follow.started.borrow(), ["guestA"]);
}

#[test]
fn started_leaves_a_followed_guest_to_its_follow_up_and_reannounces_a_fresh_one() {
    let tree = host();
    let cfg = guest_a();
    let before = uevent(&tree, "1-2");
    // A guest that held bbvirt devices before (a snapshot revert): follow-up.
    let follow = Recorded::default();
    let xml = fixture("save-image-guestA.xml");
    let (code, _) = hook_run(
        Ok(&cfg),
        &tree,
        &follow,
        &["guestA", "started", "begin", "-"],
        &xml,
    );
    assert_eq!(code, 0);
    assert_eq!(*follow.started.borrow(), ["guestA"]);
    assert_eq!(uevent(&tree, "1-2"), before, "no udev re-announce");
    // A follow-up pending (started at restore begin): no re-announce either.
    let follow = Recorded {
        pending: vec!["guestA".into()],
        ..Recorded::default()
    };
    let plain = "<domain type='qemu'><name>guestA</name><devices></devices></domain>";
    hook_run(
        Ok(&cfg),
        &tree,
        &follow,
        &["guestA", "started", "begin", "-"],
        plain,
    );
    assert_eq!(uevent(&tree, "1-2"), before);
    assert!(follow.started.borrow().is_empty());
    // A plain start: udev re-announces its devices (and only its).
    let follow = Recorded::default();
    hook_run(
        Ok(&cfg),
        &tree,
        &follow,
        &["guestA", "started", "begin", "-"],
        plain,
    );
    assert!(uevent(&tree, "1-2").starts_with("change"));
    assert!(uevent(&tree, "1-3").starts_with("change"));
    assert!(
        uevent(&tree, "1-4").starts_with("change"),
        "its DOMAIN_USB_ stick"
    );
    assert!(
        !uevent(&tree, "1-1").starts_with("change"),
        "LONER01 is nobody's"
    );
    assert!(follow.started.borrow().is_empty());
    // A guest with devices of other hosts (DOMAIN_REMOTE_): no udev event
    // brings those, so its start is followed up, and the follow-up's sync
    // attaches its local devices too.
    let tree = host();
    let before = uevent(&tree, "1-2");
    let mut cfg = guest_a();
    cfg.domains[0].remote = vec!["exporter.lan:4000".parse().unwrap()];
    let follow = Recorded::default();
    hook_run(
        Ok(&cfg),
        &tree,
        &follow,
        &["guestA", "started", "begin", "-"],
        plain,
    );
    assert_eq!(*follow.started.borrow(), ["guestA"]);
    assert_eq!(uevent(&tree, "1-2"), before, "no udev re-announce");
}

#[test]
fn prepare_refuses_a_start_that_would_take_a_twin_and_only_that() {
    let tree = host();
    let cfg = guest_a();
    let follow = Recorded::default();
    let hd = |dev: u32| {
        format!(
            "<domain><name>guestA</name><devices><hostdev mode='subsystem' type='usb'>\
             <source startupPolicy='optional'><vendor id='0x0403'/><product id='0x7840'/>\
             <address bus='1' device='{dev}'/></source><alias name='ua-bbvirt-KWIF4Q'/>\
             </hostdev></devices></domain>"
        )
    };
    // a snapshot of when KWIF4Q was at 1:2, where LONER01 is now
    let (code, _) = hook_run(
        Ok(&cfg),
        &tree,
        &follow,
        &["guestA", "prepare", "begin", "-"],
        &hd(2),
    );
    assert_eq!(code, 1, "refused");
    // its own device there, or nothing there: started
    for dev in [3, 9, 200] {
        let (code, _) = hook_run(
            Ok(&cfg),
            &tree,
            &follow,
            &["guestA", "prepare", "begin", "-"],
            &hd(dev),
        );
        assert_eq!(code, 0, "device {dev}");
    }
    // a guest without bbvirt devices, garbage, no XML: started
    for xml in ["<domain><devices/></domain>", "<dom", ""] {
        let (code, _) = hook_run(
            Ok(&cfg),
            &tree,
            &follow,
            &["guestA", "prepare", "begin", "-"],
            xml,
        );
        assert_eq!(code, 0, "{xml:?}");
    }
}

fn ctx_run<T>(cfg: &Config, tree: &FixtureTree, hv: &FakeHv, f: impl FnOnce(&Context) -> T) -> T {
    crate::util::scene::in_context(cfg, tree, hv, Opts::default(), f)
}

#[test]
fn the_follow_up_waits_for_libvirt_then_swaps_parked_entries_for_devices() {
    let tree = host();
    let cfg = guest_a();
    // Restored with KWIF4Q parked (it was elsewhere then) and ABC1234 at
    // its address; libvirt still busy for two looks.
    let hv = running(&["guestA"])
        .with_hostdev(None, "guestA", "ua-bbvirt-KWIF4Q", 1, 200)
        .with_hostdev(None, "guestA", "ua-bbvirt-ABC1234", 1, 4)
        .busy_for(None, "guestA", 2);
    let out = ctx_run(&cfg, &tree, &hv, |c| c.follow_up("guestA")).unwrap();
    assert_eq!(out, Outcome::Done);
    assert_eq!(hv.job_queries().len(), 3, "asked until libvirt was done");
    let mut held = hv.hostdevs(None, "guestA");
    held.sort();
    assert_eq!(
        held,
        vec![
            ("ua-bbusb-10c4ea60-guestA-e0-0001".into(), 1, 5),
            ("ua-bbvirt-ABC1234".into(), 1, 4),
            ("ua-bbvirt-KWIF4Q".into(), 1, 3),
        ]
    );
    // Every bbvirt entry out first (the parked one, and ABC1234's, which
    // QEMU closed when it loaded the saved state), then attached afresh.
    let calls = hv.call_lines();
    assert_eq!(
        calls,
        [
            "detach - guestA ua-bbvirt-KWIF4Q",
            "detach - guestA ua-bbvirt-ABC1234",
            "attach - guestA ua-bbvirt-KWIF4Q 1:3",
            "attach - guestA ua-bbvirt-ABC1234 1:4",
            "attach - guestA ua-bbusb-10c4ea60-guestA-e0-0001 1:5",
        ],
        "{calls:?}"
    );
}

#[test]
fn the_follow_up_of_a_guest_vm_conf_does_not_name_only_empties_its_parked_entries() {
    let tree = host();
    let cfg = guest_a();
    let hv = running(&["other"])
        .with_hostdev(None, "other", "ua-bbvirt-KWIF4Q", 1, 200)
        .with_hostdev(None, "other", "hostdev0", 1, 2);
    // (its entries were all parked by the rewrite: this host gives it nothing)
    let out = ctx_run(&cfg, &tree, &hv, |c| c.follow_up("other")).unwrap();
    assert_eq!(out, Outcome::Done);
    assert_eq!(hv.hostdevs(None, "other"), vec![("hostdev0".into(), 1, 2)]);
}

#[test]
fn the_follow_up_gives_up_on_a_guest_that_never_runs_or_stays_busy() {
    let tree = host();
    let cfg = guest_a();
    let quick = Bounds {
        wait: Duration::from_millis(300),
        not_running: Duration::from_millis(200),
        poll: Duration::from_millis(10),
    };
    // The restore failed: the guest never came (or is off).
    for hv in [FakeHv::new(), FakeHv::new().domain(None, "guestA", false)] {
        let t = Instant::now();
        let out = ctx_run(&cfg, &tree, &hv, |c| c.follow_up_within("guestA", quick)).unwrap();
        assert_eq!(out, Outcome::NothingToDo);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(hv.calls().is_empty());
    }
    // libvirt stays busy with it past the bound: nothing is attached.
    let hv = running(&["guestA"]).busy_for(None, "guestA", 1_000_000);
    let out = ctx_run(&cfg, &tree, &hv, |c| c.follow_up_within("guestA", quick)).unwrap();
    assert_eq!(out, Outcome::NothingToDo);
    assert!(hv.calls().is_empty());
    assert!(hv.job_queries().len() > 3);
}

/// A shut-off guestA with a managed save image taken when KWIF4Q was at
/// 1:2 (LONER01 is there now) and ABC1234 at 1:4 (still there).
fn saved_host() -> FakeHv {
    FakeHv::new().domain(None, "guestA", false).managed_save(
        None,
        "guestA",
        &fixture("save-image-guestA.xml"),
    )
}

/// A root where bbvirt's hook is installed.
fn hook_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let hook = root.path().join(bbvirt::install::paths::HOOK_PATH);
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\nexec /usr/bin/bbvirt hook \"$@\"\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

#[test]
fn status_reports_a_managed_save_that_would_not_restore_cleanly_with_the_fix() {
    let tree = host();
    let cfg = guest_a();
    let hv = saved_host();
    let with_hook = hook_root();
    for (root, hook) in [(Path::new("/nonexistent"), false), (with_hook.path(), true)] {
        let report = ctx_run(&cfg, &tree, &hv, |c| {
            bbvirt::status::collect(c, Path::new("/nonexistent/proc"), root)
        });
        let m = report.domains[0].managed_save.as_ref().expect("reported");
        assert!(!m.restores_cleanly);
        assert_eq!(m.rewritten_by_hook, hook);
        let kw = m
            .hostdevs
            .iter()
            .find(|h| h.alias == "ua-bbvirt-KWIF4Q")
            .unwrap();
        assert_eq!(
            kw.verdict,
            bbvirt::status::SavedVerdict::WrongDevice,
            "LONER01 is at 1:2"
        );
        assert_eq!(kw.now_at.as_deref(), Some("001:003"));
        let abc = m
            .hostdevs
            .iter()
            .find(|h| h.alias == "ua-bbvirt-ABC1234")
            .unwrap();
        assert_eq!(abc.verdict, bbvirt::status::SavedVerdict::Own);
        // Healthy only when the hook is there to rewrite it.
        assert_eq!(report.healthy, hook);
        let fix = m.fix.as_deref().unwrap();
        let table = bbvirt::status::render_table(&report);
        assert!(table.contains("Saved (managed save images):"), "{table}");
        if hook {
            assert!(fix.starts_with("nothing to do"), "{fix}");
        } else {
            assert!(fix.contains("virsh managedsave-remove guestA"), "{fix}");
            assert!(fix.contains("bbvirt install"), "{fix}");
            assert!(table.contains("WOULD NOT RESTORE CLEANLY"), "{table}");
        }
    }
    // A guest without an image: nothing said.
    let hv = FakeHv::new().domain(None, "guestA", false);
    let report = ctx_run(&cfg, &tree, &hv, |c| {
        bbvirt::status::collect(c, Path::new("/nonexistent/proc"), Path::new("/nonexistent"))
    });
    assert_eq!(report.domains[0].managed_save, None);
}

#[test]
fn check_reports_a_managed_save_that_would_not_restore_cleanly_with_the_fix() {
    let scan = host().sysfs().scan().unwrap();
    let cfg = guest_a();
    let hv = saved_host();
    let found = bbvirt::check::check_saved(&cfg, None, &hv, &scan, Path::new("/nonexistent"));
    let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("error: guest guestA: the managed save image of 'guestA' holds ua-bbvirt-KWIF4Q at 001:002: libvirt would take another device"), "{}", lines[0]);
    assert!(
        lines[0].contains("virsh managedsave-remove guestA"),
        "{}",
        lines[0]
    );
    let root = hook_root();
    let found = bbvirt::check::check_saved(&cfg, None, &hv, &scan, root.path());
    assert!(found[0].to_string().starts_with("ok: "), "{}", found[0]);
}

/// The built binary as libvirt runs the hook: `-C CONF hook ARGS`, the XML
/// on stdin; (exit status, stdout).
fn hook_binary(
    tree: &FixtureTree,
    conf: &Path,
    args: &[&str],
    stdin: &str,
) -> (Option<i32>, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let root = tree.root();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bbvirt"))
        .arg("-C")
        .arg(conf)
        .arg("hook")
        .args(args)
        .env("BBVIRT_SYSFS_ROOT", root)
        .env("BBVIRT_RUN_DIR", root.join("run"))
        .env("BBVIRT_PROC_ROOT", root.join("proc"))
        // the follow-up it starts finds no libvirt here and ends quietly
        .env("LIBVIRT_DEFAULT_URI", "test:///default")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_installed_hook_filters_through_stdin_and_stdout_and_refuses_by_exit_status() {
    let tree = host();
    let dir = tempfile::tempdir().unwrap();
    let conf = crate::util::write_config(
        dir.path(),
        "DOMAIN_RNG_guestA=( KWIF4Q ABC1234 )\nDOMAIN_USB_guestA=( \"id=10c4:ea60\" )\n",
    );
    let xml = fixture("save-image-guestA.xml");
    let (code, out) = hook_binary(&tree, &conf, &["guestA", "restore", "begin", "-"], &xml);
    assert_eq!(code, Some(0));
    let kw = usb_hostdevs(&out)
        .unwrap()
        .into_iter()
        .find(|h| h.alias.as_deref() == Some("ua-bbvirt-KWIF4Q"))
        .unwrap();
    assert_eq!((kw.bus, kw.device), (Some(1), Some(3)));
    assert_eq!(without_bbvirt_sources(&xml), without_bbvirt_sources(&out));
    // Nothing to change: nothing printed (libvirt keeps its XML).
    let (code, out) = hook_binary(
        &tree,
        &conf,
        &["guestA", "migrate", "begin", "-"],
        "<domain><name>guestA</name><devices/></domain>",
    );
    assert_eq!((code, out.as_str()), (Some(0), ""));
    // A snapshot's XML naming the twin's address: the start is refused.
    let old = fixture("save-image-guestA-old.xml");
    let (code, _) = hook_binary(&tree, &conf, &["guestA", "prepare", "begin", "-"], &old);
    assert_eq!(code, Some(bbvirt::exit::REFUSED));
    // Any other operation: 0, nothing printed.
    let (code, out) = hook_binary(&tree, &conf, &["guestA", "release", "end", "-"], &old);
    assert_eq!((code, out.as_str()), (Some(0), ""));
}

#[test]
fn a_migration_arrives_with_the_destinations_devices_never_the_sources() {
    // `virsh dumpxml --migratable` of guestA on host A (lab scenario 26):
    // KWIF4Q at 1:2 and ABC1234 at 2:2, host A's.
    let xml = fixture("migratable-guestA.xml");
    let tree = host();
    let scan = tree.sysfs().scan().unwrap();
    // Host B gives guestA LONER01 only: both of A's are parked, each at its
    // own number (libvirt refused two at one), and LONER01 comes with the
    // follow-up.
    let b = config(vec![dom("guestA", None, None, &["LONER01"])]);
    let r = saved::rewrite(&xml, Some(&assigned(&b, "guestA", &scan)), &nobody).unwrap();
    let out = r.xml.unwrap();
    let hds = usb_hostdevs(&out).unwrap();
    assert_eq!(
        hds.iter()
            .map(|h| (h.bus, h.device, h.is_parked()))
            .collect::<Vec<_>>(),
        [(Some(1), Some(200), true), (Some(2), Some(201), true)]
    );
    assert_eq!(without_bbvirt_sources(&xml), without_bbvirt_sources(&out));
    // A host that gives guestA the same serials (they are at 1:3 and 1:4
    // there): each at its address on that host.
    let r = saved::rewrite(&xml, Some(&assigned(&guest_a(), "guestA", &scan)), &nobody).unwrap();
    let hds = usb_hostdevs(&r.xml.unwrap()).unwrap();
    assert_eq!(
        hds.iter().map(|h| (h.bus, h.device)).collect::<Vec<_>>(),
        [(Some(1), Some(3)), (Some(1), Some(4))]
    );
}

// ------------------------------------------------------------ remote devices

/// guestA on this host: KWIF4Q and ABC1234 as above, and the stick served
/// by zigbee.lan on port 4000 (through this host's tunnel).
fn guest_a_remote() -> Config {
    let mut cfg = guest_a();
    cfg.domains[0].remote = vec!["zigbee.lan:4000".parse().unwrap()];
    cfg
}

/// A saved guestA holding bbvirt's redirdevs for zigbee.lan:4000 (through
/// a tunnel, as libvirt writes a live one back), 10.0.0.9:4001 (plain) and
/// an admin's own redirdev.
fn saved_remote_xml() -> String {
    "<domain type='qemu'>\n  <name>guestA</name>\n  <devices>\n\
     \x20   <redirdev bus='usb' type='tcp'>\n\
     \x20     <source mode='connect' host='127.0.0.1' service='4000'>\n\
     \x20       <reconnect enabled='yes' timeout='2'/>\n\
     \x20     </source>\n\
     \x20     <protocol type='raw'/>\n\
     \x20     <alias name='ua-bbnet-n-zigbee_lan-4000'/>\n\
     \x20     <address type='usb' bus='0' port='2'/>\n\
     \x20   </redirdev>\n\
     \x20   <redirdev bus='usb' type='tcp'>\n\
     \x20     <source mode='connect' host='10.0.0.9' service='4001'/>\n\
     \x20     <protocol type='raw'/>\n\
     \x20     <alias name='ua-bbnet-4-10_0_0_9-4001'/>\n\
     \x20   </redirdev>\n\
     \x20   <redirdev bus='usb' type='tcp'>\n\
     \x20     <source mode='connect' host='10.0.0.9' service='5000'/>\n\
     \x20     <alias name='ua-mine'/>\n\
     \x20   </redirdev>\n\
     \x20 </devices>\n</domain>\n"
        .to_string()
}

fn sources(xml: &str) -> Vec<(String, String)> {
    bbvirt::remote::redirdev::redirdevs_in(xml)
        .unwrap()
        .into_iter()
        .map(|r| (r.alias, format!("{}:{}", r.host, r.service)))
        .collect()
}

#[test]
fn a_restore_keeps_the_remote_devices_this_host_gives_and_parks_the_others() {
    let xml = saved_remote_xml();
    let cfg = guest_a_remote();
    let given = bbvirt::remote::redirdev::wanted(&cfg.domains[0].remote);
    let r = saved::rewrite_remote(&xml, Some(&given)).unwrap();
    let out = r.xml.clone().expect("the plain one is parked");
    assert_eq!(
        sources(&out),
        [
            ("ua-bbnet-n-zigbee_lan-4000".into(), "127.0.0.1:4000".into()),
            ("ua-bbnet-4-10_0_0_9-4001".into(), "127.0.0.1:9".into()),
        ]
    );
    assert_eq!(
        r.changes.iter().map(|c| c.describe()).collect::<Vec<_>>(),
        [
            "ua-bbnet-n-zigbee_lan-4000 stays connecting to 127.0.0.1:4000",
            "ua-bbnet-4-10_0_0_9-4001 10.0.0.9:4001 -> parked (this host does not give the guest that device now)",
        ]
    );
    // Every other byte stays: the admin's redirdev, protocol, addresses,
    // and the number of redirdevs (libvirt refuses a restore XML without).
    for kept in [
        "<alias name='ua-mine'/>",
        "host='10.0.0.9' service='5000'",
        "<address type='usb' bus='0' port='2'/>",
    ] {
        assert!(out.contains(kept), "{kept}: {out}");
    }
    assert_eq!(out.matches("<redirdev ").count(), 3);
    assert!(out.contains("<reconnect enabled='yes' timeout='2'/>"));
    // The one in its place is left as libvirt wrote it; a second rewrite
    // changes nothing.
    assert!(out.contains("service='4000'>\n        <reconnect enabled='yes' timeout='2'/>\n"));
    let again = saved::rewrite_remote(&out, Some(&given)).unwrap();
    assert_eq!(again.xml, None);
    // vm.conf unusable: everything parked.
    let blind = saved::rewrite_remote(&xml, None).unwrap();
    assert!(
        sources(&blind.xml.unwrap())
            .iter()
            .all(|(_, to)| to == "127.0.0.1:9")
    );
    // Nothing of bbvirt's: nothing printed.
    let none = saved::rewrite_remote("<domain><devices/></domain>", None).unwrap();
    assert_eq!((none.xml, none.changes.len()), (None, 0));
}

#[test]
fn the_hook_rewrites_remote_devices_and_follows_up_a_restored_guest() {
    let tree = host();
    let cfg = guest_a_remote();
    let follow = Recorded::default();
    let (code, out) = hook_run(
        Ok(&cfg),
        &tree,
        &follow,
        &["guestA", "restore", "begin", "-"],
        &saved_remote_xml(),
    );
    assert_eq!(code, 0);
    assert_eq!(sources(&out)[1].1, "127.0.0.1:9", "{out}");
    assert_eq!(*follow.started.borrow(), ["guestA"]);
    // guestB is given no remote device here: each of its redirdevs parked.
    let follow = Recorded::default();
    let (_, out) = hook_run(
        Ok(&cfg),
        &tree,
        &follow,
        &["guestB", "migrate", "begin", "-"],
        &saved_remote_xml().replace("guestA", "guestB"),
    );
    assert!(sources(&out).iter().all(|(_, to)| to == "127.0.0.1:9"));
    // A started guest holding a redirdev of bbvirt's is followed up, even
    // with no hostdev and no DOMAIN_REMOTE_ for it.
    let follow = Recorded::default();
    let (code, _) = hook_run(
        Ok(&guest_a()),
        &tree,
        &follow,
        &["guestA", "started", "begin", "-"],
        &out,
    );
    assert_eq!(code, 0);
    assert_eq!(*follow.started.borrow(), ["guestA"]);
}

#[test]
fn prepare_refuses_a_revert_to_a_remote_device_this_host_does_not_give() {
    let tree = host();
    let cfg = guest_a_remote();
    let follow = Recorded::default();
    let prepare = |cfg: &Config, xml: &str| {
        hook_run(
            Ok(cfg),
            &tree,
            &follow,
            &["guestA", "prepare", "begin", "-"],
            xml,
        )
        .0
    };
    let xml = saved_remote_xml();
    // 10.0.0.9:4001 is not this host's for guestA: refused.
    assert_eq!(prepare(&cfg, &xml), 1);
    // Without it (or parked) the start goes on.
    let mut given = cfg.clone();
    given.domains[0]
        .remote
        .push("10.0.0.9:4001 tls=no".parse().unwrap());
    assert_eq!(prepare(&given, &xml), 0);
    let parked = saved::rewrite_remote(&xml, Some(&[])).unwrap().xml.unwrap();
    assert_eq!(prepare(&cfg, &parked), 0);
    // The same alias with another source is not the same device.
    let moved = xml.replace("service='4000'", "service='4002'");
    assert_eq!(prepare(&given, &moved), 1);
}

#[test]
fn the_follow_up_of_a_guest_vm_conf_does_not_name_takes_out_its_redirdevs() {
    let tree = host();
    let cfg = guest_a();
    let hv = running(&["other"])
        .redirdev(None, "other", "ua-bbnet-4-10_0_0_9-4001", "127.0.0.1", "9")
        .redirdev(None, "other", "ua-mine", "10.0.0.9", "5000");
    let out = ctx_run(&cfg, &tree, &hv, |c| c.follow_up("other")).unwrap();
    assert_eq!(out, Outcome::Done);
    assert_eq!(
        hv.redirdevs(None, "other"),
        vec![("ua-mine".into(), "10.0.0.9:5000".into())]
    );
}
