//! Routing: which storage class (and so which node port) a name goes to.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

/// A storage class. Each has a folder of the same name on the node and a port at
/// `base + port_offset()`; the serve socket is at `base + SERVE_OFFSET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Mp3,
    Txt,
    Pdf,
    Others,
}

pub use crate::ports::SERVE_OFFSET;

impl Class {
    /// Every class, in port order.
    pub const ALL: [Class; 4] = [Class::Mp3, Class::Txt, Class::Pdf, Class::Others];

    /// The folder name and the name used in listings, JSON and index.txt.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Mp3 => "mp3",
            Class::Txt => "txt",
            Class::Pdf => "pdf",
            Class::Others => "others",
        }
    }

    /// Offset of this class's upload port from the node's base port.
    pub fn port_offset(self) -> u16 {
        match self {
            Class::Mp3 => 0,
            Class::Txt => 1,
            Class::Pdf => 2,
            Class::Others => 3,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Class {
    type Err = String;
    fn from_str(s: &str) -> Result<Class, String> {
        Class::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown class {s:?} (expected mp3, txt, pdf or others)"))
    }
}

/// The routing table: lower-case extension → class; anything not listed goes to `others`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    by_ext: HashMap<String, Class>,
}

impl Default for Routes {
    /// `mp3`→mp3, `txt`→txt, `pdf`→pdf.
    fn default() -> Routes {
        let by_ext = [
            ("mp3", Class::Mp3),
            ("txt", Class::Txt),
            ("pdf", Class::Pdf),
        ]
        .into_iter()
        .map(|(e, c)| (e.to_string(), c))
        .collect();
        Routes { by_ext }
    }
}

impl Routes {
    /// Adds or replaces routes from `ext=class` pairs separated by commas, e.g. `flac=mp3,md=txt`.
    pub fn with_overrides(mut self, spec: &str) -> Result<Routes, String> {
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (ext, class) = pair
                .split_once('=')
                .ok_or_else(|| format!("route {pair:?} is not of the form ext=class"))?;
            let ext = ext.trim().trim_start_matches('.').to_lowercase();
            if ext.is_empty() || ext.contains('/') {
                return Err(format!("route {pair:?} has no usable extension"));
            }
            self.by_ext.insert(ext, class.trim().parse()?);
        }
        Ok(self)
    }

    /// The table of a `--routes` option (the broker's and the node's alike): the defaults with
    /// the overrides of `spec`, if given.
    pub fn from_option(spec: Option<&str>) -> Result<Routes, String> {
        match spec {
            Some(spec) => Routes::default()
                .with_overrides(spec)
                .map_err(|e| format!("bad --routes {spec:?}: {e}")),
            None => Ok(Routes::default()),
        }
    }

    /// The class of `name`: by the last extension of its last component, lower-cased.
    pub fn class_of(&self, name: &str) -> Class {
        extension(name)
            .and_then(|ext| self.by_ext.get(&ext.to_lowercase()).copied())
            .unwrap_or(Class::Others)
    }

    /// The whole table, extension → class (what is not in it goes to `others`).
    pub fn table(&self) -> BTreeMap<String, Class> {
        self.by_ext.iter().map(|(e, c)| (e.clone(), *c)).collect()
    }

    /// Where this table and `other` route an extension differently: `ext: CLASS here, CLASS
    /// there` for each, in extension order.
    pub fn differences(&self, other: &BTreeMap<String, Class>) -> Vec<String> {
        let mine = self.table();
        let mut exts: Vec<&String> = mine.keys().chain(other.keys()).collect();
        exts.sort();
        exts.dedup();
        let class =
            |t: &BTreeMap<String, Class>, e: &str| t.get(e).copied().unwrap_or(Class::Others);
        exts.into_iter()
            .filter(|e| class(&mine, e) != class(other, e))
            .map(|e| format!(".{e}: {} here, {} there", class(&mine, e), class(other, e)))
            .collect()
    }

    /// Whether `name` may be stored in `port`'s class: the rule of every class port.
    pub fn check(&self, name: &str, port: Class) -> Result<(), WrongClass> {
        let routed = self.class_of(name);
        if routed == port {
            Ok(())
        } else {
            Err(WrongClass {
                name: name.to_string(),
                routed,
                port,
            })
        }
    }
}

/// A name sent to the port of a class it does not route to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name} routes to class {routed}, not {port}: a class port takes only names of its class \
     (the broker and the storage node must be given the same --routes)"
)]
pub struct WrongClass {
    pub name: String,
    pub routed: Class,
    pub port: Class,
}

/// The last extension of the last component of `name`, if it has one. A leading dot alone (a
/// dotfile such as `.bashrc`) is not an extension.
pub fn extension(name: &str) -> Option<&str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    let stem_and_ext = last.strip_prefix('.').unwrap_or(last);
    let (_, ext) = stem_and_ext.rsplit_once('.')?;
    (!ext.is_empty()).then_some(ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_last_extension_case_insensitively() {
        let r = Routes::default();
        let cases = [
            ("a.mp3", Class::Mp3),
            ("music/B.MP3", Class::Mp3),
            ("notes.txt", Class::Txt),
            ("doc.Pdf", Class::Pdf),
            ("archive.tar.gz", Class::Others),
            ("a.pdf.txt", Class::Txt),
            ("README", Class::Others),
            (".bashrc", Class::Others),
            (".notes.txt", Class::Txt),
            ("dir.mp3/file", Class::Others),
            ("trailing.", Class::Others),
        ];
        for (name, class) in cases {
            assert_eq!(r.class_of(name), class, "{name}");
        }
    }

    #[test]
    fn overrides() {
        let r = Routes::default()
            .with_overrides("flac=mp3, .MD=txt")
            .unwrap();
        assert_eq!(r.class_of("a.flac"), Class::Mp3);
        assert_eq!(r.class_of("a.md"), Class::Txt);
        assert!(Routes::default().with_overrides("flac").is_err());
        assert_eq!(
            Routes::from_option(Some("flac=mp3, .MD=txt")),
            Ok(r.clone())
        );
        assert_eq!(Routes::from_option(None), Ok(Routes::default()));
        let bad = Routes::from_option(Some("flac")).unwrap_err();
        assert!(bad.starts_with("bad --routes \"flac\""), "{bad}");
        assert_eq!(r.check("a.md", Class::Txt), Ok(()));
        let wrong = r.check("a.md", Class::Others).unwrap_err();
        assert_eq!((wrong.routed, wrong.port), (Class::Txt, Class::Others));
        assert!(Routes::default().check("a.md", Class::Others).is_ok());
        assert_eq!(
            r.differences(&Routes::default().table()),
            [
                ".flac: mp3 here, others there",
                ".md: txt here, others there"
            ]
        );
        assert!(r.differences(&r.table()).is_empty());
        assert!(Routes::default().with_overrides("flac=ogg").is_err());
    }
}
