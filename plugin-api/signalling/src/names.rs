//! Application and stream names: checked once, where a request enters (a viewer's or publisher's
//! signalling URL, WHIP, a pull), after percent-decoding. A name that passes is one path segment
//! whatever reads it next (an origin, a `Location` header, a log line, a metric label), so two
//! different names are never one stream anywhere, and one stream has one name.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;

/// The longest application or stream name, in bytes (UTF-8).
pub const MAX_NAME_BYTES: usize = 128;

/// Characters a name may not hold: they would make it more or less than one path segment, or
/// start a query or fragment, or be decoded a second time downstream.
const FORBIDDEN: [char; 4] = ['/', '?', '#', '%'];

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing.
    #[error("an empty name")]
    Empty,
    /// Over [`MAX_NAME_BYTES`].
    #[error("a name of {0} bytes (at most {MAX_NAME_BYTES})")]
    TooLong(usize),
    /// One of `/ ? # %`.
    #[error("a name with {0:?} in it")]
    Forbidden(char),
    /// A control character (a newline, a NUL, ...).
    #[error("a name with a control character in it")]
    Control,
    /// `.` or `..`.
    #[error("a name that is a path step ({0:?})")]
    Dots(&'static str),
}

/// Checks one application or stream name (already percent-decoded).
pub fn check(name: &str) -> Result<(), NameError> {
    match name {
        "" => return Err(NameError::Empty),
        "." => return Err(NameError::Dots(".")),
        ".." => return Err(NameError::Dots("..")),
        _ if name.len() > MAX_NAME_BYTES => return Err(NameError::TooLong(name.len())),
        _ => {}
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c)) {
        return Err(NameError::Forbidden(c));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(())
}

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Escapes a checked name as one path segment.
pub fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// An application and stream name that passed [`check`]; shown as `app/stream`, the host's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName {
    app: String,
    stream: String,
}

impl StreamName {
    /// Checks both names.
    pub fn new(app: &str, stream: &str) -> Result<Self, NameError> {
        check(app)?;
        check(stream)?;
        Ok(Self { app: app.to_string(), stream: stream.to_string() })
    }

    /// The application.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// `/app/stream`, each segment escaped: the path of its signalling URL.
    pub fn path(&self) -> String {
        format!("/{}/{}", segment(&self.app), segment(&self.stream))
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_one_segment_are_refused() {
        let refused = [
            ("", NameError::Empty),
            (".", NameError::Dots(".")),
            ("..", NameError::Dots("..")),
            ("stream/1", NameError::Forbidden('/')),
            ("stream?z", NameError::Forbidden('?')),
            ("a#b", NameError::Forbidden('#')),
            ("a%2F", NameError::Forbidden('%')),
            ("line\nbreak", NameError::Control),
            ("nul\0", NameError::Control),
            ("del\u{7f}", NameError::Control),
            ("c1\u{85}", NameError::Control),
        ];
        for (name, error) in refused {
            assert_eq!(check(name), Err(error), "{name:?}");
        }
        assert_eq!(check(&"x".repeat(MAX_NAME_BYTES + 1)), Err(NameError::TooLong(MAX_NAME_BYTES + 1)));
    }

    #[test]
    fn ordinary_and_non_ascii_names_pass_and_escape_as_one_segment() {
        for name in ["stream", "my stream", "...", ".hidden", "Ünïcødé-流", "a+b=c&d", &"x".repeat(MAX_NAME_BYTES)] {
            assert_eq!(check(name), Ok(()), "{name:?}");
        }
        let name = StreamName::new("app", "Ü b&c").unwrap();
        assert_eq!(name.path(), "/app/%C3%9C%20b%26c");
        assert_eq!(name.to_string(), "app/Ü b&c");
        assert_eq!(StreamName::new("..", "s"), Err(NameError::Dots("..")));
    }
}
