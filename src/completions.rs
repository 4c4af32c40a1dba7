//! Shell completions, generated from the CLI definition itself.

use clap::{Command, CommandFactory};

use crate::cli::Cli;

/// The CLI definition without hidden actions: some of clap_complete's
/// generators (bash) offer hidden subcommands, and the hook is libvirt's,
/// not the admin's.
fn visible_command() -> Command {
    let full = Cli::command();
    let base = full.clone();
    let subcommands: Vec<Command> = full
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    // Rebuild from the top-level settings and arguments with only the
    // visible subcommands (clap cannot remove a subcommand).
    let mut cmd = Command::new("bbvirt")
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_flag(true)
        .disable_help_subcommand(true);
    for arg in base.get_arguments() {
        cmd = cmd.arg(arg.clone());
    }
    cmd.subcommands(subcommands)
}

/// Writes the completion script for `shell` to `out`.
pub fn print(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut visible_command(), "bbvirt", out);
}
