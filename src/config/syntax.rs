//! The `.res` syntax: tokens and a uniform statement tree.
//!
//! DRBD's grammar is regular: every statement is `keyword value… ;` or
//! `keyword [name…] { statements }`. Parsing it into that tree first keeps the
//! syntax errors (with exact positions) apart from the meaning, which
//! `parser.rs` gives the tree; the tree also remembers where each statement
//! ended, so the meaning pass can still say "expected '{', found ';'".

use super::model::Location;
use std::path::Path;

/// Nesting beyond this is certainly not a DRBD config (and bounds recursion,
/// so a file of a million `{` cannot overflow the stack).
const DEPTH_MAX: u32 = 16;

/// Longest piece of input quoted back in a message: a runaway string or word
/// should not turn one error line into a screenful.
const SHOWN_MAX: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    /// `` `name` ``: not DRBD syntax, but how some guides print names. Kept
    /// as a token (rather than failing in the lexer) so the error can say
    /// what the name was and where it was being used.
    Backquoted(String),
    LBrace,
    RBrace,
    Semi,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{}'", shown(w)),
            Tok::Str(s) => format!("\"{}\"", shown(s)),
            Tok::Backquoted(s) => format!("'`{}`'", shown(s)),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Semi => "';'".into(),
        }
    }
}

/// `text` made fit for an error message: control characters escaped, long
/// text cut with an ellipsis.
pub fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A value after a keyword: a bare word or a quoted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub text: String,
    pub quoted: bool,
    pub location: Location,
}

/// One statement: `keyword args… ;` or `keyword args… { block }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    pub keyword: String,
    pub args: Vec<Arg>,
    /// `Some` for `keyword … { … }`.
    pub block: Option<Vec<Stmt>>,
    /// Where the keyword starts.
    pub location: Location,
    /// Where the `;` or `{` that ended the statement's head stands.
    pub end: Location,
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

/// Characters that may appear in a bare word (paths, URIs, addresses, sizes):
/// everything but white space and the few characters the grammar gives a
/// meaning.
fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '{' | '}' | ';' | '"' | '#' | '`')
}

impl<'a> Lexer<'a> {
    fn new(source: &'a str, file: &'a Path) -> Self {
        // An editor's byte-order mark is not part of the text (and must not
        // shift the columns of the first line).
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        Lexer {
            chars: source.chars().peekable(),
            file,
            line: 1,
            column: 1,
        }
    }

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
            self.line = self.line.saturating_add(1);
            self.column = 1;
        } else {
            self.column = self.column.saturating_add(1);
        }
        Some(c)
    }

    fn skip_blanks_and_comments(&mut self) {
        while let Some(&c) = self.chars.peek() {
            if c.is_whitespace() {
                self.bump();
            } else if c == '#' {
                while let Some(c) = self.bump() {
                    if c == '\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    /// A double-quoted string, the opening quote already consumed. Like
    /// drbdadm, a string must close on its own line: a forgotten quote is
    /// then reported where it was forgotten, not at the end of the file.
    fn string(&mut self, start: &Location) -> Result<String, SyntaxError> {
        let unterminated = || SyntaxError {
            location: start.clone(),
            message: "unterminated string: expected a closing '\"' on the same line".into(),
        };
        let mut s = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => return Err(unterminated()),
                Some('"') => return Ok(s),
                // `\"` and `\\` are escapes; any other backslash is kept as
                // written, because handler commands are shell text.
                Some('\\') => match self.chars.peek() {
                    Some(&e @ ('"' | '\\')) => {
                        self.bump();
                        s.push(e);
                    }
                    _ => s.push('\\'),
                },
                Some(ch) => s.push(ch),
            }
        }
    }

    /// The name between backquotes (up to the closing one, or to where a
    /// word would end if it is missing).
    fn backquoted(&mut self) -> String {
        let mut s = String::new();
        while let Some(&c) = self.chars.peek() {
            if c == '`' {
                self.bump();
                break;
            }
            if !is_word_char(c) {
                break;
            }
            s.push(c);
            self.bump();
        }
        s
    }

    fn next(&mut self) -> Result<Option<(Tok, Location)>, SyntaxError> {
        self.skip_blanks_and_comments();
        let loc = self.loc();
        let Some(c) = self.bump() else { return Ok(None) };
        let tok = match c {
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            ';' => Tok::Semi,
            '"' => Tok::Str(self.string(&loc)?),
            '`' => Tok::Backquoted(self.backquoted()),
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

/// Parse a whole file into statements. `skip { … }` blocks (DRBD's way of
/// commenting out a section) are dropped here.
pub fn parse(source: &str, file: &Path) -> Result<Vec<Stmt>, SyntaxError> {
    let mut lx = Lexer::new(source, file);
    parse_block(&mut lx, None, 0)
}

fn error(location: Location, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        location,
        message: message.into(),
    }
}

/// The message for a backquoted name, saying how to write it for the
/// statement it appeared in.
fn backquote_message(keyword: Option<&str>, first_arg: bool, name: &str) -> String {
    let name = shown(name);
    match keyword {
        Some("on") if first_arg => format!("host names are written without backquotes: on {name} {{"),
        Some("resource") if first_arg => {
            format!("resource names are written without backquotes: resource {name} {{")
        }
        _ => format!("'`' is not part of the configuration syntax: write {name} without backquotes"),
    }
}

fn parse_block(lx: &mut Lexer<'_>, opened: Option<(&str, &Location)>, depth: u32) -> Result<Vec<Stmt>, SyntaxError> {
    let mut out = Vec::new();
    loop {
        let Some((tok, loc)) = lx.next()? else {
            return match opened {
                None => Ok(out),
                Some((kw, at)) => Err(error(
                    lx.loc(),
                    format!(
                        "expected '}}' to close '{kw}' opened at {}:{}, found end of file",
                        at.line, at.column
                    ),
                )),
            };
        };
        let keyword = match tok {
            Tok::Word(w) => w,
            Tok::RBrace if opened.is_some() => return Ok(out),
            Tok::RBrace => return Err(error(loc, "unexpected '}': there is no open section to close")),
            Tok::Backquoted(name) => return Err(error(loc, backquote_message(None, false, &name))),
            other => return Err(error(loc, format!("expected a keyword, found {}", other.describe()))),
        };
        let mut args: Vec<Arg> = Vec::new();
        let (block, end) = loop {
            let Some((tok, aloc)) = lx.next()? else {
                let what = if args.is_empty() {
                    format!("'{keyword}'")
                } else {
                    format!("value of '{keyword}'")
                };
                return Err(error(lx.loc(), format!("expected ';' after {what}, found end of file")));
            };
            match tok {
                Tok::Semi => break (None, aloc),
                Tok::LBrace => {
                    if depth >= DEPTH_MAX {
                        return Err(error(aloc, "sections nested too deeply"));
                    }
                    let inner = parse_block(lx, Some((&keyword, &loc)), depth + 1)?;
                    break (Some(inner), aloc);
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
                Tok::Backquoted(name) => {
                    return Err(error(aloc, backquote_message(Some(&keyword), args.is_empty(), &name)));
                }
                Tok::RBrace => {
                    let what = if args.is_empty() {
                        format!("'{keyword}'")
                    } else {
                        format!("value of '{keyword}'")
                    };
                    return Err(error(aloc, format!("expected ';' after {what}, found '}}'")));
                }
            }
        };
        if keyword == "skip" {
            continue;
        }
        out.push(Stmt {
            keyword,
            args,
            block,
            location: loc,
            end,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Vec<Stmt>, SyntaxError> {
        parse(s, Path::new("t.res"))
    }

    fn at(e: &SyntaxError) -> (u32, u32) {
        (e.location.line, e.location.column)
    }

    #[test]
    fn statements_blocks_strings_comments_and_skip() {
        let t = p("a 1 \"two \\\"words\\\"\"; # c\nb x { c; skip { d { e; } } }\nskip r9 { x; }\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].args[1].text, "two \"words\"");
        assert!(t[0].args[1].quoted);
        assert_eq!((t[0].end.line, t[0].end.column), (1, 20));
        let inner = t[1].block.as_ref().unwrap();
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].keyword, "c");
        assert_eq!((t[1].location.line, t[1].location.column), (2, 1));
        assert_eq!((t[1].end.line, t[1].end.column), (2, 5));
    }

    #[test]
    fn backslashes_other_than_escapes_stay_for_the_shell() {
        let t = p(r#"h "a\tb \\ c";"#).unwrap();
        assert_eq!(t[0].args[0].text, r"a\tb \ c");
    }

    #[test]
    fn byte_order_mark_does_not_shift_columns() {
        let e = p("\u{feff}}").unwrap_err();
        assert_eq!(at(&e), (1, 1));
    }

    #[test]
    fn errors_point_at_the_spot() {
        let e = p("resource r0 {\n  on a {\n    disk /x\n  }\n}\n").unwrap_err();
        assert_eq!(at(&e), (4, 3));
        assert_eq!(e.message, "expected ';' after value of 'disk', found '}'");
        let e = p("on `hadb01` {").unwrap_err();
        assert_eq!(at(&e), (1, 4));
        assert_eq!(e.message, "host names are written without backquotes: on hadb01 {");
        let e = p("resource `r0` {").unwrap_err();
        assert!(e.message.contains("resource r0 {"), "{}", e.message);
        let e = p("x a `b`;").unwrap_err();
        assert_eq!(at(&e), (1, 5));
        assert!(e.message.contains("write b without backquotes"), "{}", e.message);
        let e = p("a {\n b;\n").unwrap_err();
        assert_eq!(at(&e), (3, 1));
        assert!(e.message.contains("close 'a' opened at 1:1"), "{}", e.message);
        let e = p("; x").unwrap_err();
        assert_eq!(e.message, "expected a keyword, found ';'");
        let e = p("a;\n}").unwrap_err();
        assert_eq!(at(&e), (2, 1));
        assert!(e.message.contains("no open section"), "{}", e.message);
        let e = p("x \"abc\ny\";").unwrap_err();
        assert_eq!(at(&e), (1, 3));
        assert!(e.message.contains("unterminated string"));
        let e = p("\"kw\" x;").unwrap_err();
        assert_eq!(e.message, "expected a keyword, found \"kw\"");
        let e = p("a b").unwrap_err();
        assert_eq!(e.message, "expected ';' after value of 'a', found end of file");
    }

    #[test]
    fn long_input_is_cut_in_messages() {
        let e = p(&format!("; {}", "x".repeat(1000))).unwrap_err();
        assert!(e.message.len() < 100);
        let e = p(&format!("\"{}\";", "y".repeat(1000))).unwrap_err();
        assert!(e.message.len() < 100, "{}", e.message);
        assert!(e.message.ends_with("…\""), "{}", e.message);
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
