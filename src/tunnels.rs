//! `bbvirt tunnels`: runs stunnel with this host's TLS tunnels
//! (`bbvirt-tunnels.service` runs it): one server tunnel per device this
//! host serves with TLS (`SERVE_USB_`), one client tunnel per exporting
//! host and port its guests get with TLS (`DOMAIN_REMOTE_`). The
//! configuration is made from vm.conf at each start
//! ([`crate::remote::tunnel::stunnel_conf`]) and handed to stunnel through
//! a pipe (`stunnel -fd N`: no file to go stale or to be shared by two
//! runs), and stunnel replaces bbvirt (exec), so systemd supervises stunnel
//! itself. After a change to vm.conf: `systemctl restart
//! bbvirt-tunnels`. Nothing to tunnel is no error: bbvirt says so and
//! exits 0.

use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::config::Config;
use crate::remote::tunnel::{TLS_DIR, TlsFiles, TunnelError, stunnel_conf};
use crate::{error, note};

/// The most configuration a pipe takes before stunnel reads it (Linux's
/// default pipe buffer is 64 KiB); hundreds of tunnels fit.
pub const MAX_CONF: usize = 60 * 1024;

/// stunnel by its absolute path: Debian's name first, then Fedora's and
/// upstream's.
pub const STUNNEL: [&str; 2] = ["/usr/bin/stunnel4", "/usr/bin/stunnel"];

/// Why the tunnels cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TunnelsError {
    #[error("{path}: the tunnels clash (each is named above)")]
    Clash {
        path: String,
        errors: Vec<TunnelError>,
    },
    #[error("the stunnel configuration is {0} bytes, more than {MAX_CONF}")]
    TooLong(usize),
    #[error("handing the configuration to stunnel")]
    Pipe(#[source] std::io::Error),
    #[error("stunnel is not installed (looked for {})", STUNNEL.join(", "))]
    NoStunnel,
    #[error("cannot run {path}")]
    Exec {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The guests' remote devices and this host's served ones, as one
/// configuration; None when nothing needs a tunnel.
pub fn conf_of(config: &Config, tls: &TlsFiles) -> Result<Option<String>, TunnelsError> {
    let remote: Vec<_> = config
        .domains
        .iter()
        .flat_map(|d| d.remote.iter().cloned())
        .collect();
    stunnel_conf(&config.serve, &remote, tls).map_err(|errors| TunnelsError::Clash {
        path: config.path.display().to_string(),
        errors,
    })
}

/// `bbvirt tunnels [--print]`.
pub fn run(config: &Config, print: bool) -> Result<(), TunnelsError> {
    let tls = TlsFiles::in_dir(Path::new(TLS_DIR));
    let conf = match conf_of(config, &tls) {
        Ok(c) => c,
        Err(e) => {
            if let TunnelsError::Clash { errors, .. } = &e {
                for c in errors {
                    error!("{c}");
                }
            }
            return Err(e);
        }
    };
    let Some(conf) = conf else {
        note!(
            "{}: no device is served or given to a guest with TLS: no tunnel to run",
            config.path.display()
        );
        return Ok(());
    };
    if print {
        print!("{conf}");
        return Ok(());
    }
    let stunnel = STUNNEL
        .iter()
        .find(|p| Path::new(p).is_file())
        .ok_or(TunnelsError::NoStunnel)?;
    if conf.len() > MAX_CONF {
        return Err(TunnelsError::TooLong(conf.len()));
    }
    let fd = conf_pipe(&conf).map_err(TunnelsError::Pipe)?;
    let source = std::process::Command::new(stunnel)
        .args(["-fd", &fd.to_string()])
        .exec();
    Err(TunnelsError::Exec {
        path: stunnel.to_string(),
        source,
    })
}

/// A pipe holding `conf`, its write end closed: the read end, left open
/// across exec for stunnel's `-fd`.
fn conf_pipe(conf: &str) -> std::io::Result<libc::c_int> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe fills the two descriptors it returns; they are ours.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fds[1] was just opened and is owned by this File only.
    let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
    w.write_all(conf.as_bytes())?;
    drop(w);
    Ok(fds[0])
}
