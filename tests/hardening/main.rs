//! Hardening for the open internet (issue 11) through the real gateway: upstreams that send
//! `100 Continue` and then nothing, absolute-form and asterisk-form request targets, `TRACE`,
//! bounded error logging during an outage, and graceful upgrades under load.

#[path = "../common/mod.rs"]
mod common;

mod continue_100;
mod hop_by_hop;
mod keepalive;
mod log_flood;
mod raw_upstream;
mod targets;
mod upgrade;
mod upstream_fields;
mod upstream_pool;
mod websocket;

pub const HOST: &str = "test-env.service.tcloudbase.com";
