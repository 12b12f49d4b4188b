//! Shared test helpers: the store and cluster conformance suites, the Consul
//! fake, the connection-drop fault test, a TCP proxy and private servers. Each test binary uses only some of
//! them.

#[allow(dead_code)]
pub mod cluster_conformance;
#[allow(dead_code)]
pub mod conformance;
#[allow(dead_code)]
pub mod consul_fake;
#[allow(dead_code)]
pub mod faults;
// `servers.rs` allows dead code itself (rota-cli includes it by path).
pub mod servers;
#[allow(dead_code)]
pub mod tcp_proxy;
