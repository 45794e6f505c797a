//! Test operator: misbehaves on purpose for frames of chosen cameras, and behaves (one
//! whole-frame detection labelled `ok`) for every other camera. The host's sandbox and fault
//! isolation are tested against it; it is built with the other operators but never shipped in
//! a topology.

use std::collections::BTreeMap;

use panoptes_operator_sdk::{Detection, Error, Frame, Input, Operator, Output};
use serde::Deserialize;

/// What to do for a camera's frames.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Panic: the guest traps (`unreachable`), with the panic message on stderr.
    Trap,
    /// Loop forever: only the host's deadline ends it.
    Spin,
    /// Allocate 16 MiB blocks until the allocator fails.
    Hog,
    /// Sleep 10 s through WASI: refused, operators get no timed waits.
    Sleep,
    /// Read a file; the detection's label says how many bytes, or the call returns the error.
    Read(String),
    /// Read an environment variable into the label.
    Env(String),
    /// Put the wall clock (seconds since the epoch) in the label.
    Clock,
    /// Print a line to stdout, then behave.
    Print(String),
    /// Return `Error::InvalidInput`.
    Reject,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Camera ID → fault. Cameras not listed behave.
    #[serde(default)]
    pub faults: BTreeMap<String, Fault>,
    /// Fault for every camera, when no entry in `faults` matches.
    #[serde(default)]
    pub all: Option<Fault>,
}

/// Tells two builds of this operator apart, so hot-reload tests can see which one answered.
/// `scripts/build-operators.sh` builds it a second time with `PANOPTES_FIXTURE_TAG=v2` as
/// `misbehave-v2.wasm`.
const BUILD_TAG: &str = match option_env!("PANOPTES_FIXTURE_TAG") {
    Some(tag) => tag,
    None => "v1",
};

pub struct Misbehave {
    config: Config,
}

impl Operator for Misbehave {
    fn init(config: &str) -> Result<Self, Error> {
        Ok(Self {
            config: panoptes_operator_sdk::config(config)?,
        })
    }

    fn process(&mut self, frame: &Frame, _input: Input) -> Result<Output, Error> {
        let camera = frame.camera();
        let fault = self.config.faults.get(&camera).or(self.config.all.as_ref());
        let label = match fault {
            None => format!("ok {BUILD_TAG}"),
            Some(Fault::Trap) => panic!("misbehave: deliberate trap on frame {}", frame.seq()),
            Some(Fault::Spin) => spin(),
            Some(Fault::Hog) => hog(),
            Some(Fault::Sleep) => {
                std::thread::sleep(std::time::Duration::from_secs(10));
                "slept".to_owned()
            }
            Some(Fault::Read(path)) => match std::fs::read(path) {
                Ok(bytes) => format!("read {} bytes", bytes.len()),
                Err(e) => return Err(Error::Internal(format!("cannot read {path}: {e}"))),
            },
            Some(Fault::Env(name)) => std::env::var(name).unwrap_or_else(|_| "unset".into()),
            Some(Fault::Clock) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                format!("clock {now}")
            }
            Some(Fault::Print(line)) => {
                println!("{line}");
                format!("ok {BUILD_TAG}")
            }
            Some(Fault::Reject) => {
                return Err(Error::InvalidInput(format!(
                    "misbehave rejects frame {} of camera {camera}",
                    frame.seq()
                )));
            }
        };
        Ok(Output::Detections(vec![Detection {
            x1: 0.0,
            y1: 0.0,
            x2: frame.width() as f32,
            y2: frame.height() as f32,
            score: 1.0,
            label,
            text: None,
        }]))
    }
}

fn spin() -> String {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn hog() -> String {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 16 << 20];
        // Touch the pages so the memory is really committed.
        for b in block.iter_mut().step_by(4096) {
            *b = 1;
        }
        blocks.push(std::hint::black_box(block));
    }
}

panoptes_operator_sdk::export_operator!(Misbehave);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_faults() {
        let c: Config = panoptes_operator_sdk::config(
            r#"{"faults": {"a": "trap", "b": {"read": "/x"}}, "all": "spin"}"#,
        )
        .unwrap();
        assert_eq!(c.faults["a"], Fault::Trap);
        assert_eq!(c.faults["b"], Fault::Read("/x".into()));
        assert_eq!(c.all, Some(Fault::Spin));
        assert!(panoptes_operator_sdk::config::<Config>(r#"{"fault": {}}"#).is_err());
    }
}
