//! The seed's "multi-cluster usage" example, ported: one node of a cluster
//! whose backend is chosen by `CLUSTER_TYPE` (`redis`, `etcd`, `consul`,
//! `zookeeper`; default `redis`), with `NODE_ID` (default `node-<pid>`), a
//! memory store, and one task at second 0 of every minute. Every ten seconds
//! it prints the distributed stats. Start it in several terminals with
//! different `NODE_ID`s: each fire runs on exactly one of them.
//!
//! Servers: `REDIS_ADDR` (default `127.0.0.1:6379`), `ETCD_ENDPOINT`
//! (`127.0.0.1:2379`), `CONSUL_ADDR` (`127.0.0.1:8500`), `ZK_SERVER`
//! (`127.0.0.1:2181`). Build with the backend's feature, e.g.
//! `cargo run -p rota --features cluster-redis --example distributed`.
//!
//! Runs until Ctrl-C. With `ROTA_RUN_FOR=<seconds>` it also runs the task
//! once at start, checks it became the leader of its (otherwise empty)
//! cluster, and exits after that many seconds (CI uses this).

use std::sync::Arc;
use std::time::Duration;

use rota::cluster::Cluster;
use rota::{
    DefaultTask, DistributedConfig, DistributedScheduler, FuncHandler, MemoryStore, Scheduler,
};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

async fn connect(kind: &str, node_id: &str) -> rota::Result<Arc<dyn Cluster>> {
    let node_id = node_id.to_string();
    let cluster: Arc<dyn Cluster> = match kind {
        #[cfg(feature = "cluster-redis")]
        "redis" => Arc::new(
            rota::cluster::RedisCluster::new(rota::cluster::RedisClusterConfig {
                addr: env("REDIS_ADDR", "127.0.0.1:6379"),
                node_id,
                key_prefix: "rota-example:".into(),
                ..Default::default()
            })
            .await?,
        ),
        #[cfg(feature = "cluster-etcd")]
        "etcd" => Arc::new(
            rota::cluster::EtcdCluster::new(rota::cluster::EtcdClusterConfig {
                endpoints: vec![env("ETCD_ENDPOINT", "127.0.0.1:2379")],
                node_id,
                key_prefix: "/rota-example/".into(),
                ..Default::default()
            })
            .await?,
        ),
        #[cfg(feature = "cluster-consul")]
        "consul" => Arc::new(
            rota::cluster::ConsulCluster::new(rota::cluster::ConsulClusterConfig {
                address: env("CONSUL_ADDR", "127.0.0.1:8500"),
                node_id,
                key_prefix: "rota-example/".into(),
                ..Default::default()
            })
            .await?,
        ),
        #[cfg(feature = "cluster-zookeeper")]
        "zookeeper" => Arc::new(
            rota::cluster::ZookeeperCluster::new(rota::cluster::ZookeeperClusterConfig {
                servers: vec![env("ZK_SERVER", "127.0.0.1:2181")],
                node_id,
                root: "/rota-example".into(),
                ..Default::default()
            })
            .await?,
        ),
        other => {
            return Err(rota::Error::InvalidInput {
                what: "CLUSTER_TYPE".into(),
                message: format!(
                    "{other:?} is not a cluster type of this build (redis, etcd, consul or \
                     zookeeper, each behind its cargo feature)"
                ),
            })
        }
    };
    Ok(cluster)
}

#[tokio::main]
async fn main() -> rota::Result<()> {
    let kind = env("CLUSTER_TYPE", "redis");
    let node_id = env("NODE_ID", &format!("node-{}", std::process::id()));

    // Create the cluster.
    let cluster = connect(&kind, &node_id).await?;

    // Create the distributed scheduler.
    let config = DistributedConfig {
        election_timeout: Duration::from_secs(30),
        ..DistributedConfig::new(node_id.clone(), cluster.clone())
    };
    let store = Arc::new(MemoryStore::new());
    let ds = DistributedScheduler::new(store, config)?;

    // Create the task.
    let node = node_id.clone();
    let handler = FuncHandler::new("distributed-task", move |ctx| {
        let node = node.clone();
        async move {
            println!(
                "distributed task ran (node: {node}, fencing token {:?})",
                ctx.fencing_token()
            );
            Ok(())
        }
    });
    let task = DefaultTask::new("distributed-task", "A distributed task", "0 * * * * *", handler);
    ds.add(task).await?;

    // Start the scheduler.
    ds.start().await?;

    // Watch the state.
    let watcher = {
        let ds = ds.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(10));
            loop {
                ticker.tick().await;
                let stats = ds.distributed_stats();
                println!(
                    "node: {}, leader: {}, total nodes: {}",
                    stats.node_id, stats.is_leader, stats.total_nodes
                );
            }
        })
    };

    // Keep running.
    match std::env::var("ROTA_RUN_FOR").ok().and_then(|s| s.parse::<u64>().ok()) {
        Some(secs) => {
            ds.run_now("distributed-task").await?;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            ds.refresh_view().await?;
            let stats = ds.distributed_stats();
            println!("{stats:?}");
            assert!(ds.task_stats("distributed-task")?.run_count >= 1, "the task ran");
            assert!(stats.is_leader, "a lone node becomes the leader");
            assert!(stats.online_nodes >= 1, "the node is registered");
        }
        None => {
            tokio::signal::ctrl_c().await.expect("install Ctrl-C handler");
        }
    }
    watcher.abort();
    ds.stop().await?;
    cluster.close().await?;
    Ok(())
}
