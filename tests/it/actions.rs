//! attach, detach, attach-all, detach-all against fixture sysfs trees and a
//! fake hypervisor (real libvirt is exercised by tests/cli.rs with libvirt's
//! test driver and by the lab).

use crate::util::fake::FakeHv;

/// A DEVICE as the command line gives it to the actions.
fn id(device: &str) -> DeviceId {
    device.parse().unwrap()
}
use crate::util::fixture::FixtureTree;
use crate::util::scene::{config, dom, gated_host, running, tree, two_guests};
use bbvirt::actions::{ActionError, Outcome};
use bbvirt::cli::Opts;
use bbvirt::config::Config;
use bbvirt::context::Context;
use bbvirt::device::DeviceId;
use bbvirt::exit::{self, CommandError};
use bbvirt::libvirt::VirtError;

use crate::util::scene::in_context as run;

#[test]
fn attach_by_each_device_form_goes_to_the_configured_guest() {
    for device in ["KWIF4Q", "1:4", "001:004", "1-1"] {
        let hv = running(&["g1", "g2"]);
        let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
            e.attach(&id(device))
        });
        assert_eq!(out.unwrap(), Outcome::Done, "{device}");
        assert_eq!(
            hv.hostdevs(None, "g1"),
            vec![("ua-bbvirt-KWIF4Q".into(), 1, 4)]
        );
        assert!(hv.hostdevs(None, "g2").is_empty());
        assert_eq!(hv.connects(), vec![None], "default URI: no URI passed");
    }
}

#[test]
fn attach_twice_is_a_no_op() {
    let hv = running(&["g1"]).with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4);
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("KWIF4Q"))
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert!(hv.calls().is_empty());
    assert_eq!(hv.hostdevs(None, "g1").len(), 1);
}

#[test]
fn stale_entry_at_an_old_address_is_replaced() {
    let hv = running(&["g1"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 2)
        .detach_lag(3);
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("1:4"))
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        hv.call_lines(),
        vec![
            "detach - g1 ua-bbvirt-KWIF4Q",
            "attach - g1 ua-bbvirt-KWIF4Q 1:4"
        ]
    );
    assert_eq!(
        hv.hostdevs(None, "g1"),
        vec![("ua-bbvirt-KWIF4Q".into(), 1, 4)]
    );
}

#[test]
fn unassigned_device_stays_with_the_host_without_asking_libvirt() {
    let hv = running(&["g1", "g2"]);
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("UNASS1"))
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert!(hv.connects().is_empty());
}

#[test]
fn guest_not_running_or_not_defined_is_nothing_to_do() {
    let hv = FakeHv::new().domain(None, "g1", false);
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("KWIF4Q"))
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("QX3TZ7A"))
    });
    assert_eq!(
        out.unwrap(),
        Outcome::NothingToDo,
        "g2 is not defined at all"
    );
    assert!(hv.calls().is_empty());
}

#[test]
fn libvirt_failures_are_errors_with_exit_1() {
    let hv = running(&["g1"]).attach_error(VirtError::Failed {
        code: 1,
        message: "internal error".into(),
    });
    let err = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("KWIF4Q"))
    })
    .unwrap_err();
    let err = CommandError::from(err);
    assert_eq!(err.exit_code(), exit::FAILED);
    assert!(
        err.to_string().contains("attaching KWIF4Q on domain 'g1'"),
        "{err}"
    );

    let hv = running(&["g1"]).connect_error(VirtError::Connect {
        uri: "qemu:///system".into(),
        message: "Failed to connect socket".into(),
    });
    let err = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("KWIF4Q"))
    })
    .unwrap_err();
    let err = CommandError::from(err);
    assert_eq!(err.exit_code(), exit::FAILED);
    // A race: the guest stopped between the XML read and the attach.
    let hv = running(&["g1"]).attach_error(VirtError::NotRunning("g1".into()));
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("KWIF4Q"))
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
}

#[test]
fn libvirt_not_running_is_nothing_to_do_for_every_action() {
    let down = || {
        running(&["g1", "g2"]).connect_error(VirtError::Down {
            uri: "qemu:///system".into(),
            message: "Failed to connect socket: Connection refused".into(),
        })
    };
    type Act = fn(&Context) -> Result<Outcome, bbvirt::actions::ActionError>;
    let acts: [(&str, Act); 5] = [
        ("attach", |e| e.attach(&id("KWIF4Q"))),
        ("detach", |e| e.detach(&id("KWIF4Q"))),
        ("sync", |e| e.sync(None)),
        ("detach-all", |e| e.detach_all(None)),
        ("sync g1", |e| e.sync(Some("g1"))),
    ];
    for (what, act) in acts {
        let hv = down();
        let out = run(&two_guests(), &tree(), &hv, Opts::default(), act);
        assert_eq!(out.unwrap(), Outcome::NothingToDo, "{what}");
        assert!(hv.calls().is_empty(), "{what}: {:?}", hv.calls());
    }
}

#[test]
fn domain_and_uri_precedence_with_name_mapping() {
    let cfg = config(vec![
        dom(
            "kbsd",
            Some("kbsd-unstable"),
            Some("qemu+ssh://h/system"),
            &["KWIF4Q"],
        ),
        dom("other", None, None, &["JAMMB3"]),
    ]);
    // Configured routing: DOMAIN_NAME_ and DOMAIN_URI_ apply.
    let hv = FakeHv::new().domain(Some("qemu+ssh://h/system"), "kbsd-unstable", true);
    run(&cfg, &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("KWIF4Q"))
    })
    .unwrap();
    assert_eq!(
        hv.call_lines(),
        vec!["attach qemu+ssh://h/system kbsd-unstable ua-bbvirt-KWIF4Q 1:4"]
    );

    // --domain by config id maps to the libvirt name and the id's URI.
    let hv = FakeHv::new().domain(Some("qemu+ssh://h/system"), "kbsd-unstable", true);
    let opts = Opts {
        domain: Some("kbsd".into()),
        ..Opts::default()
    };
    run(&cfg, &tree(), &hv, opts, |e| e.attach(&id("JAMMB3"))).unwrap();
    assert_eq!(
        hv.call_lines(),
        vec!["attach qemu+ssh://h/system kbsd-unstable ua-bbvirt-JAMMB3 1:5"]
    );

    // --domain by libvirt name finds the same entry.
    let hv = FakeHv::new().domain(Some("qemu+ssh://h/system"), "kbsd-unstable", true);
    let opts = Opts {
        domain: Some("kbsd-unstable".into()),
        ..Opts::default()
    };
    run(&cfg, &tree(), &hv, opts, |e| e.attach(&id("JAMMB3"))).unwrap();
    assert_eq!(hv.connects(), vec![Some("qemu+ssh://h/system".into())]);

    // --connect beats DOMAIN_URI_.
    let hv = FakeHv::new().domain(Some("qemu:///session"), "kbsd-unstable", true);
    let opts = Opts {
        connect: Some("qemu:///session".into()),
        ..Opts::default()
    };
    run(&cfg, &tree(), &hv, opts, |e| e.attach(&id("KWIF4Q"))).unwrap();
    assert_eq!(hv.connects(), vec![Some("qemu:///session".into())]);

    // An unconfigured --domain is used verbatim, on the default URI.
    let hv = FakeHv::new().domain(None, "adhoc guest", true);
    let opts = Opts {
        domain: Some("adhoc guest".into()),
        ..Opts::default()
    };
    run(&cfg, &tree(), &hv, opts, |e| e.attach(&id("UNASS1"))).unwrap();
    assert_eq!(
        hv.call_lines(),
        vec!["attach - adhoc guest ua-bbvirt-UNASS1 3:10"]
    );
}

#[test]
fn first_domain_in_file_order_wins_a_shared_serial() {
    let cfg = config(vec![
        dom("a", None, None, &["KWIF4Q"]),
        dom("b", None, None, &["KWIF4Q"]),
    ]);
    let hv = running(&["a", "b"]);
    run(&cfg, &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("KWIF4Q"))
    })
    .unwrap();
    assert_eq!(hv.call_lines(), vec!["attach - a ua-bbvirt-KWIF4Q 1:4"]);
    // attach-all b does not steal it.
    let hv = running(&["a", "b"]);
    run(&cfg, &tree(), &hv, Opts::default(), |e| e.sync(Some("b"))).unwrap();
    assert!(hv.calls().is_empty());
}

#[test]
fn hints_must_agree_with_sysfs() {
    let hv = running(&["g1"]);
    let opts = Opts {
        busnum: Some(2),
        ..Opts::default()
    };
    let err = run(&two_guests(), &tree(), &hv, opts, |e| {
        e.attach(&id("KWIF4Q"))
    })
    .unwrap_err();
    let err = CommandError::from(err);
    assert_eq!(err.exit_code(), exit::NOT_FOUND);
    assert_eq!(
        err.to_string(),
        "device KWIF4Q has bus number 1, but --busnum says 2"
    );
    let opts = Opts {
        busnum: Some(1),
        devnum: Some(5),
        ..Opts::default()
    };
    let err = run(&two_guests(), &tree(), &hv, opts, |e| {
        e.attach(&id("KWIF4Q"))
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "device KWIF4Q has device number 4, but --devnum says 5"
    );
    let opts = Opts {
        busnum: Some(1),
        devnum: Some(4),
        ..Opts::default()
    };
    run(&two_guests(), &tree(), &hv, opts, |e| {
        e.attach(&id("KWIF4Q"))
    })
    .unwrap();
    assert_eq!(hv.call_lines(), vec!["attach - g1 ua-bbvirt-KWIF4Q 1:4"]);
}

#[test]
fn absent_devices() {
    // (An invalid DEVICE, "kwif4q" or "1:2:3", never reaches an action: the
    // command line refuses it with exit 2, see cli::invalid_devices_exit_2.)
    let hv = running(&["g1"]);
    for (device, code) in [
        ("ZZZZZZ", exit::NOT_FOUND),
        ("9:9", exit::NOT_FOUND),
        ("1-7", exit::NOT_FOUND),
    ] {
        let err = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
            e.attach(&id(device))
        })
        .unwrap_err();
        let err = CommandError::from(err);
        assert_eq!(err.exit_code(), code, "{device}: {err}");
    }
}

#[test]
fn hostile_serial_cannot_choose_its_domain() {
    // The serial claims "-D victim"; even a config entry with that exact
    // string does not make it routable.
    let t = tree().bitbabbler("1-3", Some("AAAAAA -D victim"), 1, 7);
    let cfg = config(vec![
        dom("g1", None, None, &["AAAAAA -D victim"]),
        dom("victim", None, None, &[]),
    ]);
    let hv = running(&["g1", "victim"]);
    let out = run(&cfg, &t, &hv, Opts::default(), |e| e.attach(&id("1:7")));
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert!(hv.connects().is_empty());
    // Asked explicitly, it is an error, not an attach.
    let opts = Opts {
        domain: Some("g1".into()),
        ..Opts::default()
    };
    let err = run(&cfg, &t, &hv, opts, |e| e.attach(&id("1:7"))).unwrap_err();
    assert!(matches!(err, ActionError::UnusableSerial { .. }), "{err}");
    assert!(hv.calls().is_empty());
    let out = run(&cfg, &t, &hv, Opts::default(), |e| e.sync(None));
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert!(hv.calls().is_empty());
}

#[test]
fn detach_by_serial_after_unplug_goes_by_alias() {
    let t = tree().vanish("1-1");
    let hv = running(&["g1"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4)
        .with_hostdev(None, "g1", "hostdev0", 1, 9)
        .detach_lag(2);
    let out = run(&two_guests(), &t, &hv, Opts::default(), |e| {
        e.detach(&id("KWIF4Q"))
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        hv.hostdevs(None, "g1"),
        vec![("hostdev0".into(), 1, 9)],
        "only bbvirt's entry goes"
    );
}

#[test]
fn detach_by_address_after_unplug_searches_configured_guests() {
    let t = tree().vanish("1-1").vanish("3-1.4.2");
    let hv = running(&["g1", "g2"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4)
        .with_hostdev(None, "g2", "ua-bbvirt-QX3TZ7A", 3, 9)
        .with_hostdev(None, "g2", "manual", 1, 4);
    let out = run(&two_guests(), &t, &hv, Opts::default(), |e| {
        e.detach(&id("001:004"))
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert!(hv.hostdevs(None, "g1").is_empty());
    assert_eq!(
        hv.hostdevs(None, "g2").len(),
        2,
        "the admin's own hostdev at 1:4 is left alone"
    );
    // Nothing at that address any more: a no-op.
    let out = run(&two_guests(), &t, &hv, Opts::default(), |e| {
        e.detach(&id("1:4"))
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    // A physical address of an absent device cannot be resolved.
    let err = run(&two_guests(), &t, &hv, Opts::default(), |e| {
        e.detach(&id("1-1"))
    })
    .unwrap_err();
    let err = CommandError::from(err);
    assert_eq!(err.exit_code(), exit::NOT_FOUND);
}

#[test]
fn detach_by_serial_with_hints_only_takes_the_hinted_address() {
    // The original's udev rules pass the serial plus --busnum/--devnum on remove.
    let t = tree().vanish("1-1");
    let hv = running(&["g1"]).with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 6);
    let opts = Opts {
        busnum: Some(1),
        devnum: Some(4),
        ..Opts::default()
    };
    let out = run(&two_guests(), &t, &hv, opts, |e| e.detach(&id("KWIF4Q")));
    assert_eq!(
        out.unwrap(),
        Outcome::NothingToDo,
        "the entry at 1:6 is a newer plug"
    );
    assert_eq!(hv.hostdevs(None, "g1").len(), 1);
}

#[test]
fn detach_of_a_present_device_and_a_no_op() {
    let hv = running(&["g1"]).with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4);
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.detach(&id("1-1"))
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.detach(&id("KWIF4Q"))
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert_eq!(hv.call_lines(), vec!["detach - g1 ua-bbvirt-KWIF4Q"]);
}

#[test]
fn detach_that_never_completes_times_out_with_an_error() {
    let hv = running(&["g1"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4)
        .detach_never_completes();
    let err = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.detach(&id("KWIF4Q"))
    })
    .unwrap_err();
    let err = CommandError::from(err);
    assert!(
        matches!(err, CommandError::Action(ActionError::DetachTimeout { .. })),
        "{err}"
    );
    assert_eq!(err.exit_code(), exit::FAILED);
}

#[test]
fn attach_all_one_connection_per_uri_and_skips_absent() {
    let cfg = config(vec![
        dom("g1", None, None, &["KWIF4Q", "ABSENT1", "JAMMB3"]),
        dom("g2", None, Some("qemu:///other"), &["QX3TZ7A"]),
        dom("g3", None, None, &[]),
    ]);
    let hv = running(&["g1", "g3"]).domain(Some("qemu:///other"), "g2", true);
    let out = run(&cfg, &tree(), &hv, Opts::default(), |e| e.sync(None));
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        hv.call_lines(),
        vec![
            "attach - g1 ua-bbvirt-KWIF4Q 1:4",
            "attach - g1 ua-bbvirt-JAMMB3 1:5",
            "attach qemu:///other g2 ua-bbvirt-QX3TZ7A 3:9",
        ]
    );
    assert_eq!(hv.connects(), vec![None, Some("qemu:///other".into())]);
    // Again: all already there.
    let out = run(&cfg, &tree(), &hv, Opts::default(), |e| e.sync(None));
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    // Only one domain, by positional DOMAIN or by --domain.
    let hv = running(&["g1", "g3"]).domain(Some("qemu:///other"), "g2", true);
    run(&cfg, &tree(), &hv, Opts::default(), |e| e.sync(Some("g2"))).unwrap();
    assert_eq!(
        hv.call_lines(),
        vec!["attach qemu:///other g2 ua-bbvirt-QX3TZ7A 3:9"]
    );
    let hv = running(&["g1", "g3"]).domain(Some("qemu:///other"), "g2", true);
    let opts = Opts {
        domain: Some("g1".into()),
        ..Opts::default()
    };
    run(&cfg, &tree(), &hv, opts, |e| e.sync(None)).unwrap();
    assert_eq!(hv.calls().len(), 2);
    // An unconfigured domain has nothing assigned.
    let out = run(&cfg, &tree(), &hv, Opts::default(), |e| {
        e.sync(Some("nope"))
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
}

#[test]
fn attach_all_carries_on_after_a_failure_and_reports_it() {
    let hv = running(&["g2"]); // g1 is not defined: nothing to do there
    let hv = hv.attach_error(VirtError::Failed {
        code: 1,
        message: "boom".into(),
    });
    let err = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.sync(None)
    })
    .unwrap_err();
    // g1 is not running, so only g2's device was tried: its own error shows.
    assert_eq!(
        err.to_string(),
        "attaching QX3TZ7A on domain 'g2': boom (libvirt error code 1)"
    );
    let hv = running(&["g1", "g2"]).attach_error(VirtError::Failed {
        code: 1,
        message: "boom".into(),
    });
    let err = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.sync(None)
    })
    .unwrap_err();
    let err = CommandError::from(err);
    assert_eq!(err.to_string(), "3 of 3 devices failed (see above)");
    assert_eq!(err.exit_code(), exit::FAILED);
}

#[test]
fn detach_all_removes_only_bbvirt_entries() {
    let hv = running(&["g1", "g2"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4)
        .with_hostdev(None, "g1", "ua-bbvirt-OLDONE", 2, 2)
        .with_hostdev(None, "g1", "ua-mine", 2, 3)
        .with_hostdev(None, "g2", "ua-bbvirt-QX3TZ7A", 3, 9);
    run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.detach_all(Some("g1"))
    })
    .unwrap();
    assert_eq!(hv.hostdevs(None, "g1"), vec![("ua-mine".into(), 2, 3)]);
    assert_eq!(hv.hostdevs(None, "g2").len(), 1);
    run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.detach_all(None)
    })
    .unwrap();
    assert!(hv.hostdevs(None, "g2").is_empty());
}

#[test]
fn a_partial_failure_keeps_its_errors_and_counts_every_attempt() {
    let hv = running(&["g1", "g2"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4)
        .with_hostdev(None, "g1", "ua-bbvirt-JAMMB3", 1, 5)
        .with_hostdev(None, "g2", "ua-bbvirt-QX3TZ7A", 3, 9);
    let hv = hv
        .refuse_detach("ua-bbvirt-JAMMB3")
        .refuse_detach("ua-bbvirt-QX3TZ7A");
    let err = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.detach_all(None)
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "2 of 3 devices failed (see above)");
    let ActionError::Partial { errors, total } = &err else {
        panic!("{err}");
    };
    assert_eq!(*total, 3);
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "detaching ua-bbvirt-JAMMB3 on domain 'g1': refused to detach ua-bbvirt-JAMMB3 \
             (libvirt error code 1)",
            "detaching ua-bbvirt-QX3TZ7A on domain 'g2': refused to detach ua-bbvirt-QX3TZ7A \
             (libvirt error code 1)",
        ]
    );
    // main logs each kept error, then the count.
    assert_eq!(CommandError::from(err).messages().len(), 3);
    assert_eq!(hv.hostdevs(None, "g1").len(), 1, "KWIF4Q went");
}

#[test]
fn dry_run_changes_nothing() {
    // A single attach does not even connect.
    let hv = running(&["g1", "g2"]).with_hostdev(None, "g2", "ua-bbvirt-GONE01", 9, 9);
    let opts = Opts {
        dry_run: true,
        ..Opts::default()
    };
    let out = run(&two_guests(), &tree(), &hv, opts.clone(), |e| {
        e.attach(&id("KWIF4Q"))
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert!(hv.connects().is_empty());
    // sync reads the live XML to say what it would do, and does nothing.
    for f in [
        &(|e: &Context| e.sync(None)) as &dyn Fn(&Context) -> Result<Outcome, ActionError>,
        &|e: &Context| e.detach_all(None),
        &|e: &Context| e.detach(&id("GONE01")),
    ] {
        let out = run(&two_guests(), &tree(), &hv, opts.clone(), f);
        assert_eq!(out.unwrap(), Outcome::Done);
    }
    assert!(hv.calls().is_empty());
    assert_eq!(hv.hostdevs(None, "g2").len(), 1);
}

#[test]
fn sync_removes_stale_entries_and_adds_missing_devices() {
    let hv = running(&["g1", "g2"])
        .with_hostdev(None, "g1", "ua-bbvirt-KWIF4Q", 1, 4) // right: kept
        .with_hostdev(None, "g1", "ua-bbvirt-JAMMB3", 1, 2) // moved to 1:5
        .with_hostdev(None, "g1", "ua-bbvirt-GONE01", 2, 2) // unplugged
        .with_hostdev(None, "g1", "ua-bbvirt-QX3TZ7A", 2, 3) // belongs to g2
        .with_hostdev(None, "g1", "hostdev7", 2, 4); // the admin's
    let hv = hv.detach_lag(1);
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.sync(None)
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    let mut g1 = hv.hostdevs(None, "g1");
    g1.sort();
    assert_eq!(
        g1,
        vec![
            ("hostdev7".into(), 2, 4),
            ("ua-bbvirt-JAMMB3".into(), 1, 5),
            ("ua-bbvirt-KWIF4Q".into(), 1, 4),
        ]
    );
    assert_eq!(
        hv.hostdevs(None, "g2"),
        vec![("ua-bbvirt-QX3TZ7A".into(), 3, 9)]
    );
    // Converged: a second sync finds nothing to do and changes nothing.
    let calls = hv.calls().len();
    let out = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.sync(None)
    });
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert_eq!(hv.calls().len(), calls);
}

#[test]
fn sync_of_one_domain_leaves_the_others_alone() {
    let hv = running(&["g1", "g2"])
        .with_hostdev(None, "g1", "ua-bbvirt-GONE01", 2, 2)
        .with_hostdev(None, "g2", "ua-bbvirt-GONE02", 2, 3);
    run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.sync(Some("g2"))
    })
    .unwrap();
    assert_eq!(hv.hostdevs(None, "g1").len(), 1);
    assert_eq!(
        hv.hostdevs(None, "g2"),
        vec![("ua-bbvirt-QX3TZ7A".into(), 3, 9)]
    );
}

fn run_gated<T>(
    hv: &FakeHv,
    paths: &bbvirt::daemon::HostPaths,
    by_udev: bool,
    f: impl FnOnce(&Context) -> T,
) -> T {
    let cfg = two_guests();
    let tree = tree();
    let sysfs = tree.sysfs();
    let opts = Opts::default();
    let gate = bbvirt::daemon::Readiness::detect(paths.clone(), by_udev).expect("gate applies");
    let lock = paths.run_dir.clone();
    let env = Context {
        config: &cfg,
        sysfs: &sysfs,
        hv,
        opts: &opts,
        lock_dir: Some(&lock),
        readiness: Some(&gate),
    };
    f(&env)
}

#[test]
fn under_udev_a_daemon_that_has_not_served_yet_is_never_connected_to() {
    let dir = tempfile::tempdir().unwrap();
    let paths = gated_host(dir.path());
    let hv = running(&["g1", "g2"]);

    // udev's runs at boot: nothing to do, no connection, no lock taken.
    let out = run_gated(&hv, &paths, true, |e| e.attach(&id("1:4")));
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    let out = run_gated(&hv, &paths, true, |e| e.detach(&id("1:4")));
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert!(hv.connects().is_empty(), "{:?}", hv.connects());
    assert!(
        !paths.run_dir.join("lock").exists(),
        "no lock before the gate"
    );

    // bbvirt-sync.service's run: connects, records the daemon, attaches.
    let out = run_gated(&hv, &paths, false, |e| e.sync(None));
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        std::fs::read_to_string(paths.run_dir.join("ready")).unwrap(),
        "812 5000\n"
    );
    assert_eq!(hv.hostdevs(None, "g1").len(), 2, "KWIF4Q and JAMMB3");

    // From then on udev's runs connect.
    let out = run_gated(&hv, &paths, true, |e| e.detach(&id("1:4")));
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        hv.hostdevs(None, "g1"),
        vec![("ua-bbvirt-JAMMB3".into(), 1, 5)]
    );
}

#[test]
fn a_guest_without_usb_controller_gets_one_clear_error_and_nothing_changes() {
    let hv =
        running(&["g1", "g2"]).usb_controllers(None, "g1", "<controller type='usb' model='none'/>");
    let err = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("KWIF4Q"))
    })
    .unwrap_err();
    assert!(
        matches!(err, ActionError::NoUsbController { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "cannot attach KWIF4Q to 'g1': the guest has no USB controller; add \
         <controller type='usb' model='qemu-xhci'/> with `virsh edit g1`, then restart it"
    );
    assert_eq!(
        exit::code_of::<()>(&Err(CommandError::Action(err))),
        exit::FAILED
    );
    assert!(hv.calls().is_empty(), "{:?}", hv.calls());
    assert!(hv.hostdevs(None, "g2").is_empty());

    // Another refusal keeps libvirt's own words.
    let hv = running(&["g1"]).attach_error(VirtError::Failed {
        code: 1,
        message: "something else".into(),
    });
    let err = run(&two_guests(), &tree(), &hv, Opts::default(), |e| {
        e.attach(&id("KWIF4Q"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("something else"), "{err}");
}

// --- DOMAIN_USB_: devices of any kind -----------------------------------------

/// Two CP210x sticks sharing serial 0001 at 1-4 and 1-5, a Z-Wave stick
/// without a serial at 1-6, a stranger at 1-7, a BitBabbler at 1-8.
fn usb_tree() -> FixtureTree {
    FixtureTree::new()
        .root_hub(1)
        .usb_device("1-4", "10c4", "ea60", Some("0001"), 1, 4)
        .usb_device("1-5", "10c4", "ea60", Some("0001"), 1, 5)
        .usb_device("1-6", "0658", "0200", None, 1, 6)
        .usb_device("1-7", "046d", "c52b", Some("KEYB01"), 1, 7)
        .bitbabbler("1-8", Some("KWIF4Q"), 1, 8)
}

fn usb_config() -> Config {
    bbvirt::config::parse_native(
        std::path::Path::new("/etc/bit-babbler/vm.conf"),
        "DOMAIN_USB_g1=( \"id=10c4:ea60 port=1-4\" \"id=0658:0200\" )\n\
         DOMAIN_USB_g2=( \"id=10c4:ea60 port=1-5\" )\n\
         DOMAIN_RNG_g2=( KWIF4Q )\n",
    )
    .unwrap()
}

#[test]
fn usb_elements_route_twins_by_port_and_a_device_without_serial_by_id() {
    let (cfg, tree, hv) = (usb_config(), usb_tree(), running(&["g1", "g2"]));
    for dev in ["1:4", "1:5", "1:6", "1-8"] {
        let out = run(&cfg, &tree, &hv, Opts::default(), |e| e.attach(&id(dev)));
        assert_eq!(out.unwrap(), Outcome::Done, "{dev}");
    }
    assert_eq!(
        hv.hostdevs(None, "g1"),
        vec![
            ("ua-bbusb-10c4ea60-g1-e0-0001".into(), 1, 4),
            ("ua-bbusb-06580200-g1-e1-noserial".into(), 1, 6)
        ]
    );
    assert_eq!(
        hv.hostdevs(None, "g2"),
        vec![
            ("ua-bbusb-10c4ea60-g2-e0-0001".into(), 1, 5),
            ("ua-bbvirt-KWIF4Q".into(), 1, 8)
        ],
        "the BitBabbler by its serial, as before"
    );
    // Again: already attached, nothing changes.
    let out = run(&cfg, &tree, &hv, Opts::default(), |e| e.attach(&id("1:4")));
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert_eq!(hv.hostdevs(None, "g1").len(), 2);
}

#[test]
fn a_device_no_element_matches_stays_with_the_host_untouched() {
    let (cfg, tree, hv) = (usb_config(), usb_tree(), running(&["g1", "g2"]));
    let out = run(&cfg, &tree, &hv, Opts::default(), |e| e.attach(&id("1:7")));
    assert_eq!(out.unwrap(), Outcome::NothingToDo);
    assert!(hv.calls().is_empty(), "{:?}", hv.calls());
    // The event front says so without bbvirt.
    let sysfs = tree.sysfs();
    let opts = Opts::default();
    let ctx = Context {
        config: &cfg,
        sysfs: &sysfs,
        hv: &hv,
        opts: &opts,
        lock_dir: None,
        readiness: None,
    };
    let verdict = |line: &str| {
        let words: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
        let (action, _) = bbvirt::event::rule_words(&words).unwrap();
        bbvirt::event::decide(&action, &ctx, &Default::default())
    };
    assert_eq!(verdict("attach 1:7"), bbvirt::event::Verdict::Done);
    assert_eq!(verdict("attach 1:6"), bbvirt::event::Verdict::Run);
}

#[test]
fn unplugging_a_usb_device_detaches_its_entry_by_address() {
    let (cfg, tree, hv) = (usb_config(), usb_tree(), running(&["g1", "g2"]));
    for dev in ["1:4", "1:5"] {
        run(&cfg, &tree, &hv, Opts::default(), |e| e.attach(&id(dev))).unwrap();
    }
    // 1-4 is unplugged: udev's remove gives its old BUS:DEV.
    let gone = usb_tree().vanish("1-4");
    let out = run(&cfg, &gone, &hv, Opts::default(), |e| e.detach(&id("1:4")));
    assert_eq!(out.unwrap(), Outcome::Done);
    assert!(hv.hostdevs(None, "g1").is_empty());
    assert_eq!(hv.hostdevs(None, "g2").len(), 1, "its twin stays");
}

#[test]
fn sync_gives_each_guest_its_usb_devices_and_drops_stale_usb_entries() {
    let hv = running(&["g1", "g2"])
        // a lost remove: g1's CP210x at an old address
        .with_hostdev(None, "g1", "ua-bbusb-10c4ea60-g1-e0-0001", 1, 40)
        // an element that no longer exists
        .with_hostdev(None, "g2", "ua-bbusb-10c4ea60-g2-e7-0001", 1, 41)
        // not bbvirt's: never touched
        .with_hostdev(None, "g2", "ua-admin-thing", 1, 7);
    let (cfg, tree) = (usb_config(), usb_tree());
    let out = run(&cfg, &tree, &hv, Opts::default(), |e| e.sync(None));
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        hv.hostdevs(None, "g1"),
        vec![
            ("ua-bbusb-10c4ea60-g1-e0-0001".into(), 1, 4),
            ("ua-bbusb-06580200-g1-e1-noserial".into(), 1, 6)
        ]
    );
    let mut g2 = hv.hostdevs(None, "g2");
    g2.sort();
    assert_eq!(
        g2,
        vec![
            ("ua-admin-thing".into(), 1, 7),
            ("ua-bbusb-10c4ea60-g2-e0-0001".into(), 1, 5),
            ("ua-bbvirt-KWIF4Q".into(), 1, 8)
        ]
    );
    // The hook re-announces exactly the guest's devices, with the aliases
    // sync gave them: its serials' BitBabblers, then its elements' devices.
    let scan = tree.sysfs().scan().unwrap();
    let of = |name: &str| -> Vec<(String, String)> {
        cfg.guest_devices(cfg.guest_named(name).unwrap(), &scan)
            .into_iter()
            .map(|(alias, d)| (alias, d.name.clone()))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, n)| (a.to_string(), n.to_string()))
            .collect()
    };
    assert_eq!(
        of("g1"),
        pairs(&[
            ("ua-bbusb-10c4ea60-g1-e0-0001", "1-4"),
            ("ua-bbusb-06580200-g1-e1-noserial", "1-6")
        ])
    );
    assert_eq!(
        of("g2"),
        pairs(&[
            ("ua-bbvirt-KWIF4Q", "1-8"),
            ("ua-bbusb-10c4ea60-g2-e0-0001", "1-5")
        ])
    );
}

#[test]
fn other_serials_name_one_device_among_all_and_twins_are_an_error() {
    let cfg = bbvirt::config::parse_native(
        std::path::Path::new("/etc/bit-babbler/vm.conf"),
        "DOMAIN_USB_vault=( \"id=1050:0407 serial=12345678\" )\n",
    )
    .unwrap();
    let tree = usb_tree().usb_device("1-9", "1050", "0407", Some("12345678"), 1, 9);
    let hv = running(&["vault"]);
    let out = run(&cfg, &tree, &hv, Opts::default(), |e| {
        e.attach(&id("12345678"))
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        hv.hostdevs(None, "vault"),
        vec![("ua-bbusb-10500407-vault-e0-12345678".into(), 1, 9)]
    );
    let err = run(&cfg, &tree, &hv, Opts::default(), |e| e.attach(&id("0001"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "serial 0001 is carried by several devices (1-4, 1-5): name one by BUS:DEV or BUS-PORT"
    );
    assert_eq!(
        exit::code_of::<()>(&Err(CommandError::Action(err))),
        exit::NOT_FOUND
    );
    // A BitBabbler-shaped serial is looked for among BitBabblers only: the
    // receiver at 1-7 carries KEYB01 but is not one.
    let err = run(&cfg, &tree, &hv, Opts::default(), |e| {
        e.attach(&id("KEYB01"))
    })
    .unwrap_err();
    assert!(matches!(err, ActionError::NotFound(_)), "{err:?}");
    // Once gone, another device's serial tells nothing to detach by.
    let err = run(&cfg, &tree, &hv, Opts::default(), |e| {
        e.detach(&id("gone1"))
    });
    assert!(matches!(err, Err(ActionError::NotFound(_))), "{err:?}");
    assert!(
        hv.calls().iter().all(|c| !c.to_string().contains("detach")),
        "{:?}",
        hv.calls()
    );
}

#[test]
fn detach_all_takes_bbvirts_usb_entries_too_and_nothing_else() {
    let (cfg, tree) = (usb_config(), usb_tree());
    let hv = running(&["g1", "g2"]).with_hostdev(None, "g1", "ua-admin-thing", 1, 7);
    for dev in ["1:4", "1:6"] {
        run(&cfg, &tree, &hv, Opts::default(), |e| e.attach(&id(dev))).unwrap();
    }
    assert_eq!(hv.hostdevs(None, "g1").len(), 3);
    let out = run(&cfg, &tree, &hv, Opts::default(), |e| {
        e.detach_all(Some("g1"))
    });
    assert_eq!(out.unwrap(), Outcome::Done);
    assert_eq!(
        hv.hostdevs(None, "g1"),
        vec![("ua-admin-thing".into(), 1, 7)],
        "the admin's own hostdev stays"
    );
}
