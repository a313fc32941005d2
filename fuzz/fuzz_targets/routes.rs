//! The routing parser: `Routes::with_overrides` never panics, and a table it returns classifies
//! any name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::Routes;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (spec, name) = text.split_once('\n').unwrap_or((text, "a.MP3"));
    if let Ok(routes) = Routes::default().with_overrides(spec) {
        let _ = routes.class_of(name);
        let _ = schema::route::extension(name);
    }
});
