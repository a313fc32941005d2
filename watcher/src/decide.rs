//! What reconciling a name calls for, decided from what the store holds and what the source
//! folder has now: a pure function, so the rules are tested without files or sockets.

use crate::local::Look;
use crate::state::Stored;

/// What reconciling a name calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The store is up to date.
    Nothing,
    /// Neither the source nor the store has it: forget the name.
    Forget,
    /// The file is gone from the source: delete the stored copy.
    Delete,
    /// Same size but another mtime: hash the file to tell a rewrite from a change.
    Compare,
    /// Send the file.
    Outgoing,
}

/// Decides from what the store holds and what the source has now.
pub fn decide(stored: Option<&Stored>, now: &Look, keep_deleted: bool) -> Decision {
    match (stored, now) {
        (None, Look::Missing) => Decision::Forget,
        (Some(_), Look::Missing) if keep_deleted => Decision::Nothing,
        (Some(_), Look::Missing) => Decision::Delete,
        (Some(s), Look::File(f)) if s.size == f.size && s.modified == f.modified && !s.racy => {
            Decision::Nothing
        }
        (Some(s), Look::File(f)) if s.size == f.size => Decision::Compare,
        (_, Look::File(_)) => Decision::Outgoing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::Stamp;
    use schema::Hash;

    fn stored(size: u64, modified: i64) -> Stored {
        Stored {
            racy: false,
            size,
            modified,
            blake3: Hash::of(b""),
        }
    }

    fn file(size: u64, modified: i64) -> Look {
        Look::File(Stamp {
            size,
            modified,
            changed: 0,
        })
    }

    #[test]
    fn a_racy_stamp_is_compared_not_trusted() {
        let racy = Stored {
            racy: true,
            ..stored(10, 5)
        };
        assert_eq!(decide(Some(&racy), &file(10, 5), false), Decision::Compare);
        assert_eq!(
            decide(Some(&stored(10, 5)), &file(10, 5), false),
            Decision::Nothing
        );
        assert!(crate::state::is_racy(schema::time::to_ns(
            std::time::SystemTime::now()
        )));
        assert!(!crate::state::is_racy(0));
    }

    #[test]
    fn decisions_from_stored_and_local() {
        use Decision::*;
        let s = stored(10, 100);
        let cases = [
            (None, Look::Missing, false, Forget),
            (None, Look::Missing, true, Forget),
            (Some(s), Look::Missing, false, Delete),
            (Some(s), Look::Missing, true, Nothing),
            (Some(s), file(10, 100), false, Nothing),
            (Some(s), file(10, 101), false, Compare),
            (Some(s), file(11, 100), false, Outgoing),
            (Some(s), file(0, 100), false, Outgoing),
            (None, file(10, 100), false, Outgoing),
            (None, file(0, 0), false, Outgoing),
        ];
        for (stored, now, keep, want) in cases {
            assert_eq!(
                decide(stored.as_ref(), &now, keep),
                want,
                "{stored:?} {now:?}"
            );
        }
    }
}
