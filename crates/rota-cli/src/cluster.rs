//! `[cluster]`: connects the daemon to its cluster backend.
//!
//! The backend's timings come from the section: leadership TTL (Consul:
//! session TTL) = `election_timeout`; a node shows offline after three
//! `heartbeat_interval`s without a heartbeat (etcd rounds this up to whole
//! seconds); on ZooKeeper, whose session carries both leadership and
//! registration, the session timeout is the smaller of the two (the server
//! clamps it to 2-20 ticks). Offline nodes are forgotten after ten times
//! that. Every node of one cluster uses the same `namespace`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rota::cluster::Cluster;

use crate::config::{ClusterBackend, ClusterSection};

/// The registry TTL: three heartbeats.
fn node_ttl(c: &ClusterSection) -> Duration {
    c.heartbeat_interval * 3
}

/// Connects node `node` to the backend `c` names.
pub async fn connect(c: &ClusterSection, node: &str) -> anyhow::Result<Arc<dyn Cluster>> {
    let ns = c.namespace.trim_matches('/');
    let what = || format!("connecting to the {:?} cluster at {:?}", c.backend, c.endpoints);
    let cluster: Arc<dyn Cluster> = match c.backend {
        ClusterBackend::Redis => redis(c, node, ns).await.with_context(what)?,
        ClusterBackend::Etcd => etcd(c, node, ns).await.with_context(what)?,
        ClusterBackend::Zookeeper => zookeeper(c, node, ns).await.with_context(what)?,
        ClusterBackend::Consul => consul(c, node, ns).await.with_context(what)?,
    };
    Ok(cluster)
}

async fn redis(c: &ClusterSection, node: &str, ns: &str) -> anyhow::Result<Arc<dyn Cluster>> {
    use rota::cluster::{RedisCluster, RedisClusterConfig};
    let config = RedisClusterConfig {
        addr: c.endpoints[0].clone(),
        password: c.password.clone(),
        node_id: node.into(),
        key_prefix: format!("{ns}:cluster:"),
        node_ttl: node_ttl(c),
        forget_after: node_ttl(c) * 10,
        election_ttl: c.election_timeout,
        ..RedisClusterConfig::default()
    };
    Ok(Arc::new(RedisCluster::new(config).await?))
}

#[cfg(feature = "cluster-etcd")]
async fn etcd(c: &ClusterSection, node: &str, ns: &str) -> anyhow::Result<Arc<dyn Cluster>> {
    use rota::cluster::{EtcdCluster, EtcdClusterConfig};
    let config = EtcdClusterConfig {
        endpoints: c.endpoints.clone(),
        username: c.username.clone(),
        password: c.password.clone(),
        node_id: node.into(),
        key_prefix: format!("/{ns}/cluster/"),
        node_ttl: node_ttl(c),
        forget_after: node_ttl(c) * 10,
        election_ttl: c.election_timeout,
        ..EtcdClusterConfig::default()
    };
    Ok(Arc::new(EtcdCluster::new(config).await?))
}

#[cfg(not(feature = "cluster-etcd"))]
async fn etcd(_: &ClusterSection, _: &str, _: &str) -> anyhow::Result<Arc<dyn Cluster>> {
    anyhow::bail!(
        "[cluster] backend = \"etcd\": this build has no etcd backend (build with --features cluster-etcd; it needs protoc)"
    )
}

async fn zookeeper(c: &ClusterSection, node: &str, ns: &str) -> anyhow::Result<Arc<dyn Cluster>> {
    use rota::cluster::{ZookeeperCluster, ZookeeperClusterConfig};
    let config = ZookeeperClusterConfig {
        servers: c.endpoints.clone(),
        node_id: node.into(),
        root: format!("/{ns}/cluster"),
        // The session carries both leadership and registration.
        session_timeout: c.election_timeout.min(node_ttl(c)),
        forget_after: c.election_timeout.max(node_ttl(c)) * 10,
        ..ZookeeperClusterConfig::default()
    };
    Ok(Arc::new(ZookeeperCluster::new(config).await?))
}

async fn consul(c: &ClusterSection, node: &str, ns: &str) -> anyhow::Result<Arc<dyn Cluster>> {
    use rota::cluster::{ConsulCluster, ConsulClusterConfig};
    let config = ConsulClusterConfig {
        address: c.endpoints[0].clone(),
        token: c.token.clone(),
        node_id: node.into(),
        key_prefix: format!("{ns}/cluster/"),
        session_ttl: c.election_timeout,
        // No lock-delay: a crashed node's run locks and leadership come free
        // when its session ends. Fire marks and fencing tokens, not the
        // delay, keep a fire from running twice.
        lock_delay: Duration::ZERO,
        forget_after: c.election_timeout.max(node_ttl(c)) * 10,
        ..ConsulClusterConfig::default()
    };
    Ok(Arc::new(ConsulCluster::new(config).await?))
}
