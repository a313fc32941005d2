//! Which names are not synced: editor and tool temporary files by default, plus the user's
//! globs with gitignore-like semantics.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Temporary files of editors and tools, matched against the last component of a name.
pub const DEFAULT_IGNORES: &[&str] = &[
    "*.swp",      // vim swap files
    "*.swx",      // vim swap files
    "*.swo",      // vim swap files
    "*~",         // backups of many editors
    ".#*",        // emacs lock files
    "#*#",        // emacs auto-save files
    "4913",       // vim's probe file
    ".~lock.*#",  // LibreOffice lock files
    ".dfs-tmp-*", // the fetcher's temporary files
];

/// Whether `last` looks like a `mkstemp` temporary file of rsync (`.name.XXXXXX`) or `sed -i`
/// (`sedXXXXXX`). The six random characters are letters and digits; real names such as
/// `.env.sample` or `sedentary` have the same shape, so a suffix of only lower-case letters
/// (which mkstemp produces about once in 200 names) is taken for a real name. Such a temporary
/// file is at worst uploaded and then moved by the rename that ends its life.
pub fn is_tool_temp(last: &str) -> bool {
    fn random6(s: &str) -> bool {
        s.len() == 6
            && s.bytes().all(|b| b.is_ascii_alphanumeric())
            && s.bytes()
                .any(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }
    if let Some(rest) = last.strip_prefix('.') {
        if let Some((stem, suffix)) = rest.rsplit_once('.') {
            if !stem.is_empty() && random6(suffix) {
                return true;
            }
        }
    }
    last.strip_prefix("sed").is_some_and(random6)
}

/// A glob that could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("bad ignore pattern {pattern:?}: {source}")]
pub struct BadPattern {
    pub pattern: String,
    pub source: globset::Error,
}

/// The compiled ignore rules.
#[derive(Debug, Clone)]
pub struct Ignores {
    /// Matched against the last component only.
    defaults: GlobSet,
    /// User globs without `/`: matched against every component.
    components: GlobSet,
    /// User globs with `/`: matched against every leading part of the name (`a`, `a/b`, …).
    anchored: GlobSet,
    /// Whether the default ignores (and [`is_tool_temp`]) apply.
    with_defaults: bool,
}

fn glob(pattern: &str) -> Result<Glob, BadPattern> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|source| BadPattern {
            pattern: pattern.to_string(),
            source,
        })
}

fn build(set: &GlobSetBuilder, what: &str) -> Result<GlobSet, BadPattern> {
    set.build().map_err(|source| BadPattern {
        pattern: what.to_string(),
        source,
    })
}

/// Splits `value` at commas that are not inside `{…}` (so `*.{o,a}` stays one glob).
pub fn split_globs(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in value.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Ignores {
    /// Compiles the user's globs (each value may hold several, comma-separated) and, unless
    /// `with_defaults` is false, the default ignores.
    pub fn new(user: &[String], with_defaults: bool) -> Result<Ignores, BadPattern> {
        let mut defaults = GlobSetBuilder::new();
        if with_defaults {
            for p in DEFAULT_IGNORES {
                defaults.add(glob(p)?);
            }
        }
        let mut components = GlobSetBuilder::new();
        let mut anchored = GlobSetBuilder::new();
        for value in user {
            for pattern in split_globs(value) {
                // A trailing `/` (gitignore's "folders only") and a leading `/` (anchored at
                // the root) are accepted; names here are always relative to the root.
                let trimmed = pattern.trim_end_matches('/');
                if let Some(rooted) = trimmed.strip_prefix('/') {
                    anchored.add(glob(rooted)?);
                } else if trimmed.contains('/') {
                    anchored.add(glob(trimmed)?);
                } else if !trimmed.is_empty() {
                    components.add(glob(trimmed)?);
                }
            }
        }
        Ok(Ignores {
            defaults: build(&defaults, "default ignores")?,
            components: build(&components, "ignore globs")?,
            anchored: build(&anchored, "ignore globs")?,
            with_defaults,
        })
    }

    /// Whether `name` (a checked name, `/`-separated) is not to be synced: its file name matches
    /// a default pattern, or it or any folder above it matches a user glob.
    pub fn is_ignored(&self, name: &str) -> bool {
        let last = name.rsplit('/').next().unwrap_or(name);
        if self.with_defaults && (self.defaults.is_match(last) || is_tool_temp(last)) {
            return true;
        }
        let mut end = 0;
        for part in name.split('/') {
            end += part.len();
            if self.components.is_match(part) || self.anchored.is_match(&name[..end]) {
                return true;
            }
            end += 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Ignores {
        Ignores::new(&[], true).unwrap()
    }

    #[test]
    fn every_default_pattern() {
        let ig = defaults();
        for n in [
            "a.txt.swp",
            "d/.a.txt.swx",
            "x.swo",
            "notes.txt~",
            "d/.#notes.txt",
            "#notes.txt#",
            "d/e/4913",
            ".~lock.report.odt#",
            ".song.mp3.Ab3xZ9",
            "d/sedAb12Cd",
            ".dfs-tmp-123",
        ] {
            assert!(ig.is_ignored(n), "{n} should be ignored");
        }
        for n in [
            "a.txt",
            "notes.tmp",
            ".DS_Store",
            ".bashrc",
            "4913.txt",
            "sed",
            "d~/a.txt",
            "song.mp3",
            "sedative.txt",
            ".env.sample",
            ".config.backup",
            "sedentary",
        ] {
            assert!(!ig.is_ignored(n), "{n} should be synced");
        }
    }

    #[test]
    fn defaults_can_be_turned_off() {
        let ig = Ignores::new(&[], false).unwrap();
        assert!(!ig.is_ignored("a.swp"));
        assert!(!ig.is_ignored("4913"));
    }

    #[test]
    fn globs_without_slash_match_names_at_any_depth() {
        let ig = Ignores::new(&["*.o".into(), "build".into()], false).unwrap();
        assert!(ig.is_ignored("x.o"));
        assert!(ig.is_ignored("a/b/x.o"));
        assert!(ig.is_ignored("build"));
        assert!(ig.is_ignored("build/out/a.txt"));
        assert!(ig.is_ignored("src/build/a.txt"));
        assert!(!ig.is_ignored("builder/a.txt"));
        assert!(!ig.is_ignored("x.ogg"));
    }

    #[test]
    fn globs_with_slash_match_from_the_root() {
        let ig = Ignores::new(
            &["logs/*.log".into(), "/tmp".into(), "cache/".into()],
            false,
        )
        .unwrap();
        assert!(ig.is_ignored("logs/a.log"));
        assert!(!ig.is_ignored("x/logs/a.log"));
        assert!(!ig.is_ignored("logs/sub/a.log"), "* does not cross /");
        assert!(ig.is_ignored("tmp/a"));
        assert!(!ig.is_ignored("x/tmp/a"));
        assert!(ig.is_ignored("x/cache/a"));
    }

    #[test]
    fn comma_separated_values_keep_alternations() {
        assert_eq!(split_globs("a, b/*,*.{o,a}"), ["a", "b/*", "*.{o,a}"]);
        let ig = Ignores::new(&["*.{o,a},x".into()], false).unwrap();
        assert!(ig.is_ignored("lib.a") && ig.is_ignored("m.o") && ig.is_ignored("x"));
        assert!(Ignores::new(&["a[".into()], false).is_err());
    }
}
