//! The scene the action and status tests share: two guests on the default
//! URI and a host holding their devices (plus one nobody's), built from
//! [`super::fixture`] and [`super::fake`].

use bbvirt::config::{Config, DomainConf};

use super::fake::FakeHv;
use super::fixture::FixtureTree;

pub fn dom(id: &str, name: Option<&str>, uri: Option<&str>, serials: &[&str]) -> DomainConf {
    DomainConf {
        id: id.into(),
        name: name.map(Into::into),
        uri: uri.map(Into::into),
        serials: serials.iter().map(|s| s.to_string()).collect(),
        usb: Vec::new(),
        remote: Vec::new(),
    }
}

pub fn config(domains: Vec<DomainConf>) -> Config {
    Config {
        path: "/etc/bit-babbler/vm.conf".into(),
        domains,
        ..Config::default()
    }
}

/// Two guests on the default URI: g1 has KWIF4Q and JAMMB3, g2 has QX3TZ7A.
pub fn two_guests() -> Config {
    config(vec![
        dom("g1", None, None, &["KWIF4Q", "JAMMB3"]),
        dom("g2", None, None, &["QX3TZ7A"]),
    ])
}

/// Bus 1: KWIF4Q at 1:4, JAMMB3 at 1:5; bus 3 behind two hubs: QX3TZ7A at
/// 3:9 and the unassigned UNASS1 at 3:10.
pub fn tree() -> FixtureTree {
    FixtureTree::new()
        .root_hub(1)
        .root_hub(3)
        .bitbabbler("1-1", Some("KWIF4Q"), 1, 4)
        .bitbabbler("1-2", Some("JAMMB3"), 1, 5)
        .usb_device("3-1", "05e3", "0608", None, 3, 2)
        .usb_device("3-1.4", "05e3", "0608", None, 3, 3)
        .bitbabbler("3-1.4.2", Some("QX3TZ7A"), 3, 9)
        .bitbabbler("3-1.4.3", Some("UNASS1"), 3, 10)
}

/// Runs `f` in a [`Context`] of `cfg`, `tree`'s sysfs and the fake `hv`
/// (no lock, no readiness gate).
pub fn in_context<T>(
    cfg: &Config,
    tree: &FixtureTree,
    hv: &FakeHv,
    opts: bbvirt::cli::Opts,
    f: impl FnOnce(&bbvirt::context::Context) -> T,
) -> T {
    let sysfs = tree.sysfs();
    let ctx = bbvirt::context::Context {
        config: cfg,
        sysfs: &sysfs,
        hv,
        opts: &opts,
        lock_dir: None,
        readiness: None,
    };
    f(&ctx)
}

/// A fake libvirt with these domains running on the default URI.
pub fn running(names: &[&str]) -> FakeHv {
    names
        .iter()
        .fold(FakeHv::new(), |hv, n| hv.domain(None, n, true))
}

/// A fixture host for the readiness gate (bbvirt::daemon): systemd booted,
/// bbvirt-sync.service installed, libvirtd running as pid 812.
pub fn gated_host(dir: &std::path::Path) -> bbvirt::daemon::HostPaths {
    let p = |rel: &str| dir.join(rel);
    std::fs::create_dir_all(p("run/systemd/system")).unwrap();
    std::fs::create_dir_all(p("units")).unwrap();
    std::fs::write(p("units/bbvirt-sync.service"), "[Service]\n").unwrap();
    std::fs::write(p("run/libvirtd.pid"), "812\n").unwrap();
    std::fs::create_dir_all(p("proc/812")).unwrap();
    std::fs::write(
        p("proc/812/stat"),
        "812 (libvirtd) S 1 812 812 0 -1 0 0 0 0 0 0 0 0 0 20 0 17 0 5000 0 0\n",
    )
    .unwrap();
    bbvirt::daemon::HostPaths {
        proc_root: p("proc"),
        run_dir: p("run/bbvirt"),
        systemd_booted: p("run/systemd/system"),
        unit_dirs: vec![p("units")],
        pidfiles: vec![p("run/libvirtd.pid")],
    }
}
