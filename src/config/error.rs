//! Why vm.conf could not be used: [`ConfigError`] for every way reading,
//! checking or evaluating the file can fail, and [`NativeError`] for the
//! native parser's two outcomes (the file needs bash, or it is wrong).
//! One place for the messages an admin reads, whichever step failed.

use std::io;
use std::path::{Path, PathBuf};

use super::BASH;

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
    /// Several settings are wrong (every malformed `DOMAIN_USB_` element,
    /// not only the first): each error, one a line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// A wrong setting in `path`: at its line when the native parser knows
    /// it ([`ConfigError::Syntax`]), else named in `msg` alone (bash mode,
    /// [`ConfigError::Value`]).
    pub(super) fn at(path: &Path, line: Option<usize>, msg: String) -> ConfigError {
        let path = path.to_path_buf();
        match line {
            Some(line) => ConfigError::Syntax { path, line, msg },
            None => ConfigError::Value { path, msg },
        }
    }
}

/// Why [`parse_native`](super::parse_native) did not produce a
/// [`Config`](super::Config).
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
