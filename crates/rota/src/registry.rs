//! [`HandlerRegistry`]: handlers by name, to bind tasks read back from a store.

use std::fmt;
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;

use crate::fasthash::hash_str as hash;
use crate::task::TaskHandler;

/// Maps handler names to handlers.
///
/// Handlers are not stored (the seed's `json:"-"`): a task read back from a
/// store names its handler, and the scheduler binds it from this registry.
/// Every handler of a task added in code is registered too.
///
/// A handler is found by [`TaskHandler::name`], which must not change while
/// it is registered. The registry keeps the handlers only (16 bytes each),
/// and reads their names from them.
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
    map: Arc<RwLock<HashTable<Arc<dyn TaskHandler>>>>,
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` under its name, replacing one of the same name.
    pub fn register(&self, handler: Arc<dyn TaskHandler>) {
        let mut map = self.map.write().unwrap();
        let h = hash(handler.name());
        match map.find_mut(h, |x| x.name() == handler.name()) {
            Some(slot) => *slot = handler,
            None => {
                map.insert_unique(h, handler, |x| hash(x.name()));
            }
        }
    }

    /// Registers `handler` unless one of that name is there.
    pub(crate) fn register_if_absent(&self, handler: &Arc<dyn TaskHandler>) {
        let mut map = self.map.write().unwrap();
        let h = hash(handler.name());
        if map.find(h, |x| x.name() == handler.name()).is_none() {
            map.insert_unique(h, handler.clone(), |x| hash(x.name()));
        }
    }

    /// The handler registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn TaskHandler>> {
        self.map.read().unwrap().find(hash(name), |x| x.name() == name).cloned()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.map.read().unwrap().iter().map(|h| h.name().to_string()).collect();
        v.sort();
        v
    }
}

impl fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerRegistry").field("handlers", &self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FuncHandler;

    fn handler(name: &str, tag: &'static str) -> Arc<dyn TaskHandler> {
        FuncHandler::new(name, move |_ctx| async move { Err(tag.into()) })
    }

    async fn tag_of(h: Arc<dyn TaskHandler>) -> String {
        let ctx = crate::TaskContext::new("t", jiff::Timestamp::UNIX_EPOCH);
        h.handle(ctx).await.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn register_replaces_and_register_if_absent_keeps() {
        let r = HandlerRegistry::new();
        r.register(handler("a", "first"));
        r.register(handler("b", "b"));
        r.register(handler("a", "second"));
        assert_eq!(tag_of(r.get("a").unwrap()).await, "second");
        r.register_if_absent(&handler("a", "third"));
        r.register_if_absent(&handler("c", "c"));
        assert_eq!(tag_of(r.get("a").unwrap()).await, "second");
        assert_eq!(tag_of(r.get("c").unwrap()).await, "c");
        assert_eq!(r.names(), ["a", "b", "c"]);
    }

    #[test]
    fn many_handlers_are_all_found() {
        let r = HandlerRegistry::new();
        for i in 0..10_000 {
            r.register(handler(&format!("h{i}"), "x"));
        }
        assert_eq!(r.names().len(), 10_000);
        for i in (0..10_000).step_by(97) {
            assert_eq!(r.get(&format!("h{i}")).unwrap().name(), format!("h{i}"));
        }
        assert!(r.get("h10000").is_none());
    }
}
