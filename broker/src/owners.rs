//! Volumes and their owners (docs/CONTRACT.md §8): who owns each volume (kept in the index, so
//! it survives a restart), which volume each watcher connection claimed, and the confinement of
//! every change to the claimed volume.

use crate::index::Index;
use crate::IndexError;
use schema::names::Volume;
use std::collections::{BTreeMap, HashMap};

/// Most ingest connections with a claim; beyond it the oldest claims are forgotten (their
/// watchers claim again when a change is refused).
const MAX_CLAIMS: usize = 65_536;

/// Why a claim or a change was refused (`forbidden`), in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The owners of the volumes, and the claims of the connected watchers.
#[derive(Debug, Default)]
pub struct Owners {
    /// Volume name (empty for the root volume) → owner, as kept in the index.
    owners: BTreeMap<String, String>,
    /// Ingest peer (ROUTER identity) → the volume it claimed, and the order of claims.
    claims: HashMap<Vec<u8>, (Volume, u64)>,
    next_claim: u64,
}

impl Owners {
    /// The owners kept in `index`.
    pub fn load(index: &Index) -> Result<Owners, IndexError> {
        Ok(Owners {
            owners: index.owners()?.into_iter().collect(),
            ..Owners::default()
        })
    }

    /// Whether `name` is a named volume.
    pub fn is_named(&self, name: &str) -> bool {
        !name.is_empty() && self.owners.contains_key(name)
    }

    /// Every named volume.
    pub fn named(&self) -> Vec<String> {
        self.owners
            .keys()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect()
    }

    /// Every volume with its owner.
    pub fn all(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.owners.iter().map(|(v, o)| (v.clone(), o.clone()))
    }

    /// Takes the owners kept in `index` again (after it was rebuilt), keeping the claims.
    pub fn reload(&mut self, index: &Index) -> Result<(), IndexError> {
        self.owners = index.owners()?.into_iter().collect();
        Ok(())
    }

    /// `peer` claims `volume` as `owner`. A volume owned by someone else is refused unless
    /// `take_over`; a named volume whose folder holds root-volume names is refused. A new or
    /// moved owner is written to `index` (durable with the next flush: the caller holds its
    /// answer until then), and the answer is then `true`.
    pub fn claim(
        &mut self,
        index: &Index,
        peer: &[u8],
        volume: Volume,
        owner: &str,
        take_over: bool,
    ) -> Result<Result<bool, Refused>, IndexError> {
        let name = volume.name().to_string();
        let mut recorded = true;
        match self.owners.get(&name) {
            Some(current) if current == owner => recorded = false,
            Some(current) if !take_over => {
                return Ok(Err(Refused(format!(
                    "{volume} is owned by {current}; run the watcher with --take-over to move \
                     it to {owner}"
                ))));
            }
            Some(current) => {
                tracing::warn!("{volume} taken over by {owner} (it was owned by {current})");
                index.set_owner(&name, owner)?;
                self.owners.insert(name, owner.to_string());
            }
            None => {
                if !volume.is_root() && index.has_names_under(&format!("{name}/"))? {
                    return Ok(Err(Refused(format!(
                        "the root volume already holds names under {name}/; a {volume} \
                         cannot take them"
                    ))));
                }
                tracing::info!("{volume} is now owned by {owner}");
                index.set_owner(&name, owner)?;
                self.owners.insert(name, owner.to_string());
            }
        }
        if self.claims.len() >= MAX_CLAIMS {
            if let Some(oldest) = self.claims.iter().min_by_key(|(_, (_, n))| *n) {
                let oldest = oldest.0.clone();
                self.claims.remove(&oldest);
            }
        }
        self.next_claim += 1;
        self.claims.insert(peer.to_vec(), (volume, self.next_claim));
        Ok(Ok(recorded))
    }

    /// Whether `peer` may change every one of `names`: it claimed a volume, and each name is in
    /// it.
    pub fn confine(&self, peer: &[u8], names: &[&str]) -> Result<(), Refused> {
        let Some((volume, _)) = self.claims.get(peer) else {
            return Err(Refused(
                "this connection has not claimed a volume: send claim first".to_string(),
            ));
        };
        for name in names {
            if Volume::of(name, |v| self.is_named(v)) != *volume {
                return Err(Refused(format!(
                    "{name} is outside {volume}, which this watcher owns"
                )));
            }
        }
        Ok(())
    }

    /// Forgets the claim of a peer that went away.
    pub fn forget(&mut self, peer: &[u8]) {
        self.claims.remove(peer);
    }
}
