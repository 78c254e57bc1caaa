//! A real `redis-server` for the Redis log's tests.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{wait_until, within};

/// A `redis-server` on a free loopback port, its data in a folder of its own (AOF on, so
/// a restart keeps the data unless the folder is emptied). Killed on drop.
pub struct Redis {
    pub port: u16,
    pub dir: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

impl Redis {
    pub async fn start(name: &str) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let dir =
            std::env::temp_dir().join(format!("switchyard-redis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut r = Redis {
            port,
            dir,
            child: None,
        };
        r.run().await;
        r
    }

    pub async fn run(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let port = self.port;
        wait_until(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || async move {
                command(port, "PING")
                    .await
                    .filter(|r| r.starts_with("+PONG"))
            },
        )
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops it the way an operator does (SIGTERM: it finishes its AOF) and waits.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().expect("pid") as i32;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("SIGTERM");
            within(
                Duration::from_secs(10),
                "redis-server to exit",
                child.wait(),
            )
            .await
            .expect("wait");
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one inline command; the first line of the answer (None if unreachable).
pub async fn command(port: u16, cmd: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 512];
    let n = within(Duration::from_secs(5), "a Redis answer", s.read(&mut buf))
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}
