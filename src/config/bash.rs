//! The bash fallback: a file outside the native subset is evaluated by
//! `/bin/bash` with a fixed script, and its variables are read back from a
//! NUL-separated dump.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ConfigError, RawVar, SourceLines, Validated, validate};

/// The shell used for the fallback (absolute: never looked up in `PATH`).
pub const BASH: &str = "/bin/bash";

/// How long bash may take to evaluate the file before it is killed.
pub const BASH_TIMEOUT: Duration = Duration::from_secs(10);

/// The most output we accept from bash (per stream).
const MAX_BASH_OUTPUT: u64 = 16 << 20;

/// The fixed script bash runs: `$1` is the file.  Its stdout goes to stderr
/// so that only the dump reaches fd 3 (our stdout).  Dump format, each field
/// NUL-terminated: `bbvirt-vars-1`, then per `${!DOMAIN_@}` (and
/// `${!SERVE_USB_@}`, `BBVIRT_TIMEOUT`) variable `V`,
/// name, `${!name}`, element count, elements; then `E`.
const BASH_SCRIPT: &str = r#"__bbvirt_file=$1
shift
exec 3>&1 1>&2
source -- "$__bbvirt_file"
__bbvirt_rc=$?
set +o errexit +o nounset
if (( __bbvirt_rc != 0 )); then
    builtin printf 'sourcing the file returned status %d\n' "$__bbvirt_rc"
    exit "$__bbvirt_rc"
fi
builtin printf 'bbvirt-vars-1\0' >&3
for __bbvirt_n in "${!DOMAIN_@}" "${!SERVE_USB_@}" "${!BBVIRT_TIMEOUT@}"; do
    __bbvirt_r="${__bbvirt_n}[@]"
    __bbvirt_v=( "${!__bbvirt_r}" )
    builtin printf 'V\0%s\0%s\0%d\0' "$__bbvirt_n" "${!__bbvirt_n}" "${#__bbvirt_v[@]}" >&3
    if (( ${#__bbvirt_v[@]} > 0 )); then
        builtin printf '%s\0' "${__bbvirt_v[@]}" >&3
    fi
done
builtin printf 'E\0' >&3
"#;

/// Runs bash on `path` (permissions already checked) and builds the config,
/// its settings validated one by one ([`Validated`]).
pub(super) fn run_bash(path: &Path) -> Result<Validated, ConfigError> {
    let done = run_bash_raw(path, BASH_TIMEOUT)?;
    if !done.status.success() {
        return Err(ConfigError::Bash {
            path: path.to_path_buf(),
            status: crate::child::describe_status(done.status),
            detail: crate::child::stderr_summary(&done.stderr),
        });
    }
    let mut vars = parse_dump(path, &done.stdout)?;
    vars.sort_by(|a, b| a.name.cmp(&b.name));
    let mut validated = validate(path, &vars, SourceLines::default());
    validated.config.domains.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(validated)
}

/// Runs the fixed script with a minimal environment, no stdin, in `/`, and
/// waits at most `timeout` for it (and anything holding its output open).
fn run_bash_raw(path: &Path, timeout: Duration) -> Result<crate::child::Finished, ConfigError> {
    // bash runs in `/` (so that globs do not depend on our cwd): make the
    // path absolute, which also stops `source` from searching PATH for it.
    let arg = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| ConfigError::BashSpawn {
                path: path.to_path_buf(),
                source,
            })?
            .join(path)
    };
    let mut cmd = Command::new(BASH);
    cmd.args(["--norc", "--noprofile", "-c", BASH_SCRIPT, "bbvirt-config"])
        .arg(&arg)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LC_ALL", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::null());
    crate::child::run(&mut cmd, timeout, MAX_BASH_OUTPUT).map_err(|e| match e {
        crate::child::ChildError::Spawn(source) => ConfigError::BashSpawn {
            path: path.to_path_buf(),
            source,
        },
        crate::child::ChildError::TimedOut(limit) => ConfigError::BashTimeout {
            path: path.to_path_buf(),
            secs: limit.as_secs(),
        },
    })
}

/// Reads the NUL-separated dump written by [`BASH_SCRIPT`].
fn parse_dump(path: &Path, out: &[u8]) -> Result<Vec<RawVar>, ConfigError> {
    let bad = |msg: String| ConfigError::BashOutput {
        path: path.to_path_buf(),
        msg,
    };
    if out.is_empty() {
        return Err(bad(
            "bash stopped before the end of the file (does it call `exit`?)".to_string(),
        ));
    }
    // Every field is NUL-terminated: the last split piece must be empty.
    let mut fields: Vec<&[u8]> = out.split(|&b| b == 0).collect();
    if fields.pop() != Some(&[][..]) {
        return Err(bad("truncated variable dump".to_string()));
    }
    let mut fields = fields.into_iter();
    let mut next = |what: &str| -> Result<String, ConfigError> {
        let f = fields
            .next()
            .ok_or_else(|| bad(format!("truncated variable dump (missing {what})")))?;
        String::from_utf8(f.to_vec()).map_err(|_| bad(format!("{what} is not valid UTF-8")))
    };
    if next("header")? != "bbvirt-vars-1" {
        return Err(bad("unexpected variable dump header".to_string()));
    }
    let mut vars = Vec::new();
    loop {
        match next("record")?.as_str() {
            "E" => break,
            "V" => {}
            other => return Err(bad(format!("unexpected record `{other}`"))),
        }
        let name = next("variable name")?;
        let first = next(&format!("value of {name}"))?;
        let count: usize = next(&format!("element count of {name}"))?
            .parse()
            .map_err(|_| bad(format!("bad element count for {name}")))?;
        let mut values = Vec::new();
        for _ in 0..count {
            values.push(next(&format!("element of {name}"))?);
        }
        vars.push(RawVar {
            name,
            first,
            values,
            line: None,
            lines: None,
        });
    }
    match next("end") {
        Err(_) => Ok(vars),
        Ok(_) => Err(bad("trailing data after the variable dump".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;

    #[test]
    fn bash_fallback_and_errors() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let f = dir.path().join(name);
            std::fs::write(&f, text).expect("write");
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            f
        };
        let f = write(
            "dyn.conf",
            "S=ABC\nDOMAIN_RNG_b=( \"$S\" X )\nDOMAIN_RNG_a=(Y)\necho noise\n",
        );
        let l = load_report(&f).expect("load").expect("exists");
        assert_eq!(
            l.via,
            Via::Bash {
                line: 2,
                reason: "`$` (expansion) in double quotes".into()
            }
        );
        let ids: Vec<&str> = l.config.domains.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(l.config.domains[1].serials, ["ABC", "X"]);

        let f = write("fail.conf", "X=1\nfalse\n");
        let e = eval_with_bash(&f).unwrap_err().to_string();
        assert!(e.contains("exit status 1"), "{e}");
        assert!(e.contains("returned status 1"), "{e}");

        let f = write("exit.conf", "DOMAIN_RNG_a=(A)\nexit 0\n");
        let e = eval_with_bash(&f).unwrap_err().to_string();
        assert!(e.contains("call `exit`"), "{e}");

        // DOMAIN_USB_ through bash: a good element, then a bad one named
        // by its index (bash tells no lines).
        let f = write(
            "usb.conf",
            "P=1-5\nDOMAIN_USB_ha=( \"id=10c4:ea60 port=$P\" )\n",
        );
        let c = Config::load(&f).expect("load").expect("exists");
        assert_eq!(c.domains[0].usb[0].port, Some((1, vec![5])));
        let f = write(
            "usb-bad.conf",
            "P=x\nDOMAIN_USB_ha=( \"id=10c4:ea60\" \"$P\" )\n",
        );
        let e = Config::load(&f).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: DOMAIN_USB_ha[1] \"x\": 'x' is not key=value (keys: id, serial, port)",
                f.display()
            )
        );

        let f = write("syntax.conf", "X=$(\n");
        let e = Config::load(&f).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("evaluating {} with bash failed", f.display())),
            "{e}"
        );
    }

    #[test]
    fn bash_timeout_kills() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("slow.conf");
        std::fs::write(&f, "sleep 30 & sleep 30\n").expect("write");
        let t = std::time::Instant::now();
        let e = run_bash_raw(&f, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, ConfigError::BashTimeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn dump_parser_rejects_garbage() {
        let p = Path::new("f");
        assert!(parse_dump(p, b"").is_err());
        assert!(parse_dump(p, b"nope\0E\0").is_err());
        assert!(parse_dump(p, b"bbvirt-vars-1\0V\0DOMAIN_RNG_a\0A\0x\0").is_err());
        assert!(parse_dump(p, b"bbvirt-vars-1\0V\0DOMAIN_RNG_a\0A\0").is_err());
        assert!(parse_dump(p, b"bbvirt-vars-1\0E\0junk").is_err());
        let v = parse_dump(p, b"bbvirt-vars-1\0V\0DOMAIN_RNG_a\0A\x002\0A\0B\0E\0").expect("ok");
        assert_eq!(v[0].values, ["A", "B"]);
    }
}
