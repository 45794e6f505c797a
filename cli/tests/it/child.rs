//! A `panoptes` child process of a test: stdin and stdout closed, stderr to a log file that
//! failure messages quote, killed and reaped when dropped (also when the test fails).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub(crate) struct Logged {
    pub(crate) child: Child,
    log: PathBuf,
}

impl Logged {
    /// Spawns `command` with its stderr going to `log`.
    pub(crate) fn spawn(command: &mut Command, log: PathBuf) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Self { child, log }
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
