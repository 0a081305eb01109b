//! The anygate gateway: config, snapshot, the Pingora proxy and the command-line tools.

pub mod acme;
pub mod admin;
pub mod alloc;
pub mod config;
pub mod demo;
pub mod drain;
pub mod echo;
pub mod front;
pub mod health;
pub mod logging;
pub mod monitor;
pub mod proxy;
pub mod reload;
pub mod reply;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod streams;
pub mod target;
pub mod tls;
pub mod token;
pub mod wechat_stub;

/// The vendored Pingora's task pipe (`vendor/pingora-proxy/src/task_pipe.rs`), compiled here as
/// well so that its unit tests run with the workspace's: the vendored crates' own do not.
#[cfg(test)]
#[path = "../../vendor/pingora-proxy/src/task_pipe.rs"]
mod vendored_task_pipe;
/// Pingora's `TASK_BUFFER_SIZE`, which the task pipe above reads from its parent module.
#[cfg(test)]
const TASK_BUFFER_SIZE: usize = 4;
/// And its coarse clock.
#[cfg(test)]
#[path = "../../vendor/pingora-timeout/src/coarse.rs"]
mod vendored_timeout_coarse;
/// The same for `vendor/pingora-timeout`'s deadline slots (the fast timeouts' timers).
#[cfg(test)]
#[path = "../../vendor/pingora-timeout/src/slots.rs"]
mod vendored_timeout_slots;
