//! Getting a [`Config`] from a file: which file (`--config`), then the
//! steps of the module doc of [`crate::config`] (permissions, native parse,
//! bash fallback, validation) in order, strict for the actions
//! ([`load_report`]) or lenient for `check` ([`load_lenient`]). The order
//! of the steps is decided here and nowhere else.

use std::path::{Path, PathBuf};

use super::bash::run_bash;
use super::native::parse_bytes_lenient;
use super::perms::{check_metadata, read_checked};
use super::{Config, ConfigError, NativeError, Validated};

/// The configuration file used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/bit-babbler/vm.conf";

/// Where a bare `--config NAME` is looked up.
pub const CONFIG_DIR: &str = "/etc/bit-babbler";

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

    /// [`Config::load`], with a missing file taken as an empty config
    /// (noted): udev runs bbvirt on hosts that assign nothing.
    pub fn load_or_empty(path: &Path) -> Result<Config, ConfigError> {
        match Config::load(path)? {
            Some(c) => Ok(c),
            None => {
                crate::note!(
                    "{} does not exist: no device is assigned to a guest",
                    path.display()
                );
                Ok(Config {
                    path: path.to_path_buf(),
                    ..Config::default()
                })
            }
        }
    }
}

/// The config file a run reads: `--config` ([`resolve_config_path`]), else
/// [`DEFAULT_CONFIG`].
pub fn config_path(arg: Option<&str>) -> PathBuf {
    arg.map_or_else(|| PathBuf::from(DEFAULT_CONFIG), resolve_config_path)
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
/// `Ok(None)` when the file does not exist; any error in it is an `Err`.
pub fn load_report(path: &Path) -> Result<Option<Loaded>, ConfigError> {
    let Some((validated, via)) = load_validated(path)? else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        config: validated.strict()?,
        via,
    }))
}

/// [`load_report`] for `check`: a file that parses but has wrong settings
/// comes with the rest of its settings (those left out named in
/// [`Config::usb_left_out`]) and the errors of the wrong ones. `Err` when
/// nothing of the file can be used (unsafe, unreadable, a syntax error,
/// bash failing).
pub fn load_lenient(path: &Path) -> Result<Option<(Loaded, Vec<ConfigError>)>, ConfigError> {
    let Some((validated, via)) = load_validated(path)? else {
        return Ok(None);
    };
    let Validated { config, errors } = validated;
    Ok(Some((Loaded { config, via }, errors)))
}

/// Checks, reads and parses `path` (native, else bash); validation is the
/// caller's choice ([`Validated`]).
fn load_validated(path: &Path) -> Result<Option<(Validated, Via)>, ConfigError> {
    let Some(bytes) = read_checked(path)? else {
        return Ok(None);
    };
    match parse_bytes_lenient(path, &bytes) {
        Ok(validated) => Ok(Some((validated, Via::Native))),
        Err(NativeError::NeedsBash { line, reason }) => {
            Ok(Some((run_bash(path)?, Via::Bash { line, reason })))
        }
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
    run_bash(path)?.strict()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
