//! Test-only controls of a local nats-server: take it down as a crash would and bring it back on
//! the same URL with the same JetStream store, to test how clients and workers ride out outages.

use std::time::{Duration, Instant};

use panoptes_pipeline::nats_server::{NatsServer, NatsServerError};

/// How long [`ServerControls::resume`] keeps trying while someone else holds the server's port.
const PORT_RETRY_LIMIT: Duration = Duration::from_secs(10);

pub trait ServerControls {
    /// Kills the server (SIGKILL, as a crash would) and waits for it to exit. Its store and port
    /// are kept for [`ServerControls::resume`]; connected clients see the connection drop.
    fn pause(&mut self);
    /// Starts a paused (or crashed) server again on the same port with the same config and
    /// store; waits while the port is still taken. Does nothing if it runs.
    fn resume(&mut self) -> Result<(), NatsServerError>;
    /// [`ServerControls::pause`] then [`ServerControls::resume`].
    fn restart(&mut self) -> Result<(), NatsServerError> {
        self.pause();
        self.resume()
    }
}

impl ServerControls for NatsServer {
    fn pause(&mut self) {
        let pid = self.pid();
        if self.is_running() {
            let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
            // SAFETY: kill(2) on our own child, which is not reaped before `is_running` says
            // it ended, so the pid cannot name another process meanwhile.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.is_running() {
            assert!(
                Instant::now() < deadline,
                "nats-server {pid} outlived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn resume(&mut self) -> Result<(), NatsServerError> {
        let started = Instant::now();
        loop {
            match self.relaunch() {
                // nats-server sets SO_REUSEADDR, so a TIME_WAIT socket rarely blocks it, but
                // another process may hold the port for a moment (a client's ephemeral port,
                // a test's listener).
                Err(NatsServerError::PortInUse { .. }) if started.elapsed() < PORT_RETRY_LIMIT => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                done => return done,
            }
        }
    }
}
