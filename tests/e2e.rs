//! End-to-end tests: real `starling` processes on loopback ports, real WebSocket clients.
//!
//! Every test starts its own relay with its own data directory, so tests run in parallel.
//! `store_conformance` runs the shared store suite against every backend directly.

#[macro_use]
mod support;

mod abuse;
mod architecture;
mod auth;
mod bad_input;
mod cancellation;
mod cluster;
mod compression;
mod conformance;
mod connections;
mod deletion;
mod deployment;
mod expiration;
mod information;
mod kinds;
mod limits;
mod management;
mod negentropy;
mod observability;
mod partitions;
mod plugins;
mod protocol;
mod proxies;
mod rolling;
mod sentinel;
mod shutdown;
mod storage;
mod store_conformance;
mod sync;
mod telemetry;
mod tls;
