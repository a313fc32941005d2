//! A Garage cluster for the tests of the S3 backend (docs/CONTRACT.md §9): three `garage server`
//! processes on loopback with free ports, one zone each, replication factor 3, consistent
//! mode, data and metadata fsynced, sqlite metadata; a bucket and a key with read and write on
//! it, made with the `garage` CLI. Garage is found in `DFS_GARAGE_BIN` or on `PATH`; where it is
//! missing, [`Garage::start`] says so and the test is skipped.
//!
//! Garage runs as its own processes, never linked into dfs (it is AGPL).

use crate::harness::wait_until;
use crate::ports::free_port;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the cluster may take to form, or a restarted node to rejoin.
const FORM: Duration = Duration::from_secs(60);

/// The bucket the tests use.
pub const BUCKET: &str = "dfs";

/// One Garage node: its configuration and, while it runs, its process.
struct Node {
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    child: Option<Child>,
}

/// A running three-node Garage cluster with a bucket and a key; every node is stopped when it
/// is dropped.
pub struct Garage {
    bin: PathBuf,
    nodes: Vec<Node>,
    /// The access key id and secret with read and write on [`BUCKET`].
    pub key_id: String,
    pub secret: String,
}

/// The `garage` binary: `DFS_GARAGE_BIN`, or `garage` on `PATH`.
fn garage_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DFS_GARAGE_BIN") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("garage"))
            .find(|p| p.is_file())
    })
}

impl Garage {
    /// Starts the cluster below `dir`, or says why it cannot (no `garage` binary) and returns
    /// None so that the calling test is skipped.
    pub fn start(dir: &Path) -> Option<Garage> {
        let Some(bin) = garage_bin() else {
            eprintln!(
                "skipped: no garage binary (set DFS_GARAGE_BIN or put garage on PATH; \
                 `cargo install --locked garage@2.5.0`)"
            );
            return None;
        };
        let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let d = dir.join(format!("garage{i}"));
            fs::create_dir_all(&d).unwrap();
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let config = d.join("garage.toml");
            fs::write(
                &config,
                format!(
                    "metadata_dir = \"{meta}\"\n\
                     data_dir = \"{data}\"\n\
                     db_engine = \"sqlite\"\n\
                     replication_factor = 3\n\
                     consistency_mode = \"consistent\"\n\
                     metadata_fsync = true\n\
                     data_fsync = true\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret}\"\n\
                     [s3_api]\n\
                     s3_region = \"garage\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\
                     [admin]\n\
                     api_bind_addr = \"127.0.0.1:{admin}\"\n",
                    meta = d.join("meta").display(),
                    data = d.join("data").display(),
                ),
            )
            .unwrap();
            nodes.push(Node {
                config,
                log: d.join("garage.log"),
                s3_port: s3,
                child: None,
            });
        }
        let mut g = Garage {
            bin,
            nodes,
            key_id: String::new(),
            secret: String::new(),
        };
        for i in 0..3 {
            g.start_node(i);
        }
        // Each node's id, then every node connected to the first.
        let mut ids = Vec::new();
        for i in 0..3 {
            let mut id = String::new();
            wait_until(&format!("garage node {i} answers"), FORM, || {
                match g.try_cli(i, &["node", "id", "-q"]) {
                    Ok(out) => {
                        id = out.trim().to_string();
                        !id.is_empty()
                    }
                    Err(_) => false,
                }
            });
            ids.push(id);
        }
        for id in &ids[1..] {
            g.cli(0, &["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            let zone = format!("z{i}");
            g.cli(0, &["layout", "assign", "-z", &zone, "-c", "1G", short]);
        }
        g.cli(0, &["layout", "apply", "--version", "1"]);
        g.cli(0, &["bucket", "create", BUCKET]);
        let key = g.cli(0, &["key", "create", "dfs-test"]);
        let field = |label: &str| {
            key.lines()
                .find(|l| l.trim_start().starts_with(label))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {label:?} in `garage key create`:\n{key}"))
        };
        g.key_id = field("Key ID");
        g.secret = field("Secret key");
        g.cli(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "dfs-test",
            ],
        );
        // The layout and the key reach every node in a moment: until then a write may miss
        // its quorum. Ready once each node takes a write and reads it back.
        for i in 0..3 {
            let b = g.client(i, &format!("s3://{BUCKET}"));
            wait_until(&format!("garage node {i} serves the bucket"), FORM, || {
                b.put(".probe", b"probe".to_vec(), &[]).is_ok()
                    && b.get(".probe").ok().flatten().is_some()
            });
            b.delete(".probe").unwrap();
        }
        Some(g)
    }

    /// A client of the bucket `url` (`s3://BUCKET[/PREFIX]`) through node `i`.
    pub fn client(&self, i: usize, url: &str) -> storage::bucket::Bucket {
        let access = storage::bucket::Access {
            endpoint: Some(self.endpoint(i)),
            region: Some("garage".into()),
            key_id: Some(self.key_id.clone()),
            secret: Some(self.secret.clone()),
        };
        storage::bucket::Bucket::open(url, &access).unwrap()
    }

    /// The S3 endpoint of node `i` (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// Starts `garage server` for node `i`.
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["-c".as_ref(), node.config.as_os_str(), "server".as_ref()])
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        node.child = Some(child);
    }

    /// Kills node `i` with SIGKILL (a machine lost).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `garage -c CONFIG(i) ARGS`, giving its output or why it failed.
    fn try_cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// [`Garage::try_cli`], retried for a while (the cluster may still be forming).
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let deadline = std::time::Instant::now() + FORM;
        loop {
            match self.try_cli(i, args) {
                Ok(out) => return out,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("garage {} failed for {FORM:?}: {e}", args.join(" "))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Every node's log, for a failing test.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| fs::read_to_string(&n.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- garage logs -----\n{}", self.logs());
        }
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

/// A random byte from the system's generator (for the cluster's RPC secret).
fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b[0]
}
