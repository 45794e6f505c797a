//! Camera partitions: which worker serves which camera. A camera's partition is the hash NATS's
//! own `partition(P, …)` subject mapping uses, so server-side mappings and workers always agree.

use std::fmt;

/// FNV-1a, 32 bit: what nats-server's `partition()` mapping function hashes a token with
/// (Go's `hash/fnv.New32a`, then `% P`). Written out rather than taken from a crate because it
/// is this short and the constants are the whole specification.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(PRIME)
    })
}

/// The partition (`0..partitions`) of a camera. `partitions` must be at least 1.
pub fn partition_of(camera: &str, partitions: u32) -> u32 {
    fnv1a_32(camera.as_bytes()) % partitions.max(1)
}

/// Why a partition list such as `0-3,7` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartitionSpecError {
    #[error("the partition list is empty (expected e.g. `0-3,7`)")]
    Empty,
    #[error("{item:?} is not a partition number or range (expected e.g. `0-3,7`)")]
    Syntax { item: String },
    #[error("range {item:?} runs backwards")]
    Backwards { item: String },
    #[error(
        "partition {partition} does not exist: the topology has {total} partitions (0-{last})",
        last = total.saturating_sub(1)
    )]
    OutOfRange { partition: u32, total: u32 },
    #[error("a topology needs at least 1 partition")]
    NoPartitions,
}

/// Some of the `total` partitions, e.g. the ones one worker serves.
#[derive(Clone, PartialEq, Eq)]
pub struct PartitionSet {
    owned: Vec<bool>,
}

impl fmt::Debug for PartitionSet {
    // A list of `total` booleans says nothing at a glance; the ranges do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartitionSet({self})")
    }
}

impl PartitionSet {
    /// Every one of `total` partitions.
    pub fn all(total: u32) -> Result<Self, PartitionSpecError> {
        if total == 0 {
            return Err(PartitionSpecError::NoPartitions);
        }
        Ok(Self {
            owned: vec![true; total as usize],
        })
    }

    /// Parses a comma-separated list of partition numbers and inclusive ranges (`0-3,7`),
    /// each within `0..total`. Whitespace around items is ignored; duplicates are harmless.
    pub fn parse(spec: &str, total: u32) -> Result<Self, PartitionSpecError> {
        if total == 0 {
            return Err(PartitionSpecError::NoPartitions);
        }
        if spec.trim().is_empty() {
            return Err(PartitionSpecError::Empty);
        }
        let mut owned = vec![false; total as usize];
        for item in spec.split(',').map(str::trim) {
            let syntax = || PartitionSpecError::Syntax {
                item: item.to_owned(),
            };
            let number = |s: &str| {
                let s = s.trim();
                // `u32::from_str` accepts a leading `+`; a partition list has no use for it.
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                let n: u32 = s.parse().map_err(|_| syntax())?;
                if n >= total {
                    return Err(PartitionSpecError::OutOfRange {
                        partition: n,
                        total,
                    });
                }
                Ok(n)
            };
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => {
                    let n = number(item)?;
                    (n, n)
                }
            };
            if first > last {
                return Err(PartitionSpecError::Backwards {
                    item: item.to_owned(),
                });
            }
            for slot in &mut owned[first as usize..=last as usize] {
                *slot = true;
            }
        }
        Ok(Self { owned })
    }

    /// How many partitions the topology has (not how many are in this set).
    pub fn total(&self) -> u32 {
        // Never more than a u32 holds: built from a u32 count.
        self.owned.len() as u32
    }

    pub fn contains(&self, partition: u32) -> bool {
        self.owned.get(partition as usize).copied().unwrap_or(false)
    }

    /// Whether this set serves `camera`, i.e. holds [`partition_of`] it.
    pub fn owns(&self, camera: &str) -> bool {
        self.contains(partition_of(camera, self.total()))
    }

    pub fn is_all(&self) -> bool {
        self.owned.iter().all(|&o| o)
    }
}

impl fmt::Display for PartitionSet {
    /// Compact ranges as they are written on the command line, e.g. `0-3,7 of 16`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.owned.len() {
            if !self.owned[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i + 1 < self.owned.len() && self.owned[i + 1] {
                i += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == i {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{i}")?;
            }
            i += 1;
        }
        write!(f, " of {}", self.owned.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_32_matches_published_vectors() {
        // Reference values of the FNV-1a 32-bit test suite (also Go's hash/fnv New32a).
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partitions_of_camera_ids_are_pinned() {
        // A changed hash would silently move cameras between workers and disagree with
        // nats-server mappings, so the values themselves are fixed here. nats-server 2.15 maps
        // `in.*` → `out.{{partition(16,1)}}.{{wildcard(1)}}` to exactly these partitions.
        assert_eq!(fnv1a_32(b"cam-alpha"), 0x30d5_8ad5);
        assert_eq!(partition_of("cam-alpha", 16), 5);
        assert_eq!(partition_of("cam-bravo", 16), 13);
        assert_eq!(partition_of("cam-pub", 16), 2);
        assert_eq!(partition_of("cam-pub", 1), 0);
    }

    #[test]
    fn parses_lists_and_ranges() {
        let set = PartitionSet::parse("0-3, 7,3", 16).expect("valid");
        let owned: Vec<u32> = (0..16).filter(|&p| set.contains(p)).collect();
        assert_eq!(owned, [0, 1, 2, 3, 7]);
        assert_eq!(set.to_string(), "0-3,7 of 16");
        assert!(!set.is_all());
        assert!(PartitionSet::parse("0-15", 16).expect("valid").is_all());
        assert_eq!(PartitionSet::all(4).expect("valid").to_string(), "0-3 of 4");
        assert!(set.owns("cam-pub"));
        assert!(!set.owns("cam-alpha"));
        assert!(!set.owns("cam-bravo"));
    }

    #[test]
    fn refuses_bad_lists_with_the_reason() {
        let err = |s| PartitionSet::parse(s, 16).expect_err(s);
        assert_eq!(err(""), PartitionSpecError::Empty);
        assert_eq!(err("0,x"), PartitionSpecError::Syntax { item: "x".into() });
        assert_eq!(err("1,,2"), PartitionSpecError::Syntax { item: "".into() });
        assert_eq!(err("+3"), PartitionSpecError::Syntax { item: "+3".into() });
        assert_eq!(
            err("5-2"),
            PartitionSpecError::Backwards { item: "5-2".into() }
        );
        assert_eq!(
            err("3-16"),
            PartitionSpecError::OutOfRange {
                partition: 16,
                total: 16
            }
        );
        assert_eq!(
            err("16").to_string(),
            "partition 16 does not exist: the topology has 16 partitions (0-15)"
        );
        assert_eq!(
            PartitionSet::parse("0", 0),
            Err(PartitionSpecError::NoPartitions)
        );
    }
}
