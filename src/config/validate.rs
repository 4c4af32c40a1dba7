//! From variables to a [`Config`], one setting at a time: the variables
//! either parser produced ([`RawVar`]) become guests, elements and the
//! timeout, and each wrong setting is an error of its own while the rest
//! stays known ([`Validated`]). Both parsers share this step, so the native
//! parse and bash mode give the same config for the same variables.

use std::path::Path;

use crate::selector::Selector;

use super::{Config, ConfigError, DomainConf, SourceLines, VarLines};

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
            Err(ConfigError::at(path, var.line, msg))
        }
    }
}

/// A config read setting by setting: every valid setting, and an error for
/// each one left out (a malformed `DOMAIN_USB_` element, a bad
/// `BBVIRT_TIMEOUT`). Such errors are validation errors: the rest of the
/// file is still known. A parse error (a syntax error, bash failing, an
/// unsafe file) leaves nothing known and is an `Err` instead.
#[derive(Debug)]
pub struct Validated {
    pub config: Config,
    pub errors: Vec<ConfigError>,
}

impl Validated {
    /// The config when every setting is valid, else the errors: one, or
    /// [`ConfigError::Several`]. What every action but `check` uses.
    pub fn strict(mut self) -> Result<Config, ConfigError> {
        match self.errors.len() {
            0 => Ok(self.config),
            1 => Err(self.errors.remove(0)),
            _ => Err(ConfigError::Several(self.errors)),
        }
    }
}

/// Checks the variables one setting at a time: the config of the valid
/// settings, with the errors of the others ([`Validated`]).
pub(super) fn validate(path: &Path, vars: &[RawVar], lines: SourceLines) -> Validated {
    let mut errors = Vec::new();
    let (domains, usb_left_out) = domains_from_vars(path, vars, &mut errors);
    let timeout = timeout_from_vars(path, vars).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let serve = super::serve::serve_from_vars(path, vars, &mut errors);
    Validated {
        config: Config {
            path: path.to_path_buf(),
            domains,
            timeout,
            serve,
            lines,
            usb_left_out,
        },
        errors,
    }
}

/// One DOMAIN_* variable: its element 0 (`${!name}`) and all its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawVar {
    pub(super) name: String,
    pub(super) first: String,
    pub(super) values: Vec<String>,
    /// The line of its last assignment (native parse only).
    pub(super) line: Option<usize>,
    /// Where it is set (native parse only).
    pub(super) lines: Option<VarLines>,
}

/// Which of the three per-guest variables `name` is, and for which id.
fn domain_var(name: &str) -> Option<(DomainVar, &str)> {
    let (kind, id) = if let Some(id) = name.strip_prefix("DOMAIN_RNG_") {
        (DomainVar::Rng, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_URI_") {
        (DomainVar::Uri, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_NAME_") {
        (DomainVar::Name, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_USB_") {
        (DomainVar::Usb, id)
    } else if let Some(id) = name.strip_prefix("DOMAIN_REMOTE_") {
        (DomainVar::Remote, id)
    } else {
        return None;
    };
    (!id.is_empty()).then_some((kind, id))
}

/// The per-guest variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DomainVar {
    Rng,
    Uri,
    Name,
    Usb,
    Remote,
}

/// Domains from variables, in the order the variables are given, and the
/// `DOMAIN_USB_` elements left out (guest id, index): each malformed
/// element is left out with its error in `errors`.
fn domains_from_vars(
    path: &Path,
    vars: &[RawVar],
    errors: &mut Vec<ConfigError>,
) -> (Vec<DomainConf>, Vec<(String, usize)>) {
    let mut domains: Vec<DomainConf> = Vec::new();
    let mut left_out: Vec<(String, usize)> = Vec::new();
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
                    usb: Vec::new(),
                    remote: Vec::new(),
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
            DomainVar::Usb => {
                // A later assignment replaces the whole array.
                left_out.retain(|(lid, _)| lid != id);
                d.usb.clear();
                for (i, text) in var.values.iter().enumerate() {
                    match element::<Selector>(path, var, i, text) {
                        Ok(selector) => d.usb.push(selector),
                        Err(e) => {
                            errors.push(e);
                            left_out.push((id.to_string(), i));
                        }
                    }
                }
            }
            DomainVar::Remote => {
                // A later assignment replaces the whole array; a malformed
                // element is an error of its own and left out.
                d.remote.clear();
                for (i, text) in var.values.iter().enumerate() {
                    match element(path, var, i, text) {
                        Ok(e) => d.remote.push(e),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
    }
    (domains, left_out)
}

/// Element `i` of an array (`DOMAIN_USB_`, `DOMAIN_REMOTE_`) parsed as a
/// `T`; a malformed one is an error at its line (native parse), else named
/// by its index.
fn element<T>(path: &Path, var: &RawVar, i: usize, text: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse::<T>().map_err(|e| {
        let line = var.lines.as_ref().and_then(|l| l.elements.get(i).copied());
        let msg = format!(
            "{}[{i}] \"{}\": {e}",
            var.name,
            crate::text::escape_controls(text)
        );
        ConfigError::at(path, line, msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::native::{self, parse_bytes_lenient};
    use crate::config::{NativeError, parse_native};

    #[test]
    fn usb_elements_parse_with_their_lines() {
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_NAME_ha=\"home-assistant\"\n\
             DOMAIN_USB_ha=( \"id=10c4:ea60 port=1-5\"   # Zigbee\n\
             \x20              \"id=0658:0200\" )\n\
             DOMAIN_USB_vault=( \"id=1050:0407 serial='A B'\" )\n",
        )
        .unwrap();
        let ids: Vec<&str> = c.domains.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["ha", "vault"], "a domain with only USB elements");
        let ha = &c.domains[0];
        assert_eq!(ha.libvirt_name(), "home-assistant");
        assert_eq!(ha.usb.len(), 2);
        assert_eq!(ha.usb[0].port, Some((1, vec![5])));
        assert_eq!(c.domains[1].usb[0].serial.as_deref(), Some("A B"));
        assert_eq!(c.lines.element("DOMAIN_USB_ha", 1), Some(3));
    }

    #[test]
    fn remote_elements_parse_and_a_malformed_one_names_its_line() {
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_REMOTE_ha=( \"zigbee.lan:4000\"\n  \"[fd00::7]:4001 tls=no\" )\n",
        )
        .unwrap();
        let ha = &c.domains[0];
        assert_eq!(ha.id, "ha", "a domain with only remote devices");
        let shown: Vec<String> = ha.remote.iter().map(|r| r.endpoint.to_string()).collect();
        assert_eq!(shown, ["zigbee.lan:4000", "[fd00::7]:4001"]);
        assert_eq!(c.domain_line(ha), Some(1));
        let e = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_RNG_a=(ABC1234)\nDOMAIN_REMOTE_a=( \"h:1\"\n \"h:0 tls=no\" \"<x>:1\" )\n",
        )
        .unwrap_err();
        let NativeError::Invalid(ConfigError::Several(all)) = &e else {
            panic!("{e:?}");
        };
        let all: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert!(
            all[0].starts_with("/t/vm.conf:3: DOMAIN_REMOTE_a[1] \"h:0 tls=no\": "),
            "{all:?}"
        );
        assert!(
            all[1].starts_with("/t/vm.conf:3: DOMAIN_REMOTE_a[2] \"<x>:1\": "),
            "{all:?}"
        );
        // check reads the rest: the valid element stays
        let v = parse_bytes_lenient(
            Path::new("/t/vm.conf"),
            b"DOMAIN_REMOTE_a=( \"h:1\" \"h:x\" )\n",
        )
        .unwrap();
        assert_eq!(v.config.domains[0].remote.len(), 1);
        assert_eq!(v.errors.len(), 1);
    }

    #[test]
    fn a_malformed_usb_element_names_file_and_line() {
        let e = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_USB_a=( \"id=10c4:ea60\"\n  \"serial=0001\" )\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/t/vm.conf:2: DOMAIN_USB_a[1] \"serial=0001\": needs id= or port= (a serial \
             alone could be any device's)"
        );
        let e =
            parse_native(Path::new("/t/vm.conf"), "DOMAIN_USB_a=( \"id=zz:1\" )\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/t/vm.conf:1: DOMAIN_USB_a[0] \"id=zz:1\": "),
            "{e}"
        );
        // Every malformed element, not only the first.
        let e = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_USB_a=( \"id=zz:1\"\n \"id=10c4:ea60\"\n \"port=x\" )\nDOMAIN_USB_b=( \"nope\" )\n",
        )
        .unwrap_err();
        let NativeError::Invalid(ConfigError::Several(all)) = &e else {
            panic!("{e:?}");
        };
        let lines: Vec<String> = all
            .iter()
            .map(|e| e.to_string()[..16].to_string())
            .collect();
        assert_eq!(
            lines,
            ["/t/vm.conf:1: DO", "/t/vm.conf:3: DO", "/t/vm.conf:4: DO"]
        );
    }

    #[test]
    fn lenient_keeps_the_valid_settings_and_names_the_elements_left_out() {
        let text = "DOMAIN_USB_a=( \"id=zz:1\"\n \"id=10c4:ea60\"\n \"port=x\"\n \"port=1-5\" )\n\
                    DOMAIN_RNG_b=( KWIF4Q )\nBBVIRT_TIMEOUT=0\n";
        let v = native::parse_native_lenient(Path::new("/t/vm.conf"), text).unwrap();
        let lines: Vec<String> = v.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("/t/vm.conf:1: DOMAIN_USB_a[0] "),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("/t/vm.conf:3: DOMAIN_USB_a[2] "),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("/t/vm.conf:6: BBVIRT_TIMEOUT="),
            "{lines:?}"
        );
        let c = &v.config;
        assert_eq!(c.timeout, None);
        assert_eq!(c.domains[1].serials, ["KWIF4Q"]);
        let a = &c.domains[0];
        assert_eq!(a.usb.len(), 2);
        assert_eq!(c.usb_left_out, [("a".into(), 0), ("a".into(), 2)]);
        // The kept elements by their index in the file.
        assert_eq!((c.usb_index(a, 0), c.usb_index(a, 1)), (1, 3));
        assert_eq!(c.usb_index(&c.domains[1], 0), 0);
        // Strict: the errors, all of them.
        let e = parse_native(Path::new("/t/vm.conf"), text).unwrap_err();
        let NativeError::Invalid(ConfigError::Several(all)) = &e else {
            panic!("{e:?}");
        };
        assert_eq!(all.len(), 3);
    }
}
