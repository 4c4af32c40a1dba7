//! Devices on another host in `status` and `devices`: on a hypervisor,
//! each guest's remote devices with their redirdev and QEMU's connection
//! (fixture `/proc/net/tcp`, `tcp6` and a QEMU process's socket links, no
//! QMP), stale `ua-bbnet-` redirdevs; on an exporting host, each
//! `SERVE_USB_` device and its client, and `devices` saying which device
//! is served on which port.

use std::path::Path;

use crate::util::fake::FakeHv;
use crate::util::fixture::FixtureTree;
use crate::util::scene::{config, dom, running, tree};
use crate::util::{documented_keys, keys_of, qemu_process, socket_tables};
use bbvirt::cli::Opts;
use bbvirt::config::Config;
use bbvirt::context::Context;
use serde_json::{Value, json};

const ZIGBEE: &str = "ua-bbnet-n-zigbee_lan-4000";
const PLAIN: &str = "ua-bbnet-4-10_0_0_7-4001";
const V6: &str = "ua-bbnet-6-fd00_0_0_0_0_0_0_7-4002";
const H2: &str = "ua-bbnet-n-h2_lan-4003";

const ESTABLISHED: u8 = 0x01;
const SYN_SENT: u8 = 0x02;
const LISTEN: u8 = 0x0A;

/// g1: zigbee.lan:4000 through the tunnel, 10.0.0.7:4001 and
/// [fd00::7]:4002 in plaintext; g2: h2.lan:4003; g3 (shut off):
/// h3.lan:4004.
fn hypervisor() -> Config {
    let with = |id: &str, elements: &[&str]| {
        let mut d = dom(id, None, None, &[]);
        d.remote = elements.iter().map(|e| e.parse().unwrap()).collect();
        d
    };
    config(vec![
        with(
            "g1",
            &[
                "zigbee.lan:4000",
                "10.0.0.7:4001 tls=no",
                "[fd00::7]:4002 tls=no",
            ],
        ),
        with("g2", &["h2.lan:4003"]),
        with("g3", &["h3.lan:4004"]),
    ])
}

fn hv() -> FakeHv {
    running(&["g1", "g2", "other"])
        .domain(None, "g3", false)
        .redirdev(None, "g1", ZIGBEE, "127.0.0.1", "4000")
        .redirdev(None, "g1", PLAIN, "10.0.0.7", "4001")
        .redirdev(None, "g1", V6, "fd00::7", "4002")
        .redirdev(None, "g1", "ua-bbnet-n-old_lan-4005", "127.0.0.1", "4005")
        .redirdev(None, "g1", "ua-spice", "127.0.0.1", "5900")
        .redirdev(None, "g2", H2, "127.0.0.1", "9999")
        .redirdev(None, "other", PLAIN, "10.0.0.7", "4001")
        .redirdev(None, "other", "ua-bbnet-n-byhand-4010", "127.0.0.1", "4010")
}

/// g1's QEMU (pid 500) holds the tunnel's connection and the IPv6 one;
/// its connection to 10.0.0.7:4001 is only being tried (SYN_SENT);
/// another process holds a connection to 127.0.0.1:4003.
fn hypervisor_proc(root: &Path) {
    socket_tables(
        root,
        &[
            ("127.0.0.1:50000", "127.0.0.1:4000", ESTABLISHED, 11),
            ("10.0.0.2:50002", "10.0.0.7:4001", SYN_SENT, 13),
            ("[fd00::2]:50001", "[fd00::7]:4002", ESTABLISHED, 12),
            ("127.0.0.1:50003", "127.0.0.1:4003", ESTABLISHED, 14),
            ("0.0.0.0:22", "0.0.0.0:0", LISTEN, 1),
        ],
    );
    qemu_process(root, 500, "g1", &[11, 12, 13]);
    qemu_process(root, 501, "g2", &[]);
}

fn status_in(cfg: &Config, tree: &FixtureTree, hv: &FakeHv, proc_root: &Path) -> Value {
    let (r, _) = status_report(cfg, tree, hv, proc_root);
    r
}

fn status_report(
    cfg: &Config,
    tree: &FixtureTree,
    hv: &FakeHv,
    proc_root: &Path,
) -> (Value, bbvirt::status::Report) {
    let sysfs = tree.sysfs();
    let opts = Opts::default();
    let ctx = Context {
        config: cfg,
        sysfs: &sysfs,
        hv,
        opts: &opts,
        lock_dir: None,
        readiness: None,
    };
    let r = bbvirt::status::collect(&ctx, proc_root, Path::new("/nonexistent"));
    assert!(hv.calls().is_empty(), "status changed something");
    let v = serde_json::from_str(&bbvirt::status::render_json(&r)).unwrap();
    (v, r)
}

/// Every key of status's JSON is in bbvirt(1)'s schema (this scene shows
/// no managed save image: a subset).
fn assert_documented(v: &Value) {
    let mut seen = std::collections::BTreeSet::new();
    keys_of(v, &mut seen);
    let documented = documented_keys("STATUS");
    let missing: Vec<&String> = seen.difference(&documented).collect();
    assert!(missing.is_empty(), "not in bbvirt(1), STATUS: {missing:?}");
}

#[test]
fn each_guests_remote_devices_their_redirdev_and_connection() {
    let dir = tempfile::tempdir().unwrap();
    hypervisor_proc(dir.path());
    let (v, r) = status_report(&hypervisor(), &tree(), &hv(), dir.path());
    assert_eq!(v["schema"], 3);
    assert_eq!(
        v["remote"][0],
        json!({"domain": "g1", "uri": null, "endpoint": "zigbee.lan:4000", "tls": true,
               "alias": ZIGBEE, "connects_to": "127.0.0.1:4000", "state": "connected",
               "qemu_pid": 500, "reason": null})
    );
    let states: Vec<(&str, &str, &str)> = v["remote"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["domain"].as_str().unwrap(),
                r["endpoint"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("g1", "zigbee.lan:4000", "connected"),
            ("g1", "10.0.0.7:4001", "waiting"),
            ("g1", "[fd00::7]:4002", "connected"),
            ("g2", "h2.lan:4003", "missing"),
            ("g3", "h3.lan:4004", "inactive"),
        ]
    );
    assert_eq!(v["remote"][1]["connects_to"], "10.0.0.7:4001");
    assert_eq!(v["remote"][1]["tls"], false);
    let why = v["remote"][1]["reason"].as_str().unwrap();
    assert!(why.contains("no connection to 10.0.0.7:4001"), "{why}");
    let stale: Vec<(&str, &str, &str, &Value)> = v["stale"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["domain"].as_str().unwrap(),
                s["alias"].as_str().unwrap(),
                s["reason"].as_str().unwrap(),
                &s["assigned_to"],
            )
        })
        .collect();
    assert_eq!(
        stale,
        [
            (
                "g1",
                "ua-bbnet-n-old_lan-4005",
                "not_assigned",
                &Value::Null
            ),
            ("g2", H2, "wrong_source", &json!("g2")),
            ("other", PLAIN, "not_assigned", &json!("g1")),
        ],
        "the admin's redirdev and one attached by hand elsewhere are no one's business"
    );
    assert_eq!(
        v["stale"][1],
        json!({"domain": "g2", "uri": null, "alias": H2, "serial": null, "bus": null,
               "dev": null, "reason": "wrong_source", "assigned_to": "g2",
               "endpoint": "h2.lan:4003"})
    );
    assert_eq!(v["healthy"], false);
    assert_documented(&v);
    let table = bbvirt::status::render_table(&r);
    for line in [
        "Remote devices (DOMAIN_REMOTE_):\n",
        "  zigbee.lan:4000  tls        g1     127.0.0.1:4000    connected (QEMU pid 500)\n",
        "  h2.lan:4003      tls        g2     127.0.0.1:4003    NOT ATTACHED\n",
        "  g2      h2.lan:4003 (remote)    -        connects elsewhere than vm.conf says\n",
        "1 remote device not attached to its running guest",
    ] {
        assert!(table.contains(line), "{line:?} in\n{table}");
    }
}

#[test]
fn a_connection_that_cannot_be_looked_at_is_said_not_guessed() {
    // No QEMU process in this /proc (status without root sees none of
    // another user's descriptors): the redirdev is there, no more is known.
    let dir = tempfile::tempdir().unwrap();
    socket_tables(dir.path(), &[]);
    let v = status_in(&hypervisor(), &tree(), &hv(), dir.path());
    assert_eq!(v["remote"][0]["state"], "attached");
    let why = v["remote"][0]["reason"].as_str().unwrap();
    assert!(why.contains("no QEMU process"), "{why}");
    // No socket tables at all.
    let v = status_in(
        &hypervisor(),
        &tree(),
        &hv(),
        Path::new("/nonexistent/proc"),
    );
    assert_eq!(v["remote"][0]["state"], "attached");
    assert!(
        v["remote"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("socket tables could not be read")
    );
    // A hostile element never reaches the table raw: an alias is ours only.
    assert!(
        v["remote"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["alias"].as_str().unwrap().starts_with("ua-bbnet-"))
    );
}

/// SERVE_USB_4000 (TLS) the stick 0001, 4001 (plaintext) the device at
/// port 1-2, 4002 a device not plugged in, 4003 the device at 1-3.
fn exporter() -> (Config, FixtureTree) {
    let cfg = bbvirt::config::parse_native(
        Path::new("/etc/bit-babbler/vm.conf"),
        "SERVE_USB_4000=\"id=10c4:ea60 serial=0001\"\n\
         SERVE_USB_4001=\"port=1-2 tls=no\"\n\
         SERVE_USB_4002=\"id=dead:beef\"\n\
         SERVE_USB_4003=\"port=1-3\"\n",
    )
    .unwrap();
    let tree = FixtureTree::new()
        .root_hub(1)
        .usb_device("1-1", "10c4", "ea60", Some("0001"), 1, 2)
        .usb_device("1-2", "0658", "0200", None, 1, 3)
        .usb_device("1-3", "1050", "0407", Some("K1"), 1, 4);
    (cfg, tree)
}

/// usbredirect of 4000 has stunnel's connection, stunnel holds the
/// client's from [fd00::2]; usbredirect of 4001 listens; nothing on 4003.
fn exporter_proc(root: &Path) {
    socket_tables(
        root,
        &[
            ("127.0.0.1:14000", "0.0.0.0:0", LISTEN, 1),
            ("127.0.0.1:14000", "127.0.0.1:40000", ESTABLISHED, 2),
            ("127.0.0.1:40000", "127.0.0.1:14000", ESTABLISHED, 3),
            ("[::]:4000", "[::]:0", LISTEN, 4),
            ("[fd00::7]:4000", "[fd00::2]:50000", ESTABLISHED, 5),
            ("0.0.0.0:4001", "0.0.0.0:0", LISTEN, 6),
        ],
    );
}

#[test]
fn an_exporting_hosts_served_devices_and_their_clients() {
    let dir = tempfile::tempdir().unwrap();
    exporter_proc(dir.path());
    let (cfg, tree) = exporter();
    let (v, r) = status_report(&cfg, &tree, &FakeHv::new(), dir.path());
    assert_eq!(
        v["served"][0],
        json!({"port": 4000, "tls": true, "listen": "127.0.0.1:14000",
               "device": {"address": "001:002", "bus": 1, "dev": 2, "port": "1-1",
                          "id": "10c4:ea60", "serial": "0001"},
               "client": "connected", "peer": "[fd00::2]:50000", "reason": null})
    );
    assert_eq!(v["served"][1]["client"], "waiting");
    assert_eq!(v["served"][1]["listen"], "0.0.0.0:4001");
    assert_eq!(v["served"][2]["device"], Value::Null);
    assert_eq!(v["served"][2]["client"], "none");
    assert!(
        v["served"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("plugged in")
    );
    assert_eq!(v["served"][3]["client"], "none");
    assert!(
        v["served"][3]["reason"]
            .as_str()
            .unwrap()
            .contains("bbvirt serve 4003")
    );
    assert_eq!(v["remote"], json!([]));
    assert_eq!(v["healthy"], true, "no client is no problem of this host's");
    assert_documented(&v);
    let table = bbvirt::status::render_table(&r);
    for line in [
        "Served to other hosts (SERVE_USB_):\n",
        "  4000  tls        001:002 10c4:ea60 (1-1, serial \"0001\")  127.0.0.1:14000  connected from [fd00::2]:50000\n",
        "  4002  tls        (not plugged in)",
    ] {
        assert!(table.contains(line), "{line:?} in\n{table}");
    }
}

#[test]
fn devices_says_which_device_is_served_on_which_port() {
    let dir = tempfile::tempdir().unwrap();
    exporter_proc(dir.path());
    let (cfg, tree) = exporter();
    let sysfs = tree.sysfs();
    let opts = Opts::default();
    let hv = FakeHv::new();
    let ctx = Context {
        config: &cfg,
        sysfs: &sysfs,
        hv: &hv,
        opts: &opts,
        lock_dir: None,
        readiness: None,
    };
    let r = bbvirt::devices::collect(
        &ctx,
        dir.path(),
        bbvirt::devices::ConfigStatus {
            path: "/etc/bit-babbler/vm.conf".into(),
            exists: true,
            error: None,
        },
    );
    let v: Value = serde_json::from_str(&bbvirt::devices::render_json(&r)).unwrap();
    assert_eq!(v["schema"], 2);
    let served: Vec<&Value> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["served_on"])
        .collect();
    assert_eq!(served, [&json!(4000), &json!(4001), &json!(4003)]);
    assert_eq!(v["served"].as_array().unwrap().len(), 4);
    assert_eq!(v["served"][0]["client"], "connected");
    let table = bbvirt::devices::render_table(&r);
    assert!(table.contains("; served on 4000\n"), "{table}");
    assert!(
        table.contains("Served to other hosts (SERVE_USB_):\n"),
        "{table}"
    );
}
