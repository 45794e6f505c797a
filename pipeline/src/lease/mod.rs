//! Which partitions this worker serves: fixed (`--partitions`), or leased in a NATS KV bucket so
//! that workers of one stage unit share the partitions, rebalance as they join and leave, and take
//! over a dead worker's partitions once its leases expire.
//!
//! Every worker of a unit registers a member key, and each round lists the members and the
//! leases: it keeps what it holds up to its share, `ceil(partitions / members)`, and takes free
//! partitions, preferring the rendezvous assignment of the member list (see [`assignment`] and
//! `assignment::plan_round`). A leave moves only the leaver's partitions; a join only the
//! newcomer's share. A worker serves a partition only while it holds that partition's lease key (created with compare-and-set, renewed before the bucket's `max_age`
//! expires it), and publishes a partition's results only while the lease is valid by its own
//! clock, which runs out before the server can hand the key to anyone else.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use panoptes_contracts::partition::{PartitionSet, partition_of};

mod assignment;

pub use assignment::assignment;
use assignment::plan_round;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "cannot open the lease bucket {bucket:?}: {message} (leases need JetStream on the NATS server; enable it, or give the worker fixed --partitions)"
    )]
    Bucket { bucket: String, message: String },
}

/// Lease timing.
#[derive(Clone, Copy, Debug)]
pub struct LeaseConfig {
    /// How long a lease outlives its last renewal: the takeover time after a crash.
    pub ttl: Duration,
}

/// How soon a failed or lapsed lease round is tried again.
const RETRY: Duration = Duration::from_millis(200);

impl LeaseConfig {
    /// Renewals happen three times per TTL, so one lost renewal does not lose the lease.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// The part of the TTL this worker trusts its lease for, counted from when it sent the
    /// renewal: the server starts its own count later, so ours ends first.
    fn trusted(&self) -> Duration {
        self.ttl.mul_f64(0.8)
    }
}

/// Per partition: whether this worker takes new frames of it, until when it may publish its
/// results, and how many of its frames are between intake and publication.
#[derive(Debug)]
pub struct Ownership {
    total: u32,
    state: Mutex<Vec<PartitionState>>,
    in_flight: Vec<AtomicU64>,
    /// Bumped each time this worker acquires the partition (or renews it after its lease had
    /// lapsed), so the intake can tell the first frame of a camera of a new tenure.
    epochs: Vec<AtomicU64>,
    /// Bumped each time this worker stops holding the partition (released, lost to another
    /// worker, stopped), so frames that arrived while its lease had lapsed can be told apart:
    /// still held afterwards (lost here) or handed over (the next owner counts them).
    handovers: Vec<AtomicU64>,
    accepting: watch::Sender<Vec<u32>>,
    /// The worker's stage state keeper, told of each partition about to be released so it
    /// saves the partition's camera states first (see [`Ownership::watch_hand_offs`]).
    hand_offs: Mutex<Option<mpsc::UnboundedSender<u32>>>,
    /// Releases waiting for their partition's states to be saved.
    waiting: Mutex<HashMap<u32, oneshot::Sender<()>>>,
}

/// Where this worker stands with a partition now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Its lease is valid: frames are taken.
    Serving,
    /// It held the lease and its trust ran out without a renewal (NATS unreachable, the worker
    /// stalled), and it neither released the partition nor saw another worker take it: frames
    /// that arrive now are nobody's until the next lease round says whose they are.
    Lapsed,
    /// Not this worker's (never held, released, or lost to another worker).
    Elsewhere,
}

#[derive(Clone, Copy, Debug, Default)]
struct PartitionState {
    accepting: bool,
    /// `None`: not held. Fixed ownership never expires.
    valid_until: Option<Instant>,
}

impl Ownership {
    fn with(total: u32, state: Vec<PartitionState>) -> Self {
        let accepting = accepting_of(&state);
        Self {
            total,
            in_flight: (0..total).map(|_| AtomicU64::new(0)).collect(),
            epochs: (0..total).map(|_| AtomicU64::new(1)).collect(),
            handovers: (0..total).map(|_| AtomicU64::new(0)).collect(),
            state: Mutex::new(state),
            accepting: watch::Sender::new(accepting),
            hand_offs: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Partitions assigned by hand: held for as long as the worker runs.
    pub fn fixed(set: &PartitionSet) -> Self {
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let state = (0..set.total())
            .map(|p| PartitionState {
                accepting: set.contains(p),
                valid_until: set.contains(p).then_some(far),
            })
            .collect();
        Self::with(set.total(), state)
    }

    /// None held yet: a [`LeaseManager`] acquires them.
    pub fn leased(total: u32) -> Self {
        Self::with(
            total.max(1),
            vec![PartitionState::default(); total.max(1) as usize],
        )
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    pub fn partition_of(&self, camera: &str) -> u32 {
        partition_of(camera, self.total)
    }

    /// Whether new frames of `partition` are taken.
    pub fn accepts(&self, partition: u32) -> bool {
        self.lock()
            .get(partition as usize)
            .is_some_and(|s| s.accepting && s.valid_until.is_some_and(|t| t > Instant::now()))
    }

    /// Serving, lapsed or elsewhere (see [`Standing`]).
    pub fn standing(&self, partition: u32) -> Standing {
        match self.lock().get(partition as usize) {
            Some(PartitionState {
                accepting: true,
                valid_until: Some(t),
            }) => {
                if *t > Instant::now() {
                    Standing::Serving
                } else {
                    Standing::Lapsed
                }
            }
            _ => Standing::Elsewhere,
        }
    }

    /// How many times this worker stopped holding `partition`.
    pub fn handovers(&self, partition: u32) -> u64 {
        self.handovers
            .get(partition as usize)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// Whether results of `partition` may be published now: the lease is valid.
    pub fn holds(&self, partition: u32) -> bool {
        self.lock()
            .get(partition as usize)
            .and_then(|s| s.valid_until)
            .is_some_and(|t| t > Instant::now())
    }

    /// The partitions whose frames are taken, as they change (for per-partition subscriptions).
    pub fn watch_accepting(&self) -> watch::Receiver<Vec<u32>> {
        self.accepting.subscribe()
    }

    pub fn accepting(&self) -> Vec<u32> {
        accepting_of(&self.lock())
    }

    /// A frame of `partition` entered the worker.
    pub fn enter(&self, partition: u32) {
        if let Some(n) = self.in_flight.get(partition as usize) {
            n.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A frame of `partition` left the worker (published, dropped or handed back).
    pub fn leave(&self, partition: u32) {
        if let Some(n) = self.in_flight.get(partition as usize) {
            // Never below zero, even if a caller leaves twice.
            let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
        }
    }

    /// Which tenure of `partition` this is: changes whenever this worker acquires it anew.
    pub fn epoch(&self, partition: u32) -> u64 {
        self.epochs
            .get(partition as usize)
            .map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// Partitions about to be released, for a worker whose stages keep per-camera state: it
    /// saves the states of each one's cameras, then calls [`handed_off`](Self::handed_off);
    /// the release waits for that (within the lease's trust) before deleting the lease.
    pub fn watch_hand_offs(&self) -> mpsc::UnboundedReceiver<u32> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self
            .hand_offs
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// The states of `partition`'s cameras are saved: its release may go on.
    pub fn handed_off(&self, partition: u32) {
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&partition);
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    /// Asks the state keeper (if any) to save `partition`'s states and waits for it until
    /// `deadline`.
    async fn hand_off(&self, partition: u32, deadline: Instant) {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(partition, tx);
        let asked = self
            .hand_offs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|keeper| keeper.send(partition).is_ok());
        if asked {
            let wait = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(wait, rx).await.is_err() {
                tracing::warn!(
                    partition,
                    "stage states not saved before the lease's trust ran out; the next owner restores the last periodic save"
                );
            }
        }
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&partition);
    }

    fn in_flight(&self, partition: u32) -> u64 {
        self.in_flight
            .get(partition as usize)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PartitionState>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, partition: u32, f: impl FnOnce(&mut PartitionState)) {
        let accepting = {
            let mut state = self.lock();
            let Some(s) = state.get_mut(partition as usize) else {
                return;
            };
            let held = s.valid_until.is_some();
            f(s);
            if held
                && s.valid_until.is_none()
                && let Some(n) = self.handovers.get(partition as usize)
            {
                n.fetch_add(1, Ordering::AcqRel);
            }
            accepting_of(&state)
        };
        self.accepting.send_if_modified(|current| {
            let changed = *current != accepting;
            *current = accepting;
            changed
        });
    }

    /// A renewal went through: valid until `until`. A lease that had lapsed in between starts
    /// a new tenure, so the intake checks each camera's first frame for a gap again.
    fn renewed(&self, partition: u32, until: Instant) {
        let mut lapsed = false;
        self.update(partition, |s| {
            lapsed = s.valid_until.is_some_and(|t| t <= Instant::now());
            s.accepting = true;
            s.valid_until = Some(until);
        });
        if lapsed && let Some(e) = self.epochs.get(partition as usize) {
            e.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Stops serving everything at once (the connection is gone or the worker stops).
    fn expire_all(&self) {
        for p in 0..self.total {
            self.update(p, |s| *s = PartitionState::default());
        }
    }
}

fn accepting_of(state: &[PartitionState]) -> Vec<u32> {
    (0u32..)
        .zip(state)
        .filter(|(_, s)| s.accepting && s.valid_until.is_some())
        .map(|(p, _)| p)
        .collect()
}

/// A name for this process that is one KV key token: host, pid and start time.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let nanos = panoptes_contracts::time::now_ns() % 1_000_000_000;
    token(&format!("{host}-{}-{nanos}", std::process::id()))
}

/// `s` with everything but letters, digits, `-` and `_` replaced, so it is one key token.
pub fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The lease bucket of a namespace.
pub fn bucket_name(namespace: &str) -> String {
    format!("{}-leases", token(namespace))
}

/// The bucket where live workers record each camera's last published sequence number, so a
/// worker taking a partition over can count the frames lost in between.
pub fn progress_bucket(namespace: &str) -> String {
    format!("{}-progress", token(namespace))
}

/// What an attempt to take a lease found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    Acquired,
    /// Another worker holds it.
    Held,
    /// The server did not answer (it is retried next round).
    Failed,
}

/// Acquires, renews and releases this worker's partition leases for one stage unit.
pub struct LeaseManager {
    kv: kv::Store,
    unit: String,
    me: String,
    config: LeaseConfig,
    ownership: std::sync::Arc<Ownership>,
    revisions: BTreeMap<u32, u64>,
    member_revision: Option<u64>,
    /// Partitions without a lease key in the previous round's listing.
    free_before: BTreeSet<u32>,
}

impl LeaseManager {
    /// Opens (or creates) the namespace's lease bucket, whose `max_age` is the lease TTL.
    pub async fn open(
        client: &async_nats::Client,
        namespace: &str,
        unit: &str,
        config: LeaseConfig,
        ownership: std::sync::Arc<Ownership>,
    ) -> Result<Self, LeaseError> {
        let js = async_nats::jetstream::new(client.clone());
        let bucket = bucket_name(namespace);
        let kv = js
            .create_or_update_key_value(kv::Config {
                bucket: bucket.clone(),
                description: "panoptes partition leases and worker membership".into(),
                history: 1,
                max_age: config.ttl,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| LeaseError::Bucket {
                bucket: bucket.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            kv,
            unit: token(unit),
            me: worker_id(),
            config,
            ownership,
            revisions: BTreeMap::new(),
            member_revision: None,
            free_before: BTreeSet::new(),
        })
    }

    pub fn worker(&self) -> &str {
        &self.me
    }

    fn member_prefix(&self) -> String {
        format!("member.{}.", self.unit)
    }

    fn lease_prefix(&self) -> String {
        format!("lease.{}.", self.unit)
    }

    fn lease_key(&self, partition: u32) -> String {
        format!("{}{partition}", self.lease_prefix())
    }

    /// Renews and rebalances every `renew_every` until `cancel`, then hands every partition
    /// back (after the frames in flight are published, within one TTL) and leaves. While a
    /// round fails or a held lease has lapsed (NATS was unreachable), rounds come every
    /// [`RETRY`] instead, so the worker serves again soon after NATS is back.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            let started = tokio::time::Instant::now();
            let ok = match self.round().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(unit = %self.unit, error = %e, "lease round failed; leases lapse unless renewed in time");
                    false
                }
            };
            let lapsed =
                (0..self.ownership.total()).any(|p| self.ownership.standing(p) == Standing::Lapsed);
            let next = if ok && !lapsed {
                self.config.renew_every()
            } else {
                RETRY.min(self.config.renew_every())
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(started + next) => {}
            }
        }
        self.leave().await;
    }

    /// One round: announce this member, list the members and the leases held, keep what this
    /// worker holds up to its share, release the rest, take free partitions up to its share.
    async fn round(&mut self) -> Result<(), async_nats::Error> {
        let started = Instant::now();
        let member_key = format!("{}{}", self.member_prefix(), self.me);
        self.member_revision = Some(self.kv.put(&member_key, self.me.clone().into()).await?);
        let (member_prefix, lease_prefix) = (self.member_prefix(), self.lease_prefix());
        // Listing the keys of a bucket whose entries expire can wait forever (the consumer
        // counts a message that expired before it was delivered; nats-server#3481): bounded,
        // a stuck listing fails this round instead of stopping every later one.
        let listing = async {
            let (mut members, mut leased) = (Vec::new(), BTreeSet::new());
            let mut keys = self.kv.keys().await?;
            while let Some(key) = keys.next().await {
                let key = key?;
                if let Some(m) = key.strip_prefix(&member_prefix) {
                    members.push(m.to_owned());
                } else if let Some(p) = key.strip_prefix(&lease_prefix) {
                    leased.extend(p.parse::<u32>().ok());
                }
            }
            Ok::<_, async_nats::Error>((members, leased))
        };
        let (mut members, leased) = tokio::time::timeout(self.config.renew_every(), listing)
            .await
            .map_err(|_| {
                format!(
                    "listing the members took longer than {:?}",
                    self.config.renew_every()
                )
            })??;
        if !members.contains(&self.me) {
            members.push(self.me.clone());
        }
        members.sort();
        members.dedup();
        let held: Vec<u32> = self.revisions.keys().copied().collect();
        let plan = plan_round(
            self.ownership.total(),
            &members,
            &self.me,
            &held,
            &leased,
            &self.free_before,
        );
        self.free_before = (0..self.ownership.total())
            .filter(|p| !leased.contains(p))
            .collect();
        // Renewals first: a release waits for its frames in flight, and must not delay them.
        for &p in &plan.keep {
            self.renew(p, started).await;
        }
        for &p in held.iter().filter(|p| !plan.keep.contains(p)) {
            self.release(p).await;
        }
        let mut load = plan.keep.len();
        let mut unanswered = BTreeSet::new();
        for &p in &plan.take {
            if load >= plan.cap {
                break;
            }
            match self.acquire(p, started).await {
                Taken::Acquired => load += 1,
                Taken::Held if self.ownership.standing(p) == Standing::Lapsed => {
                    // We had it; the key expired and another worker took it first.
                    self.ownership.update(p, |s| *s = PartitionState::default());
                    tracing::warn!(unit = %self.unit, partition = p, "lease lost to another worker");
                }
                Taken::Failed => {
                    unanswered.insert(p);
                }
                Taken::Held => {}
            }
        }
        // A lapsed partition this worker did not hold at the start of the round, nor tried to
        // take without an answer, is someone else's now. (One whose renewal failed this round
        // stays lapsed until the next round says whose it is.)
        for p in 0..self.ownership.total() {
            if !self.revisions.contains_key(&p)
                && !held.contains(&p)
                && !unanswered.contains(&p)
                && self.ownership.standing(p) != Standing::Elsewhere
            {
                self.ownership.update(p, |s| *s = PartitionState::default());
            }
        }
        Ok(())
    }

    /// Takes the lease of `p` if nobody holds it.
    async fn acquire(&mut self, p: u32, sent: Instant) -> Taken {
        let key = self.lease_key(p);
        match self.kv.create(&key, self.me.clone().into()).await {
            Ok(revision) => {
                self.revisions.insert(p, revision);
                let until = sent + self.config.trusted();
                if let Some(e) = self.ownership.epochs.get(p as usize) {
                    e.fetch_add(1, Ordering::AcqRel);
                }
                self.ownership.update(p, |s| {
                    s.accepting = true;
                    s.valid_until = Some(until);
                });
                tracing::info!(unit = %self.unit, partition = p, worker = %self.me, "partition acquired");
                Taken::Acquired
            }
            // Held by someone else until they see the new membership and let go, or it expires.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Taken::Held,
            Err(e) => {
                tracing::debug!(partition = p, error = %e, "cannot take lease");
                Taken::Failed
            }
        }
    }

    async fn renew(&mut self, p: u32, sent: Instant) {
        let key = self.lease_key(p);
        let Some(&revision) = self.revisions.get(&p) else {
            return;
        };
        match self.kv.update(&key, self.me.clone().into(), revision).await {
            Ok(revision) => {
                self.revisions.insert(p, revision);
                self.ownership.renewed(p, sent + self.config.trusted());
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // The key changed since our last renewal. Whether another worker took it or it
                // merely expired (NATS was down or restarted for longer than the TTL) is in the
                // key itself; only the first is a loss to another worker.
                self.revisions.remove(&p);
                match self.kv.entry(&key).await {
                    Ok(Some(entry))
                        if entry.operation == kv::Operation::Put && entry.value != self.me =>
                    {
                        self.ownership.update(p, |s| *s = PartitionState::default());
                        let holder = String::from_utf8_lossy(&entry.value);
                        tracing::warn!(unit = %self.unit, partition = p, %holder, "lease lost to another worker");
                    }
                    Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                        // Ours under a revision we did not record (a renewal whose reply was
                        // lost): keep it.
                        self.revisions.insert(p, entry.revision);
                        self.ownership.renewed(p, sent + self.config.trusted());
                    }
                    Ok(_) => {
                        tracing::info!(unit = %self.unit, partition = p, "lease expired before it could be renewed (NATS unreachable?); taking it again");
                        if self.acquire(p, sent).await == Taken::Held {
                            self.ownership.update(p, |s| *s = PartitionState::default());
                            tracing::warn!(unit = %self.unit, partition = p, "lease expired and another worker took it first");
                        }
                    }
                    // The next round tries again; until then the lease stays lapsed.
                    Err(e) => {
                        tracing::debug!(partition = p, error = %e, "cannot read the lease key")
                    }
                }
            }
            // Unreachable server: keep serving until our own view of the lease runs out.
            Err(e) => tracing::debug!(partition = p, error = %e, "cannot renew lease"),
        }
    }

    /// Stops taking frames of `p`, lets the ones in flight finish (within one TTL), then
    /// deletes the lease so the new owner can take it at once.
    async fn release(&mut self, p: u32) {
        self.ownership.update(p, |s| s.accepting = false);
        let deadline = Instant::now() + self.config.trusted();
        while self.ownership.in_flight(p) > 0
            && self.ownership.holds(p)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.ownership.holds(p) {
            self.ownership.hand_off(p, deadline).await;
        }
        self.ownership.update(p, |s| *s = PartitionState::default());
        if let Some(revision) = self.revisions.remove(&p) {
            let key = self.lease_key(p);
            if let Err(e) = self.kv.delete_expect_revision(&key, Some(revision)).await {
                tracing::debug!(partition = p, error = %e, "lease not deleted; it expires");
            }
        }
        tracing::info!(unit = %self.unit, partition = p, worker = %self.me, "partition released");
    }

    async fn leave(&mut self) {
        let member_key = format!("{}{}", self.member_prefix(), self.me);
        // Leave the membership first so the others start taking over while we drain.
        if let Err(e) = self.kv.delete(&member_key).await {
            tracing::debug!(error = %e, "member key not deleted; it expires");
        }
        let held: Vec<u32> = self.revisions.keys().copied().collect();
        for p in &held {
            self.ownership.update(*p, |s| s.accepting = false);
        }
        for p in held {
            self.release(p).await;
        }
        self.ownership.expire_all();
        tracing::info!(unit = %self.unit, worker = %self.me, "left; partitions handed back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ownership_accepts_its_partitions_only() {
        let set = PartitionSet::parse("0-3", 8).expect("valid");
        let o = Ownership::fixed(&set);
        assert!(o.accepts(2) && o.holds(2));
        assert!(!o.accepts(4) && !o.holds(4));
        assert_eq!(o.accepting(), [0, 1, 2, 3]);
        o.enter(1);
        o.leave(1);
        o.leave(1);
        assert_eq!(o.in_flight(1), 0);
    }

    #[test]
    fn tokens_are_key_safe() {
        assert_eq!(token("host.example.com-12"), "host_example_com-12");
        assert_eq!(bucket_name("site1"), "site1-leases");
    }
}
