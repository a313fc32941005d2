//! The name rules: what a stored file may be called, and how names map to paths.
//!
//! A name is a path relative to the source folder, `/`-separated UTF-8, case-sensitive. Every
//! role checks names with [`check`] before it acts on one, so nothing can be written outside a
//! storage root or a target folder.

use crate::limits::{MAX_COMPONENT, MAX_NAME};
use std::path::{Component, Path, PathBuf};

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("absolute path {0:?}: names are relative to the source folder")]
    Absolute(String),
    #[error("name {0:?} has an empty, '.' or '..' component")]
    DotComponent(String),
    #[error("name {0:?} contains a NUL byte")]
    Nul(String),
    #[error("name {0:?} contains a backslash")]
    Backslash(String),
    #[error("name {0:?} has a component longer than {MAX_COMPONENT} bytes")]
    ComponentTooLong(String),
    #[error("name of {0} bytes is longer than {MAX_NAME} bytes")]
    TooLong(usize),
    #[error("path {0:?} is not valid UTF-8")]
    NotUtf8(String),
    #[error("path {0:?} is not inside {1:?}")]
    Outside(String, String),
}

/// Checks `name` against every rule; `Ok` means it is safe to join under a root.
pub fn check(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    if name.starts_with('/') {
        return Err(NameError::Absolute(name.to_string()));
    }
    if name.contains('\0') {
        return Err(NameError::Nul(name.to_string()));
    }
    if name.contains('\\') {
        return Err(NameError::Backslash(name.to_string()));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(NameError::DotComponent(name.to_string()));
        }
        if part.len() > MAX_COMPONENT {
            return Err(NameError::ComponentTooLong(name.to_string()));
        }
    }
    Ok(())
}

/// The path of `name` under `root`. Checks the name first.
pub fn to_path(root: &Path, name: &str) -> Result<PathBuf, NameError> {
    check(name)?;
    let mut p = root.to_path_buf();
    for part in name.split('/') {
        p.push(part);
    }
    Ok(p)
}

/// The name of `path`, a file somewhere below `root`.
pub fn from_path(root: &Path, path: &Path) -> Result<String, NameError> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| NameError::Outside(path.display().to_string(), root.display().to_string()))?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| NameError::NotUtf8(path.display().to_string()))?,
            ),
            _ => return Err(NameError::DotComponent(rel.display().to_string())),
        }
    }
    let name = parts.join("/");
    check(&name)?;
    Ok(name)
}

/// `name` with tabs, newlines and every other control character escaped (`\t`, `\n`, `\r`,
/// `\xHH` for the rest of Unicode's `Cc` category: U+0000..U+001F and U+007F..U+009F), for
/// line-oriented text such as `index.txt`. Names never contain a backslash, so the escaped form
/// is unambiguous and [`unescape`] gives the name back.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Whether [`escape`] would change `name`.
pub fn needs_escape(name: &str) -> bool {
    name.chars().any(char::is_control)
}

/// The name whose [`escape`]d form is `text`; `None` when `text` is not such a form (a
/// backslash not followed by `t`, `n`, `r` or `x` and two hex digits of a control character).
pub fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            't' => out.push('\t'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                if hex.len() != 2 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                let code = u32::from_str_radix(&hex, 16).ok()?;
                out.push(char::from_u32(code).filter(|c| c.is_control())?);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "a.txt",
            "music/a.mp3",
            ".bashrc",
            "ünïcødé/名前.pdf",
            "a b/c d",
            "x..y",
        ] {
            assert_eq!(check(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        let long_component = "a".repeat(256);
        let long_name = vec!["a"; 2100].join("/");
        for n in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\\b",
            long_component.as_str(),
            long_name.as_str(),
        ] {
            assert!(check(n).is_err(), "{n:?} should be refused");
        }
    }

    #[test]
    fn path_round_trip() {
        let root = Path::new("/srv/root");
        let p = to_path(root, "a/b/c.txt").unwrap();
        assert_eq!(p, Path::new("/srv/root/a/b/c.txt"));
        assert_eq!(from_path(root, &p).unwrap(), "a/b/c.txt");
        assert!(from_path(root, Path::new("/elsewhere/x")).is_err());
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(escape("a\tb\nc\u{1}"), "a\\tb\\nc\\x01");
        assert_eq!(escape("plain/名前"), "plain/名前");
        assert_eq!(escape("a\u{85}b\u{7f}"), "a\\x85b\\x7f");
        assert_eq!(unescape("a\\tb\\nc\\x01").as_deref(), Some("a\tb\nc\u{1}"));
        assert_eq!(unescape("a\\q"), None);
        assert_eq!(unescape("a\\x41"), None);
        assert_eq!(unescape("a\\x0"), None);
    }
}
