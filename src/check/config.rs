//! Checking vm.conf: that it can be used at all, then what it says.

use std::collections::HashMap;
use std::path::Path;

use crate::config::{Config, ConfigError, DomainConf, Via};
use crate::device::is_valid_serial;
use crate::selector::Overlap;
use crate::sysfs::UsbDevice;

use super::{Finding, plural};

/// Loads `path` and checks it: the config (when it could be loaded) and the
/// findings. A missing file is a warning; a file that cannot be used is an
/// error finding.
pub fn check_config_file(path: &Path) -> (Option<Config>, Vec<Finding>) {
    let (loaded, errors) = match crate::config::load_lenient(path) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return (
                None,
                vec![Finding::warning(
                    format!(
                        "{} does not exist: no device is assigned to a guest",
                        path.display()
                    ),
                    "create it if guests should get some (`bbvirt install` puts a commented \
                     example there; the format is in bbvirt(1))",
                )],
            );
        }
        Err(e) => {
            let mut found = match &e {
                ConfigError::Several(all) => all.iter().map(config_error_finding).collect(),
                e => vec![config_error_finding(e)],
            };
            found.push(unusable_finding(path));
            return (None, found);
        }
    };
    let mut found = vec![Finding::ok(match &loaded.via {
        Via::Native => format!(
            "{}: read, {} guest{}",
            path.display(),
            loaded.config.domains.len(),
            plural(loaded.config.domains.len())
        ),
        Via::Bash { line, reason } => format!(
            "{}: evaluated by bash ({reason} at line {line}), {} guest{}",
            path.display(),
            loaded.config.domains.len(),
            plural(loaded.config.domains.len())
        ),
    })];
    // Settings left out (a malformed element, a bad BBVIRT_TIMEOUT): each
    // an error, then everything else about the rest of the file.
    found.extend(errors.iter().map(config_error_finding));
    found.extend(check_config(&loaded.config));
    found.extend(left_out_finding(&loaded.config));
    (Some(loaded.config), found)
}

/// What could not be checked because the file at `path` cannot be used at
/// all (unsafe, unreadable, a syntax error, bash failing): everything that
/// needs its settings.
fn unusable_finding(path: &Path) -> Finding {
    Finding::warning(
        format!(
            "{} cannot be used, so these were not checked: its guests and their devices \
             (serials, DOMAIN_USB_ elements, clashes), whether libvirt defines the guests, \
             which present devices go where, seedd.conf against it",
            path.display()
        ),
        "fix the errors above, then run bbvirt check again",
    )
}

/// What could not be checked because malformed `DOMAIN_USB_` elements were
/// left out (the rest of the file was checked): whether they overlap other
/// elements, which present devices they take. None when nothing was left
/// out (a bad `BBVIRT_TIMEOUT` hides nothing).
fn left_out_finding(config: &Config) -> Option<Finding> {
    if config.usb_left_out.is_empty() {
        return None;
    }
    let names: Vec<String> = config
        .usb_left_out
        .iter()
        .map(|(id, i)| format!("DOMAIN_USB_{id}[{i}]"))
        .collect();
    let (them, they) = match names.len() {
        1 => ("it", "it"),
        _ => ("them", "they"),
    };
    Some(Finding::warning(
        format!(
            "{}: not checked because of the errors above: whether {} can match the same \
             device as another element, and which present devices {they} would take",
            config.path.display(),
            names.join(", ")
        ),
        format!("correct {them}, then run bbvirt check again"),
    ))
}

/// A config that cannot be used, as an error finding with its fix.
pub fn config_error_finding(e: &ConfigError) -> Finding {
    let p = |path: &Path| path.display().to_string();
    match e {
        ConfigError::Insecure { path, problem, fix } => {
            Finding::error(format!("{} {problem}", p(path)), format!("run {fix}"))
        }
        ConfigError::Syntax { .. } => Finding::error(
            e.to_string(),
            "correct that line (vm.conf is bash syntax; see bbvirt(1))",
        ),
        ConfigError::Value { .. } => {
            Finding::error(e.to_string(), "correct that setting (see bbvirt(1))")
        }
        ConfigError::NotAFile { path } => Finding::error(
            e.to_string(),
            format!("replace {} with a regular file", p(path)),
        ),
        ConfigError::Read { path, .. } => Finding::error(
            crate::log::chain(e),
            format!("make {} readable by root", p(path)),
        ),
        ConfigError::BashSpawn { .. } => Finding::error(
            crate::log::chain(e),
            "install bash, or write the file as plain assignments",
        ),
        ConfigError::BashTimeout { path, .. } => Finding::error(
            e.to_string(),
            format!("make {} evaluate quickly (no waiting commands)", p(path)),
        ),
        ConfigError::Bash { path, .. } | ConfigError::BashOutput { path, .. } => Finding::error(
            crate::log::chain(e),
            format!("make `bash {}` run cleanly", p(path)),
        ),
        // One finding each (check_config_file); here, the first.
        ConfigError::Several(all) => match all.first() {
            Some(first) => config_error_finding(first),
            None => Finding::error(e.to_string(), "correct vm.conf (see bbvirt(1))"),
        },
    }
}

/// `FILE:LINE` for messages, or `FILE` when the line is not known (bash
/// evaluated the file).
fn file_at(config: &Config, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", config.path.display()),
        None => config.path.display().to_string(),
    }
}

/// Checks a loaded config: serial syntax, serials given to two guests, a
/// serial listed twice, guests with no device, `DOMAIN_USB_` elements that
/// can match the same device, `DOMAIN_NAME_` clashes.
/// Findings name the line the native parser found the setting on (only the
/// file when bash evaluated it).
pub fn check_config(config: &Config) -> Vec<Finding> {
    let at = |line: Option<usize>| file_at(config, line);
    let mut found = Vec::new();
    for d in &config.domains {
        found.extend(serial_findings(config, d, &at));
    }
    found.extend(duplicate_findings(config, &at));
    found.extend(element_overlap_findings(config, &at));
    found.extend(name_clash_findings(config, &at));
    // With elements left out (a config read leniently) there is no saying
    // "no clash".
    if found.is_empty() && !config.domains.is_empty() && config.usb_left_out.is_empty() {
        let serials: usize = config.domains.iter().map(|d| d.serials.len()).sum();
        let elements: usize = config.domains.iter().map(|d| d.usb.len()).sum();
        let usb = match elements {
            0 => String::new(),
            n => format!(" and {n} USB element{}", plural(n)),
        };
        found.push(Finding::ok(format!(
            "{}: {serials} serial{}{usb} for {} guest{}, no clash",
            config.path.display(),
            plural(serials),
            config.domains.len(),
            plural(config.domains.len())
        )));
    }
    found
}

/// A guest with no device (no serial, no element), serials that are not
/// BitBabbler serials, a serial listed twice.
fn serial_findings(
    config: &Config,
    d: &DomainConf,
    at: &dyn Fn(Option<usize>) -> String,
) -> Vec<Finding> {
    let mut found = Vec::new();
    let left_out = config.usb_left_out.iter().any(|(id, _)| *id == d.id);
    if d.serials.is_empty() && d.usb.is_empty() && !left_out {
        found.push(Finding::warning(
            format!(
                "{}: guest {} has no device (no serial in DOMAIN_RNG_{}, no element in \
                 DOMAIN_USB_{}): nothing is passed to '{}'",
                at(config.domain_line(d)),
                d.id,
                d.id,
                d.id,
                d.libvirt_name()
            ),
            format!(
                "list its BitBabblers' serials in DOMAIN_RNG_{}=( ... ) or its other devices \
                 in DOMAIN_USB_{}=( ... ), or remove its DOMAIN_*_{} lines (is the id \
                 misspelt?)",
                d.id, d.id, d.id
            ),
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for s in &d.serials {
        if !is_valid_serial(s) {
            let upper = s.trim().to_ascii_uppercase();
            let hint = if is_valid_serial(&upper) {
                format!(" (\"{upper}\"?)")
            } else {
                String::new()
            };
            found.push(Finding::error(
                format!(
                    "{}: DOMAIN_RNG_{} lists {s:?}, not a BitBabbler serial",
                    at(config.serial_line(d, s)),
                    d.id
                ),
                format!("use 6-7 characters A-Z, 0-9{hint}"),
            ));
        } else if seen.contains(&s.as_str()) {
            found.push(Finding::warning(
                format!(
                    "{}: DOMAIN_RNG_{} lists {s:?} twice",
                    at(config.serial_line(d, s)),
                    d.id
                ),
                "remove one",
            ));
        }
        seen.push(s);
    }
    found
}

/// `DOMAIN_USB_x[i]` at its line, for messages.
fn element_name(
    config: &Config,
    at: &dyn Fn(Option<usize>) -> String,
    d: usize,
    e: usize,
) -> String {
    let dom = &config.domains[d];
    let var = format!("DOMAIN_USB_{}", dom.id);
    let i = config.usb_index(dom, e);
    format!("{}: {var}[{i}]", at(config.lines.element(&var, i)))
}

/// Pairs of `DOMAIN_USB_` elements that can match one device (no key of
/// one contradicts the other's): who gets such a device, by the rule of
/// [`crate::selector`] (the more specific, then the earlier).
fn element_overlap_findings(config: &Config, at: &dyn Fn(Option<usize>) -> String) -> Vec<Finding> {
    let elements: Vec<(usize, usize)> = config
        .domains
        .iter()
        .enumerate()
        .flat_map(|(d, dom)| (0..dom.usb.len()).map(move |e| (d, e)))
        .collect();
    let mut found = Vec::new();
    for (i, &(d1, e1)) in elements.iter().enumerate() {
        for &(d2, e2) in &elements[i + 1..] {
            let (a, b) = (&config.domains[d1].usb[e1], &config.domains[d2].usb[e2]);
            if !a.may_overlap(b) {
                continue;
            }
            let (first, second) = (
                element_name(config, at, d1, e1),
                element_name(config, at, d2, e2),
            );
            let winner = if b.specificity() > a.specificity() {
                format!("{second} (more specific)")
            } else if a.specificity() > b.specificity() {
                format!("{first} (more specific)")
            } else {
                format!("{first} (earlier in the file)")
            };
            found.push(Finding::warning(
                format!("{first} and {second} can match the same device: {winner} gets it"),
                "add a port= or serial= key to tell the devices apart, or remove one",
            ));
        }
    }
    found
}

/// `DOMAIN_USB_` elements that match several of the present devices `usb`
/// (sysfs order): each takes only the first in port order.
pub fn present_element_findings(config: &Config, usb: &[UsbDevice]) -> Vec<Finding> {
    let at = |line: Option<usize>| file_at(config, line);
    let shared: Vec<&UsbDevice> = config
        .element_routes(usb)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let candidates: Vec<_> = shared.iter().map(|d| d.candidate()).collect();
    let routes = config.usb_routes(&candidates);
    routes
        .overlaps
        .iter()
        .filter_map(|o| match o {
            Overlap::Element {
                element,
                devices,
                taken,
            } => {
                let (d, e) = routes.elements[*element];
                let names: Vec<&str> = devices.iter().map(|&i| shared[i].name.as_str()).collect();
                let took = taken.map_or("none of them".to_string(), |t| shared[t].name.clone());
                Some(Finding::warning(
                    format!(
                        "{} matches {} present devices ({}): it takes {took}, the others stay \
                         with the host unless another element takes them",
                        element_name(config, &at, d, e),
                        devices.len(),
                        names.join(", ")
                    ),
                    "one element per device: add an element for each, told apart by port=",
                ))
            }
            Overlap::Device { .. } => None,
        })
        .collect()
}

/// Serials listed for two guests.
fn duplicate_findings(config: &Config, at: &dyn Fn(Option<usize>) -> String) -> Vec<Finding> {
    config
        .duplicates()
        .into_iter()
        .map(|(serial, first, other)| {
            let line = config
                .domains
                .iter()
                .find(|d| d.id == other)
                .and_then(|d| config.serial_line(d, &serial));
            Finding::error(
                format!(
                    "{}: {serial:?} is listed for guests {first} and {other} ({first} gets it, \
                     {other} never does)",
                    at(line)
                ),
                format!("remove it from DOMAIN_RNG_{first} or DOMAIN_RNG_{other}"),
            )
        })
        .collect()
}

/// Two ids naming the same libvirt domain (at the same configured URI), and
/// a libvirt name that is another guest's id.
fn name_clash_findings(config: &Config, at: &dyn Fn(Option<usize>) -> String) -> Vec<Finding> {
    let name_line = |id: &str| config.lines.first_assignment(&format!("DOMAIN_NAME_{id}"));
    let mut found = Vec::new();
    let mut by_name: HashMap<(Option<&str>, &str), &str> = HashMap::new();
    for d in &config.domains {
        let key = (d.uri.as_deref(), d.libvirt_name());
        match by_name.get(&key) {
            None => {
                by_name.insert(key, &d.id);
            }
            Some(first) => {
                let line = name_line(&d.id).or_else(|| name_line(first));
                found.push(Finding::error(
                    format!(
                        "{}: guests {first} and {} both name libvirt domain '{}'{}",
                        at(line),
                        d.id,
                        d.libvirt_name(),
                        d.uri
                            .as_deref()
                            .map(|u| format!(" at {u}"))
                            .unwrap_or_default()
                    ),
                    format!(
                        "give each its own DOMAIN_NAME_, or merge guest {}'s DOMAIN_RNG_ and \
                         DOMAIN_USB_ lists into guest {first}'s",
                        d.id
                    ),
                ));
            }
        }
    }
    // A libvirt name that is another guest's id: `--domain X` and
    // `attach-all X` take X as the id.
    for d in &config.domains {
        let Some(name) = d.name.as_deref() else {
            continue;
        };
        if let Some(o) = config
            .domains
            .iter()
            .find(|o| o.id == name && o.id != d.id && o.libvirt_name() != name)
        {
            found.push(Finding::warning(
                format!(
                    "{}: DOMAIN_NAME_{} is '{name}', also the id of guest {name} (libvirt \
                     domain '{}'): `--domain {name}` and `attach-all {name}` mean guest {name}",
                    at(name_line(&d.id)),
                    d.id,
                    o.libvirt_name()
                ),
                format!("rename the id {name} (its DOMAIN_*_{name} variables)"),
            ));
        }
    }
    found
}
