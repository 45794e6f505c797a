//! Store dirs in the temp dir: each records the process that made it, and those whose owner
//! died (killed before it could remove them) are removed by the next start.

use std::path::Path;

/// Store dirs are `<temp dir>/panoptes-nats-*`.
pub(super) const DIR_PREFIX: &str = "panoptes-nats-";

/// Names the process that made a store dir: `<pid> <start time> <pid namespace>`. The start
/// time (clock ticks since boot) tells the owner from a later process that got the same pid;
/// the namespace, a container sharing the temp dir (its pids mean nothing here).
pub(super) const OWNER_FILE: &str = "owner";

/// This process as an [`OWNER_FILE`] records it; `None` without /proc.
pub(super) fn owner_of_this_process() -> Option<String> {
    let pid = std::process::id();
    let (_, started) = process_state(pid)?;
    Some(format!("{pid} {started} {}", pid_namespace()?))
}

/// This process's pid namespace, as `/proc/self/ns/pid` names it (`pid:[4026531836]`).
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    link.to_str().map(str::to_owned)
}

/// The state letter and start time of process `pid`, from `/proc/<pid>/stat`.
fn process_state(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: count from after it.
    // Field 3 is the state, field 22 the start time.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let started = fields.nth(18)?.parse().ok()?;
    Some((state, started))
}

/// Whether the process an [`OWNER_FILE`] names is still running (zombies count as dead).
/// Unreadable records and owners in another pid namespace count as alive: only dirs known to
/// be orphans are removed.
fn owner_alive(record: &str) -> bool {
    let mut parts = record.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(started)), Some(namespace)) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
        parts.next(),
    ) else {
        return true;
    };
    if pid_namespace().is_none_or(|ours| ours != namespace) {
        return true;
    }
    match process_state(pid) {
        None => false,
        Some((state, s)) => s == started && !matches!(state, 'Z' | 'X' | 'x'),
    }
}

/// Removes the store dirs in `temp` whose owner died without removing them (killed with
/// SIGKILL; its server died with it). Dirs without an owner record are left alone.
pub(super) fn remove_stale_dirs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let is_store = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_store {
            continue;
        }
        let path = entry.path();
        let Ok(record) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        if owner_alive(&record) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed the store of a nats-server whose owner died")
            }
            Err(e) => {
                tracing::debug!(dir = %path.display(), error = %e, "cannot remove a dead owner's nats-server store")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_records_tell_live_owners_from_dead_and_reused_pids() {
        let me = owner_of_this_process().expect("/proc");
        assert!(owner_alive(&me));
        let fields: Vec<&str> = me.split(' ').collect();
        let [pid, started, ns] = fields[..] else {
            panic!("owner record {me:?}");
        };
        let started: u64 = started.parse().expect("start time");
        // Same pid, another start time: a later process that got the pid.
        assert!(!owner_alive(&format!("{pid} {} {ns}", started + 1)));
        // A pid above the kernel's limit has no process.
        assert!(!owner_alive(&format!("4294967295 1 {ns}")));
        // Pids of another namespace (a container sharing the temp dir) are not ours to judge.
        assert!(owner_alive("4294967295 1 pid:[1]"));
        // Unreadable records are left alone.
        assert!(owner_alive("garbage"));
        assert!(owner_alive("4294967295 1"));
    }

    #[test]
    fn stale_dirs_of_dead_owners_are_removed_and_others_kept() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = |name: &str, owner: Option<String>| {
            let path = temp.path().join(name);
            std::fs::create_dir(&path).expect("mkdir");
            if let Some(owner) = owner {
                std::fs::write(path.join(OWNER_FILE), owner).expect("write owner");
            }
            path
        };
        let gone = format!("4294967295 1 {}", pid_namespace().expect("/proc"));
        let dead = dir("panoptes-nats-dead", Some(gone.clone()));
        let alive = dir("panoptes-nats-alive", owner_of_this_process());
        let unowned = dir("panoptes-nats-new", None);
        let stranger = dir("someone-else", Some(gone));
        remove_stale_dirs(temp.path());
        assert!(!dead.exists());
        assert!(alive.exists() && unowned.exists() && stranger.exists());
    }
}
