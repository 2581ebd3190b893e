//! Requirement strings of function steps: only PEP 508 specifiers, so none can be read as an
//! installer option (`--index-url=...`), a local path or a bare URL.
//!
//! The accepted grammar is PEP 508's: a distribution name, optional extras, then either version
//! clauses or `@ URL` (a URL with a `scheme://`), then an optional `; marker`. Everything is
//! printable ASCII; no line breaks, no tabs inside a URL. The Python SDK's `validate.py` applies
//! the same rule; `protocol/tests/golden/cases/validate.json` pins both.

/// The longest requirement accepted, in bytes.
pub const MAX_REQUIREMENT_LEN: usize = 1000;

const ENV_VARS: &[&str] = &[
    "python_version",
    "python_full_version",
    "os_name",
    "sys_platform",
    "platform_release",
    "platform_system",
    "platform_version",
    "platform_machine",
    "platform_python_implementation",
    "implementation_name",
    "implementation_version",
    "extra",
];

/// `Ok` for a PEP 508 requirement, else why not (for people).
pub fn check_requirement(text: &str) -> Result<(), String> {
    if text.len() > MAX_REQUIREMENT_LEN {
        return Err(format!("is longer than {MAX_REQUIREMENT_LEN} bytes"));
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t'))
    {
        return Err(format!(
            "holds {c:?}: only printable ASCII is allowed in a requirement"
        ));
    }
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.wsp();
    if p.s.get(p.i) == Some(&b'-') {
        return Err("starts with '-': installer options are not requirements".into());
    }
    p.identifier("a distribution name")?;
    p.wsp();
    if p.peek() == Some(b'[') {
        p.extras()?;
        p.wsp();
    }
    if p.peek() == Some(b'@') {
        p.i += 1;
        p.wsp();
        p.url()?;
        if p.at_end_after_wsp() {
            return Ok(());
        }
        if !p.s[p.i - 1].is_ascii_whitespace() {
            return Err(p.unexpected("whitespace before ';' after a URL"));
        }
        p.marker_clause()?;
    } else {
        if matches!(p.peek(), Some(b'(' | b'<' | b'>' | b'=' | b'!' | b'~')) {
            p.version_spec()?;
            p.wsp();
        }
        if p.peek().is_some() {
            p.marker_clause()?;
        }
    }
    if p.at_end_after_wsp() {
        Ok(())
    } else {
        Err(p.unexpected("the end"))
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn rest(&self) -> &str {
        std::str::from_utf8(&self.s[self.i..]).unwrap_or("")
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.peek() {
            None => format!("ends where {wanted} was expected"),
            Some(_) => format!(
                "has {:?} at byte {} where {wanted} was expected",
                self.rest(),
                self.i
            ),
        }
    }

    fn wsp(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn at_end_after_wsp(&mut self) -> bool {
        self.wsp();
        self.peek().is_none()
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.s[self.i..].starts_with(token.as_bytes()) {
            self.i += token.len();
            true
        } else {
            false
        }
    }

    /// A name or extra: letters and digits, with `.`, `_` or `-` only inside.
    fn identifier(&mut self, what: &str) -> Result<String, String> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        {
            self.i += 1;
        }
        let word = &self.s[start..self.i];
        let edges_ok = word.first().is_some_and(u8::is_ascii_alphanumeric)
            && word.last().is_some_and(u8::is_ascii_alphanumeric);
        if !edges_ok {
            self.i = start;
            return Err(self.unexpected(what));
        }
        Ok(String::from_utf8_lossy(word).into_owned())
    }

    fn extras(&mut self) -> Result<(), String> {
        self.i += 1;
        self.wsp();
        if self.eat("]") {
            return Ok(());
        }
        loop {
            self.identifier("an extra's name")?;
            self.wsp();
            if self.eat("]") {
                return Ok(());
            }
            if !self.eat(",") {
                return Err(self.unexpected("',' or ']'"));
            }
            self.wsp();
        }
    }

    fn url(&mut self) -> Result<(), String> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_graphic()) {
            self.i += 1;
        }
        let url = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        let scheme_ok = url.split_once("://").is_some_and(|(scheme, rest)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && !rest.is_empty()
        });
        if scheme_ok {
            Ok(())
        } else {
            self.i = start;
            Err(self.unexpected("a URL with a scheme (`name @ https://...`)"))
        }
    }

    fn comparison(&mut self) -> bool {
        ["===", "==", "!=", "<=", ">=", "~=", "<", ">"]
            .iter()
            .any(|op| self.eat(op))
    }

    fn version_spec(&mut self) -> Result<(), String> {
        let parenthesised = self.eat("(");
        loop {
            self.wsp();
            if !self.comparison() {
                return Err(self.unexpected("a version comparison (==, >=, ~=, ...)"));
            }
            self.wsp();
            let start = self.i;
            while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'*' | b'+' | b'!'))
            {
                self.i += 1;
            }
            if self.i == start {
                return Err(self.unexpected("a version"));
            }
            self.wsp();
            if !self.eat(",") {
                break;
            }
        }
        if parenthesised && !self.eat(")") {
            return Err(self.unexpected("')'"));
        }
        Ok(())
    }

    fn marker_clause(&mut self) -> Result<(), String> {
        if !self.eat(";") {
            return Err(self.unexpected("a version comparison, '@ URL' or '; marker'"));
        }
        self.wsp();
        self.marker_or()
    }

    fn keyword(&mut self, word: &str) -> bool {
        let save = self.i;
        self.wsp();
        if self.eat(word)
            && !matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_')
        {
            self.wsp();
            return true;
        }
        self.i = save;
        false
    }

    fn marker_or(&mut self) -> Result<(), String> {
        self.marker_and()?;
        while self.keyword("or") {
            self.marker_and()?;
        }
        Ok(())
    }

    fn marker_and(&mut self) -> Result<(), String> {
        self.marker_expr()?;
        while self.keyword("and") {
            self.marker_expr()?;
        }
        Ok(())
    }

    fn marker_expr(&mut self) -> Result<(), String> {
        self.wsp();
        if self.eat("(") {
            self.wsp();
            self.marker_or()?;
            self.wsp();
            return if self.eat(")") {
                Ok(())
            } else {
                Err(self.unexpected("')'"))
            };
        }
        self.marker_var()?;
        self.wsp();
        let op = self.comparison() || self.keyword("in") || {
            let save = self.i;
            let not_in = self.eat("not") && {
                let gap = self.i;
                self.wsp();
                self.i > gap && self.eat("in")
            };
            if !not_in {
                self.i = save;
            }
            not_in
        };
        if !op {
            return Err(self.unexpected("a marker operator (==, in, not in, ...)"));
        }
        self.wsp();
        self.marker_var()
    }

    fn marker_var(&mut self) -> Result<(), String> {
        if let Some(quote @ (b'"' | b'\'')) = self.peek() {
            let start = self.i;
            self.i += 1;
            while matches!(self.peek(), Some(c) if c != quote) {
                self.i += 1;
            }
            if self.peek().is_none() {
                self.i = start;
                return Err(self.unexpected("a closed string"));
            }
            self.i += 1;
            return Ok(());
        }
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        if ENV_VARS.contains(&word) {
            Ok(())
        } else {
            self.i = start;
            Err(self.unexpected(
                "a marker variable (python_version, sys_platform, ...) or a quoted string",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_requirement;

    #[test]
    fn pep_508_specifiers_pass() {
        for ok in [
            "pandas",
            "pandas==2.3.3",
            " numpy >= 1.26, <3 ",
            "scikit-learn[all, extra_2]~=1.7",
            "zope.interface (>=5)",
            "torch==2.4.0+cpu",
            "pkg===1.0!weird",
            "requests[security] >= 2.8.1, == 2.8.* ; python_version < \"2.7\"",
            "name; os_name=='posix' and (sys_platform != 'win32' or extra == \"x\")",
            "name; 'linux' not in sys_platform",
            "pip @ https://github.com/pypa/pip/archive/1.3.1.zip#sha1=da9234ee",
            "pip @ git+https://example.org/pip.git@v1 ; python_version >= '3.9'",
            "a",
            "A1",
        ] {
            assert_eq!(check_requirement(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn options_paths_urls_and_junk_are_refused() {
        for bad in [
            "",
            "   ",
            "--index-url=https://evil.example/simple",
            "-e .",
            "-r requirements.txt",
            " --extra-index-url https://evil.example",
            "pandas --index-url=https://evil.example",
            "pandas==2 --pre",
            "./local/dir",
            "/abs/path.whl",
            "https://evil.example/x.whl",
            "pkg @ ./relative",
            "pkg @ https://x.example/a.whl; python_version > '3'",
            "pandas\n--index-url=x",
            "pandas\u{0}",
            "pändas",
            "-pandas",
            "pandas-",
            "pandas[",
            "pandas[x,]",
            "pandas==",
            "pandas (>=1",
            "pandas; bogus == '1'",
            "pandas; python_version",
            "pandas; python_version == '3",
            "pandas; python_version == '3' and",
            "pandas; python_version notin '3'",
        ] {
            assert!(check_requirement(bad).is_err(), "{bad:?} passed");
        }
        let long = format!("a=={}", "1".repeat(1000));
        assert!(check_requirement(&long).unwrap_err().contains("longer"));
    }

    #[test]
    fn reasons_name_the_problem() {
        let why = check_requirement("--index-url=x").unwrap_err();
        assert!(why.contains("installer options"), "{why}");
        let why = check_requirement("pandas --pre").unwrap_err();
        assert!(why.contains("\"--pre\""), "{why}");
    }
}
