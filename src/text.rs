//! Making untrusted text safe to show: one line for logs and terminals
//! ([`escape_controls`]), one word for a shell command line
//! ([`shell_quote`]).
//!
//! Serials, domain names, URIs and paths come from USB descriptors, vm.conf
//! and libvirt: a newline or an escape sequence in one of them must neither
//! forge a log line nor break a line an admin pastes into bash.

/// `s` with control characters written as Rust escapes (`\n`, `\u{1b}`);
/// everything else, quotes included, as it is.
pub fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Shell-quotes a word so that it can be pasted into bash and stays on one
/// line: bare when every character is safe, `'...'` otherwise, and bash's
/// `$'...'` with escapes when the word holds control characters (a newline
/// in a domain name must not start a new line).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b))
    {
        return s.to_string();
    }
    if !s.chars().any(char::is_control) {
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
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
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
    }
}
