//! [`HandlerRegistry`]: handlers by name, to bind tasks read back from a store.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::task::TaskHandler;

/// Maps handler names to handlers.
///
/// Handlers are not stored (the seed's `json:"-"`): a task read back from a
/// store names its handler, and the scheduler binds it from this registry.
/// Every handler of a task added in code is registered too.
///
/// ```
/// use rota::{FuncHandler, HandlerRegistry};
///
/// let registry = HandlerRegistry::new();
/// registry.register(FuncHandler::new("backup", |_ctx| async { Ok(()) }));
/// assert!(registry.get("backup").is_some());
/// assert!(registry.get("nope").is_none());
/// ```
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    // A std RwLock: looked up on load and registration, never across an await.
    map: Arc<RwLock<HashMap<String, Arc<dyn TaskHandler>>>>,
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` under its name, replacing one of the same name.
    pub fn register(&self, handler: Arc<dyn TaskHandler>) {
        self.map.write().unwrap().insert(handler.name().to_string(), handler);
    }

    /// Registers `handler` unless one of that name is there.
    pub(crate) fn register_if_absent(&self, handler: &Arc<dyn TaskHandler>) {
        let mut map = self.map.write().unwrap();
        if !map.contains_key(handler.name()) {
            map.insert(handler.name().to_string(), handler.clone());
        }
    }

    /// The handler registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn TaskHandler>> {
        self.map.read().unwrap().get(name).cloned()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.read().unwrap().keys().cloned().collect();
        v.sort();
        v
    }
}

impl fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerRegistry").field("handlers", &self.names()).finish()
    }
}
