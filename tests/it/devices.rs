//! `bbvirt devices [--json]` (alias `list`): the listing on fixture trees
//! (twins that only the port tells apart, devices without a serial,
//! hostile descriptor strings), who has each device, the suggested
//! elements pasted into a vm.conf and read by the real config parser, the
//! JSON against the schema bbvirt(1) documents, and the binary.

use std::path::Path;

use bbvirt::cli::Opts;
use bbvirt::config::Config;
use bbvirt::context::Context;
use bbvirt::devices::{ConfigStatus, Report, collect, render_json, render_table};
use bbvirt::exit;
use bbvirt::libvirt::VirtError;
use bbvirt::sysfs::Sysfs;
use serde_json::{Value, json};

use crate::util::fake::FakeHv;
use crate::util::fixture::FixtureTree;
use crate::util::scene::{config, dom, running};
use crate::util::{bbvirt, documented_keys, expect_exit, holder, keys_of, write_config};

/// Buses 1 and 2: two CP210x sticks (10c4:ea60) that share the serial
/// "0001"; bus 3 behind a hub (3-1): two Z-Wave sticks without a serial
/// (0658:0200), two security keys (1050:0407, serials "K1" and "K 2");
/// then a BitBabbler KWIF4Q and a receiver with no strings at all.
fn host() -> FixtureTree {
    FixtureTree::new()
        .root_hub(1)
        .root_hub(2)
        .root_hub(3)
        .usb_device("1-1", "10c4", "ea60", Some("0001"), 1, 2)
        .attr("1-1", "manufacturer", "Silicon Labs\n")
        .attr("1-1", "product", "CP2102N USB to UART Bridge Controller\n")
        .interface("1-1:1.0")
        .driver("1-1:1.0", "cp210x")
        .usb_device("2-1", "10c4", "ea60", Some("0001"), 2, 2)
        .attr("2-1", "manufacturer", "Silicon Labs\n")
        .attr("2-1", "product", "CP2102N USB to UART Bridge Controller\n")
        .interface("2-1:1.0")
        .driver("2-1:1.0", "cp210x")
        .usb_device("3-1", "05e3", "0608", None, 3, 2)
        .interface("3-1:1.0")
        .driver("3-1:1.0", "hub")
        .usb_device("3-1.2", "0658", "0200", None, 3, 3)
        .attr(
            "3-1.2",
            "product",
            "Z-Wave.Me UZB1 stick, 500 series, second revision\n",
        )
        .interface("3-1.2:1.0")
        .driver("3-1.2:1.0", "cdc_acm")
        .interface("3-1.2:1.1")
        .driver("3-1.2:1.1", "cdc_acm")
        .usb_device("3-1.3", "1050", "0407", Some("K1"), 3, 4)
        .interface("3-1.3:1.0")
        .driver("3-1.3:1.0", "usbhid")
        .interface("3-1.3:1.1")
        .usb_device("3-1.4", "1050", "0407", Some("K 2"), 3, 5)
        .usb_device("3-1.5", "0658", "0200", None, 3, 7)
        .bitbabbler("3-2", Some("KWIF4Q"), 3, 6)
        .usb_device("3-3", "046d", "c52b", None, 3, 8)
        .remove_attr("3-3", "manufacturer")
        .remove_attr("3-3", "product")
}

/// g1 gets the key K1 by an element, g2 the BitBabbler by its serial.
fn conf() -> Config {
    let mut g1 = dom("g1", None, None, &[]);
    g1.usb = vec!["id=1050:0407 serial=K1".parse().unwrap()];
    config(vec![g1, dom("g2", None, None, &["KWIF4Q"])])
}

/// g1 holds the stick at 1-1 by a hostdev of its own (no bbvirt alias);
/// g2 holds bbvirt's entry for KWIF4Q at an old address.
fn guests() -> FixtureTree {
    host()
}

fn hv() -> FakeHv {
    running(&["g1", "g2"])
        .with_hostdev(None, "g1", "hostdev0", 1, 2)
        .with_hostdev(None, "g2", "ua-bbvirt-KWIF4Q", 3, 9)
}

fn config_status(path: &str) -> ConfigStatus {
    ConfigStatus {
        path: path.into(),
        exists: true,
        error: None,
    }
}

/// The report on `sysfs`, with `/proc` at `proc_root`.
fn report_in(cfg: &Config, sysfs: &Sysfs, hv: &FakeHv, proc_root: &Path) -> Report {
    let opts = Opts::default();
    let ctx = Context {
        config: cfg,
        sysfs,
        hv,
        opts: &opts,
        lock_dir: None,
        readiness: None,
    };
    let r = collect(&ctx, proc_root, config_status("/etc/bit-babbler/vm.conf"));
    assert!(hv.calls().is_empty(), "devices changed something");
    r
}

fn report(cfg: &Config, tree: &FixtureTree, hv: &FakeHv) -> Report {
    report_in(cfg, &tree.sysfs(), hv, Path::new("/nonexistent/proc"))
}

/// The JSON rendering, parsed back and checked against the schema.
fn json_of(r: &Report) -> Value {
    let text = render_json(r);
    assert!(text.ends_with("}\n"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    check_schema(&v);
    v
}

fn device<'a>(v: &'a Value, port: &str) -> &'a Value {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["port"] == port)
        .unwrap_or_else(|| panic!("{port} not in {v:#}"))
}

fn elements(v: &Value) -> Vec<(String, String)> {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["port"].as_str().unwrap().to_string(),
                d["suggestion"]["element"]
                    .as_str()
                    .unwrap_or("-")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn every_device_with_the_shortest_element_that_selects_only_it() {
    let tree = guests();
    let v = json_of(&report(&conf(), &tree, &hv()));
    let want = [
        ("1-1", "id=10c4:ea60 port=1-1"),
        ("2-1", "id=10c4:ea60 port=2-1"),
        ("3-1", "id=05e3:0608"),
        ("3-1.2", "id=0658:0200 port=3-1.2"),
        ("3-1.3", "id=1050:0407 serial=K1"),
        ("3-1.4", "id=1050:0407 serial=\"K 2\""),
        ("3-1.5", "id=0658:0200 port=3-1.5"),
        ("3-2", "id=0403:7840"),
        ("3-3", "id=046d:c52b"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(p, e)| (p.to_string(), e.to_string()))
        .collect();
    assert_eq!(elements(&v), want, "root hubs aside, by bus then ports");

    // Twins with one serial: only the port, and from which device.
    assert_eq!(
        device(&v, "1-1")["suggestion"],
        json!({"element": "id=10c4:ea60 port=1-1", "word": "'id=10c4:ea60 port=1-1'",
               "keys": "id_port", "port_because": "same_serial", "twins": ["002:002"]})
    );
    // No serial, and a twin.
    assert_eq!(
        device(&v, "3-1.5")["suggestion"],
        json!({"element": "id=0658:0200 port=3-1.5", "word": "'id=0658:0200 port=3-1.5'",
               "keys": "id_port", "port_because": "no_serial", "twins": ["003:003"]})
    );
    // A serial that needs quoting, as one bash word.
    assert_eq!(
        device(&v, "3-1.4")["suggestion"],
        json!({"element": "id=1050:0407 serial=\"K 2\"", "word": "'id=1050:0407 serial=\"K 2\"'",
               "keys": "id_serial", "port_because": null, "twins": []})
    );
    // Alone: the id, a bare word.
    assert_eq!(device(&v, "3-1")["suggestion"]["word"], "id=05e3:0608");
}

#[test]
fn who_has_each_device_and_what_it_is() {
    let proc_root = tempfile::tempdir().unwrap();
    let p = proc_root.path();
    holder(
        p,
        77,
        "qemu-system-x86",
        b"qemu-system-x86_64\0-name\0guest=g1,debug-threads=on\0",
        &["/dev/bus/usb/001/002"],
    );
    holder(p, 812, "seedd", b"seedd\0-k\0", &["/dev/bus/usb/003/006"]);
    let tree = guests();
    let r = report_in(&conf(), &tree.sysfs(), &hv(), p);
    let v = json_of(&r);
    assert_eq!(
        device(&v, "1-1"),
        &json!({
            "address": "001:002", "bus": 1, "dev": 2, "port": "1-1", "id": "10c4:ea60",
            "manufacturer": "Silicon Labs", "product": "CP2102N USB to UART Bridge Controller",
            "serial": "0001", "bitbabbler": false,
            "guest": "g1", "guest_uri": null,
            "hostdevs": [{"domain": "g1", "uri": null, "alias": "hostdev0", "bus": 1, "dev": 2,
                          "found_by": "address"}],
            "drivers": ["cp210x"],
            "held_by": [{"pid": 77, "name": "qemu-system-x86", "guest": "g1"}],
            "assigned_to": null, "matched_by": null,
            "suggestion": {"element": "id=10c4:ea60 port=1-1", "word": "'id=10c4:ea60 port=1-1'",
                           "keys": "id_port", "port_because": "same_serial",
                           "twins": ["002:002"]},
            "served_on": null,
        })
    );
    // The BitBabbler: on the host, held by seedd; g2's entry for it is at
    // an old address (stale), found by bbvirt's alias.
    let bb = device(&v, "3-2");
    assert_eq!(bb["guest"], Value::Null);
    assert_eq!(
        bb["hostdevs"],
        json!([{"domain": "g2", "uri": null, "alias": "ua-bbvirt-KWIF4Q", "bus": 3, "dev": 9,
                "found_by": "alias"}])
    );
    assert_eq!(
        bb["held_by"],
        json!([{"pid": 812, "name": "seedd", "guest": null}])
    );
    assert_eq!(
        (&bb["assigned_to"], &bb["matched_by"], &bb["bitbabbler"]),
        (&json!("g2"), &json!("DOMAIN_RNG_g2"), &json!(true))
    );
    let key = device(&v, "3-1.3");
    assert_eq!(
        (&key["assigned_to"], &key["matched_by"]),
        (&json!("g1"), &json!("DOMAIN_USB_g1[0]"))
    );
    assert_eq!(
        key["drivers"],
        json!(["usbhid"]),
        "an unbound interface adds none"
    );
    assert_eq!(
        device(&v, "3-1.2")["drivers"],
        json!(["cdc_acm"]),
        "each once"
    );
    let receiver = device(&v, "3-3");
    assert_eq!(
        (
            &receiver["manufacturer"],
            &receiver["product"],
            &receiver["serial"]
        ),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(v["libvirt"], json!({"reachable": true, "error": null}));
    assert_eq!(v["processes"], json!({"unreadable": 0}));

    assert_eq!(
        render_table(&r),
        r#"USB devices (root hubs aside):
  ADDRESS  PORT   ID         SERIAL    MANUFACTURER  PRODUCT                                    VM.CONF           USED BY
  001:002  1-1    10c4:ea60  "0001"    Silicon Labs  CP2102N USB to UART Bridge Controller      -                 guest g1
  002:002  2-1    10c4:ea60  "0001"    Silicon Labs  CP2102N USB to UART Bridge Controller      -                 host (cp210x)
  003:002  3-1    05e3:0608  (none)    Some Vendor   USB Device                                 -                 host (hub)
  003:003  3-1.2  0658:0200  (none)    Some Vendor   Z-Wave.Me UZB1 stick, 500 series, second…  -                 host (cdc_acm)
  003:004  3-1.3  1050:0407  "K1"      Some Vendor   USB Device                                 DOMAIN_USB_g1[0]  host (usbhid)
  003:005  3-1.4  1050:0407  "K 2"     Some Vendor   USB Device                                 -                 host
  003:007  3-1.5  0658:0200  (none)    Some Vendor   USB Device                                 -                 host
  003:006  3-2    0403:7840  "KWIF4Q"  Voicetronix   BitBabbler White                           DOMAIN_RNG_g2     host, held by seedd (pid 812); stale entry in g2
  003:008  3-3    046d:c52b  (none)    -             -                                          -                 host

Suggested DOMAIN_USB_ elements (each selects exactly its device among those plugged in):
  ADDRESS  ELEMENT                      NOTE
  001:002  'id=10c4:ea60 port=1-1'      only the port tells it from 002:002 (same id and serial): moved to another port, it needs a new element
  002:002  'id=10c4:ea60 port=2-1'      only the port tells it from 001:002 (same id and serial): moved to another port, it needs a new element
  003:002  id=05e3:0608
  003:003  'id=0658:0200 port=3-1.2'    no serial, and 003:007 has its id: only the port tells it apart; moved to another port, it needs a new element
  003:004  'id=1050:0407 serial=K1'
  003:005  'id=1050:0407 serial="K 2"'
  003:007  'id=0658:0200 port=3-1.5'    no serial, and 003:003 has its id: only the port tells it apart; moved to another port, it needs a new element
  003:006  id=0403:7840                 a BitBabbler: DOMAIN_RNG_<id>=( KWIF4Q ) gives it by its serial
  003:008  id=046d:c52b

Paste an element into DOMAIN_USB_<id>=( ... ) in /etc/bit-babbler/vm.conf,
<id> being the guest's name (or any shell identifier, with DOMAIN_NAME_<id>="NAME"),
then run bbvirt check, and bbvirt sync to attach what is plugged in.
"#
    );
}

#[test]
fn without_libvirt_the_host_side_and_the_guests_qemu() {
    let proc_root = tempfile::tempdir().unwrap();
    holder(
        proc_root.path(),
        77,
        "qemu-system-x86",
        b"qemu-system-x86_64\0-name\0guest=g1,debug-threads=on\0",
        &["/dev/bus/usb/001/002"],
    );
    let hv = hv().connect_error(VirtError::Down {
        uri: "the default URI".into(),
        message: "Failed to connect socket".into(),
    });
    let r = report_in(&conf(), &guests().sysfs(), &hv, proc_root.path());
    let v = json_of(&r);
    assert_eq!(v["libvirt"]["reachable"], false);
    let stick = device(&v, "1-1");
    assert_eq!(
        (&stick["guest"], &stick["guest_uri"], &stick["hostdevs"]),
        (&json!("g1"), &Value::Null, &json!([])),
        "the guest's QEMU holds it"
    );
    assert_eq!(device(&v, "3-2")["hostdevs"], json!([]));
    assert_eq!(elements(&v).len(), 9, "every device still listed");
    let table = render_table(&r);
    assert!(
        table.starts_with(
            "libvirt: unreachable, showing the host side only: libvirt is not running at \
             the default URI: Failed to connect socket\n\nUSB devices (root hubs aside):\n"
        ),
        "{table}"
    );
    assert!(table.contains("guest g1 (its QEMU holds it)\n"), "{table}");
}

/// What `bbvirt devices` prints as the suggestion, pasted into vm.conf and
/// read by the real parser (permissions, native parse or bash), routes
/// exactly that device, alone and all together.
#[test]
fn suggested_elements_pasted_into_vm_conf_route_exactly_their_device() {
    let tree = guests();
    let v = json_of(&report(&config(vec![]), &tree, &FakeHv::new()));
    let scan = tree.sysfs().scan().unwrap();
    let words: Vec<String> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["suggestion"]["word"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(words.len(), scan.usb.len());
    let dir = tempfile::tempdir().unwrap();
    for (i, word) in words.iter().enumerate() {
        assert_routes(
            dir.path(),
            &format!("DOMAIN_USB_g=( {word} )\n"),
            &scan.usb,
            &[(i, 0)],
        );
    }
    // All together, each to a guest of its own: a vm.conf made only of
    // the suggestions.
    let all: String = words
        .iter()
        .enumerate()
        .map(|(i, w)| format!("DOMAIN_USB_g{i}=( {w} )\n"))
        .collect();
    let want: Vec<(usize, usize)> = (0..words.len()).map(|i| (i, i)).collect();
    assert_routes(dir.path(), &all, &scan.usb, &want);
}

/// Writes `text` as vm.conf in `dir`, loads it as bbvirt does and checks
/// that the elements route exactly `want`: (device index, guest index).
fn assert_routes(
    dir: &Path,
    text: &str,
    usb: &[bbvirt::sysfs::UsbDevice],
    want: &[(usize, usize)],
) {
    let path = write_config(dir, text);
    let cfg = Config::load(&path)
        .unwrap_or_else(|e| panic!("{e}: {text:?}"))
        .expect("the file exists");
    let routed: Vec<(usize, usize)> = cfg
        .element_routes(usb)
        .iter()
        .filter_map(|(dev, route)| {
            let i = usb.iter().position(|d| std::ptr::eq(d, *dev))?;
            route.map(|(guest, _)| (i, guest))
        })
        .collect();
    assert_eq!(routed, want, "{text:?}");
}

/// Hostile strings as serial, manufacturer and product of twins (one id,
/// one serial), of a device with its own serial beside another of its id,
/// and of one alone: they never break the table, the JSON or the element,
/// and each element still routes exactly its device.
#[test]
fn hostile_descriptor_strings_break_nothing() {
    let mut corpus = crate::hostile::corpus();
    corpus.push(b"A\0B".to_vec()); // no element can hold a NUL
    corpus.push("rtl\u{202e}dne\u{2028}x\u{85}y".as_bytes().to_vec()); // moves text
    let dir = tempfile::tempdir().unwrap();
    for s in &corpus {
        let what = format!("{:?}", String::from_utf8_lossy(s));
        let tree = FixtureTree::new()
            .root_hub(1)
            .usb_device("1-1", "10c4", "ea60", None, 1, 2)
            .usb_device("1-2", "10c4", "ea60", None, 1, 3)
            .usb_device("1-3", "1050", "0407", None, 1, 4)
            .usb_device("1-4", "1050", "0407", Some("OTHER"), 1, 5)
            .usb_device("1-5", "046d", "c52b", None, 1, 6);
        let tree = ["1-1", "1-2", "1-3", "1-5"].iter().fold(tree, |t, name| {
            t.attr(name, "serial", s)
                .attr(name, "manufacturer", s)
                .attr(name, "product", s)
        });
        let r = report(&config(vec![]), &tree, &FakeHv::new());
        let v = json_of(&r);
        let lossy = bbvirt::sysfs::parse_serial_attr(s);
        for port in ["1-1", "1-2", "1-3", "1-5"] {
            let d = device(&v, port);
            for field in ["serial", "manufacturer", "product"] {
                assert_eq!(d[field], lossy.as_str(), "{what} {port} {field}");
            }
        }
        // The table: one line per device, nothing unsafe in it.
        let table = render_table(&r);
        assert!(
            !table
                .chars()
                .any(|c| c != '\n' && bbvirt::text::is_unsafe_char(c)),
            "{what}: {table}"
        );
        assert_eq!(
            table.lines().count(),
            2 + 5 + 1 + 2 + 5 + 4,
            "{what}: one line per device in each table\n{table}"
        );
        // The elements: one safe line each, routing exactly their device.
        let scan = tree.sysfs().scan().unwrap();
        for (i, d) in v["devices"].as_array().unwrap().iter().enumerate() {
            let word = d["suggestion"]["word"].as_str().unwrap();
            assert!(
                !word.chars().any(bbvirt::text::is_unsafe_char),
                "{what}: {word}"
            );
            assert_routes(
                dir.path(),
                &format!("DOMAIN_USB_g=( {word} )\n"),
                &scan.usb,
                &[(i, 0)],
            );
        }
        // Twins stay twins; the key with a usable serial goes by it.
        let key = &device(&v, "1-3")["suggestion"];
        let usable = !lossy.is_empty() && !lossy.contains('\0') && lossy != "OTHER";
        assert_eq!(
            key["keys"],
            if usable { "id_serial" } else { "id_port" },
            "{what}: {key}"
        );
        assert_eq!(device(&v, "1-1")["suggestion"]["keys"], "id_port", "{what}");
        assert_eq!(device(&v, "1-5")["suggestion"]["keys"], "id", "{what}");
    }
}

/// The JSON has the documented shape: schema 2, every device with every
/// field of the documented type.
fn check_schema(v: &Value) {
    assert_eq!(v["schema"], 2);
    let str_or_null = |x: &Value| x.is_string() || x.is_null();
    let int_or_null = |x: &Value| x.is_u64() || x.is_null();
    for d in v["devices"].as_array().expect("devices") {
        let o = d.as_object().unwrap();
        assert_eq!(o.len(), 18, "{d:#}");
        assert!(int_or_null(&d["served_on"]), "{d:#}");
        for k in ["address", "port", "id"] {
            assert!(d[k].is_string(), "{k}: {d:#}");
        }
        for k in ["bus", "dev"] {
            assert!(d[k].is_u64(), "{k}: {d:#}");
        }
        for k in [
            "manufacturer",
            "product",
            "serial",
            "guest",
            "guest_uri",
            "assigned_to",
            "matched_by",
        ] {
            assert!(str_or_null(&d[k]), "{k}: {d:#}");
        }
        assert!(d["bitbabbler"].is_boolean());
        assert!(
            d["drivers"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string)
        );
        for h in d["hostdevs"].as_array().unwrap() {
            assert_eq!(h.as_object().unwrap().len(), 6, "{h}");
            assert!(h["domain"].is_string() && str_or_null(&h["uri"]) && str_or_null(&h["alias"]));
            assert!(int_or_null(&h["bus"]) && int_or_null(&h["dev"]));
            assert!(["address", "alias"].contains(&h["found_by"].as_str().unwrap()));
        }
        for h in d["held_by"].as_array().unwrap() {
            assert!(h["pid"].is_u64() && h["name"].is_string() && str_or_null(&h["guest"]));
        }
        let s = &d["suggestion"];
        if !s.is_null() {
            assert_eq!(s.as_object().unwrap().len(), 5, "{s}");
            assert!(s["element"].is_string() && s["word"].is_string());
            assert!(["id", "id_serial", "id_port"].contains(&s["keys"].as_str().unwrap()));
            assert!(
                s["port_because"].is_null()
                    || ["same_serial", "no_serial", "unusable_serial"]
                        .contains(&s["port_because"].as_str().unwrap())
            );
            assert_eq!(s["port_because"].is_null(), s["keys"] != "id_port");
            assert!(s["twins"].as_array().unwrap().iter().all(Value::is_string));
        }
    }
    assert!(v["config"]["path"].is_string() && v["config"]["exists"].is_boolean());
    assert!(str_or_null(&v["config"]["error"]));
    assert!(v["libvirt"]["reachable"].is_boolean() && str_or_null(&v["libvirt"]["error"]));
    assert!(str_or_null(&v["sysfs"]["error"]));
    assert!(v["processes"]["unreadable"].is_u64());
    assert!(v["served"].is_array());
    assert_eq!(v.as_object().unwrap().len(), 7);
}

#[test]
fn the_json_has_every_documented_field_and_no_other() {
    let proc_root = tempfile::tempdir().unwrap();
    holder(
        proc_root.path(),
        812,
        "seedd",
        b"seedd\0",
        &["/dev/bus/usb/003/006"],
    );
    // An exporting host too: the BitBabbler served on 4000, a client there.
    let mut cfg = conf();
    cfg.serve = vec![(
        bbvirt::remote::endpoint::Port::new(4000).unwrap(),
        "port=3-2 tls=no".parse().unwrap(),
    )];
    crate::util::socket_tables(
        proc_root.path(),
        &[("10.0.0.7:4000", "10.0.0.2:50000", 0x01, 9)],
    );
    let v = json_of(&report_in(&cfg, &guests().sysfs(), &hv(), proc_root.path()));
    assert_eq!(device(&v, "3-2")["served_on"], 4000);
    let mut seen = std::collections::BTreeSet::new();
    keys_of(&v, &mut seen);
    assert_eq!(
        seen,
        documented_keys("LISTING DEVICES"),
        "doc/bbvirt.1, LISTING DEVICES"
    );
}

#[test]
fn no_devices_and_unreadable_sysfs() {
    let r = report(&conf(), &FixtureTree::new().root_hub(1), &hv());
    assert_eq!(json_of(&r)["devices"], json!([]));
    assert_eq!(
        render_table(&r),
        "USB devices: none plugged in (root hubs aside)\n"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bus/usb")).unwrap();
    std::fs::write(dir.path().join("bus/usb/devices"), "not a directory").unwrap();
    let r = report_in(
        &conf(),
        &Sysfs::new(dir.path()),
        &hv(),
        Path::new("/nonexistent"),
    );
    let v = json_of(&r);
    assert!(
        v["sysfs"]["error"]
            .as_str()
            .unwrap()
            .starts_with("reading "),
        "{v:#}"
    );
    assert!(render_table(&r).starts_with("sysfs: cannot list USB devices: reading "));
}

/// The binary: `devices` and `list`, against libvirt's test driver, without
/// libvirt, with a vm.conf it cannot use, without sysfs.
#[test]
fn binary() {
    let tree = guests();
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), "DOMAIN_USB_test=( 'id=1050:0407 serial=K1' )\n");
    let conf = conf.to_str().unwrap();
    let run = |args: &[&str]| bbvirt(tree.root(), args);

    let (out, err) = expect_exit(
        &run(&["-C", conf, "devices", "--json", "-c", "test:///default"]),
        exit::OK,
    );
    assert_eq!(err, "");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    check_schema(&v);
    assert_eq!(v["libvirt"], json!({"reachable": true, "error": null}));
    assert_eq!(
        v["config"],
        json!({"path": conf, "exists": true, "error": null})
    );
    assert_eq!(device(&v, "3-1.3")["matched_by"], "DOMAIN_USB_test[0]");
    assert_eq!(elements(&v).len(), 9);

    let (table, _) = expect_exit(
        &run(&["-C", conf, "list", "-c", "test:///default"]),
        exit::OK,
    );
    assert!(
        table.starts_with("USB devices (root hubs aside):\n"),
        "{table}"
    );
    let line = |start: &str| {
        table
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("  001:002  'id="),
        "001:002 'id=10c4:ea60 port=1-1' only the port tells it from 002:002 \
         (same id and serial): moved to another port, it needs a new element"
    );
    assert_eq!(
        line("  003:005  'id="),
        "003:005 'id=1050:0407 serial=\"K 2\"'"
    );
    assert!(
        table.contains(&format!(
            "Paste an element into DOMAIN_USB_<id>=( ... ) in {conf},\n"
        )),
        "{table}"
    );

    // No libvirt: the host side, exit 0.
    let (out, _) = expect_exit(
        &run(&["-C", conf, "devices", "--json", "-c", "bogus:///x"]),
        exit::OK,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["libvirt"]["reachable"], false);
    assert_eq!(elements(&v).len(), 9);

    // A vm.conf it cannot use: listed anyway, without assignments.
    let bad = write_config(dir.path(), "DOMAIN_USB_test=( 'id=1050:04' )\n");
    let (out, _) = expect_exit(
        &run(&[
            "-C",
            bad.to_str().unwrap(),
            "devices",
            "--json",
            "-c",
            "bogus:///x",
        ]),
        exit::OK,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["config"]["error"]
            .as_str()
            .unwrap()
            .contains("vm.conf:1: DOMAIN_USB_test[0] \"id=1050:04\": invalid USB id"),
        "{v:#}"
    );
    assert_eq!(device(&v, "3-1.3")["matched_by"], Value::Null);
    let (table, _) = expect_exit(
        &run(&["-C", bad.to_str().unwrap(), "list", "-c", "bogus:///x"]),
        exit::OK,
    );
    assert!(
        table.contains("vm.conf: cannot be used: devices shown without their assignments\n"),
        "{table}"
    );

    // No vm.conf yet: nothing wrong, the hint says so.
    let missing = dir.path().join("none.conf");
    let (table, _) = expect_exit(
        &run(&["-C", missing.to_str().unwrap(), "list", "-c", "bogus:///x"]),
        exit::OK,
    );
    assert!(table.contains("(it does not exist yet)"), "{table}");

    // No sysfs to read: exit 1.
    let broken = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(broken.path().join("bus/usb")).unwrap();
    std::fs::write(broken.path().join("bus/usb/devices"), "x").unwrap();
    let (out, _) = expect_exit(
        &bbvirt(broken.path(), &["-C", conf, "devices", "-c", "bogus:///x"]),
        exit::FAILED,
    );
    assert!(out.starts_with("sysfs: cannot list USB devices: "), "{out}");
}
