//! Shared test helpers: the store conformance suite.

pub mod conformance;
