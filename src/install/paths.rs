//! Where bbvirt's files go and where udev and libvirt look for them: the
//! one table that `install` writes by and `check` checks by (paths
//! relative to the root, `/` on a real system).

/// The udev rule bbvirt installs.
pub const RULE_NAME: &str = "60-bbvirt.rules";
/// The udev rule of the original bit-babbler package.
pub const ORIGINAL_RULE_NAME: &str = "60-bit-babbler.rules";
/// The name bbvirt's Debian package diverts the original's rule to (its
/// preinst, in the package rules directories): udev reads only `*.rules`,
/// so a diverted original is installed but inert.
pub const ORIGINAL_RULE_DIVERTED: &str = "60-bit-babbler.rules.bit-babbler";
/// Where udev looks for rules, highest precedence first.
pub const RULE_DIRS: [&str; 5] = [
    "etc/udev/rules.d",
    "run/udev/rules.d",
    "usr/local/lib/udev/rules.d",
    "usr/lib/udev/rules.d",
    "lib/udev/rules.d",
];
/// The admin's rules directory, where `bbvirt install` puts the rule (and
/// where a rule of the same name masks a package's): the first of
/// [`RULE_DIRS`].
pub const ADMIN_RULE_DIR: &str = RULE_DIRS[0];
/// Where packages put their rules (the original package's among them).
pub const PACKAGE_RULE_DIRS: [&str; 2] = [RULE_DIRS[3], RULE_DIRS[4]];
/// Where `bbvirt install` puts the udev rule.
pub const RULE_PATH: &str = "etc/udev/rules.d/60-bbvirt.rules";
/// The rules directory written into the rule for `@UDEVRULESDIR@`.
pub const RULES_DIR: &str = "/etc/udev/rules.d";
/// libvirt's hooks directory.
pub const HOOKS_DIR: &str = "etc/libvirt/hooks";
/// The libvirt qemu hook bbvirt installs.
pub const HOOK_PATH: &str = "etc/libvirt/hooks/qemu.d/bbvirt";
/// Where the example config goes: vm.conf's default place.
pub const CONFIG_PATH: &str = "etc/bit-babbler/vm.conf";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_agrees_with_itself() {
        assert_eq!(RULE_PATH, format!("{ADMIN_RULE_DIR}/{RULE_NAME}"));
        assert_eq!(RULES_DIR, format!("/{ADMIN_RULE_DIR}"));
        assert!(HOOK_PATH.starts_with(&format!("{HOOKS_DIR}/qemu.d/")));
        assert_eq!(format!("/{CONFIG_PATH}"), crate::config::DEFAULT_CONFIG);
        assert!(ORIGINAL_RULE_DIVERTED.starts_with(ORIGINAL_RULE_NAME));
        assert!(!ORIGINAL_RULE_DIVERTED.ends_with(".rules"));
    }
}
