//! What `dfs status` asks the daemons: the reports a storage node and a broker give about
//! themselves (carried by the `node_status` and `broker_status` messages), and the disk-space
//! probe both use.

use crate::route::Class;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The version of the dfs software, as `dfs --version` prints it.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Space on the file system holding a folder, in bytes (`disk::space` reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskSpace {
    /// Bytes an unprivileged process may still write.
    pub free: u64,
    /// Size of the file system.
    pub total: u64,
}

/// Files and bytes of one storage class on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassUsage {
    pub class: Class,
    pub files: u64,
    pub bytes: u64,
}

/// A storage node's account of itself (`node_status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Software version of the node.
    pub version: String,
    /// Seconds since the node started serving.
    pub uptime: u64,
    /// The storage root.
    pub root: String,
    /// Where the files are when not under the root: the `--backend` URL (`s3://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Stored files (under the class folders) and their bytes, counted now.
    pub files: u64,
    pub bytes: u64,
    /// The same per class, in `mp3`, `txt`, `pdf`, `others` order.
    #[serde(default)]
    pub classes: Vec<ClassUsage>,
    /// Space on the file system of the root.
    pub disk: DiskSpace,
    /// Uploads and reads open on the node when it was asked.
    pub uploads: u64,
    pub reads: u64,
    /// Contents kept for replaced and deleted versions, and the bytes only the history holds
    /// (those not shared with a current file): what the history costs on disk.
    #[serde(default)]
    pub history_objects: u64,
    #[serde(default)]
    pub history_bytes: u64,
    /// The node's routing table, extension → class (`dfs storage --routes` on the defaults),
    /// so that a broker routing otherwise can say so; empty from a node that predates it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, Class>,
}

/// A broker's account of itself (`broker_status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerReport {
    /// Software version of the broker.
    pub version: String,
    /// Seconds since the broker started serving.
    pub uptime: u64,
    /// The data folder (index and export).
    pub data: String,
    /// Files the index lists and the bytes they hold, as of the last rewrite of `index.txt`
    /// (at most about a second behind the index under load).
    pub index_entries: u64,
    pub index_bytes: u64,
    /// Space on the file system of the data folder.
    pub disk: DiskSpace,
    /// Requests forwarded to the node and not yet answered.
    pub in_flight: u64,
    /// Whether the index is being rebuilt from the node (changes are refused meanwhile).
    pub rebuilding: bool,
    /// The node's endpoint as the broker reaches it (its serve port).
    pub storage: String,
    /// Every storage node the broker uses (`--storage` given more than once), with whether it
    /// took the last message the broker sent it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_nodes: Vec<NodeLink>,
    /// Mass-change alarms in effect, one line each (a volume mostly deleted or rewritten at
    /// once: someone should look).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
    /// Activity since the broker started, for plots of what moved: new or changed contents
    /// stored and their bytes, and uploads answered `done` with the sum of their latencies
    /// (from the `put` arriving to its `done` going out, in µs).
    #[serde(default)]
    pub activity: Activity,
}

/// What a broker has done since it started (counters only grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Activity {
    pub stored_files: u64,
    pub stored_bytes: u64,
    pub uploads: u64,
    pub upload_micros: u64,
}

/// One storage node as the broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLink {
    /// Its serve port's endpoint.
    pub address: String,
    pub reachable: bool,
}

/// What a watcher writes to its `--status-file` and `dfs status` reads back: one JSON object,
/// rewritten atomically at least every `heartbeat_secs`. Fields a reader does not find take
/// their defaults, so a file of an older watcher still reads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WatcherReport {
    /// The watcher's process id.
    pub pid: u32,
    /// The folder it syncs.
    pub source: String,
    /// The broker's ingest endpoint.
    pub broker: String,
    /// False in the last write of a watcher that stopped (true when absent).
    #[serde(default = "running_by_default")]
    pub running: bool,
    /// Whether the broker answers.
    pub connected: bool,
    /// The condition in effect now that keeps files from syncing, if any.
    pub error: Option<String>,
    /// Names waiting for a look, and the first few of them.
    pub pending: u64,
    pub pending_names: Vec<String>,
    /// Changes sent and not yet acknowledged, and the first few names.
    pub in_flight: u64,
    pub in_flight_names: Vec<String>,
    /// Names the broker refused for good (not retried until the file changes).
    pub refused: u64,
    /// Uploads of new content acknowledged since start, and their bytes.
    pub files_synced: u64,
    pub bytes_sent: u64,
    /// When the last change was acknowledged (RFC 3339).
    pub last_sync: Option<String>,
    /// The last error and when (RFC 3339).
    pub last_error: Option<TimedMessage>,
    /// The longest gap between two writes.
    pub heartbeat_secs: u64,
    /// When the file was written (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

fn running_by_default() -> bool {
    true
}

/// A message and when it was said (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TimedMessage {
    pub time: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::Message;

    fn node() -> NodeReport {
        NodeReport {
            history_objects: 2,
            history_bytes: 1 << 20,
            version: SOFTWARE_VERSION.into(),
            uptime: 7,
            root: "/srv/node".into(),
            backend: Some("s3://dfs/node".into()),
            files: 3,
            bytes: u64::MAX,
            classes: vec![ClassUsage {
                class: Class::Mp3,
                files: 3,
                bytes: u64::MAX,
            }],
            disk: DiskSpace { free: 1, total: 2 },
            uploads: 0,
            reads: 1,
            routes: crate::Routes::default().table(),
        }
    }

    #[test]
    fn status_messages_round_trip() {
        let broker = BrokerReport {
            version: SOFTWARE_VERSION.into(),
            uptime: 1,
            data: "/srv/server".into(),
            index_entries: 3,
            index_bytes: 10,
            disk: DiskSpace::default(),
            in_flight: 2,
            rebuilding: false,
            storage: "tcp://127.0.0.1:9004".into(),
            storage_nodes: vec![NodeLink {
                address: "tcp://b:9004".into(),
                reachable: false,
            }],
            alarms: vec!["mass change in volume photos: 150 names".into()],
            activity: Activity {
                stored_files: 4,
                stored_bytes: 40,
                uploads: 5,
                upload_micros: 1_500,
            },
        };
        for m in [
            Message::Status {
                id: 1,
                wait_ms: None,
            },
            Message::Status {
                id: 2,
                wait_ms: Some(100),
            },
            Message::NodeStatus {
                id: 3,
                node: Box::new(node()),
            },
            Message::BrokerStatus {
                id: 4,
                broker: Box::new(broker.clone()),
                node: Some(Box::new(node())),
                node_error: None,
            },
            Message::BrokerStatus {
                id: 5,
                broker: Box::new(broker),
                node: None,
                node_error: Some("storage node tcp://h:9004 is unreachable".into()),
            },
        ] {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn a_watcher_report_reads_back_and_an_older_file_takes_defaults() {
        let r = WatcherReport {
            pid: 7,
            source: "/src".into(),
            running: true,
            pending_names: vec!["a.txt".into()],
            ..WatcherReport::default()
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("updated_at"), "{text}");
        assert_eq!(serde_json::from_str::<WatcherReport>(&text).unwrap(), r);
        let old: WatcherReport = serde_json::from_str(r#"{"pid": 3, "refused": 2}"#).unwrap();
        assert!(old.running && old.refused == 2 && old.pending_names.is_empty());
    }
}
