//! Test-owned dependencies: servers a test starts in a temporary directory
//! on free ports, so it may stop, kill and restart them while other tests
//! keep using the shared PostgreSQL, Redis and RabbitMQ.
//!
//! Each is stopped when dropped. Every one of them needs its server
//! installed (PostgreSQL's `initdb`/`pg_ctl`, `redis-server`,
//! `rabbitmq-server`); PostgreSQL and RabbitMQ refuse to run as root, so
//! under root their data directories are given to the `postgres` and
//! `rabbitmq` users and PostgreSQL runs through `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::stack::signal;
use crate::{free_port, random_hex};

/// How long a dependency may take to accept connections after a start.
const START_WAIT: Duration = Duration::from_secs(90);
/// How long a stopped server may take to exit before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn chown(path: &Path, user: &str) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .arg("-R")
        .arg(user)
        .arg(path)
        .status()?;
    if !status.success() {
        bail!("chown {user} {}: {status}", path.display());
    }
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn wait_port(port: u16, up: bool, wait: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let open = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        if open == up {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "port {port} did not become {}",
                if up { "open" } else { "closed" }
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis server of the test's own, without persistence: a restart loses
/// every key, as a failover to an empty replica would.
pub struct OwnedRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnedRedis {
    pub async fn start() -> anyhow::Result<OwnedRedis> {
        let mut redis = OwnedRedis {
            port: free_port(),
            dir: tempfile::tempdir()?,
            child: None,
        };
        redis.resume().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again after [`OwnedRedis::stop`].
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        wait_port(self.port, true, START_WAIT).await
    }

    /// Kills the server (SIGKILL).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        wait_port(self.port, false, STOP_WAIT).await
    }
}

impl Drop for OwnedRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A PostgreSQL cluster of the test's own (`initdb` in a temporary
/// directory, role `snakepay`, trust authentication, fsync off).
pub struct OwnedPostgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    root: bool,
}

impl OwnedPostgres {
    /// The newest installed server's `bin/` directory.
    fn bin_dir() -> anyhow::Result<PathBuf> {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .context("no /usr/lib/postgresql: is PostgreSQL installed?")?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let version = entry.file_name().to_string_lossy().parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, bin)| bin.join("initdb").exists())
            .collect();
        versions.sort();
        versions
            .pop()
            .map(|(_, bin)| bin)
            .context("no initdb under /usr/lib/postgresql/*/bin")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    pub async fn start() -> anyhow::Result<OwnedPostgres> {
        let dir = tempfile::tempdir()?;
        let root = is_root();
        if root {
            chown(dir.path(), "postgres")?;
        }
        let postgres = OwnedPostgres {
            port: free_port(),
            bin: Self::bin_dir()?,
            data: dir.path().join("data"),
            _dir: dir,
            root,
        };
        let output = postgres
            .command("initdb")
            .arg("-D")
            .arg(&postgres.data)
            .args(["-U", "snakepay", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&output.stderr));
        }
        postgres.resume().await?;
        Ok(postgres)
    }

    pub fn server_url(&self) -> String {
        format!("postgres://snakepay@127.0.0.1:{}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let log = self.data.with_file_name("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.data.parent().unwrap_or(&self.data).display()
        );
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "-w", "-t", "60"])
            .args(args)
            .output()
            .context("running pg_ctl")?;
        if !output.status.success() {
            bail!(
                "pg_ctl {args:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Starts the server after [`OwnedPostgres::stop`].
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["start"])?;
        wait_port(self.port, true, START_WAIT).await
    }

    /// Stops the server (`fast`: every session is disconnected at once).
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "fast", "stop"])?;
        wait_port(self.port, false, STOP_WAIT).await
    }
}

impl Drop for OwnedPostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

/// A RabbitMQ node of the test's own: its own node name, AMQP and
/// distribution ports, configuration and data directory (no plugins). It
/// shares the machine's epmd, where nodes register by name.
pub struct OwnedRabbit {
    pub port: u16,
    dist_port: u16,
    node: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnedRabbit {
    pub async fn start() -> anyhow::Result<OwnedRabbit> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"),
        )?;
        std::fs::write(dir.path().join("enabled_plugins"), "")?;
        if is_root() {
            chown(dir.path(), "rabbitmq")?;
        }
        let mut rabbit = OwnedRabbit {
            port,
            dist_port: free_port(),
            node: format!("faults{}@localhost", random_hex(4)),
            dir,
            child: None,
        };
        rabbit.resume().await?;
        Ok(rabbit)
    }

    /// The URL of its default vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("rabbit.pid")
    }

    /// Starts the node after [`OwnedRabbit::stop`]; its queues and messages
    /// persist in its data directory.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let child = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(dir.join("server.out"))?))
            .stderr(Stdio::null())
            .spawn()
            .context("starting rabbitmq-server")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            if let Ok(connection) = snakepay_bus::connect(&self.url()).await {
                let _ = connection.close(200, "ready".into()).await;
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "rabbitmq-server exited ({status}):\n{}",
                    std::fs::read_to_string(dir.join("server.out")).unwrap_or_default()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the RabbitMQ node on port {} never came up", self.port);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the node (SIGTERM: the broker's own orderly shutdown) and waits
    /// until it has exited.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            let _ = signal(pid, "TERM");
            let deadline = tokio::time::Instant::now() + STOP_WAIT;
            while pid_alive(pid) {
                if tokio::time::Instant::now() > deadline {
                    let _ = signal(pid, "KILL");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.pid_file());
        wait_port(self.port, false, STOP_WAIT).await
    }
}

impl Drop for OwnedRabbit {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = signal(pid, "KILL");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
