//! `/etc/bit-babbler/seedd.conf`: which devices the host's own `seedd` takes.
//!
//! Why: the bit-babbler manual says a device given to a guest must not be
//! used by a `seedd` on the host. seedd takes every BitBabbler (including
//! ones plugged in later) unless its configuration names devices in
//! `[Device:ID]` sections (or its command line has `--device-id`), so
//! `check` compares those sections with vm.conf.
//!
//! The file's own rules, as this parser reads them:
//! - `#` starts a comment when it is the first non-blank character of a
//!   line or follows a blank; blank lines are ignored;
//! - `[Name]` or `[Name:ID]` (leading blanks allowed) starts a section;
//! - any other line is an option of the section above it, usually indented;
//!   its first word is the option's name, the rest its value;
//! - an option before the first section, a `[` without its `]`, or an empty
//!   section name is an error naming the file and line.
//!
//! The ID of a `[Device:ID]` section is a serial, `BUS:DEV` or
//! `BUS-PORT[.PORT...]`, as for seedd's `--device-id`; bbvirt parses it as a
//! [`DeviceId`], the same type as its own DEVICE argument.

use std::path::{Path, PathBuf};

use crate::device::DeviceId;

/// Where seedd's configuration lives unless `--seedd-config` says otherwise.
pub const DEFAULT_SEEDD_CONFIG: &str = "/etc/bit-babbler/seedd.conf";

/// A parsed seedd.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeeddConf {
    pub path: PathBuf,
    pub sections: Vec<Section>,
}

/// One `[Name]` or `[Name:ID]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub id: Option<String>,
    /// 1-based line of the header.
    pub line: usize,
    /// (name, value, line) of each option.
    pub options: Vec<(String, String, usize)>,
}

/// A `[Device:ID]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSection {
    /// The ID as written.
    pub raw: String,
    /// The ID parsed, or None when it is none of the DEVICE forms.
    pub id: Option<DeviceId>,
    pub line: usize,
}

/// seedd.conf could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum SeeddError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl SeeddConf {
    /// Reads `path`; Ok(None) when it does not exist (seedd not configured).
    pub fn load(path: &Path) -> Result<Option<SeeddConf>, SeeddError> {
        match std::fs::read(path) {
            Ok(bytes) => parse(path, &String::from_utf8_lossy(&bytes)).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SeeddError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The `[Device:ID]` sections, in file order.
    pub fn device_sections(&self) -> Vec<DeviceSection> {
        self.sections
            .iter()
            .filter(|s| s.name == "Device")
            .filter_map(|s| {
                let raw = s.id.clone()?;
                Some(DeviceSection {
                    id: raw.parse().ok(),
                    raw,
                    line: s.line,
                })
            })
            .collect()
    }
}

/// The line without its comment.
fn strip_comment(line: &str) -> &str {
    let mut prev_blank = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_blank {
            return &line[..i];
        }
        prev_blank = c.is_whitespace();
    }
    line
}

/// Parses seedd.conf text; `path` only names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<SeeddConf, SeeddError> {
    let err = |line: usize, message: String| SeeddError::Syntax {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(inner) = rest.strip_suffix(']') else {
                return Err(err(
                    n,
                    format!("section header {line:?} has no closing ']'"),
                ));
            };
            let (name, id) = match inner.split_once(':') {
                Some((name, id)) => (name.trim(), Some(id.trim().to_string())),
                None => (inner.trim(), None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(err(n, format!("bad section name in {line:?}")));
            }
            if id.as_deref() == Some("") {
                return Err(err(n, format!("section {line:?} has an empty ID")));
            }
            sections.push(Section {
                name: name.to_string(),
                id,
                line: n,
                options: Vec::new(),
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            return Err(err(
                n,
                format!("option {line:?} comes before any [Section] header"),
            ));
        };
        let (name, value) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(k, v)| (k, v.trim()));
        section
            .options
            .push((name.to_string(), value.to_string(), n));
    }
    Ok(SeeddConf {
        path: path.to_path_buf(),
        sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<SeeddConf, SeeddError> {
        parse(Path::new("/etc/bit-babbler/seedd.conf"), text)
    }

    #[test]
    fn sections_options_comments_and_indentation() {
        let c = p("# seedd settings\n\
                   [Service]\n\
                   \x20   daemon\n\
                   \tkernel   # feed the kernel pool\n\
                   \n\
                   [Pool]\n\
                   \x20 size 64k\n\
                   \x20 # size 1M\n\
                   [Device:KWIF4Q]\n\
                   \x20   bitrate 2.5M\n")
        .unwrap();
        let names: Vec<_> = c.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Service", "Pool", "Device"]);
        assert_eq!(
            c.sections[0].options,
            vec![
                ("daemon".into(), "".into(), 3),
                ("kernel".into(), "".into(), 4)
            ]
        );
        assert_eq!(
            c.sections[1].options,
            vec![("size".into(), "64k".into(), 7)]
        );
        assert_eq!(
            c.device_sections(),
            vec![DeviceSection {
                raw: "KWIF4Q".into(),
                id: Some(DeviceId::Serial("KWIF4Q".into())),
                line: 9
            }]
        );
    }

    #[test]
    fn device_ids_in_every_form() {
        let c = p("[Device:1:4]\n[Device:3-1.4]\n[Device: ABC1234 ]\n[Device:bad id!]\n").unwrap();
        let d = c.device_sections();
        assert_eq!(d.len(), 4);
        assert!(
            matches!(d[0].id, Some(DeviceId::Address { .. })),
            "{:?}",
            d[0]
        );
        assert!(
            matches!(d[1].id, Some(DeviceId::Physical { .. })),
            "{:?}",
            d[1]
        );
        assert_eq!(d[2].raw, "ABC1234");
        assert_eq!(d[3].raw, "bad id!");
    }

    #[test]
    fn a_commented_out_section_is_no_section() {
        let c = p("#[Device:KWIF4Q]\n  # [Device:ABC1234]\n").unwrap();
        assert!(c.device_sections().is_empty());
    }

    #[test]
    fn errors_name_the_file_and_line() {
        for (text, line, what) in [
            ("daemon\n", 1, "before any [Section]"),
            ("[Service]\n[Device:KW\n", 2, "no closing"),
            ("\n[]\n", 2, "bad section name"),
            ("[Device:]\n", 1, "empty ID"),
        ] {
            let e = p(text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("/etc/bit-babbler/seedd.conf:{line}: ")),
                "{text:?}: {e}"
            );
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }

    /// The fixture corpus in tests/fixtures/seedd: (file, what it holds).
    #[test]
    fn corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seedd");
        let load = |f: &str| SeeddConf::load(&dir.join(f));

        // The commented example: sections, but no device named.
        let c = load("example.conf").unwrap().unwrap();
        let names: Vec<_> = c.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Service", "Pool", "Devices"]);
        assert!(c.sections.iter().all(|s| s.options.is_empty()));
        assert!(c.device_sections().is_empty());

        // Tabs, a trailing comment on a header, blanks inside the brackets.
        let c = load("host-devices.conf").unwrap().unwrap();
        let d: Vec<_> = c
            .device_sections()
            .into_iter()
            .map(|d| (d.raw, d.line))
            .collect();
        assert_eq!(
            d,
            [
                ("LONER01".into(), 6),
                ("3-1.4".into(), 8),
                ("1:7".into(), 9)
            ]
        );
        assert_eq!(
            c.sections[1].options,
            vec![("bitrate".into(), "2.5M".into(), 7)]
        );

        let c = load("conflict.conf").unwrap().unwrap();
        assert_eq!(c.device_sections()[0].line, 4);

        for (f, line) in [("bad-option-first.conf", 2), ("bad-header.conf", 3)] {
            let e = load(f).unwrap_err().to_string();
            assert!(e.contains(&format!("{f}:{line}: ")), "{f}: {e}");
        }
    }

    #[test]
    fn a_missing_file_is_none() {
        assert!(
            SeeddConf::load(Path::new("/nonexistent/seedd.conf"))
                .unwrap()
                .is_none()
        );
    }
}
