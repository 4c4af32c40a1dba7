//! A guest's remote devices (`DOMAIN_REMOTE_`): sync gives each running
//! guest a redirdev per exporting host and port, replaces what is wrong,
//! never touches an admin's redirdev; detach-all removes bbvirt's;
//! attach and detach HOST:PORT one of them, by its endpoint.

use bbvirt::actions::Outcome;
use bbvirt::cli::Opts;
use bbvirt::config::Config;
use bbvirt::libvirt::VirtError;
use bbvirt::remote::endpoint::Endpoint;

use crate::util::{bbvirt, expect_exit, write_config};

use crate::util::scene::in_context as run;
use crate::util::scene::{config, dom, running, tree};

/// g1 gets zigbee.lan:4000 through the tunnel and 10.0.0.7:4001 in
/// plaintext; g2 gets KWIF4Q only.
fn remote_config() -> Config {
    let mut g1 = dom("g1", None, None, &[]);
    g1.remote = ["zigbee.lan:4000", "10.0.0.7:4001 tls=no"]
        .iter()
        .map(|e| e.parse().unwrap())
        .collect();
    config(vec![g1, dom("g2", None, None, &["KWIF4Q"])])
}

const ZIGBEE: &str = "ua-bbnet-n-zigbee_lan-4000";
const PLAIN: &str = "ua-bbnet-4-10_0_0_7-4001";

#[test]
fn sync_attaches_each_remote_device_once_and_converges() {
    let hv = running(&["g1", "g2"]);
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.sync(None)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    let calls: Vec<String> = hv.calls().iter().map(ToString::to_string).collect();
    assert_eq!(
        calls,
        [
            format!("attach-redir - g1 {ZIGBEE} 127.0.0.1:4000"),
            format!("attach-redir - g1 {PLAIN} 10.0.0.7:4001"),
            "attach - g2 ua-bbvirt-KWIF4Q 1:4".to_string(),
        ]
    );
    assert!(hv.redirdevs(None, "g2").is_empty());
    // A second sync changes nothing.
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.sync(None)
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert_eq!(hv.calls().len(), 3);
}

#[test]
fn sync_replaces_a_wrong_source_removes_an_unwanted_one_and_leaves_the_admins() {
    let hv = running(&["g1", "g2"])
        .redirdev(None, "g1", ZIGBEE, "127.0.0.1", "9999") // another source
        .redirdev(None, "g1", "ua-bbnet-n-old_lan-4005", "127.0.0.1", "4005") // not in vm.conf
        .redirdev(None, "g1", "ua-spice", "127.0.0.1", "5900") // the admin's
        .redirdev(None, "g2", PLAIN, "10.0.0.7", "4001"); // g1's device in g2
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.sync(None)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    let mut g1 = hv.redirdevs(None, "g1");
    g1.sort();
    assert_eq!(
        g1,
        [
            (PLAIN.to_string(), "10.0.0.7:4001".to_string()),
            (ZIGBEE.to_string(), "127.0.0.1:4000".to_string()),
            ("ua-spice".to_string(), "127.0.0.1:5900".to_string()),
        ]
    );
    assert!(
        hv.redirdevs(None, "g2").is_empty(),
        "g2 is given no remote device"
    );
}

#[test]
fn detach_all_removes_bbvirts_redirdevs_only_and_a_dry_run_nothing() {
    let hv = running(&["g1", "g2"])
        .redirdev(None, "g1", ZIGBEE, "127.0.0.1", "4000")
        .redirdev(None, "g1", "ua-spice", "127.0.0.1", "5900");
    let dry = Opts {
        dry_run: true,
        ..Opts::default()
    };
    let out = run(&remote_config(), &tree(), &hv, dry.clone(), |e| {
        e.detach_all(None)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    let out = run(&remote_config(), &tree(), &hv, dry, |e| e.sync(None));
    assert_eq!(out.unwrap(), Outcome::Done);
    assert!(hv.calls().is_empty(), "{:?}", hv.calls());
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.detach_all(Some("g1"))
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        hv.redirdevs(None, "g1"),
        [("ua-spice".to_string(), "127.0.0.1:5900".to_string())]
    );
}

#[test]
fn a_guest_that_does_not_run_gets_nothing() {
    let hv = running(&["g2"]).domain(None, "g1", false);
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.sync(Some("g1"))
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert!(hv.calls().is_empty());
}

#[test]
fn detach_by_endpoint_from_whichever_guest_holds_it() {
    // g1's device sits in g2 too (by hand); an admin's redirdev stays.
    let hv = running(&["g1", "g2"])
        .redirdev(None, "g1", ZIGBEE, "127.0.0.1", "4000")
        .redirdev(None, "g1", PLAIN, "10.0.0.7", "4001")
        .redirdev(None, "g1", "ua-spice", "127.0.0.1", "5900")
        .redirdev(None, "g2", ZIGBEE, "127.0.0.1", "4000");
    let zigbee: Endpoint = "zigbee.lan:4000".parse().unwrap();
    let dry = Opts {
        dry_run: true,
        ..Opts::default()
    };
    let out = run(&remote_config(), &tree(), &hv, dry, |e| {
        e.detach_endpoint(&zigbee)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert!(hv.calls().is_empty(), "a dry run changes nothing");
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.detach_endpoint(&zigbee)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    let mut g1 = hv.redirdevs(None, "g1");
    g1.sort();
    assert_eq!(
        g1,
        [
            (PLAIN.to_string(), "10.0.0.7:4001".to_string()),
            ("ua-spice".to_string(), "127.0.0.1:5900".to_string()),
        ]
    );
    assert!(hv.redirdevs(None, "g2").is_empty());
    // Again: nothing holds it, nothing to do; the same name in another
    // case is the same device.
    let upper: Endpoint = "ZIGBEE.LAN:4000".parse().unwrap();
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.detach_endpoint(&upper)
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    // -D narrows it to one guest, configured or not.
    let hv = running(&["g1", "other"])
        .redirdev(None, "g1", PLAIN, "10.0.0.7", "4001")
        .redirdev(None, "other", PLAIN, "10.0.0.7", "4001");
    let plain: Endpoint = "10.0.0.7:4001".parse().unwrap();
    let other = Opts {
        domain: Some("other".into()),
        ..Opts::default()
    };
    let out = run(&remote_config(), &tree(), &hv, other, |e| {
        e.detach_endpoint(&plain)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert!(hv.redirdevs(None, "other").is_empty());
    assert_eq!(hv.redirdevs(None, "g1").len(), 1, "g1 keeps its own");
}

#[test]
fn attach_by_endpoint_gives_it_as_sync_would_and_nothing_else() {
    // g1 holds an unwanted redirdev that sync would remove: attach leaves it.
    let hv = running(&["g1", "g2"])
        .redirdev(None, "g1", "ua-bbnet-n-old_lan-4005", "127.0.0.1", "4005")
        .redirdev(None, "g1", PLAIN, "10.0.0.7", "9999"); // wrong source
    let plain: Endpoint = "10.0.0.7:4001".parse().unwrap();
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.attach_endpoint(&plain)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    let mut g1 = hv.redirdevs(None, "g1");
    g1.sort();
    assert_eq!(
        g1,
        [
            (PLAIN.to_string(), "10.0.0.7:4001".to_string()),
            (
                "ua-bbnet-n-old_lan-4005".to_string(),
                "127.0.0.1:4005".to_string()
            ),
        ]
    );
    let zigbee: Endpoint = "zigbee.lan:4000".parse().unwrap();
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.attach_endpoint(&zigbee)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert!(
        hv.redirdevs(None, "g1")
            .contains(&(ZIGBEE.to_string(), "127.0.0.1:4000".to_string())),
        "through the tunnel, as its element says"
    );
    let calls = hv.calls().len();
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.attach_endpoint(&zigbee)
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo, "already attached");
    // -D sends it elsewhere, still as its element says.
    let to_g2 = Opts {
        domain: Some("g2".into()),
        ..Opts::default()
    };
    let out = run(&remote_config(), &tree(), &hv, to_g2, |e| {
        e.attach_endpoint(&zigbee)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        hv.redirdevs(None, "g2"),
        [(ZIGBEE.to_string(), "127.0.0.1:4000".to_string())]
    );
    assert_eq!(hv.calls().len(), calls + 1);
    // A device no element names: nothing to do (tls or not is unknown).
    let unknown: Endpoint = "[fd00::9]:4100".parse().unwrap();
    let out = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.attach_endpoint(&unknown)
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    // A dry run changes nothing.
    let hv = running(&["g1"]);
    let dry = Opts {
        dry_run: true,
        ..Opts::default()
    };
    let out = run(&remote_config(), &tree(), &hv, dry, |e| {
        e.attach_endpoint(&zigbee)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert!(hv.calls().is_empty());
}

#[test]
fn the_binary_takes_host_port_tells_it_from_bus_dev_and_names_a_bad_one() {
    let tree = tree();
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(
        dir.path(),
        "DOMAIN_REMOTE_test=( \"zigbee.lan:4000\" \"[fd00::7]:4001 tls=no\" )\n",
    );
    let conf = conf.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["-C", conf, "-c", "test:///default"];
        all.extend_from_slice(args);
        bbvirt(tree.root(), &all)
    };
    // A dry run of an attach shows the request and, with -vv, the XML.
    let (out, err) = expect_exit(&run(&["-n", "-vv", "attach", "[fd00::7]:4001"]), 0);
    assert_eq!(
        out,
        "virsh -c test:///default attach-device test <xml> --live\n"
    );
    assert!(
        err.contains("<source mode='connect' host='fd00::7' service='4001'>"),
        "{err}"
    );
    // Nothing holds it: said, exit 0.
    let (_, err) = expect_exit(&run(&["-v", "detach", "zigbee.lan:4000"]), 0);
    assert!(
        err.contains("zigbee.lan:4000 is not attached to any guest bbvirt looked at"),
        "{err}"
    );
    // 1:2 stays a device address (a detach by address works after an
    // unplug: nothing holds it, exit 0).
    let (_, err) = expect_exit(&run(&["detach", "1:2"]), 0);
    assert!(!err.contains("remote"), "{err}");
    for (bad, says) in [
        ("fe80::1:4000", "write it in brackets, as in [fe80::1]"),
        ("exporter.lan:99999", "invalid port '99999'"),
        ("evil'/><x:1", "invalid host name 'evil'/><x'"),
    ] {
        for action in ["attach", "detach"] {
            let (out, err) = expect_exit(&run(&[action, bad]), bbvirt::exit::USAGE);
            assert_eq!(out, "");
            assert!(
                err.starts_with(&format!("bbvirt: error: invalid remote device '{bad}'")),
                "{err}"
            );
            assert!(err.contains(says), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}

#[test]
fn libvirt_down_is_nothing_to_do_and_a_dry_run_shows_the_request() {
    let down = || {
        running(&["g1", "g2"]).connect_error(VirtError::Down {
            uri: "qemu:///system".into(),
            message: "Failed to connect socket: Connection refused".into(),
        })
    };
    let zigbee: Endpoint = "zigbee.lan:4000".parse().unwrap();
    for dry_run in [false, true] {
        let opts = Opts {
            dry_run,
            ..Opts::default()
        };
        let hv = down();
        let out = run(&remote_config(), &tree(), &hv, opts.clone(), |e| {
            e.detach_endpoint(&zigbee)
        });
        // A dry run plans the detach from g1, whose element names it.
        let want = if dry_run {
            Outcome::Done
        } else {
            Outcome::NothingToDo
        };
        assert_eq!(out.unwrap(), want, "detach, dry run {dry_run}");
        let out = run(&remote_config(), &tree(), &hv, opts, |e| {
            e.attach_endpoint(&zigbee)
        });
        assert_eq!(out.unwrap(), want, "attach, dry run {dry_run}");
        assert!(hv.calls().is_empty());
    }
    // Another error of libvirt is an error naming the device and guest.
    let hv = running(&["g1"]).connect_error(VirtError::Connect {
        uri: "qemu:///system".into(),
        message: "Failed to connect socket".into(),
    });
    let err = run(&remote_config(), &tree(), &hv, Opts::default(), |e| {
        e.detach_endpoint(&zigbee)
    })
    .unwrap_err();
    // Each configured guest was tried: one error each, kept.
    let bbvirt::actions::ActionError::Partial { errors, total: 2 } = err else {
        panic!("{err:?}");
    };
    let msg = errors[0].to_string();
    assert!(
        msg.contains("zigbee.lan:4000") && msg.contains("'g1'"),
        "{msg}"
    );
}
