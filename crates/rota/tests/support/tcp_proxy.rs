//! A TCP proxy between a cluster client and its server that can drop every
//! connection on demand: the fault tests of every cluster backend use it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Forwards 127.0.0.1:`port` to a target address; `drop_all` closes every
/// connection open through it, `blackout` also refuses new ones.
pub struct Proxy {
    /// The port the proxy listens on (127.0.0.1).
    pub port: u16,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    /// While set, connections are closed as soon as they are accepted.
    refusing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Copies from `from` to `to` until `from` closes or either fails.
async fn pump(from: &tokio::net::TcpStream, to: &tokio::net::TcpStream) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut sent = 0;
        while sent < n {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buf[sent..n]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
        let sender = generation.clone();
        let refusing = Arc::new(AtomicBool::new(false));
        let refuse = refusing.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let mut dropped = sender.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = pump(&client, &server) => {}
                        _ = pump(&server, &client) => {}
                        _ = dropped.changed() => {}
                    }
                });
            }
        });
        Proxy { port, generation, refusing, task }
    }

    /// Closes every connection open through the proxy.
    pub fn drop_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Closes every connection and refuses new ones (`true`), or lets them
    /// through again (`false`).
    pub fn blackout(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
        if on {
            self.drop_all();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_all();
    }
}
