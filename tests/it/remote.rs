//! A guest's remote devices (`DOMAIN_REMOTE_`): sync gives each running
//! guest a redirdev per exporting host and port, replaces what is wrong,
//! never touches an admin's redirdev; detach-all removes bbvirt's.

use bbvirt::actions::Outcome;
use bbvirt::cli::Opts;
use bbvirt::config::Config;

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
