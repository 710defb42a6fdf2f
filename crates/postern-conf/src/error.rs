//! The crate's one error type, and the location every error carries.
//!
//! A configuration error is useless to an operator unless it says where it
//! is, so every [`Error`] names a file, a line and a column. Loading collects
//! errors instead of stopping at the first one, and hands them all back as
//! [`Errors`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A place in a configuration file: 1-based line and column (in characters).
/// Line 0 means the file as a whole (it could not be read).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file, as it was named (the top file as given, includes resolved
    /// against their including file's directory).
    pub file: Arc<Path>,
    /// Line number, starting at 1.
    pub line: u32,
    /// Column number in characters, starting at 1.
    pub col: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}", self.file.display());
        }
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// What went wrong, without the place (see [`Error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file (the top file or an include) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that was being read.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file is not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A double-quoted string has no closing quote on its line.
    #[error("unterminated string (a quoted value must end on the line where it starts)")]
    UnterminatedString,
    /// A `/* ... */` comment is never closed.
    #[error("unterminated comment: \"/*\" without \"*/\"")]
    UnterminatedComment,
    /// A `/regex/` label has no closing slash on its line.
    #[error(
        "unterminated regex: \"/\" without a closing \"/\" on the same line (a value containing \"/\" must be double-quoted)"
    )]
    UnterminatedRegex,
    /// A backslash escape that the string syntax does not know.
    #[error("invalid escape \"\\{0}\" in string (known: \\\" \\\\ \\n \\t \\r)")]
    BadEscape(char),
    /// A character that may only appear inside a quoted value.
    #[error("unexpected character {0:?}; a value containing it must be double-quoted")]
    UnexpectedChar(char),
    /// The grammar wanted one thing and found another.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What would have been valid here.
        expected: &'static str,
        /// What was there instead.
        found: String,
    },
    /// An option name that no scope knows.
    #[error("unknown option \"{name}\"{}", did_you_mean(*.suggestion))]
    UnknownOption {
        /// The name as written.
        name: String,
        /// The closest known option name, if one is close.
        suggestion: Option<&'static str>,
    },
    /// A stanza name that Postern does not know.
    #[error("unknown stanza \"{name}\"{}", did_you_mean(*.suggestion))]
    UnknownStanza {
        /// The name as written.
        name: String,
        /// The closest known stanza name, if one is close.
        suggestion: Option<&'static str>,
    },
    /// A known option, used where it has no meaning.
    #[error("option \"{name}\" is not valid in {scope} (valid in: {valid})")]
    WrongScope {
        /// The option's canonical name.
        name: &'static str,
        /// The scope it was found in.
        scope: &'static str,
        /// The scopes where it is valid.
        valid: String,
    },
    /// A known stanza, nested where it may not be.
    #[error("stanza \"{name}\" is not allowed in {scope}")]
    StanzaNotAllowed {
        /// The stanza's canonical name.
        name: &'static str,
        /// The scope it was found in.
        scope: &'static str,
    },
    /// A stanza that needs a label has none, or one that takes none has one.
    #[error("stanza \"{name}\" {problem}")]
    StanzaLabel {
        /// The stanza's canonical name.
        name: &'static str,
        /// "needs a label" or "takes no label".
        problem: &'static str,
    },
    /// The same option twice in one scope.
    #[error("option \"{name}\" is already set in this scope at {first}")]
    DuplicateOption {
        /// The option's canonical name.
        name: &'static str,
        /// Where it was first set.
        first: Location,
    },
    /// `Gateway` and `Routes` in one scope: which one wins would be a guess.
    #[error(
        "\"Gateway\" and \"Routes\" are both set in this scope (the other at {other}); use one"
    )]
    GatewayAndRoutes {
        /// Where the other of the two is set.
        other: Location,
    },
    /// A value that does not fit the option's type.
    #[error("invalid value for \"{name}\": {reason}")]
    BadValue {
        /// The option's canonical name (or the stanza label's role).
        name: &'static str,
        /// What is wrong with it, and what would be valid.
        reason: String,
    },
    /// A route item's `auth=NAME` names no `Auth` stanza.
    #[error(
        "auth={name} names no Auth stanza (define: Auth {name} {{ Type = PLAIN User = \"...\" Password = \"...\" }})"
    )]
    UnknownAuth {
        /// The name the route asked for.
        name: String,
    },
    /// A stanza is missing something it must have.
    #[error("{0}")]
    Incomplete(String),
    /// A `/regex/` domain label that does not compile.
    #[error("invalid regex /{pattern}/: {reason}")]
    BadRegex {
        /// The pattern as written.
        pattern: String,
        /// The regex engine's message.
        reason: String,
    },
    /// An include that includes itself, directly or not.
    #[error("include cycle: {path} is already being read")]
    IncludeCycle {
        /// The file that would be read a second time.
        path: String,
    },
    /// A binding placed in two binding groups.
    #[error("binding \"{name}\" is already in binding group \"{group}\" ({first})")]
    BindingInTwoGroups {
        /// The binding.
        name: String,
        /// The group it was first placed in.
        group: String,
        /// Where.
        first: Location,
    },
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean \"{s}\"?)"))
}

/// One configuration error and where it is.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {kind}")]
pub struct Error {
    /// Where the error is.
    pub at: Location,
    /// What the error is.
    pub kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(at: Location, kind: ErrorKind) -> Self {
        Self { at, kind }
    }
}

/// Every error found while loading a configuration, in file order.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<Error>);

impl Errors {
    pub(crate) fn push(&mut self, at: Location, kind: ErrorKind) {
        self.0.push(Error::new(at, kind));
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many errors were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The errors, in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Error> {
        self.0.iter()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a Error;
    type IntoIter = std::slice::Iter<'a, Error>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
