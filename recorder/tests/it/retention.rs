//! Retention on a real nats-server's Object Store: whole clips (video and snapshot) go, the
//! oldest first, while the bucket is over its size; clips older than the age limit go too;
//! objects the recorder did not write are left alone.

use panoptes_contracts::clip::ClipKind;
use panoptes_recorder::store::{ClipStore, describe, object_name};
use panoptes_recorder::{Role, StoredObject};
use panoptes_topology::Retention;

fn clip(camera: &str, start_s: u64, stored_ns: u64) -> panoptes_contracts::clip::ClipMessage {
    let id = format!("{camera}-{}", start_s * 1000);
    let mut m = describe(
        ClipKind::Clip,
        &id,
        camera,
        (object_name(camera, &id, "mp4"), "video/mp4"),
        Some(object_name(camera, &id, "jpg")),
        (
            start_s * 1_000_000_000,
            (start_s + 5) * 1_000_000_000,
            50,
            400_000,
        ),
        1,
        Vec::new(),
        vec!["r".into()],
        Vec::new(),
    );
    m.stored_ns = stored_ns;
    m
}

fn names(objects: &[StoredObject]) -> Vec<&str> {
    objects.iter().map(|o| o.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_clips_go_first_when_the_bucket_is_over_its_size() {
    let server = panoptes_tests::nats_server();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let retention = Retention {
        max_age_h: 1.0,
        max_mib: 1,
    };
    let store = ClipStore::open(&client, "ret", &retention)
        .await
        .expect("bucket");
    let now = panoptes_contracts::time::now_ns();
    // Four clips of 400 kB video + 50 kB snapshot, stored out of order.
    for start in [30, 10, 40, 20] {
        store
            .put(
                &clip("cam", start, now),
                vec![1; 400_000],
                Some(vec![2; 50_000]),
            )
            .await
            .expect("put");
    }
    // Someone else's object in the same bucket.
    let js = async_nats::jetstream::new(client.clone());
    let raw = js.get_object_store("ret-clips").await.expect("bucket");
    raw.put("notes.txt", &mut &b"not a clip"[..])
        .await
        .expect("put");

    let listed = store.list().await.expect("list");
    assert_eq!(listed.len(), 8, "{:?}", names(&listed));
    assert_eq!(listed.iter().filter(|o| o.role == Role::Video).count(), 4);

    // 1 MiB holds two clips (900 kB): the two oldest go, each with its snapshot.
    let mut removed = store.sweep(&retention, now).await.expect("sweep");
    removed.sort();
    assert_eq!(
        removed,
        [
            "cam/cam-10000.jpg",
            "cam/cam-10000.mp4",
            "cam/cam-20000.jpg",
            "cam/cam-20000.mp4"
        ]
    );
    let left = store.list().await.expect("list");
    let starts: Vec<u64> = left
        .iter()
        .map(|o| o.clip.start_ns / 1_000_000_000)
        .collect();
    assert_eq!(starts, [30, 30, 40, 40], "{:?}", names(&left));
    assert!(
        raw.info("notes.txt").await.is_ok(),
        "an object Panoptes did not write stays"
    );

    // Two hours later both are past a one-hour age limit.
    let removed = store
        .sweep(&retention, now + 2 * 3600 * 1_000_000_000)
        .await
        .expect("sweep");
    assert_eq!(removed.len(), 4);
    assert!(store.list().await.expect("list").is_empty());
}
