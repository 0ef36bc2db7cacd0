//! Which cores the benchmarks' processes run on. On this two-core machine a client, a proxy and the
//! server behind it would otherwise compete for the same cores, and a ratio between two ways in would
//! measure that contest as much as the ways themselves; a benchmark can give each side a core of its
//! own, as separate machines would have.

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

/// The CPUs this process may run on.
pub fn allowed() -> Vec<usize> {
    let mine = nix::sched::sched_getaffinity(Pid::from_raw(0)).unwrap();
    (0..CpuSet::count()).filter(|c| mine.is_set(*c).unwrap_or(false)).collect()
}

fn set_of(cpus: &[usize]) -> CpuSet {
    let mut set = CpuSet::new();
    for c in cpus {
        set.set(*c).unwrap();
    }
    set
}

/// Confines every thread of process `pid` to `cpus`; its children started later inherit it.
pub fn confine(pid: i32, cpus: &[usize]) {
    let set = set_of(cpus);
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
    for t in threads.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
            // A thread that ended meanwhile is no loss.
            let _ = sched_setaffinity(Pid::from_raw(tid), &set);
        }
    }
}

/// This process and every process descending from it, with its command name.
fn tree() -> Vec<(i32, String)> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid …`; the name may hold spaces and parentheses, so split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map(|(_, c)| c.to_owned()).unwrap_or_default();
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok()).unwrap_or(0);
        parent_of.push((pid, ppid, comm));
    }
    let mut found = vec![(std::process::id() as i32, String::new())];
    let mut i = 0;
    while i < found.len() {
        let p = found[i].0;
        found.extend(parent_of.iter().filter(|(_, pp, _)| *pp == p).map(|(c, _, n)| (*c, n.clone())));
        i += 1;
    }
    found
}

/// Confines this process and all it started — PostgreSQL, the registry, the cluster's engines and
/// their containers — to `cpus`, except the processes named `name` in `elsewhere`, which go to the
/// CPUs given with it.
pub fn confine_tree(cpus: &[usize], elsewhere: &[(&str, &[usize])]) {
    for (pid, comm) in tree() {
        let target = elsewhere.iter().find(|(name, _)| *name == comm).map(|(_, c)| *c).unwrap_or(cpus);
        confine(pid, target);
    }
}
