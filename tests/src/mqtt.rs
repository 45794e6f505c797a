//! A real MQTT broker for tests: Debian's mosquitto on a free loopback port, with a password
//! file (mosquitto 2 refuses anonymous clients on a configured listener) and persistence (so a
//! persistent subscriber's queued messages survive a broker restart, as docs/outputs.md tells
//! users to configure), stopped and restarted on the same port; and mosquitto_sub as the
//! third-party subscriber.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    pub user: String,
    pub password: String,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto with user `panoptes` and a random password.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let password = format!("pw-{:016x}", rand_u64());
        let passwd = dir.path().join("passwd");
        let status = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwd)
            .args(["panoptes", &password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("mosquitto_passwd (run scripts/setup.sh): {e}"));
        assert!(status.success(), "mosquitto_passwd failed");
        let port = crate::free_port();
        // `user`: started as root, mosquitto would switch to the `mosquitto` user, who cannot
        // read this test's private temp dir.
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\npersistence true\npersistence_location {dir}/\nuser {user}\nlog_dest stderr\n",
            passwd = passwd.display(),
            dir = dir.path().display(),
            user = whoami(),
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)
            .unwrap_or_else(|e| panic!("write mosquitto.conf: {e}"));
        let mut m = Self {
            child: None,
            port,
            user: "panoptes".into(),
            password,
            dir,
        };
        m.launch();
        m
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap_or_else(|e| panic!("mosquitto log: {e}"));
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("mosquitto (run scripts/setup.sh): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM: it saves its persistent sessions) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same sessions.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// `mosquitto_sub` with a persistent session at QoS 1 (`-c`, client ID `id`) on `topic`,
    /// printing `topic payload` lines to `out`.
    pub fn subscribe(&self, id: &str, topic: &str, out: &Path) -> Child {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", &self.user, "-P", &self.password])
            .args(["-i", id, "-c", "-q", "1", "-v", "-t", topic])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out).unwrap_or_else(|e| panic!("{}: {e}", out.display())))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("mosquitto_sub (run scripts/setup.sh): {e}"))
    }

    /// `mosquitto_pub` of one QoS 1 message.
    pub fn publish(&self, topic: &str, payload: &str) -> bool {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", &self.user, "-P", &self.password])
            .args(["-q", "1", "-t", topic, "-m", payload])
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            // SAFETY: geteuid cannot fail.
            if unsafe { libc::geteuid() } == 0 {
                "root".into()
            } else {
                "nobody".into()
            }
        })
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}
