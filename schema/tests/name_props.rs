//! Property tests of the name rules: what `check` accepts stays under any root and round-trips
//! through a path; what the spec refuses is refused; `escape` output is one clean line and
//! tells names apart.

use proptest::prelude::*;
use schema::limits::{MAX_COMPONENT, MAX_NAME};
use schema::names::{check, escape, from_path, needs_escape, to_path, unescape};
use std::path::{Component, Path};

/// One component a name may have: any characters but `/`, NUL and backslash, including tabs,
/// newlines, other control characters and multi-byte UTF-8; never `.` or `..`.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^/\\\\\u{0}]{1,24}",
        "[a-z._-]{1,8}",
        "[\u{1}-\u{1f}\u{7f}-\u{9f}a ]{1,6}",
        "[\u{80}-\u{10ffff}]{1,4}",
    ]
    .prop_filter("not . or ..", |c| c != "." && c != "..")
}

fn valid_name() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..8).prop_map(|parts| parts.join("/"))
}

/// The parts of a name, with one of them replaced by `bad` at position `at`.
fn with_part(parts: &[String], at: prop::sample::Index, bad: &str) -> String {
    let mut parts = parts.to_vec();
    let i = at.index(parts.len() + 1);
    parts.insert(i, bad.to_string());
    parts.join("/")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every generated name is valid (the generator is the spec's definition).
    #[test]
    fn generated_names_are_accepted(name in valid_name()) {
        prop_assume!(name.len() <= MAX_NAME);
        prop_assume!(name.split('/').all(|p| p.len() <= MAX_COMPONENT));
        prop_assert_eq!(check(&name), Ok(()));
    }

    /// Anything `check` accepts, generated or arbitrary, joins under a root to a path below it
    /// made only of normal components, and `from_path` gives the name back.
    #[test]
    fn accepted_names_stay_under_the_root_and_round_trip(
        name in prop_oneof![valid_name(), any::<String>(), "[a./\\\\]{1,12}"],
        root in prop::sample::select(vec!["/srv/node/mp3", "/", "relative/root", "."]),
    ) {
        let root = Path::new(root);
        match check(&name) {
            Ok(()) => {
                let path = to_path(root, &name).unwrap();
                prop_assert!(path.starts_with(root), "{path:?} not under {root:?}");
                let rel = path.strip_prefix(root).unwrap();
                prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))), "{rel:?}");
                prop_assert_eq!(rel.components().count(), name.split('/').count());
                prop_assert_eq!(from_path(root, &path), Ok(name.clone()));
            }
            Err(_) => prop_assert!(to_path(root, &name).is_err()),
        }
    }

    #[test]
    fn dot_components_are_refused(
        parts in prop::collection::vec(component(), 0..5),
        at in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec!["..", ".", ""]),
    ) {
        let name = with_part(&parts, at, bad);
        prop_assert!(check(&name).is_err(), "{name:?}");
        prop_assert!(to_path(Path::new("/root"), &name).is_err());
    }

    #[test]
    fn nul_backslash_and_leading_slash_are_refused(
        name in valid_name(),
        at in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec!['\0', '\\']),
    ) {
        let mut chars: Vec<char> = name.chars().collect();
        chars.insert(at.index(chars.len() + 1), bad);
        let name: String = chars.into_iter().collect();
        prop_assert!(check(&name).is_err(), "{name:?}");
        let absolute = format!("/{name}");
        prop_assert!(check(&absolute).is_err(), "{absolute:?}");
    }

    #[test]
    fn over_long_parts_and_names_are_refused(
        parts in prop::collection::vec(component(), 0..4),
        at in any::<prop::sample::Index>(),
        extra in 1usize..600,
        fill in "[a-zé名]",
    ) {
        // A component just over the limit, whatever its characters' widths.
        let mut long = String::new();
        while long.len() < MAX_COMPONENT + extra {
            long.push_str(&fill);
        }
        prop_assert!(check(&with_part(&parts, at, &long)).is_err());
        // A name over the limit made of components each within it.
        let part = "p".repeat(MAX_COMPONENT);
        let count = (MAX_NAME + extra) / (MAX_COMPONENT + 1) + 1;
        let name = vec![part.as_str(); count].join("/");
        prop_assert!(name.len() > MAX_NAME);
        prop_assert!(check(&name).is_err());
    }

    /// `escape` output is one line of printable text, and `unescape` reverses it, so two names
    /// never escape alike.
    #[test]
    fn escape_is_one_clean_line_and_reversible(name in valid_name(), other in valid_name()) {
        let e = escape(&name);
        prop_assert!(!e.chars().any(char::is_control), "{e:?}");
        prop_assert!(!e.contains('\t') && !e.contains('\n') && !e.contains('\r'));
        prop_assert_eq!(e.lines().count(), 1);
        prop_assert_eq!(unescape(&e), Some(name.clone()));
        prop_assert_eq!(needs_escape(&name), e != name);
        if name != other {
            prop_assert_ne!(e, escape(&other));
        }
    }

    /// `unescape` never panics, and what it returns escapes back to canonical text.
    #[test]
    fn unescape_never_panics(text in "[a\\\\tnrx0-9a-fA-F+\u{1}é]{0,20}") {
        if let Some(name) = unescape(&text) {
            prop_assert_eq!(unescape(&escape(&name)), Some(name));
        }
    }
}
