//! The name rules: `check`, `to_path`, `from_path`, `escape`, `unescape` never panic; an
//! accepted name maps to a path below the root that maps back to it; escaped names are one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::names::{check, escape, from_path, to_path, unescape};
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let root = Path::new("/srv/node/others");
    let _ = unescape(name);
    match check(name) {
        Ok(()) => {
            let path = to_path(root, name).expect("an accepted name has a path");
            let rel = path.strip_prefix(root).expect("the path is under the root");
            assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
            assert_eq!(from_path(root, &path).as_deref(), Ok(name));
            let e = escape(name);
            assert!(!e.chars().any(char::is_control), "{e:?}");
            assert_eq!(unescape(&e).as_deref(), Some(name));
        }
        Err(_) => assert!(to_path(root, name).is_err()),
    }
    // Whatever path text comes in, from_path accepts only what check accepts.
    if let Ok(n) = from_path(root, &root.join(name)) {
        assert_eq!(check(&n), Ok(()));
    }
});
