//! The progress bar of a long retrieval: drawn on stderr only when stderr is a terminal, so
//! scripts and pipes see nothing extra.

use crate::error::FetchError;
use crate::transfer::Sink;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;

/// Files smaller than this are over too soon for a bar to help.
pub(crate) const MIN_SIZE: u64 = 4 << 20;

/// A bar for the retrieval of `name` (`size` bytes), or `None` when stderr is not a terminal
/// or the file is small.
pub(crate) fn bar(name: &str, size: u64) -> Option<ProgressBar> {
    if size < MIN_SIZE || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(size);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(schema::names::escape(name));
    Some(bar)
}

/// A sink that moves a bar forward as the content goes through it.
pub(crate) struct WithBar<'a> {
    pub(crate) inner: &'a mut dyn Sink,
    pub(crate) bar: &'a ProgressBar,
}

impl Sink for WithBar<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.inner.write_all(bytes)?;
        self.bar.inc(bytes.len() as u64);
        Ok(())
    }
}

/// Moves the content of `started` into `sink`, with a bar when one is shown (cleared at the end,
/// success or not).
pub(crate) fn receive(
    started: crate::transfer::Started,
    client: &mut crate::client::Client,
    sink: &mut dyn Sink,
) -> Result<(), FetchError> {
    match bar(&started.entry.name, started.entry.size) {
        None => started.receive(client, sink),
        Some(bar) => {
            let result = started.receive(
                client,
                &mut WithBar {
                    inner: sink,
                    bar: &bar,
                },
            );
            bar.finish_and_clear();
            result
        }
    }
}
