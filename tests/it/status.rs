//! `bbvirt status [--json]`: the report built against fixture sysfs trees and
//! a fake hypervisor, its table and JSON renderings, and the binary against
//! libvirt's in-process test driver.

use std::path::Path;

use crate::util::fixture::FixtureTree;
use crate::util::scene::{config, dom, running, tree, two_guests};
use crate::util::{bbvirt, expect_exit, fake::FakeHv, holder, write_config};
use bbvirt::cli::Opts;
use bbvirt::config::Config;
use bbvirt::context::Context;
use bbvirt::exit;
use bbvirt::libvirt::VirtError;
use bbvirt::status::{
    DeviceState, DomainState, Report, StaleKind, collect, render_json, render_table,
};
use bbvirt::sysfs::Sysfs;
use serde_json::{Value, json};

/// Everything attached where vm.conf says.
fn all_attached() -> FakeHv {
    running(&["g1", "g2"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4)
        .with_hostdev(None, "g1", "ua-bbvirt-JAMMB3", 1, 5)
        .with_hostdev(None, "g1", "hostdev0", 2, 7)
        .with_hostdev(None, "g2", "ua-bbvirt-QX3TZ7A", 3, 9)
}

fn report_with(cfg: &Config, sysfs: &Sysfs, hv: &FakeHv, opts: Opts) -> Report {
    report_in(cfg, sysfs, hv, opts, Path::new("/nonexistent/proc"))
}

/// The report, with `/proc` at `proc_root` (who holds the device nodes).
fn report_in(cfg: &Config, sysfs: &Sysfs, hv: &FakeHv, opts: Opts, proc_root: &Path) -> Report {
    let env = Context {
        config: cfg,
        sysfs,
        hv,
        opts: &opts,
        lock_dir: None,
        readiness: None,
    };
    let report = collect(&env, proc_root, Path::new("/nonexistent"));
    assert!(hv.calls().is_empty(), "status changed something");
    report
}

fn report(cfg: &Config, tree: &FixtureTree, hv: &FakeHv) -> Report {
    report_with(cfg, &tree.sysfs(), hv, Opts::default())
}

/// The JSON rendering, parsed back.
fn json_of(r: &Report) -> Value {
    let text = render_json(r);
    assert!(text.ends_with("}\n"), "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn device<'a>(v: &'a Value, serial: &str) -> &'a Value {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == serial)
        .unwrap_or_else(|| panic!("{serial} not in {v:#}"))
}

#[test]
fn healthy_host_json_is_exact() {
    let hv = all_attached();
    let r = report(&two_guests(), &tree(), &hv);
    assert!(r.healthy, "{r:#?}");
    assert_eq!(hv.connects(), vec![None], "one connection per URI");
    let attached = |domain: &str, bus: u32, dev: u32| {
        json!([{"domain": domain, "uri": null, "bus": bus, "dev": dev,
                "guest_port": null, "controller": null}])
    };
    assert_eq!(
        json_of(&r),
        json!({
            "schema": 3,
            "healthy": true,
            "devices": [
                {"serial": "KWIF4Q", "id": "0403:7840", "valid_serial": true,
                 "alias": "ua-bbvirt-KWIF4Q", "matched_by": "DOMAIN_RNG_g1", "bus": 1, "dev": 4,
                 "address": "001:004", "port": "1-1", "assigned_to": "g1",
                 "attached_to": attached("g1", 1, 4), "state": "attached",
                 "held_by": [], "held_on_host": false},
                {"serial": "JAMMB3", "id": "0403:7840", "valid_serial": true,
                 "alias": "ua-bbvirt-JAMMB3", "matched_by": "DOMAIN_RNG_g1", "bus": 1, "dev": 5,
                 "address": "001:005", "port": "1-2", "assigned_to": "g1",
                 "attached_to": attached("g1", 1, 5), "state": "attached",
                 "held_by": [], "held_on_host": false},
                {"serial": "QX3TZ7A", "id": "0403:7840", "valid_serial": true,
                 "alias": "ua-bbvirt-QX3TZ7A", "matched_by": "DOMAIN_RNG_g2", "bus": 3, "dev": 9,
                 "address": "003:009", "port": "3-1.4.2", "assigned_to": "g2",
                 "attached_to": attached("g2", 3, 9), "state": "attached",
                 "held_by": [], "held_on_host": false},
                {"serial": "UNASS1", "id": "0403:7840", "valid_serial": true,
                 "alias": "ua-bbvirt-UNASS1", "matched_by": null, "bus": 3, "dev": 10,
                 "address": "003:010", "port": "3-1.4.3", "assigned_to": null,
                 "attached_to": [], "state": "host",
                 "held_by": [], "held_on_host": false},
            ],
            "absent": [],
            "stale": [],
            "domains": [
                {"id": "g1", "name": "g1", "uri": null, "state": "running", "error": null, "managed_save": null},
                {"id": "g2", "name": "g2", "uri": null, "state": "running", "error": null, "managed_save": null},
            ],
            "libvirt": {"reachable": true, "error": null},
            "sysfs": {"error": null},
            "remote": [],
            "served": [],
        })
    );
}

#[test]
fn healthy_table_is_aligned() {
    let r = report(&two_guests(), &tree(), &all_attached());
    assert_eq!(
        render_table(&r),
        "\
Devices:
  DEVICE   ADDRESS  PORT     ASSIGNED TO  STATE     ATTACHED IN
  KWIF4Q   001:004  1-1      g1           attached  g1 at 001:004
  JAMMB3   001:005  1-2      g1           attached  g1 at 001:005
  QX3TZ7A  003:009  3-1.4.2  g2           attached  g2 at 003:009
  UNASS1   003:010  3-1.4.3  (host)       host      -

Absent: none (every configured device is plugged in)

Stale: none

Domains:
  ID  NAME  URI        STATE
  g1  g1    (default)  running
  g2  g2    (default)  running

Status: healthy
"
    );
}

#[test]
fn stale_entries_absent_and_moved() {
    let cfg = config(vec![
        dom("g1", None, None, &["KWIF4Q", "JAMMB3", "GONE11"]),
        dom("g2", None, None, &["QX3TZ7A"]),
    ]);
    let hv = running(&["g1", "g2"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 2) // now at 1:4
        .with_hostdev(None, "g1", "ua-bbvirt-JAMMB3", 1, 5)
        .with_hostdev(None, "g1", "ua-bbvirt-GONE11", 1, 7) // unplugged
        .with_hostdev(None, "g2", "ua-bbvirt-QX3TZ7A", 3, 9);
    let r = report(&cfg, &tree(), &hv);
    assert!(!r.healthy);
    let v = json_of(&r);
    assert_eq!(
        v["stale"],
        json!([
            {"domain": "g1", "uri": null, "alias": "ua-bbvirt-KWIF4Q", "serial": "KWIF4Q",
             "bus": 1, "dev": 2, "reason": "moved", "assigned_to": "g1", "endpoint": null},
            {"domain": "g1", "uri": null, "alias": "ua-bbvirt-GONE11", "serial": "GONE11",
             "bus": 1, "dev": 7, "reason": "absent", "assigned_to": "g1", "endpoint": null},
        ])
    );
    // The moved device: its alias is in g1 at the old address; not attached
    // at its current one.
    let k = device(&v, "KWIF4Q");
    assert_eq!(k["state"], "missing");
    assert_eq!(
        k["attached_to"],
        json!([{"domain": "g1", "uri": null, "bus": 1, "dev": 2,
                "guest_port": null, "controller": null}])
    );
    assert_eq!(device(&v, "JAMMB3")["state"], "attached");
    assert_eq!(
        v["absent"],
        json!([{"serial": "GONE11", "element": null, "assigned_to": "g1"}])
    );
    let table = render_table(&r);
    assert!(
        table.contains(
            "  KWIF4Q   001:004  1-1      g1           NOT ATTACHED  g1 at 001:002 (stale)\n"
        ),
        "{table}"
    );
    assert!(
        table.contains(
            "Stale (bbvirt entries that should not be there):\n  \
             DOMAIN  DEVICE  ADDRESS  REASON\n  \
             g1      KWIF4Q  001:002  device now at 001:004\n  \
             g1      GONE11  001:007  device not plugged in\n"
        ),
        "{table}"
    );
    assert!(
        table.ends_with(
            "Status: NOT HEALTHY: 2 stale entries, 1 device not attached to its running guest \
             (bbvirt sync fixes stale and missing entries in configured guests)\n"
        ),
        "{table}"
    );
}

#[test]
fn device_in_the_wrong_domain() {
    // KWIF4Q belongs to g1 but sits in g2; "other" (not in vm.conf) holds
    // g2's QX3TZ7A and the unassigned UNASS1 (attached by hand with -D).
    let hv = running(&["g1", "g2", "other"])
        .with_hostdev(None, "g1", "ua-bbvirt-JAMMB3", 1, 5)
        .with_hostdev(None, "g2", "ua-bbvirt-KWIF4Q", 1, 4)
        .with_hostdev(None, "other", "ua-bbvirt-QX3TZ7A", 3, 9)
        .with_hostdev(None, "other", "ua-bbvirt-UNASS1", 3, 10);
    let r = report(&two_guests(), &tree(), &hv);
    assert!(!r.healthy);
    let v = json_of(&r);
    assert_eq!(
        v["stale"],
        json!([
            {"domain": "g2", "uri": null, "alias": "ua-bbvirt-KWIF4Q", "serial": "KWIF4Q",
             "bus": 1, "dev": 4, "reason": "not_assigned", "assigned_to": "g1", "endpoint": null},
            {"domain": "other", "uri": null, "alias": "ua-bbvirt-QX3TZ7A", "serial": "QX3TZ7A",
             "bus": 3, "dev": 9, "reason": "not_assigned", "assigned_to": "g2", "endpoint": null},
        ])
    );
    let k = device(&v, "KWIF4Q");
    assert_eq!(k["assigned_to"], "g1");
    assert_eq!(k["state"], "missing", "g1 runs without it");
    assert_eq!(
        k["attached_to"],
        json!([{"domain": "g2", "uri": null, "bus": 1, "dev": 4,
                "guest_port": null, "controller": null}])
    );
    assert_eq!(device(&v, "QX3TZ7A")["state"], "missing");
    let u = device(&v, "UNASS1");
    assert_eq!(u["state"], "host");
    assert_eq!(u["attached_to"][0]["domain"], "other");
    // Unconfigured domains are not listed under domains.
    assert_eq!(v["domains"].as_array().unwrap().len(), 2);
    let table = render_table(&r);
    assert!(
        table.contains("g2      KWIF4Q   001:004  wrong guest: assigned to g1\n"),
        "{table}"
    );
    assert!(
        table.contains("g1           NOT ATTACHED  g2 at 001:004 (stale)\n"),
        "{table}"
    );
    assert!(table.contains("other at 003:010\n"), "{table}");
}

#[test]
fn absent_serials_and_stopped_guests_are_not_problems() {
    let cfg = config(vec![
        dom("g1", None, None, &["KWIF4Q", "ABSENT1", "kwif4q"]),
        dom("g2", Some("guest-two"), None, &["QX3TZ7A", "ABSENT1"]),
        dom("g3", None, None, &["JAMMB3"]),
    ]);
    let hv = running(&["g1"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4)
        .domain(None, "guest-two", false);
    let r = report(&cfg, &tree(), &hv);
    assert!(r.healthy, "{r:#?}");
    let v = json_of(&r);
    // Listed once, for the domain that wins it; an invalid serial never.
    assert_eq!(
        v["absent"],
        json!([{"serial": "ABSENT1", "element": null, "assigned_to": "g1"}])
    );
    let states: Vec<(&str, &str)> = v["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("g1", "running"),
            ("guest-two", "shut_off"),
            ("g3", "undefined")
        ]
    );
    assert_eq!(device(&v, "QX3TZ7A")["state"], "inactive");
    assert_eq!(device(&v, "QX3TZ7A")["assigned_to"], "guest-two");
    assert_eq!(device(&v, "JAMMB3")["state"], "inactive");
    let table = render_table(&r);
    assert!(
        table.contains(
            "Absent (configured, not plugged in):\n  DEVICE   ASSIGNED TO\n  ABSENT1  g1\n"
        ),
        "{table}"
    );
    assert!(
        table.contains("  g2  guest-two  (default)  shut off\n"),
        "{table}"
    );
    assert!(
        table.contains("  g3  g3         (default)  not defined\n"),
        "{table}"
    );
    assert!(table.contains("guest down"), "{table}");
    assert!(table.ends_with("Status: healthy\n"), "{table}");
}

#[test]
fn libvirt_unreachable_shows_the_host_side() {
    let hv = all_attached().connect_error(VirtError::Connect {
        uri: "qemu:///system".into(),
        message: "Failed to connect socket".into(),
    });
    let r = report(&two_guests(), &tree(), &hv);
    assert!(!r.healthy);
    let v = json_of(&r);
    let err = "connecting to libvirt at qemu:///system: Failed to connect socket";
    assert_eq!(v["libvirt"], json!({"reachable": false, "error": err}));
    assert_eq!(v["devices"].as_array().unwrap().len(), 4);
    let k = device(&v, "KWIF4Q");
    assert_eq!(k["assigned_to"], "g1");
    assert_eq!(k["state"], "unknown");
    assert_eq!(k["attached_to"], json!([]));
    assert_eq!(device(&v, "UNASS1")["state"], "host");
    for d in v["domains"].as_array().unwrap() {
        assert_eq!(d["state"], "unknown");
        assert_eq!(d["error"], err);
    }
    assert_eq!(v["stale"], json!([]));
    let table = render_table(&r);
    assert!(
        table.starts_with(&format!(
            "libvirt: unreachable, showing the host side only: {err}\n\nDevices:\n"
        )),
        "{table}"
    );
    assert!(
        table.contains("  KWIF4Q   001:004  1-1      g1           unknown"),
        "{table}"
    );
    assert!(
        table.ends_with("Status: NOT HEALTHY: libvirt unreachable\n"),
        "{table}"
    );
}

#[test]
fn one_connection_per_uri_and_connect_overrides() {
    let cfg = config(vec![
        dom("g1", None, None, &["KWIF4Q"]),
        dom(
            "kbsd",
            Some("kbsd-unstable"),
            Some("qemu:///system"),
            &["QX3TZ7A"],
        ),
        dom("g3", None, Some("qemu:///system"), &["JAMMB3"]),
    ]);
    let sys = Some("qemu:///system");
    let hv = FakeHv::new()
        .domain(None, "g1", true)
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4)
        .domain(sys, "kbsd-unstable", true)
        .with_hostdev(sys, "kbsd-unstable", "ua-bbvirt-QX3TZ7A", 3, 9)
        .domain(sys, "g3", true)
        .with_hostdev(sys, "g3", "ua-bbvirt-JAMMB3", 1, 5);
    let r = report(&cfg, &tree(), &hv);
    assert!(r.healthy, "{r:#?}");
    assert_eq!(hv.connects(), vec![None, Some("qemu:///system".into())]);
    let v = json_of(&r);
    assert_eq!(
        device(&v, "QX3TZ7A")["attached_to"],
        json!([{"domain": "kbsd-unstable", "uri": "qemu:///system", "bus": 3, "dev": 9,
                "guest_port": null, "controller": null}])
    );
    assert_eq!(v["domains"][1]["uri"], "qemu:///system");
    let table = render_table(&r);
    assert!(
        table.contains("  kbsd  kbsd-unstable  qemu:///system  running\n"),
        "{table}"
    );

    // -c sends every domain to one URI, where only g1 exists.
    let hv = FakeHv::new()
        .domain(Some("test:///x"), "g1", true)
        .with_hostdev(Some("test:///x"), "g1", "ua-bbvirt-KWIF4Q", 1, 4);
    let opts = Opts {
        connect: Some("test:///x".into()),
        ..Opts::default()
    };
    let r = report_with(&cfg, &tree().sysfs(), &hv, opts);
    assert_eq!(hv.connects(), vec![Some("test:///x".into())]);
    assert!(r.healthy, "{r:#?}");
    let uris: Vec<Option<&str>> = r.domains.iter().map(|d| d.uri.as_deref()).collect();
    assert_eq!(uris, vec![Some("test:///x"); 3]);
    assert_eq!(r.domains[1].state, DomainState::Undefined);
}

#[test]
fn empty_config_still_finds_stale_entries() {
    // Nothing configured: the default URI is still looked at, and a bbvirt
    // entry for an unplugged device is stale wherever it is.
    let hv = running(&["vm"])
        .with_hostdev(None, "vm", "ua-bbvirt-GONE11", 1, 7)
        .with_hostdev(None, "vm", "ua-bbvirt-UNASS1", 3, 10);
    let r = report(&config(vec![]), &tree(), &hv);
    assert_eq!(hv.connects(), vec![None]);
    assert!(!r.healthy);
    assert_eq!(r.stale.len(), 1);
    assert_eq!(r.stale[0].serial.as_deref(), Some("GONE11"));
    assert_eq!(r.stale[0].reason, StaleKind::Absent);
    assert!(r.devices.iter().all(|d| d.state == DeviceState::Host));
    let table = render_table(&r);
    assert!(table.contains("Domains: none configured\n"), "{table}");
    assert!(
        table.contains("vm      GONE11  001:007  device not plugged in\n"),
        "{table}"
    );
}

#[test]
fn hostile_serials_are_escaped_and_never_routed() {
    let nasty = "AAAAAA -D g1\u{1b}[31m";
    let tree = FixtureTree::new()
        .root_hub(1)
        .bitbabbler("1-1", Some(nasty), 1, 4)
        .bitbabbler("1-2", None, 1, 5);
    let cfg = config(vec![dom("g1", None, None, &["AAAAAA", nasty])]);
    let hv = running(&["g1"]).with_hostdev(None, "g1", "ua-bbvirt-x\u{7f}y", 1, 9);
    let r = report(&cfg, &tree, &hv);
    let v = json_of(&r);
    assert_eq!(v["devices"][0]["serial"], nasty, "JSON round-trips it");
    assert_eq!(v["devices"][0]["valid_serial"], false);
    assert_eq!(v["devices"][0]["assigned_to"], Value::Null);
    assert_eq!(v["devices"][0]["state"], "host");
    assert_eq!(v["devices"][1]["serial"], Value::Null);
    assert_eq!(
        v["absent"],
        json!([{"serial": "AAAAAA", "element": null, "assigned_to": "g1"}])
    );
    assert_eq!(v["stale"][0]["serial"], "x\u{7f}y");
    let table = render_table(&r);
    assert!(
        !table.contains('\u{1b}') && !table.contains('\u{7f}'),
        "{table}"
    );
    assert!(
        table.contains(r#"  g1      "x\u{7f}y"  001:009  not assigned to this guest"#),
        "{table}"
    );
    assert!(table.contains(r#""AAAAAA -D g1\u{1b}[31m""#), "{table}");
    assert!(table.contains("(none)"), "{table}");
    assert!(table.contains("(host: unusable serial)"), "{table}");
}

#[test]
fn unreadable_live_xml_is_a_problem_not_a_panic() {
    // The fake writes the alias into the XML verbatim: ESC is not an XML
    // character, so g1's live XML does not parse.
    let hv = running(&["g1", "g2"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4)
        .with_hostdev(None, "g1", "ua-bbvirt-x\u{1b}y", 1, 9)
        .with_hostdev(None, "g2", "ua-bbvirt-QX3TZ7A", 3, 9);
    let r = report(&two_guests(), &tree(), &hv);
    assert!(!r.healthy);
    let v = json_of(&r);
    assert_eq!(v["domains"][0]["state"], "running");
    assert!(
        v["domains"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("reading the live XML: parsing the domain XML"),
        "{v:#}"
    );
    assert_eq!(v["libvirt"]["reachable"], true);
    assert_eq!(device(&v, "KWIF4Q")["state"], "unknown");
    assert_eq!(device(&v, "QX3TZ7A")["state"], "attached");
    let table = render_table(&r);
    assert!(
        table.contains("  ID  NAME  URI        STATE    ERROR\n  g1  g1    (default)  running  reading the live XML: parsing"),
        "{table}"
    );
    assert!(
        table.ends_with("Status: NOT HEALTHY: libvirt errors\n"),
        "{table}"
    );
}

#[test]
fn unreadable_sysfs_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bus/usb")).unwrap();
    std::fs::write(dir.path().join("bus/usb/devices"), "not a directory").unwrap();
    let hv = running(&["g1", "g2"]);
    let r = report_with(&two_guests(), &Sysfs::new(dir.path()), &hv, Opts::default());
    assert!(!r.healthy);
    let v = json_of(&r);
    assert!(
        v["sysfs"]["error"]
            .as_str()
            .unwrap()
            .contains("bus/usb/devices"),
        "{v:#}"
    );
    assert_eq!(v["domains"][0]["state"], "running");
    let table = render_table(&r);
    assert!(
        table.starts_with("sysfs: cannot list USB devices: "),
        "{table}"
    );
    assert!(
        table.ends_with("Status: NOT HEALTHY: sysfs unreadable\n"),
        "{table}"
    );
}

/// The binary against libvirt's test driver: its running domain "test" holds
/// no hostdev, so the assigned device is missing there.
#[test]
fn binary_with_the_libvirt_test_driver() {
    let tree = tree();
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(
        dir.path(),
        "DOMAIN_RNG_test=( KWIF4Q )\nDOMAIN_RNG_off=( ABSENT1 )\n",
    );
    let conf = conf.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["-C", conf, "status", "-c", "test:///default"];
        args.extend_from_slice(extra);
        bbvirt(tree.root(), &args)
    };
    let (out, err) = expect_exit(&run(&["--json"]), exit::FAILED);
    assert_eq!(err, "", "nothing on stderr");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["schema"], 3);
    assert_eq!(v["healthy"], false);
    assert_eq!(v["libvirt"], json!({"reachable": true, "error": null}));
    assert_eq!(
        v["domains"],
        json!([
            {"id": "test", "name": "test", "uri": "test:///default", "state": "running", "error": null, "managed_save": null},
            {"id": "off", "name": "off", "uri": "test:///default", "state": "undefined", "error": null, "managed_save": null},
        ])
    );
    let k = device(&v, "KWIF4Q");
    assert_eq!(k["state"], "missing");
    assert_eq!(k["attached_to"], json!([]));
    assert_eq!(k["held_by"], json!([]));

    // BBVIRT_PROC_ROOT: a process of the fixture /proc holds KWIF4Q's node.
    holder(
        &tree.root().join("proc"),
        4242,
        "seedd",
        b"seedd\0-k\0",
        &["/dev/bus/usb/001/004"],
    );
    let (out, _) = expect_exit(&run(&["--json"]), exit::FAILED);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let k = device(&v, "KWIF4Q");
    assert_eq!(
        k["held_by"],
        json!([{"pid": 4242, "name": "seedd", "guest": null}])
    );
    assert_eq!(k["held_on_host"], true);
    let (out, _) = expect_exit(&run(&[]), exit::FAILED);
    assert!(out.contains("seedd (pid 4242)"), "{out}");
    std::fs::remove_dir_all(tree.root().join("proc")).unwrap();
    assert_eq!(v["stale"], json!([]));
    assert_eq!(
        v["absent"],
        json!([{"serial": "ABSENT1", "element": null, "assigned_to": "off"}])
    );

    let (out, _) = expect_exit(&run(&[]), exit::FAILED);
    assert!(
        out.contains("  KWIF4Q   001:004  1-1      test         NOT ATTACHED  -\n"),
        "{out}"
    );
    assert!(
        out.contains("  test  test  test:///default  running\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "Status: NOT HEALTHY: 1 device not attached to its running guest \
             (bbvirt sync fixes stale and missing entries in configured guests)\n"
        ),
        "{out}"
    );

    // libvirt unreachable: the host side, exit 1.
    let out = bbvirt(
        tree.root(),
        &["-C", conf, "status", "--json", "-c", "bogus:///x"],
    );
    let (out, _) = expect_exit(&out, exit::FAILED);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["libvirt"]["reachable"], false);
    assert_eq!(v["devices"].as_array().unwrap().len(), 4);
    assert_eq!(v["domains"][0]["state"], "unknown");
}

#[test]
fn two_uris_reaching_one_daemon_are_looked_at_once() {
    // g1 names qemu:///system, g2 the default URI: for root both reach the
    // same libvirtd (seen in the lab). Each guest is its configured self.
    let cfg = config(vec![
        dom("g1", None, Some("qemu:///system"), &["KWIF4Q", "JAMMB3"]),
        dom("g2", None, None, &["QX3TZ7A"]),
    ]);
    let hv = all_attached().alias_uri(Some("qemu:///system"), None);
    let r = report(&cfg, &tree(), &hv);
    let v = json_of(&r);
    assert_eq!(v["healthy"], true, "{v:#}");
    assert_eq!(v["stale"], serde_json::json!([]), "{v:#}");
    for serial in ["KWIF4Q", "JAMMB3", "QX3TZ7A"] {
        let d = device(&v, serial);
        assert_eq!(d["state"], "attached", "{d:#}");
        assert_eq!(d["attached_to"].as_array().unwrap().len(), 1, "{d:#}");
    }
    // A device of g2 in g1 is still found through either URI, once.
    let hv = all_attached()
        .with_hostdev(None, "g1", "ua-bbvirt-QX3TZ7A", 3, 9)
        .alias_uri(Some("qemu:///system"), None);
    let v = json_of(&report(&cfg, &tree(), &hv));
    assert_eq!(v["healthy"], false);
    let stale = v["stale"].as_array().unwrap();
    assert_eq!(stale.len(), 1, "{v:#}");
    assert_eq!(stale[0]["domain"], "g1");
    assert_eq!(stale[0]["reason"], "not_assigned");
}

#[test]
fn skipped_bitbabblers_are_warned_about_outside_the_report() {
    let tree = tree().bitbabbler("4-2", Some("BROKEN"), 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), "DOMAIN_RNG_g1=( KWIF4Q )\n");
    let out = bbvirt(
        tree.root(),
        &[
            "-C",
            conf.to_str().unwrap(),
            "status",
            "--json",
            "-c",
            "bogus:///x",
        ],
    );
    let (out, err) = expect_exit(&out, exit::FAILED);
    assert!(
        err.contains("bbvirt: warning: skipping ")
            && err.contains("the name says bus 4 but busnum is 3"),
        "{err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["sysfs"],
        json!({"error": null}),
        "the schema is unchanged"
    );
    assert_eq!(v["devices"].as_array().unwrap().len(), 4);
}

#[test]
fn devices_held_open_on_the_host_and_where_they_sit_in_the_guest() {
    let proc_root = tempfile::tempdir().unwrap();
    let p = proc_root.path();
    // seedd holds KWIF4Q (g1's, attached) and UNASS1 (the host's); g1's
    // QEMU holds its own JAMMB3.
    holder(
        p,
        812,
        "seedd",
        b"/usr/bin/seedd\0-k\0",
        &["/dev/bus/usb/001/004", "/dev/bus/usb/003/010"],
    );
    holder(
        p,
        77,
        "qemu-system-x86",
        b"/usr/bin/qemu-system-x86_64\0-name\0guest=g1,debug-threads=on\0",
        &["/dev/bus/usb/001/005"],
    );
    let hv = all_attached().guest_addresses(None, "g1");
    let r = report_in(&two_guests(), &tree().sysfs(), &hv, Opts::default(), p);
    assert!(!r.healthy, "seedd holds a running guest's device");
    let v = json_of(&r);
    assert_eq!(
        device(&v, "KWIF4Q")["held_by"],
        json!([{"pid": 812, "name": "seedd", "guest": null}])
    );
    assert_eq!(device(&v, "KWIF4Q")["held_on_host"], true);
    assert_eq!(
        device(&v, "JAMMB3")["held_by"],
        json!([{"pid": 77, "name": "qemu-system-x86", "guest": "g1"}])
    );
    assert_eq!(
        device(&v, "JAMMB3")["held_on_host"],
        false,
        "its own guest's QEMU"
    );
    assert_eq!(
        device(&v, "UNASS1")["held_on_host"],
        false,
        "the host's own device"
    );
    assert_eq!(
        device(&v, "KWIF4Q")["attached_to"][0]["guest_port"],
        "0-1",
        "{v:#}"
    );
    assert_eq!(
        device(&v, "KWIF4Q")["attached_to"][0]["controller"],
        "qemu-xhci"
    );

    let table = render_table(&r);
    assert!(
        table.starts_with(
            "\
Devices:
  DEVICE   ADDRESS  PORT     ASSIGNED TO  STATE     ATTACHED IN                                      HELD BY
  KWIF4Q   001:004  1-1      g1           attached  g1 at 001:004 (guest port 0-1, qemu-xhci USB 3)  seedd (pid 812)
  JAMMB3   001:005  1-2      g1           attached  g1 at 001:005 (guest port 0-2, qemu-xhci USB 3)  -
  QX3TZ7A  003:009  3-1.4.2  g2           attached  g2 at 003:009                                    -
  UNASS1   003:010  3-1.4.3  (host)       host      -                                                seedd (pid 812)
"
        ),
        "{table}"
    );
    assert!(
        table.ends_with(
            "Status: NOT HEALTHY: 1 device of a running guest held open on the host (see HELD BY)\n"
        ),
        "{table}"
    );
}

#[test]
fn usb_devices_show_their_element_alias_and_state() {
    let cfg = bbvirt::config::parse_native(
        Path::new("/etc/bit-babbler/vm.conf"),
        "DOMAIN_USB_g1=( \"id=10c4:ea60 port=1-4\" \"id=1050:0407\" )\n\
         DOMAIN_USB_g2=( \"id=10c4:ea60 port=1-5\" )\n",
    )
    .unwrap();
    let tree = FixtureTree::new()
        .root_hub(1)
        .usb_device("1-4", "10c4", "ea60", Some("0001"), 1, 4)
        .usb_device("1-5", "10c4", "ea60", Some("0001"), 1, 5)
        .usb_device("1-7", "046d", "c52b", Some("KEYB"), 1, 7);
    let hv = running(&["g1", "g2"])
        .with_hostdev(None, "g1", "ua-bbusb-10c4ea60-g1-e0-0001", 1, 4)
        // a lost remove left g2's entry at an old address
        .with_hostdev(None, "g2", "ua-bbusb-10c4ea60-g2-e0-0001", 1, 30);
    let r = report(&cfg, &tree, &hv);
    assert!(!r.healthy);
    let v = json_of(&r);
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(
        devices.len(),
        2,
        "the keyboard no element matches is not shown"
    );
    assert_eq!(devices[0]["id"], "10c4:ea60");
    assert_eq!(devices[0]["matched_by"], "DOMAIN_USB_g1[0]");
    assert_eq!(devices[0]["alias"], "ua-bbusb-10c4ea60-g1-e0-0001");
    assert_eq!(devices[0]["state"], "attached");
    assert_eq!(devices[0]["valid_serial"], false, "not a BitBabbler serial");
    assert_eq!(devices[1]["matched_by"], "DOMAIN_USB_g2[0]");
    assert_eq!(devices[1]["state"], "missing");
    assert_eq!(
        v["absent"],
        json!([{"serial": null, "element": "DOMAIN_USB_g1[1]", "assigned_to": "g1"}])
    );
    assert_eq!(
        v["stale"],
        json!([{"domain": "g2", "uri": null, "alias": "ua-bbusb-10c4ea60-g2-e0-0001",
                "serial": null, "bus": 1, "dev": 30, "reason": "moved", "assigned_to": null, "endpoint": null}])
    );
    let table = render_table(&r);
    assert!(
        table.contains("10c4:ea60 \"0001\"  001:004  1-4   g1 (DOMAIN_USB_g1[0])"),
        "{table}"
    );
    assert!(
        table.contains("DOMAIN_USB_g1[1] (no device matches)"),
        "{table}"
    );
    assert!(
        table.contains("ua-bbusb-10c4ea60-g2-e0-0001  001:030  device now at 001:005"),
        "{table}"
    );
}

#[test]
fn any_usb_device_held_open_on_the_host_is_named() {
    // Issue 11's holders for devices other than BitBabblers: g1's serial
    // adapter (a DOMAIN_USB_ element's) is held by gpsd on the host while
    // attached to running g1; the host's own keyboard, held by Xorg, is
    // nobody else's business.
    let cfg = bbvirt::config::parse_native(
        Path::new("/etc/bit-babbler/vm.conf"),
        "DOMAIN_USB_g1=( \"id=10c4:ea60\" )\n",
    )
    .unwrap();
    let tree = FixtureTree::new()
        .root_hub(1)
        .usb_device("1-4", "10c4", "ea60", Some("0001"), 1, 4)
        .usb_device("1-7", "046d", "c52b", Some("KEYB"), 1, 7);
    let proc_root = tempfile::tempdir().unwrap();
    let p = proc_root.path();
    holder(
        p,
        901,
        "gpsd",
        b"/usr/sbin/gpsd\0",
        &["/dev/bus/usb/001/004"],
    );
    holder(
        p,
        902,
        "Xorg",
        b"/usr/lib/xorg/Xorg\0",
        &["/dev/bus/usb/001/007"],
    );
    let hv = running(&["g1"]).with_hostdev(None, "g1", "ua-bbusb-10c4ea60-g1-e0-0001", 1, 4);
    let r = report_in(&cfg, &tree.sysfs(), &hv, Opts::default(), p);
    assert!(!r.healthy, "gpsd holds a running guest's device");
    let v = json_of(&r);
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{v:#}");
    assert_eq!(devices[0]["id"], "10c4:ea60");
    assert_eq!(devices[0]["state"], "attached");
    assert_eq!(
        devices[0]["held_by"],
        json!([{"pid": 901, "name": "gpsd", "guest": null}])
    );
    assert_eq!(devices[0]["held_on_host"], true);
    let table = render_table(&r);
    assert!(table.contains("gpsd (pid 901)"), "{table}");
    assert!(
        table.ends_with(
            "Status: NOT HEALTHY: 1 device of a running guest held open on the host (see HELD BY)\n"
        ),
        "{table}"
    );
}
