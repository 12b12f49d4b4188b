//! Connecting to Redis, shared by the Redis store and the Redis cluster.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncConnectionConfig, Client};

use crate::error::{Error, Result};

/// Opens a reconnecting connection to `client`'s server within `timeout`.
///
/// One plain attempt (a PING) comes first, so an unreachable server fails at
/// once with the real reason, rather than after the manager's retries. Errors
/// are `backend` errors naming `addr`.
pub(crate) async fn connect_manager(
    client: &Client,
    backend: &str,
    addr: &str,
    timeout: Duration,
    response_timeout: Option<Duration>,
    max_delay: Duration,
) -> Result<ConnectionManager> {
    let connect = async {
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut con = client.get_multiplexed_async_connection_with_config(&probe).await?;
        ::redis::cmd("PING").query_async::<()>(&mut con).await?;
        drop(con);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(response_timeout)
            .set_max_delay(max_delay);
        ConnectionManager::new_with_config(client.clone(), config).await
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(con)) => Ok(con),
        Ok(Err(e)) => Err(Error::backend(backend, format!("cannot connect to {addr}: {e}"))),
        Err(_) => Err(Error::backend(
            backend,
            format!("cannot connect to {addr}: timed out after {timeout:?}"),
        )),
    }
}
