//! How a run ends: every command returns `Result<_, CommandError>`, and
//! [`CommandError::exit_code`] is the one place that maps the result to the
//! exit status documented in `--help`, the README and bbvirt(1) (a test
//! holds the three against [`ALL`]).

use crate::actions::ActionError;
use crate::config::ConfigError;
use crate::install::InstallError;

/// Done, or nothing to do (device not assigned, guest not running...);
/// status: healthy; check: no error found.
pub const OK: i32 = 0;
/// libvirt refused or failed, or a deadline passed; status: not healthy;
/// check: errors found; install: a file could not be written or is in the way;
/// devices: sysfs could not be read.
pub const FAILED: i32 = 1;
/// Bad command line or invalid device identifier.
pub const USAGE: i32 = 2;
/// vm.conf unreadable, invalid or unsafe.
pub const CONFIG: i32 = 3;
/// The named device is not present, or not where a hint says.
pub const NOT_FOUND: i32 = 4;
/// The hook refused a guest's start (`prepare`). A status of its own: the
/// hook script passes this one refusal on to libvirt and lets libvirt go on
/// after any other failure of bbvirt (denied, missing, crashed: it cannot
/// tell those from a refusal by a status that anything else may exit with).
pub const REFUSED: i32 = 5;

/// Every exit status bbvirt uses.
pub const ALL: [i32; 6] = [OK, FAILED, USAGE, CONFIG, NOT_FOUND, REFUSED];

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    #[error(transparent)]
    Tunnels(#[from] crate::tunnels::TunnelsError),
    /// `status` found problems; its report shows them.
    #[error("not healthy")]
    Unhealthy,
    /// `check` found errors; its findings show them.
    #[error("{errors} error(s) found")]
    ErrorsFound { errors: usize },
    /// The hook refused a guest's start (`prepare`: it would take a device
    /// that is not the guest's own); its log lines say why.
    #[error("the guest's start was refused")]
    HookRefused,
    /// `devices` could not list the USB devices; its output says why.
    #[error("the USB devices could not be listed")]
    NotListed,
    /// The output could not be written.
    #[error("writing the {what}")]
    Output {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl CommandError {
    /// The documented exit status.
    pub fn exit_code(&self) -> i32 {
        match self {
            CommandError::Action(
                ActionError::NotFound(_)
                | ActionError::HintMismatch { .. }
                | ActionError::AmbiguousSerial { .. },
            ) => NOT_FOUND,
            CommandError::Config(_)
            | CommandError::Serve(
                crate::serve::ServeError::NotConfigured { .. }
                | crate::serve::ServeError::NoInnerPort { .. },
            )
            | CommandError::Tunnels(crate::tunnels::TunnelsError::Clash { .. }) => CONFIG,
            CommandError::Serve(_) | CommandError::Tunnels(_) => FAILED,
            CommandError::Action(_)
            | CommandError::Install(_)
            | CommandError::Unhealthy
            | CommandError::ErrorsFound { .. }
            | CommandError::NotListed
            | CommandError::Output { .. } => FAILED,
            CommandError::HookRefused => REFUSED,
        }
    }

    /// The error lines to log, each with its causes: several for an error
    /// that keeps several failures, none when the command has shown what is
    /// wrong itself (status, check).
    pub fn messages(&self) -> Vec<String> {
        let chain = |e: &dyn std::error::Error| crate::log::chain(e);
        match self {
            CommandError::Unhealthy
            | CommandError::ErrorsFound { .. }
            | CommandError::HookRefused
            | CommandError::NotListed => Vec::new(),
            CommandError::Action(ActionError::Partial { errors, .. }) => errors
                .iter()
                .map(|e| chain(e))
                .chain([chain(self)])
                .collect(),
            CommandError::Install(e) => e.messages(),
            CommandError::Config(crate::config::ConfigError::Several(all)) => {
                all.iter().map(|e| chain(e)).collect()
            }
            _ => vec![chain(self)],
        }
    }
}

/// Writes a command's report to standard output: the one place a write
/// error becomes [`CommandError::Output`] (`what`: the report, for the
/// message).
pub fn print(text: &str, what: &'static str) -> Result<(), CommandError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
        .map_err(|source| CommandError::Output { what, source })
}

/// The exit status of a command's result.
pub fn code_of<T>(result: &Result<T, CommandError>) -> i32 {
    match result {
        Ok(_) => OK,
        Err(e) => e.exit_code(),
    }
}
