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
