//! What the integration tests share: the fake hypervisor ([`fake`]), the
//! sysfs fixture builder ([`fixture`]), the two-guest scene ([`scene`]),
//! and ripgrep-style helpers to run the built binary and check its exit
//! status and output.

use std::path::Path;
use std::process::{Command, Output};

pub mod fake;
pub mod fixture;
pub mod scene;

/// Writes a config file with safe permissions and returns its path.
pub fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("vm.conf");
    std::fs::write(&path, text).expect("writing vm.conf");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

/// A fixture /proc: process `pid` named `comm` with `cmdline` holds `nodes`
/// (device nodes such as `/dev/bus/usb/001/004`) open.
pub fn holder(proc_root: &Path, pid: u32, comm: &str, cmdline: &[u8], nodes: &[&str]) {
    let dir = proc_root.join(pid.to_string());
    std::fs::create_dir_all(dir.join("fd")).unwrap();
    std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
    std::fs::write(dir.join("cmdline"), cmdline).unwrap();
    for (n, node) in nodes.iter().enumerate() {
        std::os::unix::fs::symlink(node, dir.join("fd").join((n + 3).to_string())).unwrap();
    }
}

/// A fixture `/proc/net/tcp` and `tcp6` under `proc_root` holding
/// `sockets`: (local, remote, kernel state code, inode); IPv4 ones go to
/// `tcp`, IPv6 ones to `tcp6`, written as this host's kernel writes them
/// (each address word in the host's byte order).
pub fn socket_tables(proc_root: &Path, sockets: &[(&str, &str, u8, u64)]) {
    use std::net::{IpAddr, SocketAddr};
    let hex = |a: &SocketAddr| {
        let ip = match a.ip() {
            IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
            IpAddr::V6(v6) => v6
                .octets()
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap())))
                .collect(),
        };
        format!("{ip}:{:04X}", a.port())
    };
    let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    let (mut tcp, mut tcp6) = (header.to_string(), header.to_string());
    for (i, (local, remote, state, inode)) in sockets.iter().enumerate() {
        let local: SocketAddr = local.parse().unwrap();
        let remote: SocketAddr = remote.parse().unwrap();
        let line = format!(
            "  {i:3}: {} {} {state:02X} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 20 4 30 10 -1\n",
            hex(&local),
            hex(&remote)
        );
        if local.is_ipv4() { &mut tcp } else { &mut tcp6 }.push_str(&line);
    }
    std::fs::create_dir_all(proc_root.join("net")).unwrap();
    std::fs::write(proc_root.join("net/tcp"), tcp).unwrap();
    std::fs::write(proc_root.join("net/tcp6"), tcp6).unwrap();
}

/// A fixture QEMU process of `guest` holding the sockets `inodes`.
pub fn qemu_process(proc_root: &Path, pid: u32, guest: &str, inodes: &[u64]) {
    let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let links: Vec<&str> = links.iter().map(String::as_str).collect();
    let cmdline = format!("qemu-system-x86_64\0-name\0guest={guest},debug-threads=on\0");
    holder(
        proc_root,
        pid,
        "qemu-system-x86",
        cmdline.as_bytes(),
        &links,
    );
}

/// The keys bbvirt(1) documents for a `--json`, from the first schema
/// block (an `.EX` block holding `"schema"`) after the heading `.SH
/// SECTION`.
pub fn documented_keys(section: &str) -> std::collections::BTreeSet<String> {
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/bbvirt.1")).unwrap();
    let after = man
        .split(&format!("\n.SH {section}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("bbvirt(1) has a {section} section"));
    let block = after
        .split("\n.EX\n")
        .skip(1)
        .filter_map(|b| b.split("\n.EE\n").next())
        .find(|b| b.contains("\"schema\""))
        .expect("with its JSON schema");
    let mut keys = std::collections::BTreeSet::new();
    for part in block.split('"').collect::<Vec<_>>().windows(2) {
        if part[1].trim_start().starts_with(':') && !part[0].contains(' ') && !part[0].is_empty() {
            keys.insert(part[0].to_string());
        }
    }
    keys
}

/// Every object key anywhere in `v`, into `out`.
pub fn keys_of(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.insert(k.clone());
                keys_of(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| keys_of(x, out)),
        _ => {}
    }
}

/// Runs the bbvirt binary built for these tests.
pub fn bbvirt(sysfs_root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bbvirt"))
        .args(args)
        .env("BBVIRT_SYSFS_ROOT", sysfs_root)
        .env("BBVIRT_RUN_DIR", sysfs_root.join("run"))
        // The host's own processes stay out: `proc` under the fixture root.
        .env("BBVIRT_PROC_ROOT", sysfs_root.join("proc"))
        .env_remove("LIBVIRT_DEFAULT_URI")
        .env_remove("ACTION")
        .env_remove("DEVPATH")
        .output()
        .expect("running bbvirt")
}

/// Asserts the exit status and returns (stdout, stderr).
pub fn expect_exit(out: &Output, code: i32) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"
    );
    (stdout, stderr)
}
