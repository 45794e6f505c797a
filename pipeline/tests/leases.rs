//! Partition leases over a real nats-server: workers split the partitions, never hold one at
//! the same time, take over a crashed worker's partitions after the TTL and a leaving worker's
//! at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_pipeline::lease::{LeaseConfig, LeaseManager, Ownership};
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use tokio_util::sync::CancellationToken;

const PARTITIONS: u32 = 8;
const TTL: Duration = Duration::from_millis(900);

struct Member {
    ownership: Arc<Ownership>,
    task: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
}

async fn join(client: &async_nats::Client) -> Member {
    let ownership = Arc::new(Ownership::leased(PARTITIONS));
    let manager = LeaseManager::open(
        client,
        "leasetest",
        "detect",
        LeaseConfig { ttl: TTL },
        ownership.clone(),
    )
    .await
    .expect("lease bucket");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(manager.run(cancel.clone()));
    Member {
        ownership,
        task,
        cancel,
    }
}

fn held(m: &Arc<Ownership>) -> Vec<u32> {
    (0..PARTITIONS).filter(|&p| m.holds(p)).collect()
}

/// Waits until `done` holds, checking at every step that no partition is held twice.
async fn until(
    members: &[&Arc<Ownership>],
    limit: Duration,
    done: impl Fn(&[Vec<u32>]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let now: Vec<Vec<u32>> = members.iter().map(|m| held(m)).collect();
        for p in 0..PARTITIONS {
            let holders = now.iter().filter(|h| h.contains(&p)).count();
            assert!(
                holders <= 1,
                "partition {p} held by {holders} workers: {now:?}"
            );
        }
        if done(&now) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not settled within {limit:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn covers_all(held: &[Vec<u32>]) -> bool {
    held.iter().map(Vec::len).sum::<usize>() == PARTITIONS as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_partitions_and_take_over() {
    let server = NatsServer::start(&NatsServerOptions::default())
        .expect("nats-server (run scripts/setup.sh)");
    let client = async_nats::connect(server.url()).await.expect("connect");

    let a = join(&client).await;
    until(&[&a.ownership], Duration::from_secs(10), |h| {
        h[0].len() == PARTITIONS as usize
    })
    .await;

    // A second worker: the partitions split between them, each held by one at every instant.
    let b = join(&client).await;
    until(
        &[&a.ownership, &b.ownership],
        Duration::from_secs(10),
        |h| covers_all(h) && h.iter().all(|p| !p.is_empty()),
    )
    .await;
    let split = (held(&a.ownership), held(&b.ownership));
    eprintln!("split: {split:?}");

    // A crashes: no release, its keys simply stop being renewed. B takes all after the TTL.
    a.task.abort();
    let _ = a.task.await;
    let takeover = until(&[&b.ownership], Duration::from_secs(10), |h| {
        h[0].len() == PARTITIONS as usize
    })
    .await;
    eprintln!("takeover after a crash: {takeover:?} (TTL {TTL:?})");
    assert!(
        takeover >= TTL / 2,
        "B took A's partitions before A's leases could have expired ({takeover:?})"
    );

    // C joins, then B leaves gracefully: C gets everything without waiting for a TTL.
    let c = join(&client).await;
    until(
        &[&b.ownership, &c.ownership],
        Duration::from_secs(10),
        |h| covers_all(h) && !h[1].is_empty(),
    )
    .await;
    b.cancel.cancel();
    let b_task = b.task;
    b_task.await.expect("b leaves");
    assert!(
        held(&b.ownership).is_empty(),
        "a leaving worker holds nothing"
    );
    let handover = until(
        &[&b.ownership, &c.ownership],
        Duration::from_secs(10),
        |h| h[1].len() == PARTITIONS as usize,
    )
    .await;
    eprintln!("handover after a graceful leave: {handover:?}");
    c.cancel.cancel();
    let c_task = c.task;
    c_task.await.expect("c leaves");
}
