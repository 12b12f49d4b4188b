//! Shared test helpers: the store conformance suite.

pub mod conformance;
#[allow(dead_code)]
pub mod consul_fake;
