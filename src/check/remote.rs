//! Checking USB over the network ([`crate::remote`]): plaintext on the
//! network, the tunnels' clashes, their ports taken by another program
//! (from the kernel's socket tables and `/proc/PID/fd`, [`crate::sockets`]),
//! the certificates, the engines installed (usbredirect with the options
//! bbvirt gives it), and whether each exporting host answers now. Only what vm.conf uses is
//! checked: a host with no `SERVE_USB_` and no `DOMAIN_REMOTE_` gets no
//! line from here.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::config::Config;
use crate::remote::element::{RemoteElement, Transport};
use crate::remote::endpoint::Port;
use crate::remote::tunnel::{TlsFiles, local_ports, stunnel_conf};
use crate::sockets::Listener;

use super::Finding;

/// How long `check` waits for an exporting host to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Every finding about the remote devices of `cfg`, its certificates in
/// `tls`.
pub fn check_remote(cfg: &Config, tls: &TlsFiles, proc_root: &Path) -> Vec<Finding> {
    let remote: Vec<(&str, &RemoteElement)> = cfg
        .domains
        .iter()
        .flat_map(|d| d.remote.iter().map(move |r| (d.id.as_str(), r)))
        .collect();
    if remote.is_empty() && cfg.serve.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut any_tls = false;
    for (id, r) in &remote {
        match r.transport {
            Transport::Tls => any_tls = true,
            Transport::Plain if !r.endpoint.host.is_loopback() => found.push(Finding::warning(
                format!(
                    "DOMAIN_REMOTE_{id}: {} is used in plaintext (tls=no): anyone on the \
                     network path can read the device's traffic and send it commands",
                    r.endpoint
                ),
                "remove tls=no, give this host a certificate in /etc/bit-babbler/tls and \
                 run bbvirt-tunnels.service (bbvirt(1), DEVICES ON ANOTHER HOST)",
            )),
            Transport::Plain => {}
        }
    }
    for (port, e) in &cfg.serve {
        match e.transport {
            Transport::Tls => any_tls = true,
            Transport::Plain => found.push(Finding::warning(
                format!(
                    "SERVE_USB_{port} is served in plaintext (tls=no) on every address: any \
                     host that reaches port {port} gets the device"
                ),
                "remove tls=no and run bbvirt-tunnels.service with a certificate in \
                 /etc/bit-babbler/tls",
            )),
        }
    }
    let elements: Vec<RemoteElement> = remote.iter().map(|(_, r)| (*r).clone()).collect();
    match stunnel_conf(&cfg.serve, &elements, tls) {
        Ok(_) => found.push(Finding::ok("the tunnels' ports do not clash")),
        Err(errors) => found.extend(errors.iter().map(|e| {
            Finding::error(
                e.to_string(),
                "give each device its own port, on this host and on the others it reaches",
            )
        })),
    }
    if any_tls {
        found.extend(certificate_findings(tls));
        found.push(program_finding(
            &crate::tunnels::STUNNEL,
            "stunnel",
            "apt-get install stunnel4 (Fedora: dnf install stunnel)",
        ));
    }
    if !cfg.serve.is_empty() {
        let installed = program_finding(
            &[crate::serve::USBREDIRECT],
            "usbredirect",
            "apt-get install usbredirect (Fedora: dnf install usbredir-tools)",
        );
        let ok = installed.severity == super::Severity::Ok;
        found.push(installed);
        if ok {
            found.push(usbredirect_options_finding());
        }
    }
    let sockets = crate::sockets::read_tables(proc_root).unwrap_or_default();
    let owners = crate::sockets::socket_owners(proc_root);
    found.extend(ports_in_use(
        &local_ports(&cfg.serve, &elements),
        &crate::sockets::listeners(&sockets, &owners),
    ));
    for (id, r) in &remote {
        found.push(reachable_finding(id, r));
    }
    found
}

/// The programs that are bbvirt's own on the ports of its remote USB path:
/// stunnel (Debian's binary is `stunnel4`) and usbredirect.
const OWN_LISTENERS: [&str; 3] = ["stunnel", "stunnel4", "usbredirect"];

/// A port of `ports` (each with what bbvirt binds there,
/// [`local_ports`]) where another program than stunnel or usbredirect
/// listens: an error, since bbvirt's tunnel or usbredirect cannot listen
/// there (or, worse, QEMU reaches that program).
fn ports_in_use(ports: &[(Port, &str)], listening: &[Listener]) -> Vec<Finding> {
    let mut found = Vec::new();
    for (port, what) in ports {
        for l in listening
            .iter()
            .filter(|l| l.port == port.get() && !OWN_LISTENERS.contains(&l.name.as_str()))
        {
            let role = match *what {
                "serve" => "the port a device is served at",
                "inner" => "usbredirect's port behind the tunnel",
                _ => "the local end of a tunnel to an exporting host",
            };
            found.push(Finding::error(
                format!(
                    "port {port} ({role}) is in use by {} (pid {})",
                    crate::text::shell_quote(&l.name),
                    l.pid
                ),
                "stop that program or give the device another port in vm.conf",
            ));
        }
    }
    found
}

/// The certificate files: present, readable, the key private, the host's
/// certificate signed by the CA and in its validity period (openssl).
fn certificate_findings(tls: &TlsFiles) -> Vec<Finding> {
    let mut found = Vec::new();
    let fix = "put the fleet's CA in ca-cert.pem and this host's certificate and key (signed \
               by that CA) in host-cert.pem and host-key.pem (bbvirt(1), DEVICES ON ANOTHER HOST)";
    for path in [&tls.ca, &tls.cert, &tls.key] {
        if let Err(e) = std::fs::File::open(path) {
            found.push(Finding::error(format!("{}: {e}", path.display()), fix));
        }
    }
    if !found.is_empty() {
        return found;
    }
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(&tls.key)
        && m.permissions().mode() & 0o077 != 0
    {
        found.push(Finding::warning(
            format!(
                "{} can be read by others than its owner (mode {:o})",
                tls.key.display(),
                m.permissions().mode() & 0o777
            ),
            format!(
                "chmod 600 {}",
                crate::text::shell_quote(&tls.key.display().to_string())
            ),
        ));
    }
    let openssl = Path::new("/usr/bin/openssl");
    if !openssl.is_file() {
        found.push(Finding::warning(
            "openssl is not installed: the certificates' validity was not checked",
            "apt-get install openssl",
        ));
        return found;
    }
    let mut verify = Command::new(openssl);
    verify
        .arg("verify")
        .arg("-CAfile")
        .arg(&tls.ca)
        .arg(&tls.cert);
    match crate::child::run(&mut verify, Duration::from_secs(10), 64 << 10) {
        Ok(f) if f.status.success() => found.push(Finding::ok(format!(
            "{} is signed by the CA of {} and valid now",
            tls.cert.display(),
            tls.ca.display()
        ))),
        Ok(f) => found.push(Finding::error(
            format!(
                "{} does not verify against {}: {}",
                tls.cert.display(),
                tls.ca.display(),
                crate::child::stderr_summary(&[f.stdout.as_slice(), f.stderr.as_slice()].concat())
            ),
            fix,
        )),
        Err(e) => found.push(Finding::warning(
            format!("openssl verify could not run: {e}"),
            "the certificates' validity was not checked",
        )),
    }
    found
}

/// Whether one of `paths` (a program) is installed.
fn program_finding(paths: &[&str], name: &str, fix: &str) -> Finding {
    match paths.iter().find(|p| Path::new(p).is_file()) {
        Some(p) => Finding::ok(format!("{name} is installed ({p})")),
        None => Finding::error(
            format!("{name} is not installed ({})", paths.join(", ")),
            fix,
        ),
    }
}

/// Whether the installed usbredirect is recent enough: its `--help` names
/// every option `bbvirt serve` gives it ([`crate::serve::missing_options`]).
fn usbredirect_options_finding() -> Finding {
    let mut help = Command::new(crate::serve::USBREDIRECT);
    help.arg("--help");
    match crate::child::run(&mut help, Duration::from_secs(5), 64 << 10) {
        Ok(f) => {
            let text =
                String::from_utf8_lossy(&[f.stdout.as_slice(), f.stderr.as_slice()].concat())
                    .into_owned();
            let missing = crate::serve::missing_options(&text);
            if missing.is_empty() {
                Finding::ok("usbredirect is recent enough (it has --device and --as)")
            } else {
                Finding::error(
                    format!(
                        "{} is too old for bbvirt serve: its --help has no {}",
                        crate::serve::USBREDIRECT,
                        missing.join(", ")
                    ),
                    "install usbredirect 0.13 or later (Debian 12's is 0.13)",
                )
            }
        }
        Err(e) => Finding::warning(
            format!("{} --help could not run: {e}", crate::serve::USBREDIRECT),
            "its options were not checked",
        ),
    }
}

/// Whether the exporting host answers on the device's port now (a TCP
/// connection, nothing sent). Down is a warning: the device arrives when
/// the host is up.
fn reachable_finding(id: &str, r: &RemoteElement) -> Finding {
    let host = r.endpoint.host.bare();
    let addrs = (host.as_str(), r.endpoint.port.get()).to_socket_addrs();
    let answered =
        addrs.map(|mut a| a.any(|sa| TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT).is_ok()));
    match answered {
        Ok(true) => Finding::ok(format!("DOMAIN_REMOTE_{id}: {} answers", r.endpoint)),
        Ok(false) => Finding::warning(
            format!(
                "DOMAIN_REMOTE_{id}: {} does not answer now (within {} s)",
                r.endpoint,
                CONNECT_TIMEOUT.as_secs()
            ),
            "the guest gets the device when it does: check that the exporting host runs \
             bbvirt-serve@PORT and bbvirt-tunnels, and that its firewall lets the port through",
        ),
        Err(e) => Finding::warning(
            format!("DOMAIN_REMOTE_{id}: {} cannot be resolved: {e}", r.endpoint),
            "fix the name in vm.conf or in DNS",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Severity;

    fn conf(text: &str) -> Config {
        crate::config::parse_native(Path::new("/t/vm.conf"), text).unwrap()
    }

    fn lines(found: &[Finding], s: Severity) -> Vec<String> {
        found
            .iter()
            .filter(|f| f.severity == s)
            .map(ToString::to_string)
            .collect()
    }

    /// A proc root with nothing in it: no sockets, no processes.
    const NO_PROC: &str = "/nonexistent/proc";

    #[test]
    fn a_port_another_program_listens_on_is_an_error_naming_it() {
        let p = |n| Port::new(n).unwrap();
        let l = |port, pid, name: &str| Listener {
            port,
            pid,
            name: name.into(),
        };
        let ports = [(p(4000), "serve"), (p(4001), "remote"), (p(14000), "inner")];
        let listening = [
            l(4000, 10, "stunnel4"),
            l(14000, 11, "usbredirect"),
            l(4001, 12, "nginx"),
            l(22, 13, "sshd"),
        ];
        let found = ports_in_use(&ports, &listening);
        let texts: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 1, "{texts:#?}");
        assert_eq!(found[0].severity, Severity::Error);
        assert!(
            texts[0].contains("port 4001 (the local end of a tunnel to an exporting host) is in use by nginx (pid 12)"),
            "{texts:#?}"
        );
        // A hostile process name is quoted, not passed on as it is.
        let odd = ports_in_use(&ports, &[l(4000, 14, "x; rm -rf /")]);
        assert!(odd[0].to_string().contains("'x; rm -rf /'"), "{}", odd[0]);
        assert!(ports_in_use(&ports, &[]).is_empty());
    }

    #[test]
    fn nothing_remote_no_line() {
        let tls = TlsFiles::in_dir(Path::new("/nonexistent"));
        assert!(
            check_remote(&conf("DOMAIN_RNG_a=(ABC1234)\n"), &tls, Path::new(NO_PROC)).is_empty()
        );
    }

    #[test]
    fn plaintext_clashes_missing_certificates_and_a_host_that_does_not_answer() {
        let tls = TlsFiles::in_dir(Path::new("/nonexistent/tls"));
        // 127.0.0.1:1: loopback in plaintext (no warning), refused at once
        let c = conf(
            "DOMAIN_REMOTE_a=( \"127.0.0.1:1 tls=no\" \"192.0.2.7:4000 tls=no\" \"192.0.2.8:4001\" )\n\
             SERVE_USB_4001=\"port=1-1\"\nSERVE_USB_4002=\"port=1-2 tls=no\"\n",
        );
        let found = check_remote(&c, &tls, Path::new(NO_PROC));
        let warnings = lines(&found, Severity::Warning);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("192.0.2.7:4000 is used in plaintext")),
            "{warnings:#?}"
        );
        assert!(
            !warnings
                .iter()
                .any(|w| w.contains("127.0.0.1:1 is used in plaintext")),
            "{warnings:#?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("SERVE_USB_4002 is served in plaintext")),
            "{warnings:#?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("127.0.0.1:1 does not answer")),
            "{warnings:#?}"
        );
        let errors = lines(&found, Severity::Error);
        // the remote's tunnel and the served device both want port 4001
        assert!(errors.iter().any(|e| e.contains("4001")), "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("/nonexistent/tls/ca-cert.pem")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("/nonexistent/tls/host-key.pem")),
            "{errors:#?}"
        );
    }
}
