//! `bbvirt check`: the pure checks on temp dirs (installation under a fake
//! root, vm.conf files), domain lookups against the fake hypervisor, and the
//! binary end to end against libvirt's in-process test driver.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{expect_exit, fake::FakeHv, write_config};
use bbvirt::check::{
    self, Finding, Severity, check_config_file, check_domains, check_installation,
    check_libvirt_version, verdict,
};
use bbvirt::config::{Config, DomainConf};
use bbvirt::exit;
use bbvirt::libvirt::VirtError;

const BIN: &str = "/usr/bin/bbvirt";

fn lines(found: &[Finding]) -> Vec<String> {
    found.iter().map(ToString::to_string).collect()
}

fn of(found: &[Finding], s: Severity) -> Vec<String> {
    found
        .iter()
        .filter(|f| f.severity == s)
        .map(ToString::to_string)
        .collect()
}

fn errors(found: &[Finding]) -> Vec<String> {
    of(found, Severity::Error)
}

fn warnings(found: &[Finding]) -> Vec<String> {
    of(found, Severity::Warning)
}

// ---------------------------------------------------------------------------
// Installation, under a temp root

/// The rule as `bbvirt install` writes it where it finds no front: it
/// runs binary `bin` itself.
fn rule_text(bin: &str) -> String {
    rule_text_with_front(bin, "")
}

/// The rule as `make install` writes it: `front` (with a space after it,
/// or empty) runs binary `bin`.
fn rule_text_with_front(bin: &str, front: &str) -> String {
    fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/udev/rules.d/60-bbvirt.rules"
    ))
    .unwrap()
    .replace("@EVENT@", front)
    .replace("@BINDIR@/bbvirt", bin)
}

fn hook_text(bin: &str) -> String {
    fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/libvirt/hooks/qemu.d/bbvirt"
    ))
    .unwrap()
    .replace("@BINDIR@/bbvirt", bin)
}

fn put(root: &Path, rel: &str, text: &str, mode: u32) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A root with the rule in /usr/lib and the hook, both for `bin`.
fn installed(bin: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    put(
        root.path(),
        "usr/lib/udev/rules.d/60-bbvirt.rules",
        &rule_text(bin),
        0o644,
    );
    put(
        root.path(),
        "etc/libvirt/hooks/qemu.d/bbvirt",
        &hook_text(bin),
        0o755,
    );
    root
}

#[test]
fn a_rule_that_runs_bbvirt_through_its_front_needs_the_front() {
    const FRONT: &str = "/usr/lib/bbvirt/bbvirt-event";
    let root = installed(BIN);
    put(
        root.path(),
        "usr/lib/udev/rules.d/60-bbvirt.rules",
        &rule_text_with_front(BIN, &format!("{FRONT} ")),
        0o644,
    );
    let found = check_installation(root.path(), Path::new(BIN));
    assert_eq!(
        errors(&found),
        [format!(
            "error: udev rule /usr/lib/udev/rules.d/60-bbvirt.rules runs {FRONT}, which is \
             missing or not executable: reinstall bbvirt (its package, `make install` or \
             `bbvirt install`)"
        )]
    );
    put(root.path(), &FRONT[1..], "#!/bin/true\n", 0o755);
    let found = check_installation(root.path(), Path::new(BIN));
    assert!(errors(&found).is_empty(), "{:?}", lines(&found));
    assert!(
        lines(&found).contains(
            &"ok: udev rule /usr/lib/udev/rules.d/60-bbvirt.rules runs this bbvirt \
              (/usr/bin/bbvirt)"
                .to_string()
        ),
        "{:?}",
        lines(&found)
    );
    // The front's PROGRAM is what must be this bbvirt.
    put(
        root.path(),
        "usr/lib/udev/rules.d/60-bbvirt.rules",
        &rule_text_with_front("/opt/other/bbvirt", &format!("{FRONT} ")),
        0o644,
    );
    let found = check_installation(root.path(), Path::new(BIN));
    assert_eq!(errors(&found).len(), 1, "{:?}", lines(&found));
    assert!(
        errors(&found)[0].contains("runs /opt/other/bbvirt, not this bbvirt"),
        "{:?}",
        lines(&found)
    );
}

#[test]
fn complete_installation_is_clean() {
    let root = installed(BIN);
    let found = check_installation(root.path(), Path::new(BIN));
    assert_eq!(
        exit::code_of(&verdict(&found)),
        exit::OK,
        "{:#?}",
        lines(&found)
    );
    assert!(warnings(&found).is_empty(), "{:#?}", lines(&found));
    assert_eq!(
        lines(&found),
        [
            "ok: udev rule /usr/lib/udev/rules.d/60-bbvirt.rules runs this bbvirt (/usr/bin/bbvirt)",
            "ok: libvirt hook /etc/libvirt/hooks/qemu.d/bbvirt is executable and runs this bbvirt (/usr/bin/bbvirt)",
            "ok: the bit-babbler package's 60-bit-babbler.rules is not installed",
        ]
    );
}

#[test]
fn rule_missing() {
    let root = installed(BIN);
    fs::remove_file(root.path().join("usr/lib/udev/rules.d/60-bbvirt.rules")).unwrap();
    let found = check_installation(root.path(), Path::new(BIN));
    assert_eq!(exit::code_of(&verdict(&found)), exit::FAILED);
    let e = errors(&found);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("error: udev rule 60-bbvirt.rules is not installed (not in /etc/udev/rules.d, /usr/local/lib/udev/rules.d, /usr/lib/udev/rules.d, /lib/udev/rules.d)"),
        "{}",
        e[0]
    );
    assert!(
        e[0].ends_with(": run `bbvirt install` (or `make install`)"),
        "{}",
        e[0]
    );
}

#[test]
fn rule_accepted_in_lib_and_etc() {
    for dir in ["lib/udev/rules.d", "etc/udev/rules.d"] {
        let root = installed(BIN);
        fs::remove_file(root.path().join("usr/lib/udev/rules.d/60-bbvirt.rules")).unwrap();
        put(
            root.path(),
            &format!("{dir}/60-bbvirt.rules"),
            &rule_text(BIN),
            0o644,
        );
        let found = check_installation(root.path(), Path::new(BIN));
        assert_eq!(
            exit::code_of(&verdict(&found)),
            exit::OK,
            "{dir}: {:#?}",
            lines(&found)
        );
        assert!(lines(&found)[0].contains(&format!("/{dir}/60-bbvirt.rules")));
    }
}

#[test]
fn rule_pointing_elsewhere() {
    let root = installed(BIN);
    put(
        root.path(),
        "usr/lib/udev/rules.d/60-bbvirt.rules",
        &rule_text("/usr/local/bin/bbvirt"),
        0o644,
    );
    let found = check_installation(root.path(), Path::new(BIN));
    assert_eq!(
        errors(&found),
        [
            "error: udev rule /usr/lib/udev/rules.d/60-bbvirt.rules runs /usr/local/bin/bbvirt, \
          not this bbvirt (/usr/bin/bbvirt): reinstall it with `/usr/bin/bbvirt install`, or run \
          `/usr/local/bin/bbvirt check` if that is the one meant"
        ]
    );
    assert_eq!(exit::code_of(&verdict(&found)), exit::FAILED);
}

#[test]
fn rule_in_etc_overrides_and_masks() {
    // /etc wins over /usr/lib: a good /etc copy hides a stale packaged one.
    let root = installed("/usr/local/bin/bbvirt");
    put(
        root.path(),
        "etc/libvirt/hooks/qemu.d/bbvirt",
        &hook_text(BIN),
        0o755,
    );
    put(
        root.path(),
        "etc/udev/rules.d/60-bbvirt.rules",
        &rule_text(BIN),
        0o644,
    );
    let found = check_installation(root.path(), Path::new(BIN));
    assert_eq!(
        exit::code_of(&verdict(&found)),
        exit::OK,
        "{:#?}",
        lines(&found)
    );
    assert!(
        lines(&found)[0].ends_with("(overrides /usr/lib/udev/rules.d/60-bbvirt.rules)"),
        "{}",
        lines(&found)[0]
    );
    // A link to /dev/null in /etc masks it.
    fs::remove_file(root.path().join("etc/udev/rules.d/60-bbvirt.rules")).unwrap();
    symlink(
        "/dev/null",
        root.path().join("etc/udev/rules.d/60-bbvirt.rules"),
    )
    .unwrap();
    let e = errors(&check_installation(root.path(), Path::new(BIN)));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("error: udev rule /etc/udev/rules.d/60-bbvirt.rules is masked"),
        "{}",
        e[0]
    );
}

#[test]
fn unsubstituted_template() {
    let root = installed("@BINDIR@/bbvirt");
    let e = errors(&check_installation(root.path(), Path::new(BIN)));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e.iter()
            .all(|l| l.contains("@BINDIR@ was never substituted")),
        "{e:#?}"
    );
}

#[test]
fn rule_that_never_runs_bbvirt() {
    let root = installed(BIN);
    put(
        root.path(),
        "usr/lib/udev/rules.d/60-bbvirt.rules",
        "SUBSYSTEM==\"usb\", RUN+=\"/usr/bin/setfacl -m g:x:rw $devnode\"\n# RUN+=\"/usr/bin/bbvirt\"\n",
        0o644,
    );
    assert_eq!(
        errors(&check_installation(root.path(), Path::new(BIN))),
        [
            "error: udev rule /usr/lib/udev/rules.d/60-bbvirt.rules never runs bbvirt: reinstall it with `bbvirt install`"
        ]
    );
}

#[test]
fn hook_not_executable() {
    let root = installed(BIN);
    fs::set_permissions(
        root.path().join("etc/libvirt/hooks/qemu.d/bbvirt"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let found = check_installation(root.path(), Path::new(BIN));
    assert_eq!(
        errors(&found),
        [
            "error: libvirt hook /etc/libvirt/hooks/qemu.d/bbvirt is not executable (mode 0644): \
          libvirt skips it: chmod 0755 /etc/libvirt/hooks/qemu.d/bbvirt"
        ]
    );
    assert_eq!(exit::code_of(&verdict(&found)), exit::FAILED);
}

#[test]
fn hook_missing_or_pointing_elsewhere() {
    let root = installed(BIN);
    let hook = root.path().join("etc/libvirt/hooks/qemu.d/bbvirt");
    fs::remove_file(&hook).unwrap();
    let e = errors(&check_installation(root.path(), Path::new(BIN)));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("error: libvirt hook /etc/libvirt/hooks/qemu.d/bbvirt is not installed"),
        "{}",
        e[0]
    );
    assert!(e[0].ends_with("then restart libvirtd"), "{}", e[0]);

    put(
        root.path(),
        "etc/libvirt/hooks/qemu.d/bbvirt",
        &hook_text("/opt/old/bbvirt"),
        0o755,
    );
    let e = errors(&check_installation(root.path(), Path::new(BIN)));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(
            "error: libvirt hook /etc/libvirt/hooks/qemu.d/bbvirt runs /opt/old/bbvirt, not this bbvirt (/usr/bin/bbvirt)"
        ),
        "{}",
        e[0]
    );
}

#[test]
fn both_rules_active() {
    let root = installed(BIN);
    let original = "ACTION==\"add\", SUBSYSTEM==\"usb\", ATTR{idVendor}==\"0403\", \
                    RUN+=\"/usr/bin/bbvirt attach $env{BUSNUM}:$env{DEVNUM}\"\n";
    put(
        root.path(),
        "lib/udev/rules.d/60-bit-babbler.rules",
        original,
        0o644,
    );
    let found = check_installation(root.path(), Path::new(BIN));
    assert_eq!(
        warnings(&found),
        [
            "warning: udev rule /lib/udev/rules.d/60-bit-babbler.rules of the bit-babbler package \
          is active too: both it and 60-bbvirt.rules would act on every BitBabbler: mask it: \
          ln -s /dev/null /etc/udev/rules.d/60-bit-babbler.rules"
        ]
    );
    // Warnings do not fail the check.
    assert_eq!(exit::code_of(&verdict(&found)), exit::OK);

    // Masked as the fix says: fine.
    fs::create_dir_all(root.path().join("etc/udev/rules.d")).unwrap();
    symlink(
        "/dev/null",
        root.path().join("etc/udev/rules.d/60-bit-babbler.rules"),
    )
    .unwrap();
    let found = check_installation(root.path(), Path::new(BIN));
    assert!(warnings(&found).is_empty(), "{:#?}", lines(&found));
    assert!(
        lines(&found).contains(
            &"ok: the bit-babbler package's 60-bit-babbler.rules is masked by /etc/udev/rules.d/60-bit-babbler.rules"
                .to_string()
        ),
        "{:#?}",
        lines(&found)
    );
}

#[test]
fn original_rule_diverted_by_the_package_is_not_active() {
    // bbvirt's Debian package diverts bit-babbler's rule (preinst) to a name
    // udev does not read; on merged /usr it is seen once, through /usr/lib.
    let root = installed(BIN);
    put(
        root.path(),
        "usr/lib/udev/rules.d/60-bit-babbler.rules.bit-babbler",
        "RUN+=\"/usr/bin/bbvirt --syslog attach $attr{serial}\"\n",
        0o644,
    );
    symlink("usr/lib", root.path().join("lib")).unwrap();
    let found = check_installation(root.path(), Path::new(BIN));
    assert!(warnings(&found).is_empty(), "{:#?}", lines(&found));
    assert!(
        lines(&found).contains(
            &"ok: the bit-babbler package's 60-bit-babbler.rules is diverted to \
              /usr/lib/udev/rules.d/60-bit-babbler.rules.bit-babbler (by bbvirt's package), \
              which udev does not read"
                .to_string()
        ),
        "{:#?}",
        lines(&found)
    );

    // The original back at its name (bbvirt's package removed, bbvirt from
    // source): active again, even with a diverted copy left beside it.
    put(
        root.path(),
        "usr/lib/udev/rules.d/60-bit-babbler.rules",
        "RUN+=\"/usr/bin/bbvirt --syslog attach $attr{serial}\"\n",
        0o644,
    );
    let w = warnings(&check_installation(root.path(), Path::new(BIN)));
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].contains("is active too"), "{}", w[0]);
}

#[test]
fn original_rule_seen_once_through_merged_usr() {
    // Merged /usr: /lib is a link to usr/lib; the rule is reported once.
    let root = tempfile::tempdir().unwrap();
    put(
        root.path(),
        "usr/lib/udev/rules.d/60-bit-babbler.rules",
        "RUN+=\"/usr/bin/bbvirt attach 1:2\"\n",
        0o644,
    );
    put(
        root.path(),
        "usr/lib/udev/rules.d/60-bbvirt.rules",
        &rule_text(BIN),
        0o644,
    );
    symlink("usr/lib", root.path().join("lib")).unwrap();
    let w = warnings(&check_installation(root.path(), Path::new(BIN)));
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].contains("/usr/lib/udev/rules.d/60-bit-babbler.rules"),
        "{}",
        w[0]
    );
}

#[test]
fn run_programs_of_the_shipped_rule() {
    let progs = check::rule_run_programs(&rule_text(BIN));
    assert_eq!(
        progs,
        [
            "/usr/bin/setfacl",
            "/usr/bin/bbvirt",
            "/usr/bin/bbvirt",
            "/usr/bin/bbvirt",
            "/usr/bin/bbvirt"
        ]
    );
    assert_eq!(
        check::rule_run_programs("RUN{program}+=\"/x/bbvirt a\", RUN=\"/y b\" PRERUN==\"/z\""),
        ["/x/bbvirt", "/y"]
    );
    assert_eq!(check::hook_bbvirt_paths(&hook_text(BIN)), [BIN]);
}

// ---------------------------------------------------------------------------
// vm.conf

fn conf(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), text);
    (dir, path)
}

#[test]
fn bad_serial_names_domain_serial_and_line() {
    let (_d, path) =
        conf("# guests\nDOMAIN_RNG_ok=( KWIF4Q )\nDOMAIN_RNG_g1=( JAMMB3\n  kwif4q 'AB CD' )\n");
    let (cfg, found) = check_config_file(&path);
    assert_eq!(cfg.unwrap().domains.len(), 2);
    let p = path.display();
    assert_eq!(
        errors(&found),
        [
            format!(
                "error: {p}:4: DOMAIN_RNG_g1 lists \"kwif4q\", not a BitBabbler serial: \
                 use 6-7 characters A-Z, 0-9 (\"KWIF4Q\"?)"
            ),
            format!(
                "error: {p}:4: DOMAIN_RNG_g1 lists \"AB CD\", not a BitBabbler serial: \
                 use 6-7 characters A-Z, 0-9"
            ),
        ]
    );
    assert_eq!(exit::code_of(&verdict(&found)), exit::FAILED);
}

#[test]
fn serial_for_two_guests() {
    let (_d, path) = conf("DOMAIN_RNG_a=( KWIF4Q )\nDOMAIN_RNG_b=( JAMMB3 KWIF4Q )\n");
    let (_, found) = check_config_file(&path);
    assert_eq!(
        errors(&found),
        [format!(
            "error: {}:2: \"KWIF4Q\" is listed for guests a and b (a gets it, b never does): \
             remove it from DOMAIN_RNG_a or DOMAIN_RNG_b",
            path.display()
        )]
    );
}

#[test]
fn serial_twice_and_empty_guest_are_warnings() {
    let (_d, path) = conf("DOMAIN_RNG_a=( KWIF4Q KWIF4Q )\nDOMAIN_NAME_typo=x\n");
    let (_, found) = check_config_file(&path);
    assert_eq!(exit::code_of(&verdict(&found)), exit::OK);
    let w = warnings(&found);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[1].contains(
            ":2: guest typo has no device (no serial in DOMAIN_RNG_typo, no element in \
             DOMAIN_USB_typo)"
        ),
        "{}",
        w[1]
    );
    assert!(
        w[0].contains(":1: DOMAIN_RNG_a lists \"KWIF4Q\" twice: remove one"),
        "{}",
        w[0]
    );
}

#[test]
fn name_clashes() {
    // b and c both name libvirt domain "a", which is also id a's name.
    let (_d, path) = conf(
        "DOMAIN_RNG_a=( KWIF4Q )\nDOMAIN_RNG_b=( JAMMB3 )\nDOMAIN_NAME_b=a\n\
         DOMAIN_RNG_c=( QX3TZ7A )\nDOMAIN_NAME_c=\"a\"\n",
    );
    let (_, found) = check_config_file(&path);
    let p = path.display();
    assert_eq!(
        errors(&found),
        [
            format!(
                "error: {p}:3: guests a and b both name libvirt domain 'a': give each its own \
                 DOMAIN_NAME_, or merge guest b's DOMAIN_RNG_ and DOMAIN_USB_ lists into \
                 guest a's"
            ),
            format!(
                "error: {p}:5: guests a and c both name libvirt domain 'a': give each its own \
                 DOMAIN_NAME_, or merge guest c's DOMAIN_RNG_ and DOMAIN_USB_ lists into \
                 guest a's"
            ),
        ]
    );

    // x's libvirt name is the id of y, whose libvirt domain is 'other'.
    let (_d, path) = conf(
        "DOMAIN_RNG_x=( KWIF4Q )\nDOMAIN_NAME_x=y\nDOMAIN_RNG_y=( JAMMB3 )\nDOMAIN_NAME_y=other\n",
    );
    let (_, found) = check_config_file(&path);
    assert!(errors(&found).is_empty(), "{:#?}", lines(&found));
    let w = warnings(&found);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with(&format!(
            "warning: {}:2: DOMAIN_NAME_x is 'y', also the id of guest y (libvirt domain 'other')",
            path.display()
        )),
        "{}",
        w[0]
    );

    // The same name at two different URIs is two different domains.
    let (_d, path) = conf(
        "DOMAIN_RNG_a=( KWIF4Q )\nDOMAIN_URI_a=qemu+ssh://h1/system\nDOMAIN_NAME_a=vm\n\
         DOMAIN_RNG_b=( JAMMB3 )\nDOMAIN_URI_b=qemu+ssh://h2/system\nDOMAIN_NAME_b=vm\n",
    );
    let (_, found) = check_config_file(&path);
    assert_eq!(
        exit::code_of(&verdict(&found)),
        exit::OK,
        "{:#?}",
        lines(&found)
    );
    assert!(warnings(&found).is_empty(), "{:#?}", lines(&found));
}

#[test]
fn insecure_permissions() {
    let (_d, path) = conf("DOMAIN_RNG_a=( KWIF4Q )\n");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let (cfg, found) = check_config_file(&path);
    assert!(cfg.is_none());
    let p = path.display();
    assert_eq!(
        lines(&found),
        [
            format!("error: {p} is writable by group or others (mode 0666): run chmod go-w {p}"),
            unusable(&path)
        ]
    );
    assert_eq!(exit::code_of(&verdict(&found)), exit::FAILED);
}

#[test]
fn syntax_error_with_file_and_line() {
    let (_d, path) = conf("DOMAIN_RNG_a=( KWIF4Q )\nDOMAIN_RNG_b=( JAMMB3\n  'QX3TZ7A )\n");
    let (cfg, found) = check_config_file(&path);
    assert!(cfg.is_none());
    assert_eq!(
        lines(&found),
        [
            format!(
                "error: {}:3: unterminated single quote: correct that line (vm.conf is bash \
                 syntax; see bbvirt(1))",
                path.display()
            ),
            unusable(&path)
        ]
    );
}

/// The finding that says what a vm.conf that cannot be used kept from
/// being checked.
fn unusable(path: &Path) -> String {
    format!(
        "warning: {} cannot be used, so these were not checked: its guests and their devices \
         (serials, DOMAIN_USB_ elements, clashes), whether libvirt defines the guests, which \
         present devices go where, seedd.conf against it: fix the errors above, then run \
         bbvirt check again",
        path.display()
    )
}

#[test]
fn missing_config_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.conf");
    let (cfg, found) = check_config_file(&path);
    assert!(cfg.is_none());
    assert_eq!(exit::code_of(&verdict(&found)), exit::OK);
    let w = warnings(&found);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].starts_with(&format!(
            "warning: {} does not exist: no device is assigned to a guest: create it",
            path.display()
        )),
        "{}",
        w[0]
    );
}

#[test]
fn clean_config() {
    let (_d, path) = conf(
        "DOMAIN_RNG_a=( KWIF4Q JAMMB3 )\nDOMAIN_RNG_kbsd=( QX3TZ7A )\nDOMAIN_NAME_kbsd=kbsd-unstable\n",
    );
    let (_, found) = check_config_file(&path);
    let p = path.display();
    assert_eq!(
        lines(&found),
        [
            format!("ok: {p}: read, 2 guests"),
            format!("ok: {p}: 3 serials for 2 guests, no clash"),
        ]
    );
}

// ---------------------------------------------------------------------------
// libvirt

fn domain(id: &str, name: Option<&str>, uri: Option<&str>) -> DomainConf {
    DomainConf {
        id: id.into(),
        name: name.map(Into::into),
        uri: uri.map(Into::into),
        serials: vec!["KWIF4Q".into()],
        usb: Vec::new(),
        remote: Vec::new(),
    }
}

fn config(domains: Vec<DomainConf>) -> Config {
    Config {
        path: "/etc/bit-babbler/vm.conf".into(),
        domains,
        ..Config::default()
    }
}

#[test]
fn domains_defined_or_unknown() {
    let hv = FakeHv::new()
        .domain(None, "g1", false)
        .domain(None, "kbsd-unstable", true)
        .domain(Some("qemu:///system"), "remote", false);
    let cfg = config(vec![
        domain("g1", None, None),
        domain("kbsd", Some("kbsd-unstable"), None),
        domain("ghost", None, None),
        domain("remote", None, Some("qemu:///system")),
    ]);
    let found = check_domains(&cfg, None, &hv);
    assert_eq!(
        lines(&found),
        [
            "ok: guest g1: domain 'g1' at the default URI is defined (not running)",
            "ok: guest kbsd: domain 'kbsd-unstable' at the default URI is defined and running",
            "error: guest ghost: libvirt at the default URI has no domain 'ghost': define it, or \
             set DOMAIN_NAME_ghost (or DOMAIN_URI_ghost) to where it is (virsh list --all)",
            "ok: guest remote: domain 'remote' at qemu:///system is defined (not running)",
        ]
    );
    // One connection per URI.
    assert_eq!(hv.connects(), [None, Some("qemu:///system".to_string())]);
    assert_eq!(exit::code_of(&verdict(&found)), exit::FAILED);
    // Nothing was changed.
    assert!(hv.calls().is_empty());
}

#[test]
fn connect_option_overrides_domain_uris() {
    let hv = FakeHv::new().domain(Some("test:///x"), "g1", true);
    let cfg = config(vec![
        domain("g1", None, Some("qemu:///system")),
        domain("g2", None, None),
    ]);
    let found = check_domains(&cfg, Some("test:///x"), &hv);
    assert_eq!(hv.connects(), [Some("test:///x".to_string())]);
    assert_eq!(errors(&found).len(), 1, "{:#?}", lines(&found));
    assert!(errors(&found)[0].contains("(virsh -c test:///x list --all)"));
}

#[test]
fn unreachable_libvirt_is_one_warning() {
    let hv = FakeHv::new().connect_error(VirtError::Connect {
        uri: "qemu:///system".into(),
        message: "Failed to connect socket".into(),
    });
    let cfg = config(vec![
        domain("a", None, Some("qemu:///system")),
        domain("b", None, Some("qemu:///system")),
    ]);
    let found = check_domains(&cfg, None, &hv);
    assert_eq!(
        lines(&found),
        [
            "warning: libvirt not reachable at qemu:///system: Failed to connect socket (skipped \
          domain checks): start libvirtd (or virtqemud), or correct DOMAIN_URI_/--connect"
        ]
    );
    assert_eq!(exit::code_of(&verdict(&found)), exit::OK);
    assert_eq!(hv.connects().len(), 1);
}

#[test]
fn libvirt_version() {
    assert_eq!(
        check_libvirt_version(Ok(9_000_000)).to_string(),
        "ok: libvirt 9.0.0 runs hooks from qemu.d"
    );
    assert_eq!(check_libvirt_version(Ok(6_005_000)).severity, Severity::Ok);
    let old = check_libvirt_version(Ok(6_004_001));
    assert_eq!(old.severity, Severity::Error);
    assert!(
        old.to_string()
            .starts_with("error: libvirt 6.4.1 is older than 6.5 and ignores /etc/libvirt/hooks/qemu.d/bbvirt: upgrade libvirt"),
        "{old}"
    );
    assert_eq!(
        check_libvirt_version(Err("no".into())).severity,
        Severity::Warning
    );
}

#[test]
fn sysfs_devices_bbvirt_leaves_alone_are_warnings() {
    let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/host");
    let found = check::check_sysfs(&bbvirt::sysfs::Sysfs::new(&host));
    let w = warnings(&found);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(w[0].contains("busnum is not a number"), "{}", w[0]);
    assert!(
        w[1].contains("the name says bus 4 but busnum is 3"),
        "{}",
        w[1]
    );
    assert_eq!(exit::code_of(&verdict(&found)), exit::OK);
    let one = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/one-bitbabbler");
    assert!(check::check_sysfs(&bbvirt::sysfs::Sysfs::new(&one)).is_empty());
}

#[test]
fn findings_stay_on_one_line() {
    let f = Finding::error("a\nb", "c\rd");
    assert_eq!(f.to_string(), "error: a\\nb: c\\rd");
    assert_eq!(Finding::ok("fine").to_string(), "ok: fine");
}

// ---------------------------------------------------------------------------
// The binary, against libvirt's test driver (domain "test", running)

/// libvirt's test driver with a domain "test" that has an xHCI controller
/// (test:///default's has none, which check reports).
fn test_uri() -> String {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libvirt/test-node.xml");
    format!("test://{}", f.display())
}

fn run_check(root: &Path, args: &[&str]) -> std::process::Output {
    // The host's own seedd.conf (if any) stays out of the tests.
    let seedd: &[&str] = if args.contains(&"--seedd-config") {
        &[]
    } else {
        &["--seedd-config", "/nonexistent/seedd.conf"]
    };
    Command::new(env!("CARGO_BIN_EXE_bbvirt"))
        .arg("check")
        .args(seedd)
        .args(args)
        .env(check::ROOT_ENV, root)
        .env_remove("LIBVIRT_DEFAULT_URI")
        .output()
        .expect("running bbvirt")
}

#[test]
fn binary_end_to_end() {
    let bin = fs::canonicalize(env!("CARGO_BIN_EXE_bbvirt")).unwrap();
    let root = installed(bin.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let uri = test_uri();

    // All good: exit 0, nothing on stdout; -v lists the ok lines.
    let good = write_config(dir.path(), "DOMAIN_RNG_test=( KWIF4Q )\n");
    let good = good.to_str().unwrap();
    let (out, err) = expect_exit(&run_check(root.path(), &["-C", good, "-c", &uri]), exit::OK);
    assert_eq!(out, "", "{err}");
    assert!(err.contains("check: 0 errors, 0 warnings"), "{err}");
    let (out, _) = expect_exit(
        &run_check(root.path(), &["-v", "-C", good, "-c", &uri]),
        exit::OK,
    );
    assert!(out.lines().all(|l| l.starts_with("ok: ")), "{out}");
    assert!(
        out.contains(&format!(
            "ok: guest test: domain 'test' at {uri} is defined and running\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("ok: udev rule /usr/lib/udev/rules.d/60-bbvirt.rules runs this bbvirt"),
        "{out}"
    );
    assert!(out.contains("ok: libvirt "), "{out}");

    // An unknown guest and a bad serial: exit 1, one line each, with the fix.
    let bad = write_config(
        dir.path(),
        "DOMAIN_RNG_test=( KWIF4Q )\nDOMAIN_RNG_ghost=( jammb3 )\n",
    );
    let (out, err) = expect_exit(
        &run_check(root.path(), &["-C", bad.to_str().unwrap(), "-c", &uri]),
        exit::FAILED,
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!(
                "error: {}:2: DOMAIN_RNG_ghost lists \"jammb3\", not a BitBabbler serial: use 6-7 \
                 characters A-Z, 0-9 (\"JAMMB3\"?)",
                bad.display()
            ),
            format!(
                "error: guest ghost: libvirt at {uri} has no domain 'ghost': define it, or \
                 set DOMAIN_NAME_ghost (or DOMAIN_URI_ghost) to where it is (virsh -c \
                 {uri} list --all)"
            ),
        ],
        "{err}"
    );
    assert!(err.contains("check: 2 errors, 0 warnings"), "{err}");

    // A config that cannot be used is a finding (exit 1), not exit 3; a
    // missing one is a warning (exit 0). An empty root lacks the rule and hook.
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o666)).unwrap();
    let (out, _) = expect_exit(
        &run_check(root.path(), &["-C", bad.to_str().unwrap()]),
        exit::FAILED,
    );
    assert!(out.contains("writable by group or others"), "{out}");
    let empty = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.conf");
    let (out, _) = expect_exit(
        &run_check(empty.path(), &["-C", missing.to_str().unwrap()]),
        exit::FAILED,
    );
    let got: Vec<&str> = out.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(got, ["warning", "error", "error"], "{out}");
    let (out, _) = expect_exit(
        &run_check(root.path(), &["-C", missing.to_str().unwrap()]),
        exit::OK,
    );
    assert!(out.starts_with("warning: "), "{out}");
}

#[test]
fn seedd_taking_a_guests_device_fails_the_check() {
    let bin = fs::canonicalize(env!("CARGO_BIN_EXE_bbvirt")).unwrap();
    let root = installed(bin.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), "DOMAIN_RNG_test=( KWIF4Q )\n");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seedd");
    let seedd = |f: &str| fixtures.join(f).to_str().unwrap().to_string();

    let uri = test_uri();
    let conflict = seedd("conflict.conf");
    let args = [
        "-C",
        conf.to_str().unwrap(),
        "-c",
        &uri,
        "--seedd-config",
        &conflict,
    ];
    let (out, err) = expect_exit(&run_check(root.path(), &args), exit::FAILED);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [format!(
            "error: {conflict}:4: [Device:KWIF4Q] gives the host's seedd a device that vm.conf \
             assigns to guest test ({}:1): remove the section from seedd.conf (then restart \
             seedd), or the serial from vm.conf",
            conf.display()
        )],
        "{err}"
    );

    // The commented example names no device: a warning, exit 0.
    let example = seedd("example.conf");
    let args = [
        "-C",
        conf.to_str().unwrap(),
        "-c",
        &uri,
        "--seedd-config",
        &example,
    ];
    let (out, err) = expect_exit(&run_check(root.path(), &args), exit::OK);
    assert!(
        out.starts_with(&format!("warning: {example} has no [Device:...] section")),
        "{out}"
    );
    assert!(err.contains("check: 0 errors, 1 warning"), "{err}");
}

#[test]
fn guests_without_a_usable_usb_controller() {
    let uhci = "<controller type='usb' index='0' model='piix3-uhci'/>";
    let hv = FakeHv::new()
        .domain(None, "none-running", true)
        .usb_controllers(
            None,
            "none-running",
            "<controller type='usb' model='none'/>",
        )
        .domain(None, "none-off", false)
        .usb_controllers(None, "none-off", "")
        .domain(None, "uhci", false)
        .usb_controllers(None, "uhci", uhci)
        .domain(None, "xhci", true)
        .domain(None, "nodevices", true)
        .usb_controllers(None, "nodevices", "");
    // Each guest its own serial (a serial goes to the first guest listing it).
    let with = |id: &str, serial: &str| DomainConf {
        serials: vec![serial.into()],
        usb: Vec::new(),
        remote: Vec::new(),
        ..domain(id, None, None)
    };
    let cfg = config(vec![
        with("none-running", "AAAAAA"),
        with("none-off", "BBBBBB"),
        with("uhci", "CCCCCC"),
        with("xhci", "DDDDDD"),
        DomainConf {
            serials: vec![],
            usb: Vec::new(),
            remote: Vec::new(),
            ..domain("nodevices", None, None)
        },
    ]);
    let found = check_domains(&cfg, None, &hv);
    let fix = "add <controller type='usb' model='qemu-xhci'/> with `virsh edit";
    assert_eq!(
        errors(&found),
        [
            format!(
                "error: guest none-running: domain 'none-running' has no USB controller (live \
                 XML): every attach of its devices will fail: {fix} none-running`, then restart \
                 the guest"
            ),
            format!(
                "error: guest none-off: domain 'none-off' has no USB controller (definition): \
                 every attach of its devices will fail: {fix} none-off`, then restart the guest"
            ),
        ]
    );
    assert_eq!(
        warnings(&found),
        [format!(
            "warning: guest uhci: domain 'uhci' has only a USB 1.1 controller (piix3-uhci, \
             definition): its devices run at 12 Mb/s at most there (a BitBabbler far below its \
             rate): {fix} uhci`, then restart \
             the guest"
        )]
    );
    assert_eq!(exit::code_of(&verdict(&found)), exit::FAILED);
}

// ---------------------------------------------------------------------------
// DOMAIN_USB_ elements

#[test]
fn check_names_overlapping_elements_and_an_element_with_several_devices() {
    let cfg = bbvirt::config::parse_native(
        Path::new("/etc/bit-babbler/vm.conf"),
        "DOMAIN_USB_a=( \"id=10c4:ea60\" )\n\
         DOMAIN_USB_b=( \"id=10c4:ea60 port=1-5\"\n\
         \x20              \"id=0658:0200\" )\n",
    )
    .unwrap();
    let found = check::check_config(&cfg);
    assert_eq!(
        warnings(&found),
        [
            "warning: /etc/bit-babbler/vm.conf:1: DOMAIN_USB_a[0] and /etc/bit-babbler/vm.conf:2: \
          DOMAIN_USB_b[0] can match the same device: /etc/bit-babbler/vm.conf:2: DOMAIN_USB_b[0] \
          (more specific) gets it: add a port= or serial= key to tell the devices apart, or \
          remove one"
        ]
    );
    assert!(errors(&found).is_empty(), "{:?}", lines(&found));
    // A USB-only guest is not "a guest with no serial".
    assert!(!lines(&found).iter().any(|l| l.contains("has no device")));

    let tree = crate::util::fixture::FixtureTree::new()
        .root_hub(1)
        .usb_device("1-4", "10c4", "ea60", Some("0001"), 1, 4)
        .usb_device("1-5", "10c4", "ea60", Some("0001"), 1, 5)
        .usb_device("1-6", "10c4", "ea60", Some("0001"), 1, 6);
    let scan = tree.sysfs().scan().unwrap();
    let found = check::present_element_findings(&cfg, &scan.usb);
    assert_eq!(
        lines(&found),
        [
            "warning: /etc/bit-babbler/vm.conf:1: DOMAIN_USB_a[0] matches 3 present devices \
          (1-4, 1-5, 1-6): it takes 1-4, the others stay with the host unless another element takes \
          them: one element per device: add an element for each, told apart by port="
        ]
    );
}

#[test]
fn check_reports_every_malformed_element_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(
        dir.path(),
        "DOMAIN_USB_a=( \"id=zz:1\"\n               \"id=10c4:ea60\"\n               \"serial=0001\" )\n",
    );
    let (cfg, found) = check_config_file(&conf);
    // The valid element is kept (and checked); the others are named as
    // left out.
    let cfg = cfg.expect("the rest of the file");
    assert_eq!(cfg.domains[0].usb.len(), 1);
    assert_eq!(cfg.usb_left_out, [("a".into(), 0), ("a".into(), 2)]);
    assert_eq!(
        warnings(&found),
        [format!(
            "warning: {}: not checked because of the errors above: whether DOMAIN_USB_a[0], \
             DOMAIN_USB_a[2] can match the same device as another element, and which present \
             devices they would take: correct them, then run bbvirt check again",
            conf.display()
        )]
    );
    let errs = errors(&found);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!(
            "error: {}:1: DOMAIN_USB_a[0] \"id=zz:1\": ",
            conf.display()
        )),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with(&format!(
            "error: {}:3: DOMAIN_USB_a[2] \"serial=0001\": needs id= or port=",
            conf.display()
        )),
        "{errs:?}"
    );
}

#[test]
fn check_goes_on_after_config_errors() {
    // One malformed DOMAIN_USB_ element beside two valid ones that overlap:
    // check reported the malformed one and nothing else. Now: every error,
    // the overlap, the bad serial, the guests in libvirt, the present
    // devices against the valid elements, and what it could not check.
    let bin = fs::canonicalize(env!("CARGO_BIN_EXE_bbvirt")).unwrap();
    let root = installed(bin.to_str().unwrap());
    let tree = crate::util::fixture::FixtureTree::new()
        .root_hub(1)
        .root_hub(2)
        .usb_device("1-4", "10c4", "ea60", Some("0001"), 1, 4)
        .usb_device("1-5", "10c4", "ea60", Some("0002"), 1, 5)
        .usb_device("2-1", "0658", "0200", None, 2, 2)
        .usb_device("2-2", "0658", "0200", None, 2, 3);
    let uri = test_uri();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check");
    let dir = tempfile::tempdir().unwrap();
    for (name, at, fix) in [
        (
            "partial-usb.conf",
            [":5", ":4", ":7", ":4", ":6", ":8"],
            "correct that line (vm.conf is bash syntax; see bbvirt(1))",
        ),
        (
            "partial-bash.conf",
            [""; 6],
            "correct that setting (see bbvirt(1))",
        ),
    ] {
        let text = fs::read_to_string(fixtures.join(name)).unwrap();
        let conf = write_config(dir.path(), &text);
        let c = conf.display().to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_bbvirt"))
            .args(["check", "--seedd-config", "/nonexistent/seedd.conf"])
            .args(["-C", &c, "-c", &uri])
            .env(check::ROOT_ENV, root.path())
            .env("BBVIRT_SYSFS_ROOT", tree.root())
            .env_remove("LIBVIRT_DEFAULT_URI")
            .output()
            .unwrap();
        let (out, err) = expect_exit(&out, exit::FAILED);
        let [bad, t0, g0, t0_, t2, rng] = at.map(|l| format!("{c}{l}"));
        assert_eq!(t0, t0_);
        // Guests in file order, or by id when bash read the file.
        let (test0, ghost0) = (
            format!("{t0}: DOMAIN_USB_test[0]"),
            format!("{g0}: DOMAIN_USB_ghost[0]"),
        );
        let pair = if name.contains("bash") {
            format!("{ghost0} and {test0}")
        } else {
            format!("{test0} and {ghost0}")
        };
        let got: Vec<&str> = out.lines().collect();
        assert_eq!(
            got,
            [
                format!(
                    "error: {bad}: DOMAIN_USB_test[1] \"id=10c4\": invalid USB id '10c4': \
                     expected VVVV:PPPP, four hex digits each: {fix}"
                ),
                format!(
                    "error: {rng}: DOMAIN_RNG_ghost lists \"kwif4q\", not a BitBabbler serial: \
                     use 6-7 characters A-Z, 0-9 (\"KWIF4Q\"?)"
                ),
                format!(
                    "warning: {pair} can match the same device: {g0}: DOMAIN_USB_ghost[0] (more \
                     specific) gets it: add a port= or serial= key to tell the devices apart, or \
                     remove one"
                ),
                format!(
                    "warning: {c}: not checked because of the errors above: whether \
                     DOMAIN_USB_test[1] can match the same device as another element, and which \
                     present devices it would take: correct it, then run bbvirt check again"
                ),
                format!(
                    "error: guest ghost: libvirt at {uri} has no domain 'ghost': define it, or \
                     set DOMAIN_NAME_ghost (or DOMAIN_URI_ghost) to where it is (virsh -c \
                     {uri} list --all)"
                ),
                format!(
                    "warning: {t0}: DOMAIN_USB_test[0] matches 2 present devices (1-4, 1-5): it \
                     takes 1-5, the others stay with the host unless another element takes \
                     them: one element per device: add an element for each, told apart by port="
                ),
                format!(
                    "warning: {t2}: DOMAIN_USB_test[2] matches 2 present devices (2-1, 2-2): it \
                     takes 2-1, the others stay with the host unless another element takes \
                     them: one element per device: add an element for each, told apart by port="
                ),
            ],
            "{name}\n{err}"
        );
        assert!(err.contains("check: 3 errors, 4 warnings"), "{name}: {err}");
    }
}
