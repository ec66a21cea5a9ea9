//! A private Tansu broker for tests that must disturb their broker (pause it, kill it) without
//! disturbing the other tests. Started through `scripts/broker`, stopped on drop.

use std::path::PathBuf;
use std::process::Command;

/// A Tansu broker on a free loopback port, owned by one test.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker")
}

impl PrivateBroker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let port = crate::free_port()?;
        let dir = tempfile::tempdir()?;
        let status = Command::new(script())
            .arg("start")
            .arg(port.to_string())
            .arg(dir.path())
            .status()?;
        anyhow::ensure!(status.success(), "scripts/broker start failed: {status}");
        Ok(Self { port, dir })
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join("broker.pid"))?
            .trim()
            .to_owned())
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").arg(signal).arg(self.pid()?).status()?;
        anyhow::ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(self.dir.path()).status();
    }
}
