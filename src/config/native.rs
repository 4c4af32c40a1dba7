//! The native parser: the subset of bash that plain vm.conf files use,
//! understood exactly, without executing anything (see the module doc of
//! [`crate::config`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{
    Config, ConfigError, NativeError, RawVar, SourceLines, TIMEOUT_VAR, Validated, VarLines,
    validate,
};

/// Parses raw file bytes natively: invalid UTF-8 and NUL bytes are errors
/// naming the line.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Config, NativeError> {
    parse_bytes_lenient(path, bytes)?
        .strict()
        .map_err(NativeError::Invalid)
}

/// [`parse_bytes`], the settings validated one by one ([`Validated`]).
pub(super) fn parse_bytes_lenient(path: &Path, bytes: &[u8]) -> Result<Validated, NativeError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_native_lenient(path, text),
        Err(e) => {
            let line = line_of(&bytes[..e.valid_up_to()]);
            Err(NativeError::Invalid(ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                msg: "invalid UTF-8 (the file must be UTF-8 text)".to_string(),
            }))
        }
    }
}

fn line_of(before: &[u8]) -> usize {
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// Parses vm.conf text without executing anything.  `path` is only used in
/// messages and in the result.  See the module documentation for the subset
/// understood; anything else gives [`NativeError::NeedsBash`].
pub fn parse_native(path: &Path, text: &str) -> Result<Config, NativeError> {
    parse_native_lenient(path, text)?
        .strict()
        .map_err(NativeError::Invalid)
}

/// [`parse_native`], the settings validated one by one ([`Validated`]).
pub(super) fn parse_native_lenient(path: &Path, text: &str) -> Result<Validated, NativeError> {
    let stop = |s: Stop| match s {
        Stop::Bash { line, reason } => NativeError::NeedsBash { line, reason },
        Stop::Syntax { line, msg } => NativeError::Invalid(ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            msg,
        }),
    };
    if let Some(pos) = text.find('\0') {
        return Err(stop(Stop::Syntax {
            line: line_of(&text.as_bytes()[..pos]),
            msg: "NUL byte (this is not a text file)".to_string(),
        }));
    }
    let mut p = Parser::new(text);
    p.run().map_err(stop)?;
    let vars = p.vars.into_raw();
    let lines = SourceLines {
        vars: vars
            .iter()
            .filter_map(|v| Some((v.name.clone(), v.lines.clone()?)))
            .collect(),
    };
    Ok(validate(path, &vars, lines))
}

/// Why the native parser stopped.
#[derive(Debug)]
enum Stop {
    Bash { line: usize, reason: String },
    Syntax { line: usize, msg: String },
}

type PResult<T> = Result<T, Stop>;

/// Variables bash itself makes read-only: assigning them is an error there.
const BASH_READONLY: &[&str] = &[
    "BASHOPTS",
    "BASH_VERSINFO",
    "EUID",
    "PPID",
    "SHELLOPTS",
    "UID",
];

/// The DOMAIN_*, SERVE_USB_* and BBVIRT_TIMEOUT variables assigned so far,
/// as (dense) bash arrays.
#[derive(Default)]
struct Vars {
    order: Vec<String>,
    values: BTreeMap<String, Vec<String>>,
    readonly: BTreeSet<String>,
    /// The line of each variable's last assignment.
    lines: BTreeMap<String, usize>,
    /// Where each variable is set: first assignment, each element.
    sources: BTreeMap<String, VarLines>,
}

enum Value {
    Scalar(String),
    /// The elements, each with the line it starts on.
    Array(Vec<(String, usize)>),
}

impl Vars {
    /// Bash semantics: a scalar assignment sets element 0 (`+=` appends to
    /// it); an array assignment replaces the array (`+=` appends elements).
    /// `line` is where the assignment starts.
    fn assign(&mut self, name: &str, append: bool, value: Value, line: usize) {
        if !name.starts_with("DOMAIN_") && name != TIMEOUT_VAR && !super::serve::is_serve_var(name)
        {
            return;
        }
        if !self.values.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.lines.insert(name.to_string(), line);
        let v = self.values.entry(name.to_string()).or_default();
        let src = self
            .sources
            .entry(name.to_string())
            .or_insert_with(|| VarLines {
                first: line,
                elements: Vec::new(),
            });
        match (value, append) {
            (Value::Scalar(s), false) => match v.first_mut() {
                Some(first) => {
                    *first = s;
                    src.elements[0] = line;
                }
                None => {
                    v.push(s);
                    src.elements.push(line);
                }
            },
            (Value::Scalar(s), true) => match v.first_mut() {
                Some(first) => first.push_str(&s),
                None => {
                    v.push(s);
                    src.elements.push(line);
                }
            },
            (Value::Array(a), append) => {
                if !append {
                    v.clear();
                    src.elements.clear();
                }
                for (value, at) in a {
                    v.push(value);
                    src.elements.push(at);
                }
            }
        }
    }

    fn into_raw(mut self) -> Vec<RawVar> {
        self.order
            .iter()
            .map(|name| {
                let values = self.values.remove(name).unwrap_or_default();
                RawVar {
                    name: name.clone(),
                    first: values.first().cloned().unwrap_or_default(),
                    values,
                    line: self.lines.get(name).copied(),
                    lines: self.sources.remove(name),
                }
            })
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WordCtx {
    /// The value of `NAME=value`: no globbing, no brace expansion.
    Scalar,
    /// An element of `NAME=( ... )`: globbing and brace expansion apply.
    Array,
}

const CR_MSG: &str = "carriage return character (DOS line endings?): \
                      convert the file with dos2unix";

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Parser {
    c: Vec<char>,
    i: usize,
    line: usize,
    vars: Vars,
}

impl Parser {
    fn new(text: &str) -> Parser {
        Parser {
            c: text.chars().collect(),
            i: 0,
            line: 1,
            vars: Vars::default(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.c.get(self.i + k).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.i += 1;
        if ch == '\n' {
            self.line += 1;
        }
        Some(ch)
    }

    fn bash<T>(&self, reason: impl Into<String>) -> PResult<T> {
        Err(Stop::Bash {
            line: self.line,
            reason: reason.into(),
        })
    }

    fn syntax<T>(line: usize, msg: impl Into<String>) -> PResult<T> {
        Err(Stop::Syntax {
            line,
            msg: msg.into(),
        })
    }

    /// Skips spaces, tabs and backslash-newline continuations.
    fn skip_blanks(&mut self) {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(' ' | '\t'), _) => {
                    self.bump();
                }
                (Some('\\'), Some('\n')) => {
                    self.bump();
                    self.bump();
                }
                _ => return,
            }
        }
    }

    /// Skips a comment up to (not including) the newline.
    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                return;
            }
            self.bump();
        }
    }

    /// The text of the word starting here, for messages.
    fn describe_word(&self) -> String {
        let w: String = self.c[self.i..]
            .iter()
            .take_while(|&&c| !matches!(c, ' ' | '\t' | '\n' | ';'))
            .take(40)
            .collect();
        format!("`{w}`")
    }

    fn run(&mut self) -> PResult<()> {
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Ok(()),
                Some('\n') => {
                    self.bump();
                }
                Some('#') => self.skip_comment(),
                Some('\r') => return Self::syntax(self.line, CR_MSG),
                Some(';') => return self.bash("`;` without a command before it"),
                Some(_) => self.command()?,
            }
        }
    }

    /// One simple command: assignments, or a declaration builtin.
    fn command(&mut self) -> PResult<()> {
        if let Some(kw) = self.declaration_keyword()? {
            return self.declaration(kw);
        }
        loop {
            match self.assignment_head() {
                Some((name, append)) => self.assignment(&name, append, false)?,
                None => {
                    let w = self.describe_word();
                    return self.bash(format!("command {w}"));
                }
            }
            if self.after_word()? {
                return Ok(());
            }
        }
    }

    /// After a word: skips blanks (and a comment or `;`).  `Ok(true)` at the
    /// end of the command, `Ok(false)` when another word follows.
    fn after_word(&mut self) -> PResult<bool> {
        match self.peek() {
            None | Some('\n') => return Ok(true),
            Some(';') => return self.semicolon(),
            Some(' ' | '\t') => {}
            Some('\\') if self.peek_at(1) == Some('\n') => {}
            Some('\r') => return Self::syntax(self.line, CR_MSG),
            Some(c @ ('&' | '|' | '<' | '>' | '(' | ')')) => {
                return self.bash(format!("operator `{c}`"));
            }
            Some(c) => return self.bash(format!("`{c}` right after `)`")),
        }
        self.skip_blanks();
        match self.peek() {
            None | Some('\n') => Ok(true),
            Some('#') => {
                self.skip_comment();
                Ok(true)
            }
            Some(';') => self.semicolon(),
            Some('\r') => Self::syntax(self.line, CR_MSG),
            Some(c @ ('&' | '|' | '<' | '>' | '(' | ')')) => self.bash(format!("operator `{c}`")),
            Some(_) => Ok(false),
        }
    }

    fn semicolon(&mut self) -> PResult<bool> {
        self.bump();
        self.skip_blanks();
        if self.peek() == Some(';') {
            return self.bash("`;;`");
        }
        Ok(true)
    }

    /// `NAME=` or `NAME+=` here: consumes it and returns (NAME, append).
    fn assignment_head(&mut self) -> Option<(String, bool)> {
        let rest = &self.c[self.i..];
        if !rest.first().is_some_and(|&c| is_name_start(c)) {
            return None;
        }
        let n = rest.iter().take_while(|&&c| is_name_char(c)).count();
        let (append, len) = match (rest.get(n), rest.get(n + 1)) {
            (Some('='), _) => (false, n + 1),
            (Some('+'), Some('=')) => (true, n + 2),
            _ => return None,
        };
        let name: String = rest[..n].iter().collect();
        self.i += len;
        Some((name, append))
    }

    /// A bare `NAME` argument (for `declare NAME`): consumes it.
    fn bare_name(&mut self) -> Option<String> {
        let rest = &self.c[self.i..];
        if !rest.first().is_some_and(|&c| is_name_start(c)) {
            return None;
        }
        let n = rest.iter().take_while(|&&c| is_name_char(c)).count();
        if !matches!(rest.get(n), None | Some(' ' | '\t' | '\n' | ';')) {
            return None;
        }
        let name: String = rest[..n].iter().collect();
        self.i += n;
        Some(name)
    }

    /// `declare`, `typeset`, `export` or `readonly` as a plain word here.
    fn declaration_keyword(&mut self) -> PResult<Option<&'static str>> {
        let rest = &self.c[self.i..];
        let n = rest.iter().take_while(|c| c.is_ascii_lowercase()).count();
        if !matches!(rest.get(n), None | Some(' ' | '\t' | '\n' | ';')) {
            return Ok(None);
        }
        let word: String = rest[..n].iter().collect();
        let kw = match word.as_str() {
            "declare" => "declare",
            "typeset" => "typeset",
            "export" => "export",
            "readonly" => "readonly",
            "local" => return self.bash("`local` outside a function"),
            _ => return Ok(None),
        };
        self.i += n;
        Ok(Some(kw))
    }

    /// The arguments of a declaration builtin: allowed options, then
    /// assignments or bare names.
    fn declaration(&mut self, kw: &'static str) -> PResult<()> {
        let allowed = match kw {
            "declare" | "typeset" => "agrx",
            "readonly" => "a",
            _ => "",
        };
        let mut readonly = kw == "readonly";
        let mut options_done = false;
        let mut any_arg = false;
        loop {
            if self.after_word()? {
                if !any_arg {
                    return self.bash(format!("`{kw}` without arguments"));
                }
                return Ok(());
            }
            if !options_done && self.peek() == Some('-') {
                let word: String = self.c[self.i..]
                    .iter()
                    .take_while(|c| !matches!(c, ' ' | '\t' | '\n' | ';'))
                    .collect();
                if word == "--" {
                    options_done = true;
                } else if word.len() > 1
                    && word[1..].chars().all(|c| allowed.contains(c) && c != '-')
                {
                    readonly |= word.contains('r');
                } else {
                    return self.bash(format!("`{kw} {word}`"));
                }
                self.i += word.chars().count();
                continue;
            }
            options_done = true;
            any_arg = true;
            if let Some((name, append)) = self.assignment_head() {
                self.assignment(&name, append, readonly)?;
            } else if let Some(name) = self.bare_name() {
                if readonly {
                    self.vars.readonly.insert(name);
                }
            } else {
                let w = self.describe_word();
                return self.bash(format!("`{kw}` argument {w}"));
            }
        }
    }

    /// The value after `NAME=` / `NAME+=` (already consumed).
    fn assignment(&mut self, name: &str, append: bool, make_readonly: bool) -> PResult<()> {
        if self.vars.readonly.contains(name) || BASH_READONLY.contains(&name) {
            return self.bash(format!("assignment to read-only variable {name}"));
        }
        let line = self.line;
        let value = if self.peek() == Some('(') {
            let start = self.line;
            self.bump();
            Value::Array(self.array_body(start)?)
        } else {
            Value::Scalar(self.word(WordCtx::Scalar)?)
        };
        self.vars.assign(name, append, value, line);
        if make_readonly {
            self.vars.readonly.insert(name.to_string());
        }
        Ok(())
    }

    /// Elements up to the closing `)` (the `(` is consumed).
    fn array_body(&mut self, start: usize) -> PResult<Vec<(String, usize)>> {
        let mut elems = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Self::syntax(start, "unterminated array: missing `)`");
                }
                Some(' ' | '\t' | '\n') => {
                    self.bump();
                }
                Some('\\') if self.peek_at(1) == Some('\n') => {
                    self.bump();
                    self.bump();
                }
                Some('#') => self.skip_comment(),
                Some(')') => {
                    self.bump();
                    return Ok(elems);
                }
                Some('\r') => return Self::syntax(self.line, CR_MSG),
                Some(c @ (';' | '&' | '|' | '<' | '>' | '(')) => {
                    return self.bash(format!("`{c}` inside an array"));
                }
                Some(_) => {
                    let at = self.line;
                    elems.push((self.word(WordCtx::Array)?, at));
                }
            }
        }
    }

    /// One word: unquoted text, quotes, escapes, concatenated.
    fn word(&mut self, ctx: WordCtx) -> PResult<String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => break,
                '\r' => return Self::syntax(self.line, CR_MSG),
                '\\' => match self.peek_at(1) {
                    Some('\n') => {
                        self.bump();
                        self.bump();
                    }
                    Some('\r') => return Self::syntax(self.line, CR_MSG),
                    Some(ch) => {
                        self.bump();
                        self.bump();
                        out.push(ch);
                    }
                    None => return self.bash("backslash at the end of the file"),
                },
                '\'' => {
                    let start = self.line;
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Self::syntax(start, "unterminated single quote"),
                            Some('\'') => break,
                            Some(ch) => out.push(ch),
                        }
                    }
                }
                '"' => self.double_quoted(&mut out)?,
                '$' => return self.bash(dollar_reason(self.peek_at(1))),
                '`' => return self.bash("command substitution (backticks)"),
                '~' => return self.bash("`~` (tilde expansion)"),
                '*' | '?' | '[' if ctx == WordCtx::Array => {
                    return self.bash(format!("`{c}` (glob pattern) in an array element"));
                }
                '{' | '}' if ctx == WordCtx::Array => {
                    return self.bash(format!("`{c}` (brace expansion) in an array element"));
                }
                _ => {
                    self.bump();
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// A `"..."` string (at the opening quote), appended to `out`.
    fn double_quoted(&mut self, out: &mut String) -> PResult<()> {
        let start = self.line;
        self.bump();
        loop {
            match self.peek() {
                None => return Self::syntax(start, "unterminated double quote"),
                Some('"') => {
                    self.bump();
                    return Ok(());
                }
                Some('\\') => match self.peek_at(1) {
                    Some('\n') => {
                        self.bump();
                        self.bump();
                    }
                    Some(ch @ ('"' | '\\' | '$' | '`')) => {
                        self.bump();
                        self.bump();
                        out.push(ch);
                    }
                    Some(_) => {
                        self.bump();
                        out.push('\\');
                    }
                    None => return Self::syntax(start, "unterminated double quote"),
                },
                Some('$') => {
                    let reason = dollar_reason(self.peek_at(1));
                    return self.bash(format!("{reason} in double quotes"));
                }
                Some('`') => return self.bash("command substitution (backticks) in double quotes"),
                Some(ch) => {
                    self.bump();
                    out.push(ch);
                }
            }
        }
    }
}

/// What a `$` followed by `next` starts, for messages.
fn dollar_reason(next: Option<char>) -> &'static str {
    match next {
        Some('(') => "`$(` (command substitution or arithmetic)",
        Some('{') => "`${` (parameter expansion)",
        Some('\'') => "`$'` (ANSI-C quoting)",
        Some('"') => "`$\"` (locale quoting)",
        _ => "`$` (expansion)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;

    fn parse(text: &str) -> Result<Config, NativeError> {
        parse_native(Path::new("/t/vm.conf"), text)
    }

    fn ok(text: &str) -> Config {
        match parse(text) {
            Ok(c) => c,
            Err(e) => panic!("parse failed for {text:?}: {e}"),
        }
    }

    fn serials(text: &str, id: &str) -> Vec<String> {
        ok(text)
            .domains
            .into_iter()
            .find(|d| d.id == id)
            .map(|d| d.serials)
            .unwrap_or_else(|| panic!("no domain {id} in {text:?}"))
    }

    fn needs_bash(text: &str) -> (usize, String) {
        match parse(text) {
            Err(NativeError::NeedsBash { line, reason }) => (line, reason),
            other => panic!("expected NeedsBash for {text:?}, got {other:?}"),
        }
    }

    fn syntax(text: &str) -> String {
        match parse(text) {
            Err(NativeError::Invalid(e)) => e.to_string(),
            other => panic!("expected an error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn basic_example() {
        let c = ok("#DOMAIN_RNG_x=(A)\n\
             DOMAIN_URI_sid=\"qemu:///system\"\n\
             DOMAIN_RNG_sid=( KWIF4Q JAXJE6 )\n\
             DOMAIN_NAME_kbsd=\"kbsd-unstable\"\n\
             DOMAIN_URI_kbsd=\"qemu+ssh://your.domain/system\"\n\
             DOMAIN_RNG_kbsd=( G2SJ3Z )\n");
        assert_eq!(
            c.domains,
            vec![
                DomainConf {
                    id: "sid".into(),
                    name: None,
                    uri: Some("qemu:///system".into()),
                    serials: vec!["KWIF4Q".into(), "JAXJE6".into()],
                    usb: Vec::new(),
                    remote: Vec::new(),
                },
                DomainConf {
                    id: "kbsd".into(),
                    name: Some("kbsd-unstable".into()),
                    uri: Some("qemu+ssh://your.domain/system".into()),
                    serials: vec!["G2SJ3Z".into()],
                    usb: Vec::new(),
                    remote: Vec::new(),
                },
            ]
        );
        assert_eq!(
            c.find_domain("kbsd-unstable").map(|d| d.id.as_str()),
            Some("kbsd")
        );
        assert_eq!(
            c.domain_for_serial("JAXJE6").map(|d| d.id.as_str()),
            Some("sid")
        );
        assert!(c.domain_for_serial("NOPE").is_none());
    }

    #[test]
    fn order_is_first_appearance() {
        let c = ok("DOMAIN_URI_b=x\nDOMAIN_RNG_a=(A)\nDOMAIN_RNG_b=(B)\nDOMAIN_NAME_c=n\n");
        let ids: Vec<&str> = c.domains.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            serials(r#"DOMAIN_RNG_a=( 'A B' "C\"D" E\ F "\$\\\`x\y" )"#, "a"),
            ["A B", "C\"D", "E F", "$\\`x\\y"]
        );
        assert_eq!(serials("DOMAIN_RNG_a=a\"b\"'c'\\d", "a"), ["abcd"]);
        assert_eq!(serials("DOMAIN_RNG_a=\"ab\\\ncd\"", "a"), ["abcd"]);
        assert_eq!(serials("DOMAIN_RNG_a=ab\\\ncd", "a"), ["abcd"]);
        assert_eq!(serials("DOMAIN_RNG_a='it''s'", "a"), ["its"]);
        assert_eq!(serials("DOMAIN_RNG_a='\\n$x`'", "a"), ["\\n$x`"]);
        assert_eq!(serials("DOMAIN_RNG_a=( \"\" '' )", "a"), ["", ""]);
    }

    #[test]
    fn multiline_arrays_and_comments() {
        let text = "DOMAIN_RNG_a=(  # first\n  A1 # ) not the end\n\n  A2\\\n3 ) # done\n";
        assert_eq!(serials(text, "a"), ["A1", "A23"]);
        assert_eq!(serials("DOMAIN_RNG_a=(A#B)", "a"), ["A#B"]);
        assert_eq!(serials("DOMAIN_RNG_a=A#B # c", "a"), ["A#B"]);
        assert_eq!(serials("DOMAIN_RNG_a=()", "a"), Vec::<String>::new());
    }

    #[test]
    fn append_and_scalar_semantics() {
        assert_eq!(
            serials("DOMAIN_RNG_a=(A)\nDOMAIN_RNG_a+=(B C)", "a"),
            ["A", "B", "C"]
        );
        assert_eq!(
            serials("DOMAIN_RNG_a=(A B)\nDOMAIN_RNG_a=C", "a"),
            ["C", "B"]
        );
        assert_eq!(
            serials("DOMAIN_RNG_a=(A B)\nDOMAIN_RNG_a+=C", "a"),
            ["AC", "B"]
        );
        assert_eq!(
            serials("DOMAIN_RNG_a=A\nDOMAIN_RNG_a+=(B)", "a"),
            ["A", "B"]
        );
        assert_eq!(serials("DOMAIN_RNG_a+=X", "a"), ["X"]);
        assert_eq!(serials("DOMAIN_RNG_a=(A B)\nDOMAIN_RNG_a=(C)", "a"), ["C"]);
    }

    #[test]
    fn declarations_and_separators() {
        let c = ok(
            "declare -a DOMAIN_RNG_a=(A) ; export DOMAIN_URI_a=u;readonly DOMAIN_NAME_a=n\n\
                    typeset -gx X=1 DOMAIN_RNG_b=B\ndeclare -- DOMAIN_RNG_c=(C)\nX=1 Y=2 DOMAIN_RNG_d=D;\n\
                    declare -a DOMAIN_RNG_e\nexport PATH\n",
        );
        let ids: Vec<&str> = c.domains.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(c.domains[0].uri.as_deref(), Some("u"));
        assert_eq!(c.domains[0].libvirt_name(), "n");
    }

    #[test]
    fn empty_uri_and_name_mean_unset() {
        let c = ok("DOMAIN_URI_a=\nDOMAIN_NAME_a=''\n");
        assert_eq!(c.domains[0].uri, None);
        assert_eq!(c.domains[0].libvirt_name(), "a");
        assert!(ok("DOMAIN_RNG_=(X)\nOTHER=1\n").domains.is_empty());
    }

    #[test]
    fn unicode_values() {
        let c = ok("DOMAIN_NAME_x=\"débian ünstable ☃\"\nDOMAIN_RNG_x=(É1)");
        assert_eq!(c.domains[0].name.as_deref(), Some("débian ünstable ☃"));
        assert_eq!(c.domains[0].serials, ["É1"]);
    }

    #[test]
    fn constructs_needing_bash() {
        let cases = [
            ("echo hi", 1, "command"),
            ("X=1\nDOMAIN_RNG_a=$X", 2, "`$`"),
            ("DOMAIN_RNG_a=${X}", 1, "`${`"),
            ("DOMAIN_RNG_a=\"$X\"", 1, "double quotes"),
            ("DOMAIN_RNG_a=$(cat f)", 1, "`$(`"),
            ("DOMAIN_RNG_a=`cat f`", 1, "backticks"),
            ("DOMAIN_RNG_a=$'x'", 1, "ANSI-C"),
            ("DOMAIN_RNG_a=$((1+2))", 1, "`$(`"),
            (
                "for x in a; do DOMAIN_RNG_a+=($x); done",
                1,
                "command `for`",
            ),
            ("if true; then X=1; fi", 1, "command `if`"),
            ("f() { X=1; }", 1, "command `f()`"),
            ("[[ -e x ]] && X=1", 1, "command `[[`"),
            ("DOMAIN_RNG_a=(A*)", 1, "glob"),
            ("DOMAIN_RNG_a=(A?)", 1, "glob"),
            ("DOMAIN_RNG_a=([1]=A)", 1, "glob"),
            ("DOMAIN_RNG_a=({A,B})", 1, "brace"),
            ("DOMAIN_RNG_a=~/x", 1, "tilde"),
            ("source /etc/x", 1, "command `source`"),
            (". /etc/x", 1, "command `.`"),
            ("X=1 cat <<EOF\nEOF", 1, "command `cat`"),
            ("X=<(ls)", 1, "operator `<`"),
            ("X=1 >f", 1, "operator `>`"),
            ("X=1 && Y=2", 1, "operator `&`"),
            ("X=1 | Y=2", 1, "operator `|`"),
            ("X=(a)b", 1, "right after"),
            ("(( x = 1 ))", 1, "command"),
            ("declare -A DOMAIN_RNG_a", 1, "`declare -A`"),
            ("declare -i X=1+1", 1, "`declare -i`"),
            ("local X=1", 1, "`local`"),
            ("readonly X=1\nX=2", 2, "read-only"),
            ("UID=3", 1, "read-only"),
            ("X[1]=a", 1, "command"),
            ("X=1;;", 1, "`;;`"),
            ("; X=1", 1, "`;`"),
            ("X=a\\", 1, "backslash"),
        ];
        for (text, line, reason) in cases {
            let (l, r) = needs_bash(text);
            assert_eq!(l, line, "line for {text:?}");
            assert!(
                r.contains(reason),
                "reason {r:?} for {text:?} lacks {reason:?}"
            );
        }
    }

    #[test]
    fn scalar_values_are_not_globbed_or_brace_expanded() {
        assert_eq!(serials("DOMAIN_RNG_a={a,b}*?[x]", "a"), ["{a,b}*?[x]"]);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        assert_eq!(
            syntax("X=1\nDOMAIN_RNG_a=( A\n  'B\n C )\n"),
            "/t/vm.conf:3: unterminated single quote"
        );
        assert_eq!(
            syntax("X=1\n\nDOMAIN_URI_a=\"qemu:///system\nY=2\n"),
            "/t/vm.conf:3: unterminated double quote"
        );
        assert_eq!(
            syntax("X=1\nDOMAIN_RNG_a=( A\n B\n# )\n"),
            "/t/vm.conf:2: unterminated array: missing `)`"
        );
        assert_eq!(syntax("X=\"a\\"), "/t/vm.conf:1: unterminated double quote");
        assert!(syntax("X=1\r\nY=2\r\n").starts_with("/t/vm.conf:1: carriage return"));
        assert!(syntax("# ok\r\n\r\n").starts_with("/t/vm.conf:2: carriage return"));
        assert_eq!(
            syntax("X=1\nY=a\0b"),
            "/t/vm.conf:2: NUL byte (this is not a text file)"
        );
    }

    #[test]
    fn quoted_carriage_return_is_kept() {
        assert_eq!(serials("DOMAIN_RNG_a='A\r'\n# x\r\n", "a"), ["A\r"]);
    }

    #[test]
    fn invalid_utf8_is_an_error_with_line() {
        let e = parse_bytes(Path::new("f"), b"X=1\n\nY=\xff\xfe\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:3: invalid UTF-8 (the file must be UTF-8 text)"
        );
    }
}
