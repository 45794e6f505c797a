//! `panoptes run` as users start it: with no NATS URL it starts its own nats-server, and Ctrl-C
//! (SIGINT) stops everything, that server included, with a zero exit status.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn ctrl_c_stops_the_run_and_its_nats_server() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(
        root.join("operators/dist/letterbox.wasm").is_file(),
        "run scripts/setup.sh first"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(["run", "topologies/quickstart.yaml"])
        .current_dir(&root)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn panoptes");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if let Some(i) = line.find(" on nats://") {
                    break line[i + 4..].trim().to_owned();
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!("panoptes did not report its NATS URL: {e}");
            }
        }
    };
    let addr = url.trim_start_matches("nats://").to_owned();
    TcpStream::connect(&addr).expect("embedded nats-server reachable while running");

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let exit = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("panoptes did not exit within 30 s of SIGINT")
        .expect("wait");
    assert!(exit.success(), "exit status {exit}");
    let lines: Vec<String> = rx.try_iter().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("published") && l.contains("failed 0")),
        "no clean summary in {lines:#?}"
    );
    assert!(
        TcpStream::connect(&addr).is_err(),
        "nats-server at {addr} outlived panoptes"
    );
}
