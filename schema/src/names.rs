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
    #[error("volume name {0:?} is not one name component (it holds a '/')")]
    NotComponent(String),
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

/// A volume: the part of the store one watcher syncs into (docs/CONTRACT.md §8). The root
/// volume's names are bare paths; a named volume `V` holds the names `V/<path>`. A volume name
/// is one valid name component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Volume(Option<String>);

impl Volume {
    /// The root volume.
    pub fn root() -> Volume {
        Volume(None)
    }

    /// The volume named `name` (empty: the root volume), or why the name is not one component.
    pub fn named(name: &str) -> Result<Volume, NameError> {
        if name.is_empty() {
            return Ok(Volume::root());
        }
        check(name)?;
        if name.contains('/') {
            return Err(NameError::NotComponent(name.to_string()));
        }
        Ok(Volume(Some(name.to_string())))
    }

    /// The volume's name; empty for the root volume (as on the wire).
    pub fn name(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }

    /// Whether this is the root volume.
    pub fn is_root(&self) -> bool {
        self.0.is_none()
    }

    /// The stored name of the source path `local` in this volume.
    pub fn stored(&self, local: &str) -> String {
        match &self.0 {
            None => local.to_string(),
            Some(v) => format!("{v}/{local}"),
        }
    }

    /// The source path of the stored `name` if it belongs to this volume: a named volume's
    /// names under its folder; the root volume's names whose first component is none of the
    /// named volumes (`is_named`).
    pub fn local<'a>(&self, name: &'a str, is_named: impl Fn(&str) -> bool) -> Option<&'a str> {
        match &self.0 {
            Some(v) => name.strip_prefix(v.as_str())?.strip_prefix('/'),
            None => {
                let first = name.split('/').next().unwrap_or(name);
                (!(name.contains('/') && is_named(first))).then_some(name)
            }
        }
    }

    /// The named volume whose folder holds `name`, given the set of named volumes.
    pub fn of(name: &str, is_named: impl Fn(&str) -> bool) -> Volume {
        match name.split_once('/') {
            Some((first, _)) if is_named(first) => Volume(Some(first.to_string())),
            _ => Volume::root(),
        }
    }
}

impl std::fmt::Display for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("the root volume"),
            Some(v) => write!(f, "volume {v}"),
        }
    }
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

    #[test]
    fn volumes_map_names_both_ways() {
        let photos = Volume::named("photos").unwrap();
        assert_eq!(photos.stored("a/b.jpg"), "photos/a/b.jpg");
        assert_eq!(photos.local("photos/a/b.jpg", |_| true), Some("a/b.jpg"));
        assert_eq!(photos.local("photosx/a.jpg", |_| true), None);
        assert_eq!(photos.local("photos", |_| true), None);
        let named = |v: &str| v == "photos";
        let root = Volume::root();
        assert_eq!(root.stored("a.txt"), "a.txt");
        assert_eq!(root.local("docs/a.txt", named), Some("docs/a.txt"));
        assert_eq!(
            root.local("photos/a.jpg", named),
            None,
            "a named volume's name"
        );
        assert_eq!(
            root.local("photos", named),
            Some("photos"),
            "a root file so named"
        );
        assert_eq!(Volume::of("photos/a.jpg", named), photos);
        assert_eq!(Volume::of("docs/a.txt", named), root);
        assert_eq!(Volume::named("").unwrap(), root);
        assert!(matches!(
            Volume::named("a/b"),
            Err(NameError::NotComponent(_))
        ));
        assert!(Volume::named("..").is_err());
        assert_eq!(photos.to_string(), "volume photos");
    }
}
