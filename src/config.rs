//! vm.conf: which BitBabbler serials belong to which libvirt guest.
//!
//! The file (by default [`DEFAULT_CONFIG`]) is, per the bit-babbler manual, a
//! bash fragment that the original `bbvirt` script simply sourced.  Per guest,
//! with `<id>` a shell identifier:
//!
//! - `DOMAIN_RNG_<id>=( SERIAL ... )`: the serials passed through to that guest;
//! - `DOMAIN_URI_<id>="URI"`: the libvirt connection URI (optional);
//! - `DOMAIN_NAME_<id>="name"`: the libvirt domain name when it is not a shell
//!   identifier (optional, e.g. `kbsd-unstable`).
//!
//! # How the file is read
//!
//! 1. **Permissions first.**  The file decides which guest gets a hardware
//!    RNG, and in bash mode it is executed, so before using it at all we
//!    refuse a file that someone other than root (or, when not running as
//!    root, the invoking user) could have written: see [`check_permissions`].
//! 2. **Native parse.**  Almost every real vm.conf is a list of plain
//!    assignments.  [`parse_native`] understands that subset of bash exactly
//!    (quoting, escapes, multi-line arrays, comments, `+=`, `declare`/`export`/
//!    `readonly` prefixes, concatenation, `;`) without executing anything: it
//!    is safe and fast, and gives `FILE:LINE: message` errors for mistakes it
//!    can be sure of (unterminated quote or array, DOS line endings, bad bytes).
//! 3. **Bash fallback.**  The manual lets admins build the file dynamically
//!    (loops, `$VAR`, command substitution...).  As soon as the native parser
//!    meets anything outside its subset it stops and the file is evaluated by
//!    `/bin/bash` instead ([`eval_with_bash`]), with a fixed script, an empty
//!    environment, no stdin and a timeout; the variables are read back through
//!    a NUL-separated dump, never by parsing `declare -p` output.
//!
//! # Domains and their order
//!
//! A domain is every `<id>` that has any of the three variables set (an
//! empty array `DOMAIN_RNG_x=()` counts; a bare `declare -a DOMAIN_RNG_x` does
//! not, as in bash).  Empty `DOMAIN_URI_`/`DOMAIN_NAME_` values mean "not set",
//! as in the original script.  With the native parser domains are in order of
//! the first assignment of any of their variables in the file; in bash mode
//! the order is alphabetical by id (bash cannot tell us the file order).  When
//! a serial is listed by two domains the first one in that order wins
//! ([`Config::domain_for_serial`], [`Config::duplicates`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::device::is_valid_serial;

/// The configuration file used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/bit-babbler/vm.conf";

/// Where a bare `--config NAME` is looked up.
pub const CONFIG_DIR: &str = "/etc/bit-babbler";

/// The shell used for the fallback (absolute: never looked up in `PATH`).
pub const BASH: &str = "/bin/bash";

/// How long bash may take to evaluate the file before it is killed.
pub const BASH_TIMEOUT: Duration = Duration::from_secs(10);

/// The most output we accept from bash (per stream).
const MAX_BASH_OUTPUT: u64 = 16 << 20;

/// One guest as vm.conf describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConf {
    /// The shell identifier `<id>` of `DOMAIN_RNG_<id>`.
    pub id: String,
    /// `DOMAIN_NAME_<id>`: the libvirt domain name when it differs from `id`.
    pub name: Option<String>,
    /// `DOMAIN_URI_<id>`: the libvirt connection URI for this guest.
    pub uri: Option<String>,
    /// `DOMAIN_RNG_<id>`: the serial numbers assigned to this guest, in order.
    pub serials: Vec<String>,
}

impl DomainConf {
    /// The libvirt domain name: `DOMAIN_NAME_<id>` if set, else the id.
    pub fn libvirt_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// The whole of vm.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Every id that has any DOMAIN_* variable: in order of first appearance
    /// in the file (native parse) or alphabetical by id (bash evaluation).
    pub domains: Vec<DomainConf>,
    /// `BBVIRT_TIMEOUT`: seconds allowed for libvirt's work (bbvirt's own
    /// setting; `--timeout` overrides it).
    pub timeout: Option<u64>,
    /// Where the variables are set, for messages (native parse only: empty
    /// when bash evaluated the file).
    pub lines: SourceLines,
}

/// Where the native parser found each variable set, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceLines {
    vars: BTreeMap<String, VarLines>,
}

/// Where one variable is set: its first assignment, and the line each of
/// its elements starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VarLines {
    first: usize,
    elements: Vec<usize>,
}

impl SourceLines {
    /// The 1-based line of the first assignment to `var`.
    pub fn first_assignment(&self, var: &str) -> Option<usize> {
        self.vars.get(var).map(|v| v.first)
    }

    /// The 1-based line element `index` of `var` starts on.
    pub fn element(&self, var: &str, index: usize) -> Option<usize> {
        self.vars.get(var)?.elements.get(index).copied()
    }
}

/// The variable that sets bbvirt's libvirt deadline in vm.conf.
pub const TIMEOUT_VAR: &str = "BBVIRT_TIMEOUT";

/// `BBVIRT_TIMEOUT` from the variables: whole seconds, 1 to 3600.
fn timeout_from_vars(path: &Path, vars: &[RawVar]) -> Result<Option<u64>, ConfigError> {
    let Some(var) = vars.iter().rev().find(|v| v.name == TIMEOUT_VAR) else {
        return Ok(None);
    };
    match var.first.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) && var.first.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(n))
        }
        _ => {
            let msg = format!(
                "{TIMEOUT_VAR}={:?} is not a whole number of seconds from 1 to 3600",
                var.first
            );
            Err(match var.line {
                Some(line) => ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line,
                    msg,
                },
                None => ConfigError::Value {
                    path: path.to_path_buf(),
                    msg,
                },
            })
        }
    }
}

/// Errors reading vm.conf.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A mistake in the file, at a 1-based line.
    #[error("{path}:{line}: {msg}")]
    Syntax {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// The file exists but could not be read.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is a directory, device, FIFO...
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    /// Someone other than root (or the invoking user) could have written it.
    #[error("{path} {problem}: run {fix}")]
    Insecure {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    /// `/bin/bash` could not be started.
    #[error("evaluating {path}: cannot run {BASH}")]
    BashSpawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// bash failed while evaluating the file.
    #[error("evaluating {path} with bash failed ({status}): {detail}")]
    Bash {
        path: PathBuf,
        status: String,
        detail: String,
    },
    /// bash did not finish in time and was killed.
    #[error("evaluating {path} with bash timed out after {secs} s (killed)")]
    BashTimeout { path: PathBuf, secs: u64 },
    /// A setting has a value bbvirt cannot use.
    #[error("{path}: {msg}")]
    Value { path: PathBuf, msg: String },
    /// bash ran, but what it reported back is unusable.
    #[error("evaluating {path} with bash: {msg}")]
    BashOutput { path: PathBuf, msg: String },
}

/// Why [`parse_native`] did not produce a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The file uses something outside the native subset (at `line`):
    /// evaluate it with bash instead.
    #[error("line {line}: {reason} needs bash")]
    NeedsBash { line: usize, reason: String },
    /// The file is certainly wrong.
    #[error(transparent)]
    Invalid(ConfigError),
}

/// How [`load_report`] obtained the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The native parser understood the whole file.
    Native,
    /// The file was evaluated by bash, because of `reason` at `line`.
    Bash { line: usize, reason: String },
}

/// A loaded configuration and how it was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: Config,
    pub via: Via,
}

impl Config {
    /// Reads and parses `path`. `Ok(None)` when the file does not exist.
    ///
    /// Checks permissions, parses natively, falls back to bash when needed.
    pub fn load(path: &Path) -> Result<Option<Config>, ConfigError> {
        Ok(load_report(path)?.map(|l| l.config))
    }

    /// The domain a serial is assigned to: the first in file order.
    pub fn domain_for_serial(&self, serial: &str) -> Option<&DomainConf> {
        self.domains
            .iter()
            .find(|d| d.serials.iter().any(|s| s == serial))
    }

    /// Whether guest `d` gets `serial`: it is a BitBabbler serial and `d`
    /// is the first domain that lists it ([`Config::domain_for_serial`]).
    pub fn wins(&self, d: &DomainConf, serial: &str) -> bool {
        is_valid_serial(serial) && self.domain_for_serial(serial).is_some_and(|f| f.id == d.id)
    }

    /// The serials guest `d` gets, in its list's order: the valid ones it
    /// wins ([`Config::wins`]).
    pub fn serials_of<'c>(&'c self, d: &'c DomainConf) -> impl Iterator<Item = &'c str> + 'c {
        d.serials
            .iter()
            .map(String::as_str)
            .filter(move |s| self.wins(d, s))
    }

    /// The line where `d` lists `serial` (its first listing), if known.
    pub fn serial_line(&self, d: &DomainConf, serial: &str) -> Option<usize> {
        let i = d.serials.iter().position(|s| s == serial)?;
        self.lines.element(&format!("DOMAIN_RNG_{}", d.id), i)
    }

    /// The line of the first assignment to any of `d`'s variables, if known.
    pub fn domain_line(&self, d: &DomainConf) -> Option<usize> {
        ["DOMAIN_RNG_", "DOMAIN_URI_", "DOMAIN_NAME_"]
            .iter()
            .filter_map(|p| self.lines.first_assignment(&format!("{p}{}", d.id)))
            .min()
    }

    /// The domain with config id or libvirt name `name`.
    pub fn find_domain(&self, name: &str) -> Option<&DomainConf> {
        self.domains
            .iter()
            .find(|d| d.id == name)
            .or_else(|| self.domains.iter().find(|d| d.libvirt_name() == name))
    }

    /// Serials listed by more than one domain, as
    /// `(serial, first_id, other_id)`: the first domain wins (see
    /// [`Config::domain_for_serial`]); the caller should warn about the rest.
    pub fn duplicates(&self) -> Vec<(String, String, String)> {
        let mut owner: HashMap<&str, &str> = HashMap::new();
        let mut out: Vec<(String, String, String)> = Vec::new();
        for d in &self.domains {
            for s in &d.serials {
                match owner.get(s.as_str()) {
                    None => {
                        owner.insert(s, &d.id);
                    }
                    Some(first) if *first != d.id => {
                        let dup = (s.clone(), first.to_string(), d.id.clone());
                        if !out.contains(&dup) {
                            out.push(dup);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        out
    }
}

/// The path meant by `--config ARG`: with a `/` it is used as given; a bare
/// name is `/etc/bit-babbler/NAME.conf` (`vm` and `vm.conf` both give
/// `/etc/bit-babbler/vm.conf`), as in the original script.
pub fn resolve_config_path(arg: &str) -> PathBuf {
    if arg.contains('/') {
        return PathBuf::from(arg);
    }
    // Like `basename NAME .conf`: the suffix is not removed if it is all there is.
    let base = match arg.strip_suffix(".conf") {
        Some(b) if !b.is_empty() => b,
        _ => arg,
    };
    PathBuf::from(format!("{CONFIG_DIR}/{base}.conf"))
}

/// Checks, loads and parses `path` (native, else bash), and says how.
/// `Ok(None)` when the file does not exist.
pub fn load_report(path: &Path) -> Result<Option<Loaded>, ConfigError> {
    let Some(bytes) = read_checked(path)? else {
        return Ok(None);
    };
    match parse_bytes(path, &bytes) {
        Ok(config) => Ok(Some(Loaded {
            config,
            via: Via::Native,
        })),
        Err(NativeError::NeedsBash { line, reason }) => Ok(Some(Loaded {
            config: run_bash(path)?,
            via: Via::Bash { line, reason },
        })),
        Err(NativeError::Invalid(e)) => Err(e),
    }
}

/// Evaluates `path` with bash, whatever it contains (after the permission
/// check).  Domains come out alphabetical by id.
pub fn eval_with_bash(path: &Path) -> Result<Config, ConfigError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    check_metadata(path, &meta)?;
    run_bash(path)
}

// ---------------------------------------------------------------------------
// Permissions

/// The permission rule, as a pure function of the file's owner uid and mode
/// and the effective uid we run as.  As root: the file must be owned by root.
/// Otherwise: by root or by the invoking user.  Never group/world-writable.
pub fn check_permissions(path: &Path, owner: u32, mode: u32, euid: u32) -> Result<(), ConfigError> {
    let insecure = |problem: String, fix: String| ConfigError::Insecure {
        path: path.to_path_buf(),
        problem,
        fix,
    };
    let quoted = shell_quote(&path.to_string_lossy());
    if owner != 0 && (euid == 0 || owner != euid) {
        let problem = if euid == 0 {
            format!("is owned by uid {owner}, not root")
        } else {
            format!("is owned by uid {owner}, not root or you (uid {euid})")
        };
        return Err(insecure(problem, format!("chown root {quoted} (as root)")));
    }
    if mode & 0o022 != 0 {
        return Err(insecure(
            format!(
                "is writable by group or others (mode {:04o})",
                mode & 0o7777
            ),
            format!("chmod go-w {quoted}"),
        ));
    }
    Ok(())
}

/// `s` quoted for a shell command line in a message (only when needed).
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Regular file and [`check_permissions`] for the current effective uid.
fn check_metadata(path: &Path, meta: &std::fs::Metadata) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    check_permissions(path, meta.uid(), meta.mode(), euid())
}

/// The file's bytes after the permission check; `None` if it does not exist.
fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    // stat before open, so that a FIFO does not block us.
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    check_metadata(path, &meta)?;
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    // And again on the open file, in case it was replaced meanwhile.
    check_metadata(path, &file.metadata().map_err(read_err)?)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_err)?;
    Ok(Some(bytes))
}

// ---------------------------------------------------------------------------
// From variables to domains

/// One DOMAIN_* variable: its element 0 (`${!name}`) and all its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawVar {
    name: String,
    first: String,
    values: Vec<String>,
    /// The line of its last assignment (native parse only).
    line: Option<usize>,
    /// Where it is set (native parse only).
    lines: Option<VarLines>,
}

/// Which of the three per-guest variables `name` is, and for which id.
fn domain_var(name: &str) -> Option<(DomainVar, &str)> {
    let (kind, id) = if let Some(id) = name.strip_prefix("DOMAIN_RNG_") {
        (DomainVar::Rng, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_URI_") {
        (DomainVar::Uri, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_NAME_") {
        (DomainVar::Name, id)
    } else {
        return None;
    };
    (!id.is_empty()).then_some((kind, id))
}

/// The three per-guest variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DomainVar {
    Rng,
    Uri,
    Name,
}

/// Domains from variables, in the order the variables are given.
fn domains_from_vars(vars: &[RawVar]) -> Vec<DomainConf> {
    let mut domains: Vec<DomainConf> = Vec::new();
    for var in vars {
        let Some((kind, id)) = domain_var(&var.name) else {
            continue;
        };
        let pos = match domains.iter().position(|d| d.id == id) {
            Some(p) => p,
            None => {
                domains.push(DomainConf {
                    id: id.to_string(),
                    name: None,
                    uri: None,
                    serials: Vec::new(),
                });
                domains.len() - 1
            }
        };
        let d = &mut domains[pos];
        let nonempty = (!var.first.is_empty()).then(|| var.first.clone());
        match kind {
            DomainVar::Rng => d.serials = var.values.clone(),
            DomainVar::Uri => d.uri = nonempty,
            DomainVar::Name => d.name = nonempty,
        }
    }
    domains
}

// ---------------------------------------------------------------------------
// Native parser

/// Parses raw file bytes natively: invalid UTF-8 and NUL bytes are errors
/// naming the line.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Config, NativeError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_native(path, text),
        Err(e) => {
            let line = line_of(&bytes[..e.valid_up_to()]);
            Err(NativeError::Invalid(ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                msg: "invalid UTF-8 (the file must be UTF-8 text)".to_string(),
            }))
        }
    }
}

fn line_of(before: &[u8]) -> usize {
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// Parses vm.conf text without executing anything.  `path` is only used in
/// messages and in the result.  See the module documentation for the subset
/// understood; anything else gives [`NativeError::NeedsBash`].
pub fn parse_native(path: &Path, text: &str) -> Result<Config, NativeError> {
    let stop = |s: Stop| match s {
        Stop::Bash { line, reason } => NativeError::NeedsBash { line, reason },
        Stop::Syntax { line, msg } => NativeError::Invalid(ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            msg,
        }),
    };
    if let Some(pos) = text.find('\0') {
        return Err(stop(Stop::Syntax {
            line: line_of(&text.as_bytes()[..pos]),
            msg: "NUL byte (this is not a text file)".to_string(),
        }));
    }
    let mut p = Parser::new(text);
    p.run().map_err(stop)?;
    let vars = p.vars.into_raw();
    Ok(Config {
        path: path.to_path_buf(),
        domains: domains_from_vars(&vars),
        timeout: timeout_from_vars(path, &vars).map_err(NativeError::Invalid)?,
        lines: SourceLines {
            vars: vars
                .iter()
                .filter_map(|v| Some((v.name.clone(), v.lines.clone()?)))
                .collect(),
        },
    })
}

/// Why the native parser stopped.
#[derive(Debug)]
enum Stop {
    Bash { line: usize, reason: String },
    Syntax { line: usize, msg: String },
}

type PResult<T> = Result<T, Stop>;

/// Variables bash itself makes read-only: assigning them is an error there.
const BASH_READONLY: &[&str] = &[
    "BASHOPTS",
    "BASH_VERSINFO",
    "EUID",
    "PPID",
    "SHELLOPTS",
    "UID",
];

/// The DOMAIN_* variables assigned so far, as (dense) bash arrays.
#[derive(Default)]
struct Vars {
    order: Vec<String>,
    values: HashMap<String, Vec<String>>,
    readonly: HashSet<String>,
    /// The line of each variable's last assignment.
    lines: HashMap<String, usize>,
    /// Where each variable is set: first assignment, each element.
    sources: HashMap<String, VarLines>,
}

enum Value {
    Scalar(String),
    /// The elements, each with the line it starts on.
    Array(Vec<(String, usize)>),
}

impl Vars {
    /// Bash semantics: a scalar assignment sets element 0 (`+=` appends to
    /// it); an array assignment replaces the array (`+=` appends elements).
    /// `line` is where the assignment starts.
    fn assign(&mut self, name: &str, append: bool, value: Value, line: usize) {
        if !name.starts_with("DOMAIN_") && name != TIMEOUT_VAR {
            return;
        }
        if !self.values.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.lines.insert(name.to_string(), line);
        let v = self.values.entry(name.to_string()).or_default();
        let src = self
            .sources
            .entry(name.to_string())
            .or_insert_with(|| VarLines {
                first: line,
                elements: Vec::new(),
            });
        match (value, append) {
            (Value::Scalar(s), false) => match v.first_mut() {
                Some(first) => {
                    *first = s;
                    src.elements[0] = line;
                }
                None => {
                    v.push(s);
                    src.elements.push(line);
                }
            },
            (Value::Scalar(s), true) => match v.first_mut() {
                Some(first) => first.push_str(&s),
                None => {
                    v.push(s);
                    src.elements.push(line);
                }
            },
            (Value::Array(a), append) => {
                if !append {
                    v.clear();
                    src.elements.clear();
                }
                for (value, at) in a {
                    v.push(value);
                    src.elements.push(at);
                }
            }
        }
    }

    fn into_raw(mut self) -> Vec<RawVar> {
        self.order
            .iter()
            .map(|name| {
                let values = self.values.remove(name).unwrap_or_default();
                RawVar {
                    name: name.clone(),
                    first: values.first().cloned().unwrap_or_default(),
                    values,
                    line: self.lines.get(name).copied(),
                    lines: self.sources.remove(name),
                }
            })
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WordCtx {
    /// The value of `NAME=value`: no globbing, no brace expansion.
    Scalar,
    /// An element of `NAME=( ... )`: globbing and brace expansion apply.
    Array,
}

const CR_MSG: &str = "carriage return character (DOS line endings?): \
                      convert the file with dos2unix";

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Parser {
    c: Vec<char>,
    i: usize,
    line: usize,
    vars: Vars,
}

impl Parser {
    fn new(text: &str) -> Parser {
        Parser {
            c: text.chars().collect(),
            i: 0,
            line: 1,
            vars: Vars::default(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.c.get(self.i + k).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.i += 1;
        if ch == '\n' {
            self.line += 1;
        }
        Some(ch)
    }

    fn bash<T>(&self, reason: impl Into<String>) -> PResult<T> {
        Err(Stop::Bash {
            line: self.line,
            reason: reason.into(),
        })
    }

    fn syntax<T>(line: usize, msg: impl Into<String>) -> PResult<T> {
        Err(Stop::Syntax {
            line,
            msg: msg.into(),
        })
    }

    /// Skips spaces, tabs and backslash-newline continuations.
    fn skip_blanks(&mut self) {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(' ' | '\t'), _) => {
                    self.bump();
                }
                (Some('\\'), Some('\n')) => {
                    self.bump();
                    self.bump();
                }
                _ => return,
            }
        }
    }

    /// Skips a comment up to (not including) the newline.
    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                return;
            }
            self.bump();
        }
    }

    /// The text of the word starting here, for messages.
    fn describe_word(&self) -> String {
        let w: String = self.c[self.i..]
            .iter()
            .take_while(|&&c| !matches!(c, ' ' | '\t' | '\n' | ';'))
            .take(40)
            .collect();
        format!("`{w}`")
    }

    fn run(&mut self) -> PResult<()> {
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Ok(()),
                Some('\n') => {
                    self.bump();
                }
                Some('#') => self.skip_comment(),
                Some('\r') => return Self::syntax(self.line, CR_MSG),
                Some(';') => return self.bash("`;` without a command before it"),
                Some(_) => self.command()?,
            }
        }
    }

    /// One simple command: assignments, or a declaration builtin.
    fn command(&mut self) -> PResult<()> {
        if let Some(kw) = self.declaration_keyword()? {
            return self.declaration(kw);
        }
        loop {
            match self.assignment_head() {
                Some((name, append)) => self.assignment(&name, append, false)?,
                None => {
                    let w = self.describe_word();
                    return self.bash(format!("command {w}"));
                }
            }
            if self.after_word()? {
                return Ok(());
            }
        }
    }

    /// After a word: skips blanks (and a comment or `;`).  `Ok(true)` at the
    /// end of the command, `Ok(false)` when another word follows.
    fn after_word(&mut self) -> PResult<bool> {
        match self.peek() {
            None | Some('\n') => return Ok(true),
            Some(';') => return self.semicolon(),
            Some(' ' | '\t') => {}
            Some('\\') if self.peek_at(1) == Some('\n') => {}
            Some('\r') => return Self::syntax(self.line, CR_MSG),
            Some(c @ ('&' | '|' | '<' | '>' | '(' | ')')) => {
                return self.bash(format!("operator `{c}`"));
            }
            Some(c) => return self.bash(format!("`{c}` right after `)`")),
        }
        self.skip_blanks();
        match self.peek() {
            None | Some('\n') => Ok(true),
            Some('#') => {
                self.skip_comment();
                Ok(true)
            }
            Some(';') => self.semicolon(),
            Some('\r') => Self::syntax(self.line, CR_MSG),
            Some(c @ ('&' | '|' | '<' | '>' | '(' | ')')) => self.bash(format!("operator `{c}`")),
            Some(_) => Ok(false),
        }
    }

    fn semicolon(&mut self) -> PResult<bool> {
        self.bump();
        self.skip_blanks();
        if self.peek() == Some(';') {
            return self.bash("`;;`");
        }
        Ok(true)
    }

    /// `NAME=` or `NAME+=` here: consumes it and returns (NAME, append).
    fn assignment_head(&mut self) -> Option<(String, bool)> {
        let rest = &self.c[self.i..];
        if !rest.first().is_some_and(|&c| is_name_start(c)) {
            return None;
        }
        let n = rest.iter().take_while(|&&c| is_name_char(c)).count();
        let (append, len) = match (rest.get(n), rest.get(n + 1)) {
            (Some('='), _) => (false, n + 1),
            (Some('+'), Some('=')) => (true, n + 2),
            _ => return None,
        };
        let name: String = rest[..n].iter().collect();
        self.i += len;
        Some((name, append))
    }

    /// A bare `NAME` argument (for `declare NAME`): consumes it.
    fn bare_name(&mut self) -> Option<String> {
        let rest = &self.c[self.i..];
        if !rest.first().is_some_and(|&c| is_name_start(c)) {
            return None;
        }
        let n = rest.iter().take_while(|&&c| is_name_char(c)).count();
        if !matches!(rest.get(n), None | Some(' ' | '\t' | '\n' | ';')) {
            return None;
        }
        let name: String = rest[..n].iter().collect();
        self.i += n;
        Some(name)
    }

    /// `declare`, `typeset`, `export` or `readonly` as a plain word here.
    fn declaration_keyword(&mut self) -> PResult<Option<&'static str>> {
        let rest = &self.c[self.i..];
        let n = rest.iter().take_while(|c| c.is_ascii_lowercase()).count();
        if !matches!(rest.get(n), None | Some(' ' | '\t' | '\n' | ';')) {
            return Ok(None);
        }
        let word: String = rest[..n].iter().collect();
        let kw = match word.as_str() {
            "declare" => "declare",
            "typeset" => "typeset",
            "export" => "export",
            "readonly" => "readonly",
            "local" => return self.bash("`local` outside a function"),
            _ => return Ok(None),
        };
        self.i += n;
        Ok(Some(kw))
    }

    /// The arguments of a declaration builtin: allowed options, then
    /// assignments or bare names.
    fn declaration(&mut self, kw: &'static str) -> PResult<()> {
        let allowed = match kw {
            "declare" | "typeset" => "agrx",
            "readonly" => "a",
            _ => "",
        };
        let mut readonly = kw == "readonly";
        let mut options_done = false;
        let mut any_arg = false;
        loop {
            if self.after_word()? {
                if !any_arg {
                    return self.bash(format!("`{kw}` without arguments"));
                }
                return Ok(());
            }
            if !options_done && self.peek() == Some('-') {
                let word: String = self.c[self.i..]
                    .iter()
                    .take_while(|c| !matches!(c, ' ' | '\t' | '\n' | ';'))
                    .collect();
                if word == "--" {
                    options_done = true;
                } else if word.len() > 1
                    && word[1..].chars().all(|c| allowed.contains(c) && c != '-')
                {
                    readonly |= word.contains('r');
                } else {
                    return self.bash(format!("`{kw} {word}`"));
                }
                self.i += word.chars().count();
                continue;
            }
            options_done = true;
            any_arg = true;
            if let Some((name, append)) = self.assignment_head() {
                self.assignment(&name, append, readonly)?;
            } else if let Some(name) = self.bare_name() {
                if readonly {
                    self.vars.readonly.insert(name);
                }
            } else {
                let w = self.describe_word();
                return self.bash(format!("`{kw}` argument {w}"));
            }
        }
    }

    /// The value after `NAME=` / `NAME+=` (already consumed).
    fn assignment(&mut self, name: &str, append: bool, make_readonly: bool) -> PResult<()> {
        if self.vars.readonly.contains(name) || BASH_READONLY.contains(&name) {
            return self.bash(format!("assignment to read-only variable {name}"));
        }
        let line = self.line;
        let value = if self.peek() == Some('(') {
            let start = self.line;
            self.bump();
            Value::Array(self.array_body(start)?)
        } else {
            Value::Scalar(self.word(WordCtx::Scalar)?)
        };
        self.vars.assign(name, append, value, line);
        if make_readonly {
            self.vars.readonly.insert(name.to_string());
        }
        Ok(())
    }

    /// Elements up to the closing `)` (the `(` is consumed).
    fn array_body(&mut self, start: usize) -> PResult<Vec<(String, usize)>> {
        let mut elems = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Self::syntax(start, "unterminated array: missing `)`");
                }
                Some(' ' | '\t' | '\n') => {
                    self.bump();
                }
                Some('\\') if self.peek_at(1) == Some('\n') => {
                    self.bump();
                    self.bump();
                }
                Some('#') => self.skip_comment(),
                Some(')') => {
                    self.bump();
                    return Ok(elems);
                }
                Some('\r') => return Self::syntax(self.line, CR_MSG),
                Some(c @ (';' | '&' | '|' | '<' | '>' | '(')) => {
                    return self.bash(format!("`{c}` inside an array"));
                }
                Some(_) => {
                    let at = self.line;
                    elems.push((self.word(WordCtx::Array)?, at));
                }
            }
        }
    }

    /// One word: unquoted text, quotes, escapes, concatenated.
    fn word(&mut self, ctx: WordCtx) -> PResult<String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => break,
                '\r' => return Self::syntax(self.line, CR_MSG),
                '\\' => match self.peek_at(1) {
                    Some('\n') => {
                        self.bump();
                        self.bump();
                    }
                    Some('\r') => return Self::syntax(self.line, CR_MSG),
                    Some(ch) => {
                        self.bump();
                        self.bump();
                        out.push(ch);
                    }
                    None => return self.bash("backslash at the end of the file"),
                },
                '\'' => {
                    let start = self.line;
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Self::syntax(start, "unterminated single quote"),
                            Some('\'') => break,
                            Some(ch) => out.push(ch),
                        }
                    }
                }
                '"' => self.double_quoted(&mut out)?,
                '$' => return self.bash(dollar_reason(self.peek_at(1))),
                '`' => return self.bash("command substitution (backticks)"),
                '~' => return self.bash("`~` (tilde expansion)"),
                '*' | '?' | '[' if ctx == WordCtx::Array => {
                    return self.bash(format!("`{c}` (glob pattern) in an array element"));
                }
                '{' | '}' if ctx == WordCtx::Array => {
                    return self.bash(format!("`{c}` (brace expansion) in an array element"));
                }
                _ => {
                    self.bump();
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// A `"..."` string (at the opening quote), appended to `out`.
    fn double_quoted(&mut self, out: &mut String) -> PResult<()> {
        let start = self.line;
        self.bump();
        loop {
            match self.peek() {
                None => return Self::syntax(start, "unterminated double quote"),
                Some('"') => {
                    self.bump();
                    return Ok(());
                }
                Some('\\') => match self.peek_at(1) {
                    Some('\n') => {
                        self.bump();
                        self.bump();
                    }
                    Some(ch @ ('"' | '\\' | '$' | '`')) => {
                        self.bump();
                        self.bump();
                        out.push(ch);
                    }
                    Some(_) => {
                        self.bump();
                        out.push('\\');
                    }
                    None => return Self::syntax(start, "unterminated double quote"),
                },
                Some('$') => {
                    let reason = dollar_reason(self.peek_at(1));
                    return self.bash(format!("{reason} in double quotes"));
                }
                Some('`') => return self.bash("command substitution (backticks) in double quotes"),
                Some(ch) => {
                    self.bump();
                    out.push(ch);
                }
            }
        }
    }
}

/// What a `$` followed by `next` starts, for messages.
fn dollar_reason(next: Option<char>) -> &'static str {
    match next {
        Some('(') => "`$(` (command substitution or arithmetic)",
        Some('{') => "`${` (parameter expansion)",
        Some('\'') => "`$'` (ANSI-C quoting)",
        Some('"') => "`$\"` (locale quoting)",
        _ => "`$` (expansion)",
    }
}

// ---------------------------------------------------------------------------
// Bash fallback

/// The fixed script bash runs: `$1` is the file.  Its stdout goes to stderr
/// so that only the dump reaches fd 3 (our stdout).  Dump format, each field
/// NUL-terminated: `bbvirt-vars-1`, then per `${!DOMAIN_@}` variable `V`,
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
for __bbvirt_n in "${!DOMAIN_@}" "${!BBVIRT_TIMEOUT@}"; do
    __bbvirt_r="${__bbvirt_n}[@]"
    __bbvirt_v=( "${!__bbvirt_r}" )
    builtin printf 'V\0%s\0%s\0%d\0' "$__bbvirt_n" "${!__bbvirt_n}" "${#__bbvirt_v[@]}" >&3
    if (( ${#__bbvirt_v[@]} > 0 )); then
        builtin printf '%s\0' "${__bbvirt_v[@]}" >&3
    fi
done
builtin printf 'E\0' >&3
"#;

/// Runs bash on `path` (permissions already checked) and builds the config.
fn run_bash(path: &Path) -> Result<Config, ConfigError> {
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
    let mut domains = domains_from_vars(&vars);
    domains.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Config {
        path: path.to_path_buf(),
        domains,
        timeout: timeout_from_vars(path, &vars)?,
        lines: SourceLines::default(),
    })
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

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, NativeError> {
        parse_native(Path::new("/t/vm.conf"), text)
    }

    fn ok(text: &str) -> Config {
        match parse(text) {
            Ok(c) => c,
            Err(e) => panic!("parse failed for {text:?}: {e}"),
        }
    }

    fn serials(text: &str, id: &str) -> Vec<String> {
        ok(text)
            .domains
            .into_iter()
            .find(|d| d.id == id)
            .map(|d| d.serials)
            .unwrap_or_else(|| panic!("no domain {id} in {text:?}"))
    }

    fn needs_bash(text: &str) -> (usize, String) {
        match parse(text) {
            Err(NativeError::NeedsBash { line, reason }) => (line, reason),
            other => panic!("expected NeedsBash for {text:?}, got {other:?}"),
        }
    }

    fn syntax(text: &str) -> String {
        match parse(text) {
            Err(NativeError::Invalid(e)) => e.to_string(),
            other => panic!("expected an error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn basic_example() {
        let c = ok("#DOMAIN_RNG_x=(A)\n\
             DOMAIN_URI_sid=\"qemu:///system\"\n\
             DOMAIN_RNG_sid=( KWIF4Q JAXJE6 )\n\
             DOMAIN_NAME_kbsd=\"kbsd-unstable\"\n\
             DOMAIN_URI_kbsd=\"qemu+ssh://your.domain/system\"\n\
             DOMAIN_RNG_kbsd=( G2SJ3Z )\n");
        assert_eq!(
            c.domains,
            vec![
                DomainConf {
                    id: "sid".into(),
                    name: None,
                    uri: Some("qemu:///system".into()),
                    serials: vec!["KWIF4Q".into(), "JAXJE6".into()],
                },
                DomainConf {
                    id: "kbsd".into(),
                    name: Some("kbsd-unstable".into()),
                    uri: Some("qemu+ssh://your.domain/system".into()),
                    serials: vec!["G2SJ3Z".into()],
                },
            ]
        );
        assert_eq!(
            c.find_domain("kbsd-unstable").map(|d| d.id.as_str()),
            Some("kbsd")
        );
        assert_eq!(
            c.domain_for_serial("JAXJE6").map(|d| d.id.as_str()),
            Some("sid")
        );
        assert!(c.domain_for_serial("NOPE").is_none());
    }

    #[test]
    fn order_is_first_appearance() {
        let c = ok("DOMAIN_URI_b=x\nDOMAIN_RNG_a=(A)\nDOMAIN_RNG_b=(B)\nDOMAIN_NAME_c=n\n");
        let ids: Vec<&str> = c.domains.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            serials(r#"DOMAIN_RNG_a=( 'A B' "C\"D" E\ F "\$\\\`x\y" )"#, "a"),
            ["A B", "C\"D", "E F", "$\\`x\\y"]
        );
        assert_eq!(serials("DOMAIN_RNG_a=a\"b\"'c'\\d", "a"), ["abcd"]);
        assert_eq!(serials("DOMAIN_RNG_a=\"ab\\\ncd\"", "a"), ["abcd"]);
        assert_eq!(serials("DOMAIN_RNG_a=ab\\\ncd", "a"), ["abcd"]);
        assert_eq!(serials("DOMAIN_RNG_a='it''s'", "a"), ["its"]);
        assert_eq!(serials("DOMAIN_RNG_a='\\n$x`'", "a"), ["\\n$x`"]);
        assert_eq!(serials("DOMAIN_RNG_a=( \"\" '' )", "a"), ["", ""]);
    }

    #[test]
    fn multiline_arrays_and_comments() {
        let text = "DOMAIN_RNG_a=(  # first\n  A1 # ) not the end\n\n  A2\\\n3 ) # done\n";
        assert_eq!(serials(text, "a"), ["A1", "A23"]);
        assert_eq!(serials("DOMAIN_RNG_a=(A#B)", "a"), ["A#B"]);
        assert_eq!(serials("DOMAIN_RNG_a=A#B # c", "a"), ["A#B"]);
        assert_eq!(serials("DOMAIN_RNG_a=()", "a"), Vec::<String>::new());
    }

    #[test]
    fn append_and_scalar_semantics() {
        assert_eq!(
            serials("DOMAIN_RNG_a=(A)\nDOMAIN_RNG_a+=(B C)", "a"),
            ["A", "B", "C"]
        );
        assert_eq!(
            serials("DOMAIN_RNG_a=(A B)\nDOMAIN_RNG_a=C", "a"),
            ["C", "B"]
        );
        assert_eq!(
            serials("DOMAIN_RNG_a=(A B)\nDOMAIN_RNG_a+=C", "a"),
            ["AC", "B"]
        );
        assert_eq!(
            serials("DOMAIN_RNG_a=A\nDOMAIN_RNG_a+=(B)", "a"),
            ["A", "B"]
        );
        assert_eq!(serials("DOMAIN_RNG_a+=X", "a"), ["X"]);
        assert_eq!(serials("DOMAIN_RNG_a=(A B)\nDOMAIN_RNG_a=(C)", "a"), ["C"]);
    }

    #[test]
    fn declarations_and_separators() {
        let c = ok(
            "declare -a DOMAIN_RNG_a=(A) ; export DOMAIN_URI_a=u;readonly DOMAIN_NAME_a=n\n\
                    typeset -gx X=1 DOMAIN_RNG_b=B\ndeclare -- DOMAIN_RNG_c=(C)\nX=1 Y=2 DOMAIN_RNG_d=D;\n\
                    declare -a DOMAIN_RNG_e\nexport PATH\n",
        );
        let ids: Vec<&str> = c.domains.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(c.domains[0].uri.as_deref(), Some("u"));
        assert_eq!(c.domains[0].libvirt_name(), "n");
    }

    #[test]
    fn empty_uri_and_name_mean_unset() {
        let c = ok("DOMAIN_URI_a=\nDOMAIN_NAME_a=''\n");
        assert_eq!(c.domains[0].uri, None);
        assert_eq!(c.domains[0].libvirt_name(), "a");
        assert!(ok("DOMAIN_RNG_=(X)\nOTHER=1\n").domains.is_empty());
    }

    #[test]
    fn unicode_values() {
        let c = ok("DOMAIN_NAME_x=\"débian ünstable ☃\"\nDOMAIN_RNG_x=(É1)");
        assert_eq!(c.domains[0].name.as_deref(), Some("débian ünstable ☃"));
        assert_eq!(c.domains[0].serials, ["É1"]);
    }

    #[test]
    fn constructs_needing_bash() {
        let cases = [
            ("echo hi", 1, "command"),
            ("X=1\nDOMAIN_RNG_a=$X", 2, "`$`"),
            ("DOMAIN_RNG_a=${X}", 1, "`${`"),
            ("DOMAIN_RNG_a=\"$X\"", 1, "double quotes"),
            ("DOMAIN_RNG_a=$(cat f)", 1, "`$(`"),
            ("DOMAIN_RNG_a=`cat f`", 1, "backticks"),
            ("DOMAIN_RNG_a=$'x'", 1, "ANSI-C"),
            ("DOMAIN_RNG_a=$((1+2))", 1, "`$(`"),
            (
                "for x in a; do DOMAIN_RNG_a+=($x); done",
                1,
                "command `for`",
            ),
            ("if true; then X=1; fi", 1, "command `if`"),
            ("f() { X=1; }", 1, "command `f()`"),
            ("[[ -e x ]] && X=1", 1, "command `[[`"),
            ("DOMAIN_RNG_a=(A*)", 1, "glob"),
            ("DOMAIN_RNG_a=(A?)", 1, "glob"),
            ("DOMAIN_RNG_a=([1]=A)", 1, "glob"),
            ("DOMAIN_RNG_a=({A,B})", 1, "brace"),
            ("DOMAIN_RNG_a=~/x", 1, "tilde"),
            ("source /etc/x", 1, "command `source`"),
            (". /etc/x", 1, "command `.`"),
            ("X=1 cat <<EOF\nEOF", 1, "command `cat`"),
            ("X=<(ls)", 1, "operator `<`"),
            ("X=1 >f", 1, "operator `>`"),
            ("X=1 && Y=2", 1, "operator `&`"),
            ("X=1 | Y=2", 1, "operator `|`"),
            ("X=(a)b", 1, "right after"),
            ("(( x = 1 ))", 1, "command"),
            ("declare -A DOMAIN_RNG_a", 1, "`declare -A`"),
            ("declare -i X=1+1", 1, "`declare -i`"),
            ("local X=1", 1, "`local`"),
            ("readonly X=1\nX=2", 2, "read-only"),
            ("UID=3", 1, "read-only"),
            ("X[1]=a", 1, "command"),
            ("X=1;;", 1, "`;;`"),
            ("; X=1", 1, "`;`"),
            ("X=a\\", 1, "backslash"),
        ];
        for (text, line, reason) in cases {
            let (l, r) = needs_bash(text);
            assert_eq!(l, line, "line for {text:?}");
            assert!(
                r.contains(reason),
                "reason {r:?} for {text:?} lacks {reason:?}"
            );
        }
    }

    #[test]
    fn scalar_values_are_not_globbed_or_brace_expanded() {
        assert_eq!(serials("DOMAIN_RNG_a={a,b}*?[x]", "a"), ["{a,b}*?[x]"]);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        assert_eq!(
            syntax("X=1\nDOMAIN_RNG_a=( A\n  'B\n C )\n"),
            "/t/vm.conf:3: unterminated single quote"
        );
        assert_eq!(
            syntax("X=1\n\nDOMAIN_URI_a=\"qemu:///system\nY=2\n"),
            "/t/vm.conf:3: unterminated double quote"
        );
        assert_eq!(
            syntax("X=1\nDOMAIN_RNG_a=( A\n B\n# )\n"),
            "/t/vm.conf:2: unterminated array: missing `)`"
        );
        assert_eq!(syntax("X=\"a\\"), "/t/vm.conf:1: unterminated double quote");
        assert!(syntax("X=1\r\nY=2\r\n").starts_with("/t/vm.conf:1: carriage return"));
        assert!(syntax("# ok\r\n\r\n").starts_with("/t/vm.conf:2: carriage return"));
        assert_eq!(
            syntax("X=1\nY=a\0b"),
            "/t/vm.conf:2: NUL byte (this is not a text file)"
        );
    }

    #[test]
    fn quoted_carriage_return_is_kept() {
        assert_eq!(serials("DOMAIN_RNG_a='A\r'\n# x\r\n", "a"), ["A\r"]);
    }

    #[test]
    fn invalid_utf8_is_an_error_with_line() {
        let e = parse_bytes(Path::new("f"), b"X=1\n\nY=\xff\xfe\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:3: invalid UTF-8 (the file must be UTF-8 text)"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator over bytes that matter to the lexer.
        let alphabet = b"DOMAIN_RNG_a=()+'\"\\$`#;&|<> \t\n\r*?[]{}~xX0\xc3\xa9\xff\0-";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (seed % 40) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let _ = parse_bytes(Path::new("fuzz"), &bytes);
        }
    }

    #[test]
    fn duplicates_first_wins() {
        let c = ok("DOMAIN_RNG_a=(S1 S2 S2)\nDOMAIN_RNG_b=(S2 S3)\nDOMAIN_RNG_c=(S1 S2)");
        assert_eq!(
            c.duplicates(),
            vec![
                ("S2".into(), "a".into(), "b".into()),
                ("S1".into(), "a".into(), "c".into()),
                ("S2".into(), "a".into(), "c".into()),
            ]
        );
        assert_eq!(c.domain_for_serial("S2").map(|d| d.id.as_str()), Some("a"));
    }

    #[test]
    fn config_paths() {
        assert_eq!(resolve_config_path("vm"), Path::new(DEFAULT_CONFIG));
        assert_eq!(resolve_config_path("vm.conf"), Path::new(DEFAULT_CONFIG));
        assert_eq!(
            resolve_config_path("lab"),
            Path::new("/etc/bit-babbler/lab.conf")
        );
        assert_eq!(resolve_config_path("./vm"), Path::new("./vm"));
        assert_eq!(resolve_config_path("/tmp/x.cfg"), Path::new("/tmp/x.cfg"));
    }

    #[test]
    fn permission_rule() {
        let p = Path::new("/etc/bit-babbler/vm.conf");
        assert!(check_permissions(p, 0, 0o100644, 0).is_ok());
        assert!(check_permissions(p, 0, 0o100600, 1000).is_ok());
        assert!(check_permissions(p, 1000, 0o100644, 1000).is_ok());
        assert_eq!(
            check_permissions(p, 0, 0o100664, 0)
                .unwrap_err()
                .to_string(),
            "/etc/bit-babbler/vm.conf is writable by group or others (mode 0664): \
             run chmod go-w /etc/bit-babbler/vm.conf"
        );
        assert!(check_permissions(p, 0, 0o100646, 1000).is_err());
        assert_eq!(
            check_permissions(p, 1000, 0o100644, 0)
                .unwrap_err()
                .to_string(),
            "/etc/bit-babbler/vm.conf is owned by uid 1000, not root: \
             run chown root /etc/bit-babbler/vm.conf (as root)"
        );
        assert_eq!(
            check_permissions(Path::new("/tmp/my vm.conf"), 1001, 0o644, 1000)
                .unwrap_err()
                .to_string(),
            "/tmp/my vm.conf is owned by uid 1001, not root or you (uid 1000): \
             run chown root '/tmp/my vm.conf' (as root)"
        );
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Config::load(&dir.path().join("nope.conf")),
            Ok(None)
        ));
        assert!(matches!(
            Config::load(dir.path()),
            Err(ConfigError::NotAFile { .. }) | Err(ConfigError::Insecure { .. })
        ));
    }

    #[test]
    fn insecure_real_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("vm.conf");
        std::fs::write(&f, "DOMAIN_RNG_a=(A)\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(
            Config::load(&f)
                .expect("load")
                .expect("exists")
                .domains
                .len(),
            1
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let e = Config::load(&f).unwrap_err().to_string();
        assert!(e.contains("writable by group or others (mode 0666)"), "{e}");
        assert!(matches!(
            eval_with_bash(&f),
            Err(ConfigError::Insecure { .. })
        ));
        if euid() == 0 {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            std::os::unix::fs::chown(&f, Some(65534), None).expect("chown");
            let e = Config::load(&f).unwrap_err().to_string();
            assert!(e.contains("is owned by uid 65534, not root"), "{e}");
        }
    }

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
