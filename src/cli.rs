//! The command line. The original bash `bbvirt`'s forms still work:
//! `bbvirt attach|detach DEVICE [options]`, `bbvirt attach-all|detach-all
//! [DOMAIN] [options]`, options before or after the action, `--opt=value` and
//! `--opt value`, `-v` repeatable, `-?` for help.

use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};

use crate::device::{DeviceArg, InvalidDeviceArg};

const AFTER_HELP: &str = "\
DEVICE is a serial number (e.g. KWIF4Q, or serial=SERIAL), a logical address
BUS:DEV (e.g. 3:12) or a physical address BUS-PORT[.PORT...] (e.g. 3-1.4.2);
or a remote device (DOMAIN_REMOTE_) by its exporting host and port, HOST:PORT
(e.g. exporter.lan:4000, 10.0.0.7:4000, [fd00::7]:4000: IPv6 in brackets).
A word whose part before its first ':' is all digits is BUS:DEV, never
HOST:PORT.

Where a device goes (vm.conf): a BitBabbler to the guest whose DOMAIN_RNG_<id>
list holds its serial (or to the guest --domain names); any USB device to the
guest whose DOMAIN_USB_<id> element selects it by id=, serial= and port=.
Devices that no list or element gives to a guest stay with the host.

Exit status:
  0  done, or nothing to do (device not assigned, guest not running or not
     defined, libvirt not running, config file missing); status: healthy;
     check: no error found
  1  libvirt failed or the deadline passed; status: something is wrong;
     check: errors found; install/uninstall: a file could not be written
     or is in the way
  2  usage error (an unknown option, a missing or empty value) or invalid
     device identifier
  3  the config file is unreadable, invalid or unsafe
  4  the named device is not present (or its serial names several), or not at the bus/device a hint gives
  5  hook: it refuses a guest's start (prepare: the guest would take a device that is not its own)";

/// Pass USB devices through to libvirt guests: BitBabbler RNGs by serial (DOMAIN_RNG_), any device by id, serial or port (DOMAIN_USB_).
#[derive(Debug, Parser)]
#[command(
    name = "bbvirt",
    version,
    disable_help_flag = true,
    disable_help_subcommand = true,
    after_help = AFTER_HELP,
    subcommand_value_name = "ACTION",
    override_usage = "bbvirt attach|detach DEVICE [OPTIONS]\n       \
                      bbvirt attach-all|detach-all|sync [DOMAIN] [OPTIONS]\n       \
                      bbvirt devices|list [--json] [OPTIONS]\n       \
                      bbvirt status [--json] [OPTIONS]\n       \
                      bbvirt check [OPTIONS]\n       \
                      bbvirt install|uninstall [--root DIR] [--apparmor-only] [OPTIONS]\n       \
                      bbvirt completions SHELL",
    subcommand_help_heading = "Actions"
)]
pub struct Cli {
    #[command(subcommand)]
    pub action: Action,

    #[command(flatten)]
    pub opts: Opts,
}

/// The options. They are accepted both before and after the action: clap
/// parses each place into its own `Opts`, and [`Cli::parse_args`] merges
/// them (counts add up, a value given after the action wins). clap's
/// `global = true` would do without the merge, but a count given on both
/// sides of the action then keeps only the later one (`-v attach X -v` is
/// not `-vv`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Opts {
    /// Config file; a bare NAME means /etc/bit-babbler/NAME.conf
    #[arg(short = 'C', long, value_name = "FILE", value_parser = non_empty::<String>)]
    pub config: Option<String>,

    /// libvirt URI (default: DOMAIN_URI_<id>, else libvirt's default)
    #[arg(short = 'c', long, value_name = "URI", value_parser = non_empty::<String>)]
    pub connect: Option<String>,

    /// Guest to use instead of the configured one (config id or libvirt
    /// name); attach sends a BitBabbler there, not a DOMAIN_USB_ device
    #[arg(short = 'D', long, value_name = "NAME", value_parser = non_empty::<String>)]
    pub domain: Option<String>,

    /// The device must be on this USB bus (a hint, as udev gives it)
    #[arg(short = 'b', long, value_name = "N", value_parser = parse_usb_number)]
    pub busnum: Option<u32>,

    /// The device must have this device number (a hint, as udev gives it)
    #[arg(short = 'd', long, value_name = "N", value_parser = parse_usb_number)]
    pub devnum: Option<u32>,

    /// Log to syslog (ident bbvirt) as well as to stderr (only to syslog
    /// when stderr is the journal)
    #[arg(long)]
    pub syslog: bool,

    /// Change nothing; print what would be done (implies -v)
    #[arg(short = 'n', long = "dry-run")]
    pub dry_run: bool,

    /// More output; repeat for more (up to -vvvv)
    #[arg(short = 'v', long, action = ArgAction::Count)]
    pub verbose: u8,

    /// Seconds the whole run may take (config, lock, libvirt) before bbvirt
    /// gives up [default: BBVIRT_TIMEOUT in vm.conf, else 20]
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Print help
    #[arg(short = '?', long, action = ArgAction::Help)]
    pub help: Option<bool>,
}

impl Opts {
    /// Merges options given before the action (`self`) with those after it.
    fn merge(self, after: Opts) -> Opts {
        Opts {
            config: after.config.or(self.config),
            connect: after.connect.or(self.connect),
            domain: after.domain.or(self.domain),
            busnum: after.busnum.or(self.busnum),
            devnum: after.devnum.or(self.devnum),
            syslog: self.syslog || after.syslog,
            dry_run: self.dry_run || after.dry_run,
            verbose: self.verbose.saturating_add(after.verbose),
            timeout: after.timeout.or(self.timeout),
            help: None,
        }
    }

    /// The verbosity in force: `-n` implies one `-v`.
    pub fn verbosity(&self) -> u8 {
        if self.dry_run {
            self.verbose.max(1)
        } else {
            self.verbose
        }
    }

    /// The libvirt deadline in force.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// How long libvirt may take, all calls of one run together, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

impl Cli {
    /// The invalid DEVICE a parse error is about, if that is what it is
    /// about: shown in bbvirt's own words rather than clap's.
    pub fn invalid_device(e: &clap::Error) -> Option<&InvalidDeviceArg> {
        std::error::Error::source(e)?.downcast_ref::<InvalidDeviceArg>()
    }

    /// Parses the command line, merging options before and after the action.
    pub fn parse_args<I, T>(args: I) -> Result<(Action, Opts), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cli = Cli::try_parse_from(args)?;
        let after = cli.action.take_opts();
        Ok((cli.action, cli.opts.merge(after)))
    }
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Action {
    /// Attach a device to its guest (live only); HOST:PORT: a remote device
    /// to the guest whose DOMAIN_REMOTE_ gives it (or -D's)
    Attach {
        /// Serial number (or serial=SERIAL), BUS:DEV, BUS-PORT[.PORT...] or HOST:PORT
        device: DeviceArg,
        #[command(flatten)]
        opts: Opts,
    },
    /// Detach a device from its guest (live only); HOST:PORT: a remote device
    /// from whichever guest holds it (configured guests, or -D's)
    Detach {
        /// Serial number (or serial=SERIAL), BUS:DEV, BUS-PORT[.PORT...] or HOST:PORT
        device: DeviceArg,
        #[command(flatten)]
        opts: Opts,
    },
    /// Attach every present device assigned to DOMAIN (or to every guest), as sync
    AttachAll {
        /// Config id or libvirt name
        #[arg(id = "DOMAIN", value_name = "DOMAIN", value_parser = non_empty::<String>)]
        domain: Option<String>,
        #[command(flatten)]
        opts: Opts,
    },
    /// Make running guests hold exactly their present devices: attach what is
    /// missing, detach stale bbvirt entries (also what attach-all does)
    Sync {
        /// Config id or libvirt name
        #[arg(id = "DOMAIN", value_name = "DOMAIN", value_parser = non_empty::<String>)]
        domain: Option<String>,
        /// First wait (up to 10 min) until libvirt has finished restoring, migrating in
        /// or reverting DOMAIN (its libvirt name); bbvirt's libvirt hook starts this
        #[arg(long, requires = "DOMAIN")]
        after_job: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Detach every bbvirt device from DOMAIN (or from every configured guest)
    DetachAll {
        /// Config id or libvirt name
        #[arg(id = "DOMAIN", value_name = "DOMAIN", value_parser = non_empty::<String>)]
        domain: Option<String>,
        #[command(flatten)]
        opts: Opts,
    },
    /// List every USB device (root hubs aside), who has it (or the port it is
    /// served on), and a DOMAIN_USB_ element that selects exactly it, to paste into vm.conf
    #[command(visible_alias = "list")]
    Devices {
        /// Machine-readable output (schema in bbvirt(1))
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Show every BitBabbler and every device a DOMAIN_USB_ element selects:
    /// where each is assigned and attached; stale entries; remote devices
    /// (DOMAIN_REMOTE_) and served ones (SERVE_USB_) with their connections
    Status {
        /// Machine-readable output (schema in bbvirt(1))
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Check vm.conf, seedd.conf, the guests and the installation; one line per finding, with its fix
    Check {
        /// seedd's configuration, compared with vm.conf
        #[arg(long, value_name = "FILE", default_value = crate::seedd::DEFAULT_SEEDD_CONFIG,
              value_parser = non_empty::<std::path::PathBuf>)]
        seedd_config: std::path::PathBuf,
        #[command(flatten)]
        opts: Opts,
    },
    /// Install the udev rule, the libvirt hook, an example vm.conf and, for a binary outside /usr/bin, the libvirt daemon's AppArmor rule
    Install {
        /// Install under this directory instead of /
        #[arg(long, value_name = "DIR", default_value = "/", value_parser = non_empty::<std::path::PathBuf>)]
        root: std::path::PathBuf,
        /// Only the rule that lets libvirt's daemon run this binary under its AppArmor profile (what `make install` runs)
        #[arg(long)]
        apparmor_only: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Remove what `bbvirt install` put in place (never other files)
    Uninstall {
        /// Uninstall under this directory instead of /
        #[arg(long, value_name = "DIR", default_value = "/", value_parser = non_empty::<std::path::PathBuf>)]
        root: std::path::PathBuf,
        /// Only remove the AppArmor rule for this binary (what `make uninstall` runs)
        #[arg(long)]
        apparmor_only: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Serve the device of SERVE_USB_PORT to guests on other hosts with usbredirect, while it is plugged in (bbvirt-serve@PORT.service runs this)
    Serve {
        /// The TCP port of a SERVE_USB_PORT variable in vm.conf
        #[arg(value_name = "PORT")]
        port: crate::remote::endpoint::Port,
        #[command(flatten)]
        opts: Opts,
    },
    /// Run stunnel with this host's TLS tunnels: of its served devices and of its guests' remote devices (bbvirt-tunnels.service runs this)
    Tunnels {
        /// Print stunnel's configuration and exit
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Print a completion script for SHELL (bash, zsh or fish)
    Completions {
        shell: clap_complete::Shell,
        /// Print help
        #[arg(short = '?', long, action = ArgAction::Help)]
        help: Option<bool>,
    },
    /// Run as libvirt's qemu hook: DOMAIN OPERATION SUBOP EXTRA (never calls libvirt)
    #[command(hide = true)]
    Hook {
        #[arg(allow_hyphen_values = true, num_args = 0.., trailing_var_arg = true)]
        args: Vec<String>,
    },
}

impl Action {
    /// Takes the options given after the action out, leaving the action
    /// with default options (so actions compare equal in tests).
    fn take_opts(&mut self) -> Opts {
        match self {
            Action::Attach { opts, .. }
            | Action::Detach { opts, .. }
            | Action::AttachAll { opts, .. }
            | Action::Sync { opts, .. }
            | Action::DetachAll { opts, .. }
            | Action::Devices { opts, .. }
            | Action::Status { opts, .. }
            | Action::Check { opts, .. }
            | Action::Install { opts, .. }
            | Action::Uninstall { opts, .. }
            | Action::Serve { opts, .. }
            | Action::Tunnels { opts, .. } => std::mem::take(opts),
            Action::Completions { .. } | Action::Hook { .. } => Opts::default(),
        }
    }
}

/// The check every value on the command line goes through first: an empty
/// or blank value is a usage error that names the option (clap's "invalid
/// value '' for '--domain <NAME>'"), never a guest, file or URI named "".
/// The udev front ([`crate::event::rule_words`]) asks it too.
pub fn non_empty<T: From<String>>(s: &str) -> Result<T, String> {
    if s.trim().is_empty() {
        Err(if s.is_empty() {
            "the value is empty".to_string()
        } else {
            "the value is only whitespace".to_string()
        })
    } else {
        Ok(T::from(s.to_string()))
    }
}

/// A USB bus or device number ([`crate::device::parse_usb_number`]).
fn parse_usb_number(s: &str) -> Result<u32, String> {
    let s: String = non_empty(s)?;
    crate::device::parse_usb_number(&s)
        .ok_or_else(|| format!("'{s}' is not a number of 1-3 decimal digits"))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let s: String = non_empty(s)?;
    match s.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "'{s}' is not a whole number of seconds from 1 to 3600"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Action, Opts), clap::Error> {
        Cli::parse_args(std::iter::once("bbvirt").chain(args.iter().copied()))
    }

    fn attach(device: &str) -> Action {
        Action::Attach {
            device: device.parse().unwrap(),
            opts: Opts::default(),
        }
    }

    #[test]
    fn options_in_both_forms_before_and_after() {
        let forms: &[&[&str]] = &[
            &[
                "-C",
                "x",
                "-c",
                "qemu:///system",
                "-D",
                "g",
                "-b",
                "3",
                "-d",
                "012",
                "attach",
                "KWIF4Q",
            ],
            &[
                "attach",
                "KWIF4Q",
                "-C",
                "x",
                "-c",
                "qemu:///system",
                "-D",
                "g",
                "-b",
                "3",
                "-d",
                "012",
            ],
            &[
                "--config=x",
                "--connect=qemu:///system",
                "attach",
                "--domain=g",
                "--busnum=3",
                "--devnum=012",
                "KWIF4Q",
            ],
            &[
                "--config",
                "x",
                "--connect",
                "qemu:///system",
                "--domain",
                "g",
                "attach",
                "KWIF4Q",
                "--busnum",
                "3",
                "--devnum",
                "012",
            ],
            &[
                "-Cx",
                "-cqemu:///system",
                "-Dg",
                "-b3",
                "-d012",
                "attach",
                "KWIF4Q",
            ],
            &[
                "attach",
                "-Cx",
                "-cqemu:///system",
                "-Dg",
                "-b3",
                "-d012",
                "KWIF4Q",
            ],
        ];
        for f in forms {
            let (action, o) = parse(f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert_eq!(action, attach("KWIF4Q"), "{f:?}");
            assert_eq!(o.config.as_deref(), Some("x"), "{f:?}");
            assert_eq!(o.connect.as_deref(), Some("qemu:///system"), "{f:?}");
            assert_eq!(o.domain.as_deref(), Some("g"), "{f:?}");
            assert_eq!((o.busnum, o.devnum), (Some(3), Some(12)), "{f:?}");
        }
    }

    #[test]
    fn value_after_the_action_wins() {
        let (_, o) = parse(&["-D", "before", "attach", "KWIF4Q", "-D", "after"]).unwrap();
        assert_eq!(o.domain.as_deref(), Some("after"));
    }

    #[test]
    fn flags_and_verbosity() {
        let (_, o) = parse(&["detach", "1:2"]).unwrap();
        assert_eq!(
            (o.verbose, o.dry_run, o.syslog, o.verbosity()),
            (0, false, false, 0)
        );
        assert_eq!(o.timeout(), DEFAULT_TIMEOUT);
        let (_, o) = parse(&["-vvvv", "detach", "1:2"]).unwrap();
        assert_eq!(o.verbosity(), 4);
        let (_, o) = parse(&["-v", "detach", "1:2", "-v", "--verbose"]).unwrap();
        assert_eq!(o.verbosity(), 3);
        let (_, o) = parse(&["-v", "-v", "detach", "1:2", "-vv"]).unwrap();
        assert_eq!(o.verbosity(), 4);
        let (_, o) = parse(&["detach", "1:2", "-n"]).unwrap();
        assert_eq!((o.dry_run, o.verbosity()), (true, 1));
        let (_, o) = parse(&["--dry-run", "-vv", "--syslog", "detach", "1:2"]).unwrap();
        assert_eq!((o.dry_run, o.syslog, o.verbosity()), (true, true, 2));
        let (a, o) = parse(&["attach-all", "--timeout", "5"]).unwrap();
        assert_eq!(o.timeout(), Duration::from_secs(5));
        assert_eq!(
            a,
            Action::AttachAll {
                domain: None,
                opts: Opts::default()
            }
        );
        let (_, o) = parse(&["--timeout=7", "attach-all"]).unwrap();
        assert_eq!(o.timeout(), Duration::from_secs(7));
    }

    #[test]
    fn actions() {
        assert_eq!(
            parse(&["attach-all", "guest1"]).unwrap().0,
            Action::AttachAll {
                domain: Some("guest1".into()),
                opts: Opts::default()
            }
        );
        assert_eq!(
            parse(&["detach-all"]).unwrap().0,
            Action::DetachAll {
                domain: None,
                opts: Opts::default()
            }
        );
        assert_eq!(
            parse(&["detach", "3-1.4"]).unwrap().0,
            Action::Detach {
                device: "3-1.4".parse().unwrap(),
                opts: Opts::default()
            }
        );
        assert_eq!(
            parse(&["hook", "guest1", "started", "begin", "-"])
                .unwrap()
                .0,
            Action::Hook {
                args: vec![
                    "guest1".into(),
                    "started".into(),
                    "begin".into(),
                    "-".into()
                ]
            }
        );
    }

    #[test]
    fn devices_and_its_alias() {
        for args in [
            &["devices"][..],
            &["list"],
            &["-c", "test:///default", "list"],
        ] {
            assert_eq!(
                parse(args).unwrap().0,
                Action::Devices {
                    json: false,
                    opts: Opts::default()
                },
                "{args:?}"
            );
        }
        let (a, o) = parse(&["list", "--json", "-C", "x"]).unwrap();
        assert_eq!(
            a,
            Action::Devices {
                json: true,
                opts: Opts::default()
            }
        );
        assert_eq!(o.config.as_deref(), Some("x"));
    }

    #[test]
    fn help() {
        for h in [&["-?"][..], &["--help"], &["-v", "-?"]] {
            let e = parse(h).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{h:?}");
            let text = e.to_string();
            assert!(text.contains("Exit status:"), "{text}");
            assert!(text.contains("attach-all"), "{text}");
            assert!(text.contains("--dry-run"), "{text}");
        }
        for h in [&["attach", "-?"][..], &["detach-all", "--help"]] {
            let e = parse(h).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{h:?}");
            assert!(e.to_string().contains("--connect <URI>"), "{h:?}");
        }
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &[][..],
            &["attach"],
            &["detach"],
            &["frobnicate", "X"],
            &["attach", "A", "B"],
            &["attach-all", "a", "b"],
            &["-b", "x", "attach", "KWIF4Q"],
            &["-b", "1234", "attach", "KWIF4Q"],
            &["attach", "KWIF4Q", "-d", ""],
            &["--timeout", "0", "attach", "KWIF4Q"],
            &["--bogus", "attach", "KWIF4Q"],
            &["attach", "KWIF4Q", "--config"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::exit::USAGE, "{bad:?}");
        }
    }
}
