//! Opening a store from a URL, for the daemon and tools.

use std::sync::Arc;

use super::{MemoryStore, Retention, Store};
use crate::error::{Error, Result};

/// Opens the store a URL names:
///
/// | URL | store | feature |
/// | --- | --- | --- |
/// | `memory` | [`MemoryStore`] | always |
/// | `sqlite://rota.db`, `sqlite:///abs/path.db`, or a path ending in `.db` | `SqliteStore` | `sqlite` |
/// | `postgres://user@host:5432/db` (`postgresql://` too) | `PostgresStore` | `postgres` |
/// | `redis://host:6379/0` (`rediss://` too) | `RedisStore` | `redis` |
///
/// # Errors
///
/// `InvalidInput` for a scheme rota does not know or was built without,
/// naming the URL and the feature to enable; the backend's error otherwise.
pub async fn open(url: &str, retention: Retention) -> Result<Arc<dyn Store>> {
    let url = url.trim();
    if url == "memory" || url == "memory://" {
        return Ok(Arc::new(MemoryStore::with_retention(retention)));
    }
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    #[allow(unused_variables)]
    let missing = |feature: &str| Error::InvalidInput {
        what: "store url".into(),
        message: format!("{url:?}: this rota was built without the {feature:?} feature"),
    };
    match scheme {
        "sqlite" | "" if scheme == "sqlite" || url.ends_with(".db") || url.ends_with(".sqlite") => {
            #[cfg(feature = "sqlite")]
            {
                let path = url.strip_prefix("sqlite://").unwrap_or(url);
                let opts = super::SqliteOptions { retention, ..Default::default() };
                Ok(Arc::new(super::SqliteStore::open_with(path, opts).await?))
            }
            #[cfg(not(feature = "sqlite"))]
            Err(missing("sqlite"))
        }
        "postgres" | "postgresql" => {
            #[cfg(feature = "postgres")]
            {
                let opts = super::PostgresOptions { retention, ..Default::default() };
                Ok(Arc::new(super::PostgresStore::connect_with(url, opts).await?))
            }
            #[cfg(not(feature = "postgres"))]
            Err(missing("postgres"))
        }
        "redis" | "rediss" => {
            #[cfg(feature = "redis")]
            {
                let opts = super::RedisOptions { retention, ..Default::default() };
                Ok(Arc::new(super::RedisStore::connect_with(url, opts).await?))
            }
            #[cfg(not(feature = "redis"))]
            Err(missing("redis"))
        }
        _ => Err(Error::InvalidInput {
            what: "store url".into(),
            message: format!(
                "{url:?}: unknown scheme (expected memory, sqlite://PATH, postgres://..., redis://...)"
            ),
        }),
    }
}
