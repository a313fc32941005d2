//! The watcher daemon: start-up, the socket loop, and the state it drives.
//!
//! [`Watcher`] is the state: its parts (the table of names, the changes in flight, the link
//! and store outages, the scans) and the decisions on them, which leave what must go to the
//! broker in its [`Outbox`]. [`SocketLoop`] owns the sockets: it waits on the broker socket,
//! the inotify wake socket and the connection monitor, hands what came to the state, and sends
//! what the state left in its outbox after each step.
//!
//! The decisions are in the files of this folder, one per kind of input: `intents` (inotify
//! events), `listing` (the broker's listing), `reconcile` (a due name: look and act),
//! `replies` (the broker's answers), `follow` (files being written), `scan` (walks), `store`
//! (store outages), `link` (connection events), `status` (the status file's report). The
//! parts they drive are the crate's other modules, and none of those knows `Watcher`.

mod follow;
mod intents;
mod link;
mod listing;
mod reconcile;
mod replies;
mod scan;
mod status;
mod store;

use crate::claim::Claim;
use crate::events::Feed;
use crate::flights::Flights;
use crate::ignore::Ignores;
use crate::link::{BrokerLink, SILENCE_LIMIT};
use crate::outbox::{Out, Outbox};
use crate::reporting::Reporting;
use crate::state::Names;
use crate::transfer::Change;
use crate::Args;
use anyhow::Context as _;
use daemon::{host_port, Shutdown, POLL_MS};
use schema::codec;
use schema::Message;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a ping sent because the broker fell silent may stay unanswered.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// A change the broker says nothing about for this long (while answering pings) is given up
/// and tried again.
const GIVE_UP: Duration = Duration::from_secs(60);
/// Delay before a refused listing is asked for again.
pub(crate) const LIST_RETRY: Duration = Duration::from_secs(1);
/// Most messages read off the socket in one turn of the loop.
const RECV_BATCH: usize = 1024;
/// Most names reconciled in one turn of the loop.
const RECONCILE_BATCH: usize = 1024;

/// Where the watcher is in its start-up.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Fetching the broker's listing: the page after `after` is asked for (`pending`: the id of
    /// the `list` in flight and when it went out).
    Listing {
        after: Option<String>,
        pending: Option<(u64, Instant)>,
        retry_at: Instant,
        warned: bool,
        /// A periodic refresh (not the start-up listing): the stored names the listing lacks
        /// (removed by `dfs fsck --repair`, say) are sent again. The table's sweep marks the
        /// names listed.
        refresh: bool,
    },
    /// Syncing.
    Running,
}

/// Settings that do not change while running.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub keep_deleted: bool,
    pub debounce: Duration,
    pub rescan_period: Duration,
    pub max_in_flight: usize,
}

/// The socket thread's whole state.
pub(crate) struct Watcher {
    pub root: PathBuf,
    pub settings: Settings,
    pub ignores: Ignores,
    pub table: Names,
    /// The changes sent and not answered yet.
    pub flights: Flights,
    /// What is to be sent to the broker (the socket loop sends it after each step).
    pub outbox: Outbox,
    pub link: BrokerLink,
    pub phase: Phase,
    next_id: u64,
    /// When the folder is walked next, and what else is to be looked at again.
    pub scans: crate::scan::Scans,
    /// Files being written, and those followed while they grow.
    pub follow: crate::follow::Follow,
    /// The store behind the broker refuses changes (its node is down, full or rebuilding).
    pub store_outage: Option<crate::store::StoreOutage>,
    /// The status file, metrics and warnings.
    pub report: Reporting,
    /// The volume synced into, and its claim on the broker connection.
    pub claim: Claim,
}

impl Watcher {
    /// A watcher of `root` (canonical) that syncs into the volume of `claim` through the broker
    /// at `endpoint`, before its first listing, with fresh metrics and no status file.
    pub fn new(
        root: PathBuf,
        settings: Settings,
        ignores: Ignores,
        claim: Claim,
        endpoint: &str,
        now: Instant,
    ) -> Watcher {
        let max_in_flight = settings.max_in_flight;
        Watcher {
            root,
            settings,
            ignores,
            table: Names::new(),
            flights: Flights::new(max_in_flight),
            outbox: Outbox::default(),
            link: BrokerLink::new(endpoint, now),
            phase: Phase::Listing {
                after: None,
                pending: None,
                retry_at: now,
                warned: false,
                refresh: false,
            },
            next_id: 0,
            scans: crate::scan::Scans::new(now),
            follow: crate::follow::Follow::default(),
            store_outage: None,
            report: Reporting::new(),
            claim,
        }
    }
}

/// Runs the watcher until `stop` is triggered. Fails at start if the source folder is missing
/// or not a folder, the broker address is malformed, or the folder cannot be watched.
pub fn run(args: Args, stop: Shutdown) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&args.source)
        .with_context(|| format!("cannot use the source folder {}", args.source.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("the source {} is not a folder", args.source.display());
    }
    let root = args
        .source
        .canonicalize()
        .with_context(|| format!("cannot resolve the source folder {}", args.source.display()))?;
    let (host, port) = host_port(&args.broker, schema::ports::INGEST_PORT)
        .map_err(|e| anyhow::anyhow!(e))
        .context("bad --broker")?;
    let endpoint = net::socket::endpoint(&host, port);
    let ignores = Ignores::new(&args.ignore, !args.no_default_ignores).context("bad --ignore")?;

    let auth = net::security::client_auth(net::security::ClientOptions {
        peer: "the broker",
        host: &host,
        secret_key: args.secret_key.as_deref(),
        server_key: args.broker_key.as_deref(),
        server_option: "--broker-key",
        insecure: Some(args.insecure),
    })?;
    let ctx = net::socket::context();
    let sock = net::socket::dealer_with(&ctx, &endpoint, &auth)?;
    let monitor = net::inproc::Monitor::attach(&ctx, &sock, crate::link::CONNECTION_EVENTS)
        .context("cannot monitor the broker socket")?;
    let feed = Feed::start(&ctx, &root)?;
    crate::local::ignore_lease_breaks();
    let settings = Settings {
        keep_deleted: args.keep_deleted,
        debounce: args.debounce(),
        rescan_period: args.rescan_period(),
        max_in_flight: args.max_in_flight as usize,
    };
    let volume = schema::names::Volume::named(args.volume.as_deref().unwrap_or(""))
        .map_err(|e| anyhow::anyhow!("bad --volume: {e}"))?;
    let owner = format!("{}:{}", host_name(), root.display());
    let claim = Claim::new(volume, owner, args.take_over);
    let mut w = Watcher::new(root, settings, ignores, claim, &endpoint, Instant::now());
    w.report.status_file = args
        .status_file
        .as_deref()
        .map(crate::status_file::StatusFile::new);
    let ready = serde_json::json!({
        "role": "watch",
        "source": w.root.display().to_string(),
        "volume": w.claim.volume().name(),
    });
    let metrics = args
        .metrics
        .as_deref()
        .map(|a| (a, w.report.metrics.registry()));
    let _metrics = daemon::announce_ready(ready, args.ready_file.as_deref(), metrics)?;
    tracing::info!(
        "watching {} for broker {endpoint} ({})",
        w.root.display(),
        w.claim.volume()
    );
    let mut socket_loop = SocketLoop {
        w,
        sock,
        monitor,
        feed,
    };
    socket_loop.serve(&stop)
}

/// The one thread that owns the watcher's sockets: the broker DEALER, the wake socket of the
/// inotify feed and the broker socket's connection monitor.
struct SocketLoop {
    w: Watcher,
    sock: zmq::Socket,
    monitor: net::inproc::Monitor,
    feed: Feed,
}

impl SocketLoop {
    /// The poll loop: wait for the broker, an event or a timer; hand what came to the state;
    /// send what it asked for; repeat.
    fn serve(&mut self, stop: &Shutdown) -> anyhow::Result<()> {
        loop {
            if stop.is_triggered() {
                self.w.shut_down();
                self.flush(Instant::now());
                self.w.write_final_status();
                return Ok(());
            }
            let timeout = self.w.poll_timeout(Instant::now());
            let mut items = [
                self.sock.as_poll_item(zmq::POLLIN),
                self.feed.wake_socket().as_poll_item(zmq::POLLIN),
                self.monitor.socket().as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(e).context("cannot poll the broker socket"),
            }
            let drained = self.feed.drain();
            let now = Instant::now();
            if drained.overflowed {
                tracing::warn!(
                    "event queue overflowed; rescanning {}",
                    self.w.root.display()
                );
                self.w.scans.full_wanted = true;
            }
            for event in drained.events {
                self.w.on_event(event, now);
            }
            if self.w.scans.rewatch_wanted {
                self.w.rewatch(&mut self.feed);
            }
            while let Some(event) = self.monitor.next() {
                self.w.on_connection_event(event, Instant::now());
            }
            self.flush(Instant::now());
            self.receive(Instant::now());
            self.w.tick(Instant::now());
            self.flush(Instant::now());
            self.w.write_status(Instant::now());
            self.w.update_gauges();
            if let Some(why) = self.w.claim.refusal() {
                let why = why.to_string();
                self.w.note_error(why.clone());
                self.w.write_final_status();
                anyhow::bail!("{why}");
            }
        }
    }

    /// Sends what the state left in its outbox, in order. A required message that cannot be
    /// sent means the broker is unreachable: the state starts an outage (its changes in flight
    /// are due again), and the required messages after it are dropped with them.
    fn flush(&mut self, now: Instant) {
        let mut broken = false;
        for out in self.w.outbox.take() {
            match out {
                Out::Reconnect => {
                    if let Err(e) = net::socket::reconnect(&self.sock, self.w.link.endpoint()) {
                        tracing::warn!("{e}");
                    }
                }
                Out::Send { required, .. } if broken && required => {}
                Out::Send {
                    msg,
                    data,
                    required,
                } => {
                    let sent = codec::send(&self.sock, None, &msg, data.map(zmq::Message::from));
                    match sent {
                        Ok(()) => {}
                        Err(e) if required => {
                            broken = true;
                            self.w.send_failed(&msg, e, now);
                        }
                        Err(e) => tracing::debug!("cannot send {} to the broker: {e}", msg.kind()),
                    }
                }
            }
        }
    }

    /// Reads every message waiting on the socket, handing each to the state and sending what
    /// it answered before the next.
    fn receive(&mut self, now: Instant) {
        for _ in 0..RECV_BATCH {
            let inbound = match codec::recv(&self.sock, false, zmq::DONTWAIT) {
                Ok(i) => i,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!("cannot read from broker {}: {e}", self.w.link.endpoint());
                    return;
                }
            };
            match inbound.msg {
                Ok(msg) => self.w.on_broker_message(msg, now),
                Err(rejected) => {
                    tracing::warn!(
                        "refused a message from broker {}: {}",
                        self.w.link.endpoint(),
                        rejected.error
                    );
                    // Best effort: an unreachable broker is noticed by the next real send.
                    self.w.outbox.try_send(rejected.reply());
                }
            }
            self.flush(now);
        }
    }
}

impl Watcher {
    /// Sets the gauges from the state now.
    pub fn update_gauges(&self) {
        let held = self.store_outage.as_ref().map_or(0, |o| o.held_count());
        let m = &self.report.metrics;
        m.pending.set((self.table.due_count() + held) as i64);
        m.in_flight.set(self.flights.len() as i64);
        m.connected.set(i64::from(self.link.is_up()));
    }

    /// Watches the folders whose creation was among lost events; the rescan that follows finds
    /// the files made in them meanwhile.
    pub fn rewatch(&mut self, feed: &mut Feed) {
        self.scans.rewatch_wanted = false;
        if let Err(e) = feed.rewatch() {
            let message = format!("{e:#}");
            if self.report.first_warning(message.clone()) {
                tracing::error!("{message}; changes there are found by rescans only");
            }
        }
    }

    /// How long the next poll may wait (ms): until the next timer, at most `POLL_MS`.
    pub fn poll_timeout(&self, now: Instant) -> i64 {
        let mut wake: Option<Instant> = self.link.next_wake();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        if self.can_reconcile() && self.flights.has_room() {
            consider(self.table.next_due());
            consider(self.scans.new_folders.iter().map(|(at, _)| *at).min());
            consider(self.store_outage.as_ref().and_then(|o| o.next_probe()));
        }
        if self.can_reconcile() {
            consider(self.next_follow_wake(now));
        }
        if let Phase::Listing {
            pending: None,
            retry_at,
            ..
        } = &self.phase
        {
            if self.link.is_up() {
                consider(Some(*retry_at));
            }
        }
        match wake {
            None => POLL_MS,
            Some(t) => {
                let wait = t.saturating_duration_since(now);
                // Round up so a timer less than 1 ms away does not spin the loop.
                let ms = wait.as_micros().div_ceil(1000);
                i64::try_from(ms).unwrap_or(POLL_MS).min(POLL_MS)
            }
        }
    }

    /// Scans again the new folders whose second look is due.
    pub(crate) fn rescan_new_folders(&mut self, now: Instant) {
        if self.scans.new_folders.is_empty() {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.scans.new_folders)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.scans.new_folders = later;
        for (_, dir) in due {
            if dir.is_dir() {
                self.scan_into(&dir, now + self.settings.debounce, false);
            }
        }
    }

    /// Whether due names may be reconciled now (start-up done, broker up, volume claimed).
    pub fn can_reconcile(&self) -> bool {
        matches!(self.phase, Phase::Running) && self.link.is_up() && self.claim.is_held()
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Queues a message for the broker (see [`Outbox::send`]), its names turned into the
    /// volume's stored names.
    pub fn send(&mut self, msg: Message, data: Option<Vec<u8>>) {
        let msg = self.claim.outgoing(msg);
        self.outbox.send(msg, data);
    }

    /// Sending `msg` failed with `e`: the broker is unreachable, the outage starts (every change
    /// in flight is due again).
    pub fn send_failed(&mut self, msg: &Message, e: zmq::Error, now: Instant) {
        let why = match e {
            zmq::Error::EAGAIN => "not connected".to_string(),
            e => e.to_string(),
        };
        tracing::debug!("cannot send {} to the broker: {why}", msg.kind());
        self.outage(now, &why);
    }

    /// The broker is unreachable: log it once, put every change in flight back as due.
    pub fn outage(&mut self, now: Instant, why: &str) {
        if self.link.is_up() {
            self.note_error(format!(
                "broker {} unreachable ({why})",
                self.link.endpoint()
            ));
            daemon::metrics::count_error(&self.report.metrics.errors, "unreachable");
        }
        self.link.down(now, why);
        self.claim.disconnected();
        for flight in self.flights.take_all() {
            if let Change::Rename { from, to, .. } = &flight.change {
                self.table.note_rename(from, to);
            }
            for name in flight.change.names() {
                self.table.finish(name);
                self.table.mark(name, now);
            }
        }
        if let Phase::Listing { pending, .. } = &mut self.phase {
            *pending = None;
        }
    }

    /// A well-formed message came from the broker: it is up, and the message is handled.
    pub fn on_broker_message(&mut self, msg: Message, now: Instant) {
        self.link.answered(now);
        self.on_message(msg, now);
    }

    /// Timers: pings while down, silence detection, the listing, rescans, due names.
    pub fn tick(&mut self, now: Instant) {
        if self.link.ping_due(now) {
            if self.link.take_reconnect() {
                self.outbox.reconnect();
            }
            let id = self.next_id();
            // A failed ping only schedules the next one.
            self.outbox.try_send(Message::Ping { id });
            self.link.pinged(now);
        }
        if !self.link.is_up() {
            return;
        }
        self.check_silence(now);
        if !self.link.is_up() {
            return;
        }
        if self.claim.is_due(now) {
            let id = self.next_id();
            if let Some(claim) = self.claim.request(id, now) {
                self.send(claim, None);
            }
        }
        if self.claim.is_held() {
            self.ask_listing(now);
        }
        if matches!(self.phase, Phase::Running) && self.claim.is_held() {
            if self.scans.full_wanted {
                self.full_scan(now);
            } else if now >= self.scans.next_full {
                self.refresh_listing(now);
            }
            self.rescan_new_folders(now);
            self.store_probe(now);
            self.follow(now);
            self.pump_due(now);
        }
    }

    /// While changes wait for an answer and the broker has said nothing for a while, ping it;
    /// no answer to that ping means the broker is down. A change silent for very long is
    /// given up and tried again.
    fn check_silence(&mut self, now: Instant) {
        let listing_waits = matches!(
            &self.phase,
            Phase::Listing { pending: Some((_, sent)), .. } if now.duration_since(*sent) > SILENCE_LIMIT
        );
        let waiting = listing_waits || self.flights.any_silent(now, SILENCE_LIMIT);
        if waiting && self.link.silent_for(now) > SILENCE_LIMIT {
            match self.link.probe() {
                None => {
                    let id = self.next_id();
                    self.send(Message::Ping { id }, None);
                    self.link.probed(now);
                }
                Some(sent) if now.duration_since(sent) > PROBE_WAIT => {
                    self.outage(now, "no answer for 10 s");
                }
                Some(_) => {}
            }
        }
        for id in self.flights.silent(now, GIVE_UP) {
            if let Some(flight) = self.flights.take(id) {
                tracing::warn!(
                    "no answer about {} for {} s; trying again",
                    flight.change.names().join(" -> "),
                    GIVE_UP.as_secs()
                );
                if matches!(&flight.change, Change::Put(u) if u.is_chunked()) {
                    self.send(Message::Abort { id }, None);
                }
                for name in flight.change.names() {
                    self.table.retry_later(name, now);
                }
            }
        }
    }

    /// Reconciles due names while there is room for more changes in flight.
    fn pump_due(&mut self, now: Instant) {
        for _ in 0..RECONCILE_BATCH {
            if !self.can_reconcile() || !self.flights.has_room() {
                return;
            }
            let Some(name) = self.table.pop_due(now) else {
                return;
            };
            self.reconcile(&name, now);
        }
    }

    /// On stop: abandon chunked uploads in flight (the broker drops what it received).
    pub fn shut_down(&mut self) {
        let ids = self.flights.unfinished_chunked();
        if self.link.is_up() && !self.flights.is_empty() {
            for id in ids {
                self.outbox.try_send(Message::Abort { id });
            }
        }
        tracing::info!("watcher stopped");
    }
}

/// This machine's host name, for the owner of a volume claimed without keys.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
