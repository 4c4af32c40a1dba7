//! Making untrusted text safe to show: one line for logs and terminals
//! ([`escape_controls`]), one word for a shell command line
//! ([`shell_quote`]), one value in a `DOMAIN_USB_` element
//! ([`element_quote`]).
//!
//! Serials, domain names, URIs and paths come from USB descriptors, vm.conf
//! and libvirt: a newline or an escape sequence in one of them must neither
//! forge a log line nor break a line an admin pastes into bash. Nor may a
//! character that moves or hides text on a terminal (a right-to-left
//! override, a zero-width space, a line separator) reach it as it is: a
//! product string could otherwise reorder the rest of a table's row.

/// Whether `c` must not reach a terminal as it is: a control character
/// (`\n`, ESC, the C1 controls), or a format character that moves or hides
/// text: bidirectional marks, embeddings, overrides and isolates (U+061C,
/// U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), zero-width characters
/// (U+180E, U+200B-U+200D, U+2060-U+2064, U+FEFF), the line and paragraph
/// separators (U+2028, U+2029) and the interlinear annotation marks
/// (U+FFF9-U+FFFB).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// `s` with the characters of [`is_unsafe_char`] written as Rust escapes
/// (`\n`, `\u{1b}`, `\u{202e}`); everything else, quotes included, as it is.
pub fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if is_unsafe_char(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Shell-quotes a word so that it can be pasted into bash and stays on one
/// line: bare when every character is safe, `'...'` otherwise, and bash's
/// `$'...'` with escapes when the word holds a character of
/// [`is_unsafe_char`] (a newline in a domain name must not start a new
/// line). In `$'...'` an ASCII control is `\xHH` (`\n`, `\t`, `\r` by name)
/// and any other such character its UTF-8 bytes as `\xHH`: bash reads those
/// back as the same bytes whatever its locale (vm.conf's bash fallback runs
/// with an empty environment, the C locale, where `\uHHHH` is not
/// converted).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b))
    {
        return s.to_string();
    }
    if !s.chars().any(is_unsafe_char) {
        return format!("'{}'", s.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            '\n' => out.push_str(r"\n"),
            '\t' => out.push_str(r"\t"),
            '\r' => out.push_str(r"\r"),
            c if is_unsafe_char(c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes a value for one word of a `DOMAIN_USB_` element (the `S` of
/// `serial=S`) so that the element's splitter ([`crate::selector`], crate
/// `shlex`, POSIX rules) reads exactly `s` back: bare when every character
/// is plain (ASCII letters and digits, `-_.:/@+,%=`), else in double quotes
/// with `\`, `"`, `$` and `` ` `` escaped by a backslash. Every other
/// character, a control character included, stays as it is: the element
/// goes into vm.conf as one bash word quoted by [`shell_quote`], which
/// escapes those. None when no element can hold `s`: empty (`serial=` is
/// refused), or with a NUL (no bash string holds one).
pub fn element_quote(s: &str) -> Option<String> {
    if s.is_empty() || s.contains('\0') {
        return None;
    }
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@+,%=".contains(&b))
    {
        return Some(s.to_string());
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("a\nb\tc\u{1b}[2J"), "a\\nb\\tc\\u{1b}[2J");
        assert_eq!(escape_controls("ünïcode ok"), "ünïcode ok");
    }

    #[test]
    fn characters_that_move_or_hide_text_are_escaped() {
        assert_eq!(
            escape_controls("abc\u{202e}fed\u{2028}x\u{200b}y\u{85}"),
            "abc\\u{202e}fed\\u{2028}x\\u{200b}y\\u{85}"
        );
        // Visible text of any script stays, wide or not.
        assert_eq!(
            escape_controls("ＫＷＩＦ４Ｑ 💥 Gerät"),
            "ＫＷＩＦ４Ｑ 💥 Gerät"
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_quote("/etc/bit-babbler/vm.conf"),
            "/etc/bit-babbler/vm.conf"
        );
        assert_eq!(shell_quote("qemu:///system"), "qemu:///system");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("a\nb'\\"), r"$'a\nb\'\\'");
        assert_eq!(shell_quote("\u{1b}[2J"), r"$'\x1b[2J'");
        // Other unsafe characters as their UTF-8 bytes.
        assert_eq!(shell_quote("a\u{85}b"), r"$'a\xc2\x85b'");
        assert_eq!(shell_quote("x\u{202e}y"), r"$'x\xe2\x80\xaey'");
    }

    #[test]
    fn element_values() {
        assert_eq!(element_quote("0001").as_deref(), Some("0001"));
        assert_eq!(element_quote("A-1.2").as_deref(), Some("A-1.2"));
        assert_eq!(element_quote("A B").as_deref(), Some(r#""A B""#));
        assert_eq!(
            element_quote(r#"a"b\c$d`e'f"#).as_deref(),
            Some(r#""a\"b\\c\$d\`e'f""#)
        );
        assert_eq!(element_quote("a\nb").as_deref(), Some("\"a\nb\""));
        assert_eq!(element_quote(""), None);
        assert_eq!(element_quote("a\0b"), None);
    }

    /// What the element splitter reads back is the value, for every kind
    /// of character.
    #[test]
    fn element_values_read_back_exactly() {
        for s in [
            "0001",
            "A B",
            " lead",
            "trail ",
            "#1",
            "a#b",
            "x'y",
            "x\"y",
            "\\",
            "\\\n",
            "a\\\nb",
            "$(reboot)",
            "`id`",
            "${IFS}",
            "a\tb\nc\rd",
            "\u{1b}[2J",
            "ünï 💥",
            "\u{fffd}",
            "=",
            "a=b",
        ] {
            let word = format!("serial={}", element_quote(s).unwrap());
            assert_eq!(
                shlex::split(&word),
                Some(vec![format!("serial={s}")]),
                "{s:?} as {word:?}"
            );
        }
    }
}
