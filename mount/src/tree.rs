//! One tree of stored names, as a listing gave it: every file with its entry, and the folders
//! its names imply. A tree never changes once built; a newer listing builds a new one.

use schema::Entry;
use std::collections::HashMap;

/// A folder's child: its name (one component) and whether it is a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub name: Box<str>,
    pub dir: bool,
}

/// What a path of the tree is.
#[derive(Debug)]
pub enum Node {
    /// A folder: its children in name order, and the newest modification time below it (ns).
    Dir { children: Vec<Child>, modified: i64 },
    /// A stored file.
    File(Entry),
}

/// The stored names of one listing as folders and files, keyed by path (`""` is the root).
#[derive(Debug, Default)]
pub struct Tree {
    nodes: HashMap<Box<str>, Node>,
    files: u64,
    bytes: u64,
    /// Names left out because a folder of the same path holds other names.
    shadowed: u64,
}

impl Tree {
    /// Builds the tree of `entries` (in any order). A name that is both a file and a folder of
    /// other names (possible only on a store that does not check it) is shown as the folder.
    pub fn build(entries: impl IntoIterator<Item = Entry>) -> Tree {
        let mut files: HashMap<Box<str>, Entry> = HashMap::new();
        for e in entries {
            files.insert(e.name.clone().into_boxed_str(), e);
        }
        let mut tree = Tree::default();
        let mut dirs: HashMap<Box<str>, (Vec<Child>, i64)> = HashMap::new();
        dirs.insert("".into(), (Vec::new(), 0));
        // Folders first, so that a file whose path is also a folder is recognised.
        for name in files.keys() {
            let mut end = 0;
            while let Some(slash) = name[end..].find('/') {
                let dir = &name[..end + slash];
                if !dirs.contains_key(dir) {
                    dirs.insert(dir.into(), (Vec::new(), 0));
                }
                end += slash + 1;
            }
        }
        let mut shadowed = Vec::new();
        for (name, entry) in &files {
            if dirs.contains_key(&**name) {
                shadowed.push(name.clone());
                continue;
            }
            let (parent, leaf) = split(name);
            let slot = dirs.get_mut(parent).expect("every parent was made above");
            slot.0.push(Child {
                name: leaf.into(),
                dir: false,
            });
            slot.1 = slot.1.max(entry.modified);
            tree.files += 1;
            tree.bytes += entry.size;
        }
        tree.shadowed = shadowed.len() as u64;
        for name in shadowed {
            files.remove(&name);
        }
        // Each folder is a child of its parent; modification times rise to the root.
        let mut names: Vec<Box<str>> = dirs.keys().filter(|d| !d.is_empty()).cloned().collect();
        names.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        for dir in names {
            let (parent, leaf) = split(&dir);
            let modified = dirs[&dir].1;
            let slot = dirs.get_mut(parent).expect("every parent was made above");
            slot.0.push(Child {
                name: leaf.into(),
                dir: true,
            });
            slot.1 = slot.1.max(modified);
        }
        for (path, (mut children, modified)) in dirs {
            children.sort_by(|a, b| a.name.cmp(&b.name));
            tree.nodes.insert(path, Node::Dir { children, modified });
        }
        for (name, entry) in files {
            tree.nodes.insert(name, Node::File(entry));
        }
        tree
    }

    /// The node at `path` (`""`: the root).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Files in the tree.
    pub fn files(&self) -> u64 {
        self.files
    }

    /// Bytes of all files in the tree.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Names not shown because a folder has the same path.
    pub fn shadowed(&self) -> u64 {
        self.shadowed
    }
}

/// The path of `child` in the folder `parent`.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}/{child}")
    }
}

/// A path's folder and last component.
fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Class, Hash};

    fn entry(name: &str, size: u64, modified: i64) -> Entry {
        Entry {
            name: name.into(),
            class: Class::Others,
            size,
            blake3: Hash::of(name.as_bytes()),
            modified,
            version: 1,
        }
    }

    fn children(tree: &Tree, path: &str) -> Vec<(String, bool)> {
        match tree.get(path) {
            Some(Node::Dir { children, .. }) => children
                .iter()
                .map(|c| (c.name.to_string(), c.dir))
                .collect(),
            other => panic!("{path:?} is not a folder: {other:?}"),
        }
    }

    #[test]
    fn folders_come_from_the_names() {
        let tree = Tree::build([
            entry("b.txt", 3, 10),
            entry("a/x/deep.mp3", 5, 30),
            entry("a/y.pdf", 7, 20),
            entry("été/ü.txt", 1, 5),
        ]);
        assert_eq!(
            children(&tree, ""),
            [
                ("a".to_string(), true),
                ("b.txt".to_string(), false),
                ("été".to_string(), true)
            ]
        );
        assert_eq!(
            children(&tree, "a"),
            [("x".to_string(), true), ("y.pdf".to_string(), false)]
        );
        assert!(matches!(tree.get("a/x/deep.mp3"), Some(Node::File(e)) if e.size == 5));
        match tree.get("a") {
            Some(Node::Dir { modified, .. }) => assert_eq!(*modified, 30),
            other => panic!("{other:?}"),
        }
        assert_eq!((tree.files(), tree.bytes(), tree.shadowed()), (4, 16, 0));
        assert!(tree.get("a/x/nothing").is_none());
    }

    #[test]
    fn a_name_that_is_also_a_folder_shows_the_folder() {
        let tree = Tree::build([entry("a", 1, 1), entry("a/b", 2, 2)]);
        assert_eq!(children(&tree, ""), [("a".to_string(), true)]);
        assert_eq!((tree.files(), tree.shadowed()), (1, 1));
    }

    #[test]
    fn an_empty_listing_is_an_empty_root() {
        let tree = Tree::build([]);
        assert!(children(&tree, "").is_empty());
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a/b", "c"), "a/b/c");
    }
}
