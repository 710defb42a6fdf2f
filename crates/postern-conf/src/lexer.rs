//! Tokens of the ecelerity.conf syntax.
//!
//! Bare words run until whitespace or one of `# / " ' = { } [ ] ( )`; a value
//! holding any of those must be double-quoted. `/` starts either a `/* */`
//! comment or a `/regex/` (only valid as a `Domain` label, which the parser
//! checks). Every token carries the line and column where it starts.

use std::fmt;
use std::iter::Peekable;
use std::str::Chars;

use crate::error::ErrorKind;

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A bare word: option or stanza name, unquoted value or label.
    Word(String),
    /// A double-quoted string, escapes already applied.
    Str(String),
    /// A `/regex/`, without the slashes; `\/` already turned into `/`.
    Regex(String),
    Eq,
    LBrace,
    RBrace,
    LParen,
    RParen,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "\"{w}\""),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Regex(r) => write!(f, "regex /{r}/"),
            Tok::Eq => f.write_str("\"=\""),
            Tok::LBrace => f.write_str("\"{\""),
            Tok::RBrace => f.write_str("\"}\""),
            Tok::LParen => f.write_str("\"(\""),
            Tok::RParen => f.write_str("\")\""),
            Tok::Eof => f.write_str("end of file"),
        }
    }
}

/// A token and the 1-based line and column where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) line: u32,
    pub(crate) col: u32,
}

/// A lexical error and where it is.
#[derive(Debug)]
pub(crate) struct LexError {
    pub(crate) line: u32,
    pub(crate) col: u32,
    pub(crate) kind: ErrorKind,
}

/// Characters that end a bare word and may only appear quoted.
pub(crate) fn is_special(c: char) -> bool {
    matches!(
        c,
        '#' | '/' | '"' | '\'' | '=' | '{' | '}' | '[' | ']' | '(' | ')'
    )
}

pub(crate) struct Lexer<'a> {
    chars: Peekable<Chars<'a>>,
    line: u32,
    col: u32,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            chars: text.chars().peekable(),
            line: 1,
            col: 1,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.col = 1;
        } else {
            self.col = self.col.saturating_add(1);
        }
        Some(c)
    }

    fn err(&self, line: u32, col: u32, kind: ErrorKind) -> LexError {
        LexError { line, col, kind }
    }

    /// The next token, or the first lexical error.
    pub(crate) fn next_token(&mut self) -> Result<Token, LexError> {
        self.skip_trivia()?;
        let (line, col) = (self.line, self.col);
        let Some(c) = self.bump() else {
            return Ok(Token {
                tok: Tok::Eof,
                line,
                col,
            });
        };
        let tok = match c {
            '=' => Tok::Eq,
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '"' => Tok::Str(self.string(line, col)?),
            '/' => Tok::Regex(self.regex(line, col)?),
            c if is_special(c) => {
                return Err(self.err(line, col, ErrorKind::UnexpectedChar(c)));
            }
            c => Tok::Word(self.word(c)),
        };
        Ok(Token { tok, line, col })
    }

    /// Skips whitespace, `#` comments and `/* */` comments.
    fn skip_trivia(&mut self) -> Result<(), LexError> {
        loop {
            let second = self.peek_second();
            match self.chars.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while self.chars.peek().is_some_and(|&c| c != '\n') {
                        self.bump();
                    }
                }
                Some('/') if second == Some('*') => self.block_comment()?,
                _ => return Ok(()),
            }
        }
    }

    fn peek_second(&self) -> Option<char> {
        let mut it = self.chars.clone();
        it.next();
        it.next()
    }

    fn block_comment(&mut self) -> Result<(), LexError> {
        let (line, col) = (self.line, self.col);
        self.bump();
        self.bump();
        loop {
            match self.bump() {
                None => return Err(self.err(line, col, ErrorKind::UnterminatedComment)),
                Some('*') if self.chars.peek() == Some(&'/') => {
                    self.bump();
                    return Ok(());
                }
                Some(_) => {}
            }
        }
    }

    fn word(&mut self, first: char) -> String {
        let mut w = String::from(first);
        while let Some(&c) = self.chars.peek() {
            if c.is_whitespace() || is_special(c) {
                break;
            }
            w.push(c);
            self.bump();
        }
        w
    }

    fn string(&mut self, line: u32, col: u32) -> Result<String, LexError> {
        let mut s = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => {
                    return Err(self.err(line, col, ErrorKind::UnterminatedString));
                }
                Some('"') => return Ok(s),
                Some('\\') => {
                    let (eline, ecol) = (self.line, self.col.saturating_sub(1));
                    match self.bump() {
                        Some('"') => s.push('"'),
                        Some('\\') => s.push('\\'),
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        None | Some('\n') => {
                            return Err(self.err(line, col, ErrorKind::UnterminatedString));
                        }
                        Some(other) => {
                            return Err(self.err(eline, ecol, ErrorKind::BadEscape(other)));
                        }
                    }
                }
                Some(c) => s.push(c),
            }
        }
    }

    fn regex(&mut self, line: u32, col: u32) -> Result<String, LexError> {
        let mut r = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => {
                    return Err(self.err(line, col, ErrorKind::UnterminatedRegex));
                }
                Some('/') => return Ok(r),
                Some('\\') if self.chars.peek() == Some(&'/') => {
                    self.bump();
                    r.push('/');
                }
                Some('\\') => {
                    r.push('\\');
                    if let Some(c) = self.bump() {
                        if c == '\n' {
                            return Err(self.err(line, col, ErrorKind::UnterminatedRegex));
                        }
                        r.push(c);
                    }
                }
                Some(c) => r.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<(Tok, u32, u32)> {
        let mut lx = Lexer::new(text);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token().unwrap();
            let end = t.tok == Tok::Eof;
            out.push((t.tok, t.line, t.col));
            if end {
                return out;
            }
        }
    }

    fn lex_err(text: &str) -> (u32, u32, String) {
        let mut lx = Lexer::new(text);
        loop {
            match lx.next_token() {
                Ok(t) if t.tok == Tok::Eof => panic!("no error in {text:?}"),
                Ok(_) => {}
                Err(e) => return (e.line, e.col, e.kind.to_string()),
            }
        }
    }

    #[test]
    fn words_strings_and_punctuation_with_positions() {
        let t = toks("Gateway = 10.10.10.50\n  Routes = ( \"a b\" c )");
        assert_eq!(
            t,
            vec![
                (Tok::Word("Gateway".into()), 1, 1),
                (Tok::Eq, 1, 9),
                (Tok::Word("10.10.10.50".into()), 1, 11),
                (Tok::Word("Routes".into()), 2, 3),
                (Tok::Eq, 2, 10),
                (Tok::LParen, 2, 12),
                (Tok::Str("a b".into()), 2, 14),
                (Tok::Word("c".into()), 2, 20),
                (Tok::RParen, 2, 22),
                (Tok::Eof, 2, 23),
            ]
        );
    }

    #[test]
    fn comments_are_skipped() {
        let t = toks("# one\na /* two\nlines */ b # three");
        assert_eq!(
            t,
            vec![
                (Tok::Word("a".into()), 2, 1),
                (Tok::Word("b".into()), 3, 10),
                (Tok::Eof, 3, 19),
            ]
        );
    }

    #[test]
    fn escapes_in_strings() {
        let t = toks(r#""q\"uo\\te\n\t""#);
        assert_eq!(t[0].0, Tok::Str("q\"uo\\te\n\t".into()));
    }

    #[test]
    fn regex_label_keeps_backslashes_and_unescapes_slash() {
        let t = toks(r"Domain /^a\.b\/c$/ {");
        assert_eq!(t[1].0, Tok::Regex(r"^a\.b/c$".into()));
    }

    #[test]
    fn errors_point_at_their_start() {
        let pos = |t: &str| {
            let (l, c, _) = lex_err(t);
            (l, c)
        };
        assert_eq!(pos("a = \"open\nb"), (1, 5));
        assert_eq!(pos("x\n  /* never closed"), (2, 3));
        assert!(
            lex_err("x\n  /* never closed")
                .2
                .contains("unterminated comment")
        );
        assert_eq!(pos("a = 'x'"), (1, 5));
        let (l, c, m) = lex_err(r#"a = "bad \q""#);
        assert_eq!((l, c), (1, 10));
        assert!(m.contains(r"\q"), "{m}");
        assert!(lex_err("Domain /abc {").2.contains("unterminated regex"));
    }
}
