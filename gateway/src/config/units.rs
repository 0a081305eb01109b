//! Durations and sizes as written in the config: one parser, shared with the plugins.

pub use anygate_plugins::units::{parse_duration, parse_size, Dur, Size};
