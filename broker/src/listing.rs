//! A fast encoder for `listing` replies. A page holds up to 5,000 entries; encoding it through
//! the generic codec (which builds a CBOR value tree first) costs more than reading the index,
//! so pages are serialized straight to bytes in the same layout (`v`, `t`, `id`, `entries`,
//! `more`). A unit test checks the generic decoder reads them back unchanged.

use schema::{Entry, PROTOCOL_VERSION};
use serde::Serialize;

#[derive(Serialize)]
struct ListingHeader<'a> {
    v: u64,
    t: &'static str,
    id: u64,
    entries: &'a [Entry],
    more: bool,
}

/// The header frame of `listing {id, entries, more}`.
pub fn encode(id: u64, entries: &[Entry], more: bool) -> Vec<u8> {
    let header = ListingHeader {
        v: PROTOCOL_VERSION,
        t: "listing",
        id,
        entries,
        more,
    };
    let mut out = Vec::with_capacity(64 + entries.len() * 160);
    if let Err(e) = ciborium::into_writer(&header, &mut out) {
        // Plain data into a Vec cannot fail; fall back to the generic codec regardless.
        tracing::error!("cannot encode a listing directly: {e}");
        let msg = schema::Message::Listing {
            id,
            entries: entries.to_vec(),
            more,
        };
        return schema::codec::encode(&msg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Class, Hash, Message};

    #[test]
    fn reads_back_as_the_generic_listing() {
        let entries: Vec<Entry> = (0..3)
            .map(|i| Entry {
                name: format!("dir/名前-{i}.mp3"),
                class: Class::ALL[i % 4],
                size: (i as u64) << 40,
                blake3: Hash::of(&[i as u8]),
                modified: -(i as i64) * 1_000_000_007,
                version: i as u64 + 1,
            })
            .collect();
        for more in [true, false] {
            let frame = encode(42, &entries, more);
            let want = Message::Listing {
                id: 42,
                entries: entries.clone(),
                more,
            };
            assert_eq!(schema::codec::decode(&frame).unwrap(), want);
        }
        let empty = encode(1, &[], false);
        assert_eq!(
            schema::codec::decode(&empty).unwrap(),
            Message::Listing {
                id: 1,
                entries: vec![],
                more: false
            }
        );
    }
}
