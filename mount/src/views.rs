//! The trees the mount shows: the main one at its root (the store now, refreshed by the
//! lister, or the `--at` instant), and the views of the past under `.history/TIME/`, each
//! listed on first use and dropped after [`PAST_IDLE`] unused.

use crate::inodes::{ViewId, MAIN};
use crate::link::Lister;
use crate::tree::Tree;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Views of the past kept at once; the least recently used goes first.
pub const MAX_PAST: usize = 16;

/// How long a view of the past lives unused.
pub const PAST_IDLE: Duration = Duration::from_secs(600);

/// One view of the past: the instant it shows and its tree.
struct Past {
    id: ViewId,
    at: i64,
    tree: Arc<Tree>,
    used: Instant,
}

/// Every tree the mount shows.
pub struct Views {
    main: RwLock<Arc<Tree>>,
    /// The instant of the main tree (`--at`), or `None` for the store now.
    pub at: Option<i64>,
    past: Mutex<(HashMap<String, Past>, ViewId)>,
    lister: OnceLock<Lister>,
    /// Listings of the main tree so far.
    generation: AtomicU64,
}

/// Why a view of the past cannot be shown.
pub enum PastError {
    /// The folder name is not a time.
    NotATime,
    /// The broker did not give the listing.
    Listing(String),
}

impl Views {
    /// Views whose main tree is `main`, of the instant `at` when given.
    pub fn new(main: Tree, at: Option<i64>) -> Views {
        Views {
            main: RwLock::new(Arc::new(main)),
            at,
            past: Mutex::new((HashMap::new(), MAIN + 1)),
            lister: OnceLock::new(),
            generation: AtomicU64::new(0),
        }
    }

    /// Sets the lister that lists views of the past (once, after it started).
    pub fn set_lister(&self, lister: Lister) {
        let _ = self.lister.set(lister);
    }

    /// Replaces the main tree with a newer listing.
    pub fn replace_main(&self, tree: Tree) {
        *self.main.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tree);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the main tree was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The main tree now.
    pub fn main(&self) -> Arc<Tree> {
        self.main.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The tree of `view`, if it still exists.
    pub fn tree(&self, view: ViewId) -> Option<Arc<Tree>> {
        if view == MAIN {
            return Some(self.main());
        }
        let mut past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        let p = past.0.values_mut().find(|p| p.id == view)?;
        p.used = Instant::now();
        Some(p.tree.clone())
    }

    /// The view of the past named `name` (an RFC 3339 time or an age such as `2h`, as for
    /// `dfs fetch --at`), listed now when it is new.
    pub fn past(&self, name: &str) -> Result<ViewId, PastError> {
        {
            let mut past = self.past.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = past.0.get_mut(name) {
                p.used = Instant::now();
                return Ok(p.id);
            }
        }
        let at = fetcher::parse_time(name, fetcher::now_ns()).map_err(|_| PastError::NotATime)?;
        let lister = self
            .lister
            .get()
            .ok_or_else(|| PastError::Listing("the lister has not started".into()))?;
        let tree = lister.past(at).map_err(PastError::Listing)?;
        tracing::info!(
            "{name}: the tree as it was at {} ({} files)",
            schema::time::rfc3339(at),
            tree.files()
        );
        let mut guard = self.past.lock().unwrap_or_else(|p| p.into_inner());
        let (views, next) = &mut *guard;
        if let Some(p) = views.get(name) {
            return Ok(p.id);
        }
        views.retain(|_, p| p.used.elapsed() < PAST_IDLE);
        while views.len() >= MAX_PAST {
            let oldest = views
                .iter()
                .min_by_key(|(_, p)| p.used)
                .map(|(n, _)| n.clone());
            match oldest {
                Some(n) => views.remove(&n),
                None => break,
            };
        }
        let id = *next;
        *next += 1;
        views.insert(
            name.to_string(),
            Past {
                id,
                at,
                tree: Arc::new(tree),
                used: Instant::now(),
            },
        );
        Ok(id)
    }

    /// The names of the views of the past shown now, with their instants.
    pub fn past_names(&self) -> Vec<(String, ViewId, i64)> {
        let past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<_> = past
            .0
            .iter()
            .filter(|(_, p)| p.used.elapsed() < PAST_IDLE)
            .map(|(n, p)| (n.clone(), p.id, p.at))
            .collect();
        names.sort();
        names
    }

    /// Whether `view` is still shown.
    pub fn exists(&self, view: ViewId) -> bool {
        view == MAIN
            || self
                .past
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .values()
                .any(|p| p.id == view)
    }
}
