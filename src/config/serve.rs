//! An exporting host's settings: `SERVE_USB_<port>="ELEMENT [tls=yes|no]"`
//! serves the device the element selects (the words of a `DOMAIN_USB_`
//! element, [`crate::selector`]) at TCP port `<port>` ([`crate::remote`]).
//! The port is in the variable's name, so a port cannot be given twice; a
//! malformed name or value is an error of its own at its line, and the
//! other settings stay known.

use std::path::Path;

use crate::remote::element::{SERVE_VAR_PREFIX, ServeElement, port_from_var_name};
use crate::remote::endpoint::Port;

use super::{ConfigError, RawVar};

/// The devices to serve, in port order, from the variables; each bad one
/// is left out with its error in `errors`.
pub(super) fn serve_from_vars(
    path: &Path,
    vars: &[RawVar],
    errors: &mut Vec<ConfigError>,
) -> Vec<(Port, ServeElement)> {
    let mut out: Vec<(Port, ServeElement)> = Vec::new();
    for var in vars {
        let Some(port) = port_from_var_name(&var.name) else {
            continue;
        };
        let shown = crate::text::escape_controls(&var.first);
        let parsed = port
            .map_err(|e| format!("{}: the port in the name: {e}", var.name))
            .and_then(|port| {
                var.first
                    .parse::<ServeElement>()
                    .map(|e| (port, e))
                    .map_err(|e| format!("{}=\"{shown}\": {e}", var.name))
            });
        match parsed {
            // A later assignment replaces an earlier one, as in bash.
            Ok((port, element)) => {
                out.retain(|(p, _)| *p != port);
                out.push((port, element));
            }
            Err(msg) => errors.push(ConfigError::at(path, var.line, msg)),
        }
    }
    out.sort_by_key(|(p, _)| *p);
    out
}

/// Whether `name` is a serving variable (for the bash fallback's dump).
pub(super) fn is_serve_var(name: &str) -> bool {
    name.starts_with(SERVE_VAR_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::super::native::parse_bytes_lenient;
    use super::super::{NativeError, parse_native};
    use std::path::Path;

    #[test]
    fn served_devices_by_port_and_errors_at_their_line() {
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "SERVE_USB_4001=\"id=10c4:ea60 port=1-2\"\n\
             SERVE_USB_4000=\"id=1a86:7523 serial=ZB1 tls=no\"\n",
        )
        .unwrap();
        let ports: Vec<u16> = c.serve.iter().map(|(p, _)| p.get()).collect();
        assert_eq!(ports, [4000, 4001]);
        assert_eq!(c.serve[0].1.selector.serial.as_deref(), Some("ZB1"));
        assert!(c.domains.is_empty(), "an exporting host needs no guest");
        let e = parse_native(
            Path::new("/t/vm.conf"),
            "SERVE_USB_4000=\"id=10c4:ea60\"\nSERVE_USB_04001=\"port=1-2\"\nSERVE_USB_4002=\"<x>\"\n",
        )
        .unwrap_err();
        let NativeError::Invalid(super::ConfigError::Several(all)) = &e else {
            panic!("{e:?}");
        };
        let all: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert!(
            all[0].starts_with("/t/vm.conf:2: SERVE_USB_04001: the port in the name: "),
            "{all:?}"
        );
        assert!(
            all[1].starts_with("/t/vm.conf:3: SERVE_USB_4002=\"<x>\": "),
            "{all:?}"
        );
        assert_eq!(all.len(), 2, "{all:?}");
        let v = parse_bytes_lenient(
            Path::new("/t/vm.conf"),
            b"SERVE_USB_1=\"port=1-1\"\nSERVE_USB_0=\"port=1-2\"\n",
        )
        .unwrap();
        assert_eq!(v.config.serve.len(), 1);
        assert_eq!(v.errors.len(), 1);
    }
}
