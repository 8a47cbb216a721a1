//! The `.res` syntax: tokens and a uniform statement tree.
//!
//! DRBD's grammar is regular: every statement is `keyword value… ;` or
//! `keyword [name…] { statements }`. Parsing it into that tree first keeps
//! the syntax errors (with exact positions) apart from the meaning, which
//! `parser.rs` gives the tree.

use super::model::Location;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Word(String),
    Str(String),
    LBrace,
    RBrace,
    Semi,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Semi => "';'".into(),
        }
    }
}

/// A value after a keyword: a bare word or a quoted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub text: String,
    pub quoted: bool,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    pub keyword: String,
    pub args: Vec<Arg>,
    /// `Some` for `keyword … { … }`.
    pub block: Option<Vec<Stmt>>,
    pub location: Location,
}

/// A syntax error: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub location: Location,
    pub message: String,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    file: &'a Path,
    line: u32,
    column: u32,
}

/// Characters that may appear in a bare word (paths, URIs, addresses, sizes).
fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '{' | '}' | ';' | '"' | '#' | '`')
}

impl<'a> Lexer<'a> {
    fn loc(&self) -> Location {
        Location {
            file: self.file.to_owned(),
            line: self.line,
            column: self.column,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn next(&mut self) -> Result<Option<(Tok, Location)>, SyntaxError> {
        loop {
            match self.chars.peek() {
                None => return Ok(None),
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                Some(_) => break,
            }
        }
        let loc = self.loc();
        let Some(c) = self.bump() else { return Ok(None) };
        let tok =
            match c {
                '{' => Tok::LBrace,
                '}' => Tok::RBrace,
                ';' => Tok::Semi,
                '"' => {
                    let mut s = String::new();
                    loop {
                        match self.bump() {
                            None => {
                                return Err(SyntaxError {
                                    location: loc,
                                    message: "unterminated string: expected a closing '\"'".into(),
                                })
                            }
                            Some('"') => break,
                            Some('\\') => match self.bump() {
                                Some(e) => s.push(e),
                                None => {
                                    return Err(SyntaxError {
                                        location: loc,
                                        message: "unterminated string: expected a closing '\"'".into(),
                                    })
                                }
                            },
                            Some(ch) => s.push(ch),
                        }
                    }
                    Tok::Str(s)
                }
                '`' => return Err(SyntaxError {
                    location: loc,
                    message:
                        "unexpected '`': names are written without backquotes (the guide's markup), e.g. 'on hadb01 {'"
                            .into(),
                }),
                c => {
                    let mut w = String::from(c);
                    while let Some(&n) = self.chars.peek() {
                        if !is_word_char(n) {
                            break;
                        }
                        w.push(n);
                        self.bump();
                    }
                    Tok::Word(w)
                }
            };
        Ok(Some((tok, loc)))
    }
}

/// Parse a whole file into statements.
pub fn parse(source: &str, file: &Path) -> Result<Vec<Stmt>, SyntaxError> {
    let mut lx = Lexer {
        chars: source.chars().peekable(),
        file,
        line: 1,
        column: 1,
    };
    parse_block(&mut lx, None, 0)
}

/// Nesting beyond this is certainly not a DRBD config (and bounds recursion).
const DEPTH_MAX: u32 = 16;

fn parse_block(lx: &mut Lexer<'_>, opened: Option<(&str, &Location)>, depth: u32) -> Result<Vec<Stmt>, SyntaxError> {
    let mut out = Vec::new();
    loop {
        let Some((tok, loc)) = lx.next()? else {
            return match opened {
                None => Ok(out),
                Some((kw, at)) => Err(SyntaxError {
                    location: lx.loc(),
                    message: format!(
                        "expected '}}' to close '{kw}' opened at {}:{}, found end of file",
                        at.line, at.column
                    ),
                }),
            };
        };
        let keyword = match tok {
            Tok::RBrace if opened.is_some() => return Ok(out),
            Tok::Word(w) => w,
            other => {
                return Err(SyntaxError {
                    location: loc,
                    message: format!("expected a keyword, found {}", other.describe()),
                })
            }
        };
        let mut args = Vec::new();
        let block = loop {
            let Some((tok, aloc)) = lx.next()? else {
                return Err(SyntaxError {
                    location: lx.loc(),
                    message: format!("expected ';' after '{keyword}', found end of file"),
                });
            };
            match tok {
                Tok::Semi => break None,
                Tok::LBrace => {
                    if depth >= DEPTH_MAX {
                        return Err(SyntaxError {
                            location: aloc,
                            message: "sections nested too deeply".into(),
                        });
                    }
                    break Some(parse_block(lx, Some((&keyword, &loc)), depth + 1)?);
                }
                Tok::Word(text) => args.push(Arg {
                    text,
                    quoted: false,
                    location: aloc,
                }),
                Tok::Str(text) => args.push(Arg {
                    text,
                    quoted: true,
                    location: aloc,
                }),
                Tok::RBrace => {
                    let what = match args.last() {
                        Some(_) => format!("value of '{keyword}'"),
                        None => format!("'{keyword}'"),
                    };
                    return Err(SyntaxError {
                        location: aloc,
                        message: format!("expected ';' after {what}, found '}}'"),
                    });
                }
            }
        };
        if keyword == "skip" {
            continue; // DRBD's way of commenting out a block
        }
        out.push(Stmt {
            keyword,
            args,
            block,
            location: loc,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Vec<Stmt>, SyntaxError> {
        parse(s, Path::new("t.res"))
    }

    #[test]
    fn statements_blocks_strings_comments_and_skip() {
        let t = p("a 1 \"two words\"; # c\nb x { c; skip { d { e; } } }\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].args[1].text, "two words");
        assert!(t[0].args[1].quoted);
        let inner = t[1].block.as_ref().unwrap();
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].keyword, "c");
        assert_eq!((t[1].location.line, t[1].location.column), (2, 1));
    }

    #[test]
    fn errors_point_at_the_spot() {
        let e = p("resource r0 {\n  on a {\n    disk /x\n  }\n}\n").unwrap_err();
        assert_eq!((e.location.line, e.location.column), (4, 3));
        assert!(
            e.message.contains("expected ';' after value of 'disk'"),
            "{}",
            e.message
        );
        let e = p("on `hadb01` {").unwrap_err();
        assert_eq!((e.location.line, e.location.column), (1, 4));
        assert!(e.message.contains("backquotes"));
        let e = p("a {\n b;\n").unwrap_err();
        assert!(e.message.contains("close 'a' opened at 1:1"), "{}", e.message);
        let e = p("; x").unwrap_err();
        assert!(e.message.contains("expected a keyword, found ';'"));
        let e = p("x \"abc").unwrap_err();
        assert!(e.message.contains("unterminated string"));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let s = "a {".repeat(100);
        assert!(p(&s).unwrap_err().message.contains("too deeply"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = p(&s);
        }
    }
}
