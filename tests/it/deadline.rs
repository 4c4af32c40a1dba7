//! bbvirt never hangs on libvirt: a "libvirtd" that accepts connections and
//! never answers (as a socket-activated libvirt does at boot while its daemon
//! cannot start) makes bbvirt give up at its deadline, with one line saying
//! what it was waiting for.

use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::fixture::FixtureTree;
use crate::util::write_config;
use bbvirt::exit;

/// A unix socket that accepts every connection and never says anything.
fn silent_server(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("libvirt-sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn); // keep it open, never answer
        }
    });
    path
}

/// Runs bbvirt; kills it (and fails the test) if it outlives `bound`.
fn run_bounded(root: &std::path::Path, args: &[&str], bound: Duration) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bbvirt"))
        .args(args)
        .env("BBVIRT_SYSFS_ROOT", root)
        .env("BBVIRT_RUN_DIR", root.join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if start.elapsed() > bound {
            child.kill().unwrap();
            panic!("bbvirt {args:?} still running after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_silent_libvirt_socket_hits_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let sock = silent_server(dir.path());
    let uri = format!("qemu:///system?socket={}", sock.display());
    let tree = FixtureTree::new()
        .root_hub(1)
        .bitbabbler("1-1", Some("KWIF4Q"), 1, 2);
    let conf = write_config(dir.path(), "DOMAIN_RNG_g1=( KWIF4Q )\n");
    let conf = conf.to_str().unwrap();
    let (code, err) = run_bounded(
        tree.root(),
        &["-C", conf, "attach", "1:2", "-c", &uri, "--timeout", "2"],
        Duration::from_secs(60),
    );
    assert_eq!(code, exit::FAILED, "{err}");
    assert_eq!(
        err,
        format!("bbvirt: error: timed out after 2 s connecting to libvirt at {uri}\n")
    );
}

#[test]
fn vm_conf_sets_the_deadline_and_the_option_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = silent_server(dir.path());
    let uri = format!("qemu:///system?socket={}", sock.display());
    let tree = FixtureTree::new()
        .root_hub(1)
        .bitbabbler("1-1", Some("KWIF4Q"), 1, 2);
    let conf = write_config(
        dir.path(),
        &format!("BBVIRT_TIMEOUT=1\nDOMAIN_RNG_g1=( KWIF4Q )\nDOMAIN_URI_g1='{uri}'\n"),
    );
    let conf = conf.to_str().unwrap();
    let (code, err) = run_bounded(tree.root(), &["-C", conf, "sync"], Duration::from_secs(60));
    assert_eq!(code, exit::FAILED, "{err}");
    assert!(
        err.contains("timed out after 1 s connecting to libvirt"),
        "{err}"
    );
    let (code, err) = run_bounded(
        tree.root(),
        &["-C", conf, "sync", "--timeout=3"],
        Duration::from_secs(60),
    );
    assert_eq!(code, exit::FAILED, "{err}");
    assert!(err.contains("timed out after 3 s"), "{err}");
}

#[test]
fn a_bad_timeout_in_vm_conf_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let tree = FixtureTree::new();
    let conf = write_config(dir.path(), "BBVIRT_TIMEOUT=soon\n");
    let conf = conf.to_str().unwrap();
    let (code, err) = run_bounded(tree.root(), &["-C", conf, "sync"], Duration::from_secs(60));
    assert_eq!(code, exit::CONFIG);
    assert_eq!(
        err,
        format!(
            "bbvirt: error: {conf}:1: BBVIRT_TIMEOUT=\"soon\" is not a whole number of seconds from 1 to 3600\n"
        )
    );
}
