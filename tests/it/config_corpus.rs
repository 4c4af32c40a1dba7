//! The native vm.conf parser against real bash, on the corpus in
//! `tests/fixtures/conf/`:
//!
//! - `NN-*.conf`: must parse natively and give exactly what bash gives;
//! - `bash-*.conf`: need bash; the loader must choose it and get it right;
//! - `bad-*.conf`: malformed; `bad-*.expected` holds `LINE: message`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bbvirt::config::{self, Config, NativeError, Via};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conf")
}

/// Fixture files whose name starts with `prefix` (sorted).
fn corpus(filter: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".conf") && filter(name)
        })
        .collect();
    files.sort();
    files
}

/// A copy of `src` with safe permissions (the checkout's may not be).
fn safe_copy(dir: &Path, src: &Path) -> PathBuf {
    let dst = dir.join(src.file_name().expect("file name"));
    std::fs::copy(src, &dst).expect("copy fixture");
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    dst
}

/// (name, uri, serials) of one domain.
type Dom = (Option<String>, Option<String>, Vec<String>);
type Domains = BTreeMap<String, Dom>;
/// (file, line where bash is first needed, expected domains).
type BashCase = (&'static str, usize, Vec<(&'static str, Dom)>);

/// Order-independent view: id -> (name, uri, serials in order).
fn as_map(c: &Config) -> Domains {
    let map: Domains = c
        .domains
        .iter()
        .map(|d| {
            (
                d.id.clone(),
                (d.name.clone(), d.uri.clone(), d.serials.clone()),
            )
        })
        .collect();
    assert_eq!(map.len(), c.domains.len(), "duplicate ids in {c:?}");
    map
}

fn dom(name: Option<&str>, uri: Option<&str>, serials: &[&str]) -> Dom {
    (
        name.map(str::to_string),
        uri.map(str::to_string),
        serials.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn native_parse_equals_bash_on_the_corpus() {
    let files = corpus(|n| n.starts_with(|c: char| c.is_ascii_digit()));
    assert!(
        files.len() >= 25,
        "only {} native corpus files",
        files.len()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut with_domains = 0;
    for src in &files {
        let path = safe_copy(dir.path(), src);
        let text = std::fs::read_to_string(&path).expect("read");
        let native = config::parse_native(&path, &text)
            .unwrap_or_else(|e| panic!("{}: native parse failed: {e}", src.display()));
        let bash = config::eval_with_bash(&path)
            .unwrap_or_else(|e| panic!("{}: bash failed: {e}", src.display()));
        assert_eq!(
            as_map(&native),
            as_map(&bash),
            "{}: native vs bash",
            src.display()
        );

        // The loader takes the native route and returns the same thing.
        let loaded = config::load_report(&path).expect("load").expect("exists");
        assert_eq!(loaded.via, Via::Native, "{}", src.display());
        assert_eq!(loaded.config, native);
        if !native.domains.is_empty() {
            with_domains += 1;
        }
    }
    // Only the comments-only file is empty: the comparisons are not vacuous.
    assert_eq!(with_domains, files.len() - 1);
}

#[test]
fn corpus_spot_checks() {
    let load = |name: &str| {
        let text = std::fs::read_to_string(fixtures().join(name)).expect("read");
        as_map(&config::parse_native(Path::new(name), &text).expect("native"))
    };
    let m = load("01-upstream-example.conf");
    assert_eq!(
        m["kbsd"],
        dom(
            Some("kbsd-unstable"),
            Some("qemu+ssh://your.domain/system"),
            &["G2SJ3Z"]
        )
    );
    assert_eq!(
        m["sid"],
        dom(None, Some("qemu:///system"), &["KWIF4Q", "JAXJE6"])
    );
    let m = load("08-scalar-is-element-zero.conf");
    assert_eq!(m["x"].2, ["ABC123"]);
    assert_eq!(m["y"].2, ["Y0", "Y2", "Y3"]);
    assert_eq!(m["z"].2, ["Z1", "Z2"]);
    assert_eq!(m["w"].1.as_deref(), Some("qemu:///system"));
    let m = load("17-uri-query.conf");
    assert_eq!(
        m["q1"].1.as_deref(),
        Some("qemu+ssh://root@host.example:2222/system?keyfile=/root/.ssh/id&no_verify=1")
    );
    assert_eq!(
        m["q4"].1.as_deref(),
        Some("qemu+unix:///system?socket=/a&b")
    );
    let m = load("15-name-unicode.conf");
    assert_eq!(m["snow"].0.as_deref(), Some("☃ snowman"));
    let m = load("18-empty-arrays.conf");
    assert_eq!(m.len(), 5);
    assert_eq!(m["emptystr"].2, [""]);
    assert!(m["none"].2.is_empty());
}

#[test]
fn native_order_is_file_order_and_bash_order_is_alphabetical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = safe_copy(dir.path(), &fixtures().join("26-many-domains.conf"));
    let native = config::Config::load(&path).expect("load").expect("exists");
    let ids: Vec<&str> = native.domains.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "vm01",
            "vm02",
            "VM03",
            "_underscore",
            "a1b2c3",
            "zz",
            "shared"
        ]
    );
    assert_eq!(
        native.duplicates(),
        [(
            "S00001".to_string(),
            "vm01".to_string(),
            "shared".to_string()
        )]
    );
    let bash = config::eval_with_bash(&path).expect("bash");
    let ids: Vec<&str> = bash.domains.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "VM03",
            "_underscore",
            "a1b2c3",
            "shared",
            "vm01",
            "vm02",
            "zz"
        ]
    );
}

#[test]
fn files_that_need_bash_are_evaluated_by_bash() {
    let expected: &[BashCase] = &[
        (
            "bash-variable.conf",
            4,
            vec![(
                "var",
                dom(None, Some("qemu:///system"), &["A1", "A2", "A3"]),
            )],
        ),
        (
            "bash-for-loop.conf",
            3,
            vec![
                (
                    "alpha",
                    dom(
                        None,
                        Some("qemu+ssh://alpha.example/system"),
                        &["ALPHA1", "ALPHA2"],
                    ),
                ),
                (
                    "beta",
                    dom(
                        None,
                        Some("qemu+ssh://beta.example/system"),
                        &["BETA1", "BETA2"],
                    ),
                ),
                ("static", dom(None, None, &["S1"])),
            ],
        ),
        (
            "bash-function.conf",
            2,
            vec![
                ("vm1", dom(None, None, &["V1", "V2", "V3"])),
                ("vm2", dom(Some("vm-two"), None, &["W1"])),
            ],
        ),
        (
            "bash-brace-and-subst.conf",
            1,
            vec![(
                "br",
                dom(Some("br-name"), Some("qemu:///system"), &["S1", "S2", "S3"]),
            )],
        ),
        (
            "bash-case.conf",
            2,
            vec![("guest", dom(None, None, &["H1"]))],
        ),
    ];
    let files = corpus(|n| n.starts_with("bash-"));
    assert_eq!(files.len(), expected.len());
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, line, domains) in expected {
        let path = safe_copy(dir.path(), &fixtures().join(name));
        let text = std::fs::read_to_string(&path).expect("read");
        match config::parse_native(&path, &text) {
            Err(NativeError::NeedsBash { line: l, .. }) => assert_eq!(l, *line, "{name}"),
            other => panic!("{name}: expected NeedsBash, got {other:?}"),
        }
        let loaded = config::load_report(&path).expect("load").expect("exists");
        assert!(
            matches!(loaded.via, Via::Bash { line: l, .. } if l == *line),
            "{name}: {:?}",
            loaded.via
        );
        let want: Domains = domains
            .iter()
            .map(|(id, d)| (id.to_string(), d.clone()))
            .collect();
        assert_eq!(as_map(&loaded.config), want, "{name}");
        // Alphabetical by id in bash mode.
        let ids: Vec<&String> = loaded.config.domains.iter().map(|d| &d.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "{name}");
    }
}

#[test]
fn malformed_files_give_file_line_message() {
    let files = corpus(|n| n.starts_with("bad-"));
    assert!(files.len() >= 5);
    let dir = tempfile::tempdir().expect("tempdir");
    for src in &files {
        let expected_file = src.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_file.display()));
        let path = safe_copy(dir.path(), src);
        let err = match Config::load(&path) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("{}: expected an error, got {c:?}", src.display()),
        };
        assert_eq!(
            err,
            format!("{}:{}", path.display(), expected.trim_end()),
            "{}",
            src.display()
        );
    }
}

/// Differential fuzzing: random files made of the tokens that matter; when
/// the native parser accepts one, bash must agree.  (A fixed seed keeps it
/// reproducible; raise `CASES` locally to search harder.)
#[test]
fn random_files_native_agrees_with_bash() {
    const CASES: usize = 1000;
    const TOKENS: &[&str] = &[
        "DOMAIN_RNG_a=",
        "DOMAIN_RNG_b+=",
        "DOMAIN_URI_a=",
        "DOMAIN_NAME_b=",
        "DOMAIN_NAME_a+=",
        "X=",
        "(",
        ")",
        " ",
        "\t",
        "\n",
        "'",
        "\"",
        "\\",
        "#",
        ";",
        "A",
        "b",
        "é",
        "=",
        "-",
        "declare -a ",
        "export ",
        "readonly ",
        "typeset ",
        "\\\n",
        "!",
        "%",
        "+",
        ":",
        "/",
        "DOMAIN_RNG_a=( ",
        "DOMAIN_RNG_b+=(",
        " ) ",
        "DOMAIN_URI_b=\"",
        "\" ",
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzz.conf");
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut accepted = 0;
    for _ in 0..CASES {
        let n = 1 + (rand() % 14) as usize;
        let text: String = (0..n)
            .map(|_| TOKENS[(rand() % TOKENS.len() as u64) as usize])
            .collect();
        let Ok(native) = config::parse_native(&path, &text) else {
            continue;
        };
        accepted += 1;
        std::fs::write(&path, &text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        match config::eval_with_bash(&path) {
            Ok(bash) => assert_eq!(as_map(&native), as_map(&bash), "file text: {text:?}"),
            Err(e) => panic!("native accepted {text:?} but bash failed: {e}"),
        }
    }
    assert!(
        accepted > CASES / 20,
        "only {accepted} cases accepted natively"
    );
}
