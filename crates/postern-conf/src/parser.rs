//! Tokens to a [`Document`].
//!
//! ```text
//! document := item* EOF
//! item     := "include" scalar
//!           | NAME "=" value
//!           | NAME [label] "{" item* "}"
//! value    := scalar | "(" scalar* ")"
//! label    := scalar | REGEX
//! scalar   := WORD | STRING
//! ```
//!
//! A syntax error ends the parse of that file: what follows an unclosed
//! brace or string cannot be read with any confidence.

use crate::error::ErrorKind;
use crate::lexer::{Lexer, Tok, Token};
use crate::syntax::{Document, Item, Label, Pos, Spanned, Value};

/// A syntax error: where, and what.
#[derive(Debug)]
pub struct SyntaxError {
    /// Where the error is.
    pub pos: Pos,
    /// What it is.
    pub kind: ErrorKind,
}

/// How deep stanzas may nest before the file is refused (the real grammar
/// needs three levels; this only stops a hostile file exhausting the stack).
const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
}

/// Parses one file's text.
pub fn parse(text: &str) -> Result<Document, SyntaxError> {
    let mut p = Parser {
        lexer: Lexer::new(text),
        peeked: None,
    };
    let items = p.items(0)?;
    let end = p.next()?;
    match end.tok {
        Tok::Eof => Ok(Document { items }),
        ref other => Err(unexpected(
            &end,
            "an option, a stanza or end of file",
            other,
        )),
    }
}

fn pos(t: &Token) -> Pos {
    Pos {
        line: t.line,
        col: t.col,
    }
}

fn unexpected(at: &Token, expected: &'static str, found: &Tok) -> SyntaxError {
    SyntaxError {
        pos: pos(at),
        kind: ErrorKind::Unexpected {
            expected,
            found: found.to_string(),
        },
    }
}

impl Parser<'_> {
    fn next(&mut self) -> Result<Token, SyntaxError> {
        if let Some(t) = self.peeked.take() {
            return Ok(t);
        }
        self.lexer.next_token().map_err(|e| SyntaxError {
            pos: Pos {
                line: e.line,
                col: e.col,
            },
            kind: e.kind,
        })
    }

    fn peek(&mut self) -> Result<&Token, SyntaxError> {
        let t = match self.peeked.take() {
            Some(t) => t,
            None => self.next()?,
        };
        Ok(self.peeked.insert(t))
    }

    /// Items until `}` or end of file (which the caller checks).
    fn items(&mut self, depth: usize) -> Result<Vec<Item>, SyntaxError> {
        let mut items = Vec::new();
        loop {
            if matches!(self.peek()?.tok, Tok::RBrace | Tok::Eof) {
                return Ok(items);
            }
            items.push(self.item(depth)?);
        }
    }

    fn item(&mut self, depth: usize) -> Result<Item, SyntaxError> {
        let head = self.next()?;
        let Tok::Word(name) = head.tok.clone() else {
            return Err(unexpected(&head, "an option or stanza name", &head.tok));
        };
        let name = Spanned {
            value: name,
            pos: pos(&head),
        };
        if name.value.eq_ignore_ascii_case("include") {
            let path = self.scalar("a file or directory path after \"include\"")?;
            return Ok(Item::Include { path });
        }
        let t = self.next()?;
        let at = pos(&t);
        match t.tok {
            Tok::Eq => Ok(Item::Option {
                key: name,
                value: self.value()?,
            }),
            Tok::LBrace => self.stanza_body(name, None, depth, &head),
            Tok::Word(l) | Tok::Str(l) => {
                let label = Spanned {
                    value: Label::Name(l),
                    pos: at,
                };
                self.expect_lbrace()?;
                self.stanza_body(name, Some(label), depth, &head)
            }
            Tok::Regex(r) => {
                let label = Spanned {
                    value: Label::Regex(r),
                    pos: at,
                };
                self.expect_lbrace()?;
                self.stanza_body(name, Some(label), depth, &head)
            }
            ref other => Err(unexpected(
                &t,
                "\"=\" (an option) or a label or \"{\" (a stanza)",
                other,
            )),
        }
    }

    fn expect_lbrace(&mut self) -> Result<(), SyntaxError> {
        let t = self.next()?;
        match t.tok {
            Tok::LBrace => Ok(()),
            ref other => Err(unexpected(&t, "\"{\" after the stanza label", other)),
        }
    }

    fn stanza_body(
        &mut self,
        name: Spanned<String>,
        label: Option<Spanned<Label>>,
        depth: usize,
        open: &Token,
    ) -> Result<Item, SyntaxError> {
        if depth >= MAX_DEPTH {
            return Err(SyntaxError {
                pos: pos(open),
                kind: ErrorKind::Incomplete(format!(
                    "stanzas nested deeper than {MAX_DEPTH} levels"
                )),
            });
        }
        let items = self.items(depth + 1)?;
        let close = self.next()?;
        match close.tok {
            Tok::RBrace => Ok(Item::Stanza { name, label, items }),
            _ => Err(SyntaxError {
                pos: pos(open),
                kind: ErrorKind::Unexpected {
                    expected: "\"}\" closing this stanza",
                    found: "end of file".into(),
                },
            }),
        }
    }

    fn scalar(&mut self, expected: &'static str) -> Result<Spanned<String>, SyntaxError> {
        let t = self.next()?;
        match t.tok {
            Tok::Word(ref s) | Tok::Str(ref s) => Ok(Spanned {
                value: s.clone(),
                pos: pos(&t),
            }),
            ref other => Err(unexpected(&t, expected, other)),
        }
    }

    fn value(&mut self) -> Result<Value, SyntaxError> {
        let t = self.next()?;
        let at = pos(&t);
        match t.tok {
            Tok::Word(s) | Tok::Str(s) => Ok(Value::Scalar(Spanned { value: s, pos: at })),
            Tok::LParen => {
                let mut list = Vec::new();
                loop {
                    let item = self.next()?;
                    let item_at = pos(&item);
                    match item.tok {
                        Tok::RParen => return Ok(Value::List(at, list)),
                        Tok::Word(s) | Tok::Str(s) => list.push(Spanned {
                            value: s,
                            pos: item_at,
                        }),
                        ref other => {
                            return Err(unexpected(&item, "a list item or \")\"", other));
                        }
                    }
                }
            }
            ref other => Err(unexpected(
                &t,
                "a value (values containing / # = { } ( ) [ ] ' must be double-quoted)",
                other,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (u32, u32, String) {
        let e = parse(text).unwrap_err();
        (e.pos.line, e.pos.col, e.kind.to_string())
    }

    #[test]
    fn options_stanzas_lists_and_includes() {
        let doc = parse(
            "Gateway = 10.10.10.50\n\
             Domain local.example.com {\n  Gateway = 10.10.10.20\n  Delivery_Method = LMTP\n}\n\
             Routes = (\n \"smtp://a?pref=10\"\n b )\ninclude \"conf.d\"\n\
             Domain /\\.example\\.org$/ { }",
        )
        .unwrap();
        assert_eq!(doc.items.len(), 5);
        match &doc.items[1] {
            Item::Stanza { name, label, items } => {
                assert_eq!(name.value, "Domain");
                assert_eq!(
                    label.as_ref().unwrap().value,
                    Label::Name("local.example.com".into())
                );
                assert_eq!(items.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        match &doc.items[2] {
            Item::Option {
                value: Value::List(p, l),
                ..
            } => {
                assert_eq!((p.line, p.col), (6, 10));
                assert_eq!(l.len(), 2);
                assert_eq!((l[1].pos.line, l[1].pos.col), (8, 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&doc.items[3], Item::Include { path } if path.value == "conf.d"));
        assert!(matches!(&doc.items[4], Item::Stanza { label: Some(l), .. }
            if l.value == Label::Regex(r"\.example\.org$".into())));
    }

    #[test]
    fn unclosed_brace_points_at_the_stanza() {
        let (l, c, m) = err("a = 1\n  Binding b1 {\n x = 2\n");
        assert_eq!((l, c), (2, 3));
        assert!(m.contains("closing this stanza"), "{m}");
    }

    #[test]
    fn stray_tokens_are_errors() {
        assert_eq!(&err("a = 1\n}\n").0, &2);
        let (l, c, m) = err("Gateway 10.0.0.1");
        assert_eq!((l, c), (1, 17));
        assert!(m.contains("after the stanza label"), "{m}");
        let (_, _, m) = err("Spool_Dir = /var/spool/");
        assert!(m.contains("double-quoted"), "{m}");
        let (l, c, _) = err("x = ( a = )");
        assert_eq!((l, c), (1, 9));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = "a {".repeat(10_000);
        let (_, _, m) = err(&text);
        assert!(m.contains("nested deeper"), "{m}");
    }

    #[test]
    fn printing_gives_back_the_same_tree() {
        let text = "a = \"x \\\"y\\\"\"\nB \"l b\" {\n c = ( 1 \"2 3\" )\n D /a\\/b/ {\n }\n}\ninclude \"f\"\n";
        let doc = parse(text).unwrap();
        let printed = doc.to_string();
        let again = parse(&printed).unwrap();
        assert_eq!(again.to_string(), printed);
    }
}
