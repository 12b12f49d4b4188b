//! The store conformance suite, run against every store. Backends that need a
//! server use the real one (see `scripts/services.sh`).

mod support;

use std::sync::Arc;

use rota::{MemoryStore, Retention, Store};

/// Retention used by every store under test: 10 records per task.
pub fn test_retention() -> Retention {
    Retention { max_per_task: 10, ..Retention::default() }
}

store_conformance!(memory, || async {
    Arc::new(MemoryStore::with_retention(test_retention())) as Arc<dyn Store>
});
