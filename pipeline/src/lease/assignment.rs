//! Which partitions a worker of a unit holds: every worker prefers the same rendezvous
//! assignment of the member list, and keeps what it already holds within its share, so a leave
//! moves only the leaver's partitions and a join only what the newcomer's share takes.

use std::collections::{BTreeMap, BTreeSet};

use panoptes_contracts::partition::fnv1a_32;

/// Who owns each partition: rendezvous hashing with bounded loads. Every (partition, member)
/// pair is ranked by its rendezvous score, and pairs are taken best first, each partition by the
/// first member that has fewer than `ceil(total / members)`: no member gets more than its share
/// and, with 2 workers and 8 partitions, none is left with nothing (plain rendezvous leaves one
/// idle 1 time in 128). Every worker computes the same answer from the same sorted member list,
/// so no coordinator is needed. This is each worker's preference; what it holds is decided by
/// [`plan_round`], which keeps what a worker already holds within its share.
pub fn assignment(total: u32, members: &[String]) -> Vec<Option<&str>> {
    let mut owners = vec![None; total as usize];
    if members.is_empty() {
        return owners;
    }
    let cap = (total as usize).div_ceil(members.len());
    let mut pairs: Vec<(u64, &str, u32)> = (0..total)
        .flat_map(|p| members.iter().map(move |m| (score(m, p), m.as_str(), p)))
        .collect();
    // Best score first; ties broken by name, then partition, so every worker sorts alike.
    pairs.sort_unstable_by(|a, b| b.cmp(a));
    let mut loads: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, member, p) in pairs {
        let Some(slot) = owners.get_mut(p as usize) else {
            continue;
        };
        let load = loads.entry(member).or_insert(0);
        if slot.is_none() && *load < cap {
            *slot = Some(member);
            *load += 1;
        }
    }
    owners
}

fn score(member: &str, partition: u32) -> u64 {
    // FNV-1a of "member/partition" alone clusters for similar names; a 64-bit finaliser
    // (splitmix64's) spreads it so partitions divide evenly.
    let mut z = u64::from(fnv1a_32(format!("{member}/{partition}").as_bytes()))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one worker does in a lease round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// The most partitions a member holds: `ceil(total / members)`.
    pub cap: usize,
    /// Held partitions to renew; the others held are released.
    pub keep: BTreeSet<u32>,
    /// Free partitions to try to take, best first, no more than the cap leaves room for.
    pub take: Vec<u32>,
}

/// One worker's round. `held`: the partitions it holds; `leased`: those with a lease key in
/// this round's listing (anyone's); `free_before`: those without one in its previous round's.
///
/// It keeps what it holds up to the cap, its preferred partitions ([`assignment`]) first, and
/// releases the rest, so members hold their share whoever joined first. It takes free
/// partitions it prefers, and free ones nobody took for a whole round (their preferred member
/// is at its cap), up to the cap. Keeping instead of moving to the preferred member is what
/// makes a leave move only the leaver's partitions: the others' partitions, and the cameras in
/// them, never change hands when a worker dies, and hold still once every partition is held
/// within the caps.
pub(super) fn plan_round(
    total: u32,
    members: &[String],
    me: &str,
    held: &[u32],
    leased: &BTreeSet<u32>,
    free_before: &BTreeSet<u32>,
) -> Plan {
    let cap = (total as usize).div_ceil(members.len().max(1));
    let preferred = assignment(total, members);
    let prefers = |p: u32| preferred.get(p as usize).copied().flatten() == Some(me);
    let rank = |p: &u32| {
        (
            std::cmp::Reverse(prefers(*p)),
            std::cmp::Reverse(score(me, *p)),
            *p,
        )
    };
    let mut kept = held.to_vec();
    kept.sort_by_key(rank);
    kept.truncate(cap);
    let mut take: Vec<u32> = (0..total)
        .filter(|p| !held.contains(p) && !leased.contains(p))
        .filter(|p| prefers(*p) || free_before.contains(p))
        .collect();
    take.sort_by_key(rank);
    take.truncate(cap.saturating_sub(kept.len()));
    Plan {
        cap,
        keep: kept.into_iter().collect(),
        take,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads<'a>(owners: &[Option<&'a str>]) -> BTreeMap<&'a str, usize> {
        let mut loads = BTreeMap::new();
        for owner in owners {
            *loads
                .entry(owner.expect("every partition has an owner"))
                .or_insert(0) += 1;
        }
        loads
    }

    #[test]
    fn assignment_gives_every_member_its_share_and_moves_little() {
        // Many random-looking member names (as worker_id makes them): whatever the names, two
        // workers split 8 partitions 4/4 and three split 16 at most 6 each, never 0.
        for run in 0..200u32 {
            let two: Vec<String> = (0..2).map(|i| format!("host-{run}-{i}")).collect();
            let owners = assignment(8, &two);
            assert!(
                loads(&owners).values().all(|&n| n == 4),
                "{two:?}: {owners:?}"
            );
            let three: Vec<String> = (0..3).map(|i| format!("host-{run}-{i}")).collect();
            let owners = assignment(16, &three);
            let three_loads = loads(&owners);
            assert_eq!(three_loads.len(), 3, "{three_loads:?}");
            assert!(
                three_loads.values().all(|&n| (4..=6).contains(&n)),
                "{three_loads:?}"
            );
        }
        let three: Vec<String> = ["w-a", "w-b", "w-c"].map(String::from).to_vec();
        let before = assignment(3000, &three);
        assert!(loads(&before).values().all(|&n| n == 1000));
        // Removing a member hands its partitions to the others; the others keep nearly all of
        // theirs (a few move where the higher cap lets a partition go to its best-scored member).
        let two: Vec<String> = ["w-a", "w-c"].map(String::from).to_vec();
        let after = assignment(3000, &two);
        let kept_moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != Some("w-b") && b != a)
            .count();
        assert!(kept_moved < 3000 / 30, "{kept_moved} partitions moved");
        // The same member list in the same order gives the same answer on every worker.
        assert_eq!(assignment(16, &three), assignment(16, &three));
        assert!(assignment(3, &[]).iter().all(Option::is_none));
    }

    /// The lease bucket as the workers of one unit play it, one member's round at a time;
    /// `create` succeeds only on a free key, as compare-and-set does.
    #[derive(Default)]
    struct Bucket {
        total: u32,
        members: Vec<String>,
        holders: BTreeMap<u32, String>,
        free_before: BTreeMap<String, BTreeSet<u32>>,
        /// Partitions a member released or took, over the whole play.
        moves: Vec<(String, u32, bool)>,
    }

    impl Bucket {
        fn new(total: u32) -> Self {
            Self {
                total,
                ..Default::default()
            }
        }

        fn join(&mut self, m: &str) {
            self.members.push(m.to_owned());
            self.members.sort();
        }

        /// A member dies: its member key and leases expire together.
        fn kill(&mut self, m: &str) {
            self.members.retain(|x| x != m);
            self.holders.retain(|_, h| h != m);
        }

        fn round(&mut self, me: &str) {
            let leased: BTreeSet<u32> = self.holders.keys().copied().collect();
            let held: Vec<u32> = (self.holders.iter())
                .filter(|(_, h)| *h == me)
                .map(|(p, _)| *p)
                .collect();
            let free_before = self.free_before.remove(me).unwrap_or_default();
            let plan = plan_round(self.total, &self.members, me, &held, &leased, &free_before);
            self.free_before.insert(
                me.to_owned(),
                (0..self.total).filter(|p| !leased.contains(p)).collect(),
            );
            for p in held.iter().filter(|p| !plan.keep.contains(p)) {
                self.holders.remove(p);
                self.moves.push((me.to_owned(), *p, false));
            }
            for p in plan.take {
                if let std::collections::btree_map::Entry::Vacant(free) = self.holders.entry(p) {
                    free.insert(me.to_owned());
                    self.moves.push((me.to_owned(), p, true));
                }
            }
        }

        /// Every member plays `n` rounds, in turn.
        fn rounds(&mut self, n: usize) {
            for _ in 0..n {
                for m in self.members.clone() {
                    self.round(&m);
                }
            }
        }

        fn loads(&self) -> BTreeMap<&str, usize> {
            let mut loads: BTreeMap<&str, usize> =
                self.members.iter().map(|m| (m.as_str(), 0)).collect();
            for h in self.holders.values() {
                *loads.entry(h).or_insert(0) += 1;
            }
            loads
        }
    }

    #[test]
    fn members_share_the_partitions_and_a_leave_moves_only_the_leavers() {
        for run in 0..200u32 {
            let names: Vec<String> = (0..3)
                .map(|i| format!("host-{run}-{i}-{}", run * 7919))
                .collect();
            let mut bucket = Bucket::new(16);
            // Workers start one after another, each playing a round before the next joins.
            for name in &names {
                bucket.join(name);
                bucket.rounds(1);
            }
            bucket.rounds(3);
            assert_eq!(bucket.holders.len(), 16, "run {run}: {:?}", bucket.holders);
            assert!(
                bucket.loads().values().all(|n| (4..=6).contains(n)),
                "run {run}: {:?}",
                bucket.loads()
            );
            // Settled: more rounds move nothing.
            let settled = bucket.holders.clone();
            let moves = bucket.moves.len();
            bucket.rounds(3);
            assert_eq!(bucket.holders, settled, "run {run}");
            assert_eq!(bucket.moves.len(), moves, "run {run}");

            // The member with the most partitions dies; the others take its partitions within
            // two rounds (one when each prefers its share of them) and release none of theirs.
            let dead = (bucket.loads().into_iter())
                .max_by_key(|(_, n)| *n)
                .map(|(m, _)| m.to_owned())
                .expect("members");
            bucket.kill(&dead);
            bucket.rounds(2);
            assert_eq!(bucket.holders.len(), 16, "run {run}: {:?}", bucket.holders);
            for (p, h) in &settled {
                if *h != dead {
                    assert_eq!(
                        bucket.holders.get(p),
                        Some(h),
                        "run {run}: partition {p} moved"
                    );
                }
            }
            assert!(bucket.loads().values().all(|n| *n <= 8));

            // It comes back under a new name: it gets a share again, within the caps.
            bucket.join(&format!("{dead}-again"));
            bucket.rounds(4);
            assert_eq!(bucket.holders.len(), 16, "run {run}: {:?}", bucket.holders);
            assert!(
                bucket.loads().values().all(|n| (4..=6).contains(n)),
                "run {run}: {:?}",
                bucket.loads()
            );
        }
    }

    #[test]
    fn a_lone_worker_takes_everything_and_gives_a_joiner_its_preferred_share() {
        let (a, b) = ("w-a".to_owned(), "w-b".to_owned());
        let mut bucket = Bucket::new(8);
        bucket.join(&a);
        bucket.rounds(1);
        assert_eq!(bucket.loads()[a.as_str()], 8);
        bucket.join(&b);
        bucket.rounds(2);
        let two = [a.clone(), b.clone()];
        let preferred = assignment(8, &two);
        for (p, h) in &bucket.holders {
            assert_eq!(preferred[*p as usize], Some(h.as_str()), "partition {p}");
        }
        assert_eq!(bucket.loads().values().copied().collect::<Vec<_>>(), [4, 4]);
    }
}
