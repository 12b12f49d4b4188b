//! Private servers for fault tests: a Redis, an etcd or a ZooKeeper of the
//! test's own, on free loopback ports, with a data directory that survives
//! [`PrivateServer::restart`], killed and deleted on drop. The shared servers
//! (6379, 2379, 2181) are never restarted by tests.
//!
//! Used by the cluster tests of `rota` and the chaos tests of `rota-cli`
//! (which include this file by path). Std only, blocking.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `redis-server` with an append-only file fsynced on every write, so a
    /// restart keeps every acknowledged write.
    Redis,
    /// `redis-server` without persistence: a restart loses everything.
    RedisEphemeral,
    /// A single-node etcd.
    Etcd,
    /// A standalone ZooKeeper with `tickTime=500` (sessions down to 1 s).
    Zookeeper,
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private server.
#[derive(Debug)]
pub struct PrivateServer {
    pub kind: Kind,
    pub port: u16,
    peer_port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl PrivateServer {
    /// Starts one, or `None` if its program is not installed.
    pub fn start(kind: Kind) -> Option<PrivateServer> {
        let (port, peer_port) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!(
            "rota-private-{}-{}-{port}",
            format!("{kind:?}").to_lowercase(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).ok()?;
        let mut server = PrivateServer { kind, port, peer_port, dir, child: None };
        server.spawn().then_some(server)
    }

    /// Its address as clients write it: `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let data = self.dir.join("data");
        let mut cmd = match self.kind {
            Kind::Redis | Kind::RedisEphemeral => {
                let mut c = Command::new("redis-server");
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""]);
                if self.kind == Kind::Redis {
                    c.args(["--appendonly", "yes", "--appendfsync", "always"]);
                } else {
                    c.args(["--appendonly", "no"]);
                }
                c.arg("--dir").arg(&data);
                c
            }
            Kind::Etcd => {
                let client = format!("http://127.0.0.1:{}", self.port);
                let peer = format!("http://127.0.0.1:{}", self.peer_port);
                let mut c = Command::new("etcd");
                c.args(["--logger=zap", "--log-level=error", "--name", "n0", "--data-dir"])
                    .arg(&data)
                    .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &format!("n0={peer}")]);
                c
            }
            Kind::Zookeeper => {
                let java = Path::new("/usr/share/java");
                if !java.join("zookeeper.jar").exists() {
                    return false;
                }
                let cfg = format!(
                    "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                     admin.enableServer=false\n4lw.commands.whitelist=srvr\n",
                    data.display()
                );
                if std::fs::write(self.dir.join("zoo.cfg"), cfg).is_err() {
                    return false;
                }
                let mut classpath = java.join("zookeeper.jar").display().to_string();
                for jar in ["zookeeper-jute.jar", "slf4j-api.jar", "slf4j-simple.jar"] {
                    if java.join(jar).exists() {
                        classpath.push(':');
                        classpath.push_str(&java.join(jar).display().to_string());
                    }
                }
                let mut c = Command::new("java");
                c.args(["-Xmx128m", "-XX:+UseSerialGC", "-cp", &classpath])
                    .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                    .arg(self.dir.join("zoo.cfg"));
                c
            }
        };
        let Ok(child) = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn() else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ready() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Whether it answers.
    pub fn ready(&self) -> bool {
        match self.kind {
            Kind::Redis | Kind::RedisEphemeral => ask(self.port, b"PING\r\n", "+PONG"),
            Kind::Zookeeper => ask(self.port, b"srvr", "Mode: standalone"),
            Kind::Etcd => Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints=127.0.0.1:{}", self.port))
                .args(["endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    /// Kills it (SIGKILL: no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again on the same port and data; true once it
    /// answers.
    pub fn restart(&mut self) -> bool {
        self.kill();
        self.spawn()
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `request` to a loopback port and checks the answer contains `expect`.
fn ask(port: u16, request: &[u8], expect: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(request).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let mut answer = String::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        if answer.contains(expect) {
            return true;
        }
    }
    answer.contains(expect)
}
