//! Tests of the watcher: its decisions on the state alone, with no socket (`decisions`), and
//! the whole daemon against a hand-driven broker (`fake_broker`).

mod decisions;
mod fake_broker;
