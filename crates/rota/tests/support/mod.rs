//! Shared test helpers: the store and cluster conformance suites, and the
//! Consul fake. Each test binary uses only some of them.

#[allow(dead_code)]
pub mod cluster_conformance;
#[allow(dead_code)]
pub mod conformance;
#[allow(dead_code)]
pub mod consul_fake;
#[allow(dead_code)]
pub mod tcp_proxy;
