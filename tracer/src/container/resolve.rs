//! The [`Resolver`]: namespace -> container, kept up to date from each
//! namespace discovery, each container resolved once and cached (at most
//! [`CACHE_CAP`] entries, the least recently used evicted and counted).
//!
//! Sockets outlive the processes of their namespace: a killed server's
//! connections still pass LAST_ACK and FIN_WAIT on their way out, and the
//! namespace lives until they do. A namespace whose processes vanished
//! therefore keeps its container for [`LINGER`] (unless a new namespace
//! takes its inode), so those last events are still named.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Container, ContainerMap, Runtime, bundle};
use crate::diag::cgroup::parse_proc_cgroup;

/// Most containers cached at once.
pub const CACHE_CAP: usize = 4096;

/// How long a namespace with no processes left keeps its container: an
/// orphaned FIN_WAIT2 socket lives `tcp_fin_timeout` (60 s by default).
pub const LINGER: Duration = Duration::from_secs(90);

/// The resolver's counters, exported as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Namespaces attributed to a container now.
    pub attributed: usize,
    /// Containers in the cache.
    pub cached: usize,
    /// Containers evicted from the full cache, since start.
    pub evictions: u64,
}

struct Cached {
    found: bundle::Found,
    container: Arc<Container>,
    used: u64,
}

/// What was last seen of one namespace.
struct Seen {
    pids: Vec<u32>,
    container: Option<Arc<Container>>,
}

/// Attributes namespaces to containers; lives on the dump thread.
pub struct Resolver {
    root: PathBuf,
    cache: HashMap<String, Cached>,
    cap: usize,
    clock: u64,
    netns: HashMap<u32, Seen>,
    /// Namespaces whose processes vanished, with their container and when.
    lingering: HashMap<u32, (Arc<Container>, Instant)>,
    map: Arc<ContainerMap>,
    evictions: u64,
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::new(PathBuf::from("/"), CACHE_CAP)
    }
}

impl Resolver {
    /// A resolver reading `/proc` and the runtimes' files under `root`
    /// (`/` but in tests), caching at most `cap` containers.
    pub fn new(root: PathBuf, cap: usize) -> Resolver {
        Resolver {
            root,
            cache: HashMap::new(),
            cap: cap.max(1),
            clock: 0,
            netns: HashMap::new(),
            lingering: HashMap::new(),
            map: Arc::default(),
            evictions: 0,
        }
    }

    /// The attribution as of the last [`Resolver::update`].
    pub fn map(&self) -> Arc<ContainerMap> {
        self.map.clone()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> ResolverStats {
        ResolverStats {
            attributed: self.map.len() - self.lingering.len(),
            cached: self.cache.len(),
            evictions: self.evictions,
        }
    }

    /// Given a few processes of each namespace found (lowest pids first),
    /// attribute new namespaces and those whose processes changed; forget
    /// vanished ones after `LINGER`. Returns the new map when it changed.
    pub fn update(&mut self, pids: &BTreeMap<u32, Vec<u32>>) -> Option<Arc<ContainerMap>> {
        self.update_at(pids, Instant::now())
    }

    fn update_at(
        &mut self,
        pids: &BTreeMap<u32, Vec<u32>>,
        now: Instant,
    ) -> Option<Arc<ContainerMap>> {
        let lingering = &mut self.lingering;
        self.netns.retain(|&n, seen| {
            let keep = pids.contains_key(&n);
            if !keep && let Some(c) = seen.container.take() {
                lingering.insert(n, (c, now));
            }
            keep
        });
        let before = lingering.len();
        lingering.retain(|n, (_, since)| {
            !pids.contains_key(n) && now.saturating_duration_since(*since) < LINGER
        });
        let mut changed = lingering.len() != before;
        for (&netns, list) in pids {
            if self.netns.get(&netns).is_some_and(|s| &s.pids == list) {
                continue;
            }
            let container = self.attribute(list);
            let old = self.netns.insert(
                netns,
                Seen {
                    pids: list.clone(),
                    container: container.clone(),
                },
            );
            changed |= old.map(|s| s.container) != Some(container);
        }
        if !changed {
            return None;
        }
        self.map = Arc::new(
            self.netns
                .iter()
                .filter_map(|(&n, s)| Some((n, s.container.clone()?)))
                .chain(self.lingering.iter().map(|(&n, (c, _))| (n, c.clone())))
                .collect(),
        );
        Some(self.map.clone())
    }

    /// The container of the oldest of `pids` that is in one, preferring
    /// an application container to a pod's sandbox. The oldest made the
    /// namespace, or joined it first: where containers share one (`podman
    /// --network container:NAME`), the one the others joined, whatever
    /// order the pids wrapped into.
    fn attribute(&mut self, pids: &[u32]) -> Option<Arc<Container>> {
        let mut oldest_first: Vec<(u64, u32)> = pids
            .iter()
            .map(|&pid| (started(&self.root, pid).unwrap_or(u64::MAX), pid))
            .collect();
        oldest_first.sort_unstable();
        let mut sandbox = None;
        for (_, pid) in oldest_first {
            let Some((id, hint)) = container_of_pid(&self.root, pid) else {
                continue;
            };
            let (container, is_sandbox) = self.lookup(&id, hint);
            if !is_sandbox {
                return Some(container);
            }
            sandbox.get_or_insert(container);
        }
        sandbox
    }

    /// A container from the cache, or read from disk and cached.
    fn lookup(&mut self, id: &str, hint: Option<Runtime>) -> (Arc<Container>, bool) {
        self.clock += 1;
        if let Some(c) = self.cache.get_mut(id) {
            c.used = self.clock;
            return (c.container.clone(), c.found.sandbox);
        }
        if self.cache.len() >= self.cap
            && let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
        {
            self.cache.remove(&oldest);
            self.evictions += 1;
        }
        let found = bundle::find(&self.root, id, hint);
        let container = Arc::new(found.container.clone());
        let sandbox = found.sandbox;
        self.cache.insert(
            id.to_owned(),
            Cached {
                found,
                container: container.clone(),
                used: self.clock,
            },
        );
        (container, sandbox)
    }
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`).
fn started(root: &Path, pid: u32) -> Option<u64> {
    let dir = root.join("proc").join(pid.to_string());
    let process = procfs::process::Process::new_with_root(dir).ok()?;
    Some(process.stat().ok()?.starttime)
}

/// The id of the container process `pid` runs in, from its cgroup path
/// under `root`, and the runtime that path names.
pub(super) fn container_of_pid(root: &Path, pid: u32) -> Option<(String, Option<Runtime>)> {
    let path = root.join("proc").join(pid.to_string()).join("cgroup");
    let text = std::fs::read_to_string(path).ok()?;
    let id = parse_proc_cgroup(&text).container_id?;
    let line = text.lines().find(|l| l.contains(id)).unwrap_or("");
    Some((id.to_owned(), Runtime::from_cgroup(line, id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> String {
        format!("{:064x}", u64::from(n) + 0xabc)
    }

    /// A fake root: processes 1.. with the given cgroup paths.
    fn root(tag: &str, procs: &[(u32, String)]) -> tempfile::TempDir {
        let root = tempfile::Builder::new()
            .prefix(&format!("tracer-res-{tag}-"))
            .tempdir()
            .expect("tempdir");
        for (pid, cg) in procs {
            let dir = root.path().join("proc").join(pid.to_string());
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("cgroup"), format!("4:pids:{cg}\n0::/\n")).expect("cgroup");
        }
        root
    }

    #[test]
    fn namespaces_follow_their_processes() {
        let procs = [
            (1, "/init.scope".to_string()),
            (10, format!("/libpod_parent/libpod-{}", id(1))),
            (20, format!("/libpod_parent/libpod-{}", id(2))),
        ];
        let root = root("follow", &procs);
        let mut r = Resolver::new(root.path().to_path_buf(), 8);
        let mut pids = BTreeMap::from([(100, vec![1]), (200, vec![10]), (300, vec![])]);
        let map = r.update(&pids).expect("first map");
        assert_eq!(map.len(), 1);
        let c = map.get(200).expect("container");
        assert_eq!(c.id, id(1));
        assert_eq!(c.runtime, Some(Runtime::Podman));
        assert!(map.get(100).is_none() && map.get(0).is_none());
        // Nothing changed: no new map.
        assert!(r.update(&pids).is_none());
        // A container joins a namespace made beforehand (`--network ns:`).
        pids.insert(300, vec![20]);
        let map = r.update(&pids).expect("joined");
        assert_eq!(map.get(300).expect("second").id, id(2));
        // It stops: the namespace keeps its name while its last sockets
        // close, but is no longer counted as attributed.
        let stopped = Instant::now();
        pids.remove(&300);
        assert!(r.update_at(&pids, stopped).is_none());
        assert_eq!(r.map().get(300).expect("lingers").id, id(2));
        assert_eq!(r.stats().attributed, 1);
        assert!(r.update_at(&pids, stopped + LINGER / 2).is_none());
        let map = r.update_at(&pids, stopped + LINGER).expect("gone");
        assert!(map.get(300).is_none());
        assert_eq!(r.stats().attributed, 1);
        // A new namespace that takes a lingering one's inode is its own.
        pids.insert(300, vec![20]);
        r.update(&pids).expect("back");
        pids.remove(&300);
        assert!(r.update(&pids).is_none());
        pids.insert(300, vec![1]);
        let map = r.update(&pids).expect("reused inode");
        assert!(
            map.get(300).is_none(),
            "the host's process is in no container"
        );
    }

    /// Containers sharing one namespace (`--network container:c1`) after
    /// the pids wrapped: c1's process started first, with the higher pid.
    /// The namespace is c1's, the one the others joined.
    #[test]
    fn a_shared_namespace_is_named_after_its_oldest_process() {
        let procs = [
            (32335, format!("/libpod_parent/libpod-{}", id(1))),
            (5071, format!("/libpod_parent/libpod-{}", id(5))),
        ];
        let root = root("oldest", &procs);
        let stat = |pid: u32, started: u64| {
            let rest = "0 ".repeat(30);
            let line = format!(
                "{pid} (sh) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {started} 1000 0 {rest}"
            );
            let path = root.path().join(format!("proc/{pid}/stat"));
            std::fs::write(path, line.trim_end()).expect("stat");
        };
        stat(32335, 1_000);
        stat(5071, 9_000);
        let mut r = Resolver::new(root.path().to_path_buf(), 8);
        let pids = BTreeMap::from([(100, vec![5071, 32335])]);
        let map = r.update(&pids).expect("map");
        assert_eq!(map.get(100).expect("named").id, id(1));
        // Without their start times, the lowest pid.
        std::fs::remove_file(root.path().join("proc/32335/stat")).expect("rm");
        let mut r = Resolver::new(root.path().to_path_buf(), 8);
        assert_eq!(
            r.update(&pids).expect("map").get(100).expect("named").id,
            id(5)
        );
    }

    #[test]
    fn the_cache_is_bounded_and_counts_evictions() {
        let procs: Vec<(u32, String)> = (1..=5)
            .map(|n| (u32::from(n), format!("/docker/{}", id(n))))
            .collect();
        let root = root("cap", &procs);
        let mut r = Resolver::new(root.path().to_path_buf(), 2);
        let pids: BTreeMap<u32, Vec<u32>> = (1..=5).map(|n| (n * 100, vec![n])).collect();
        let map = r.update(&pids).expect("map");
        assert_eq!(map.len(), 5, "attribution does not depend on the cache");
        let s = r.stats();
        assert_eq!((s.cached, s.evictions), (2, 3));
        assert_eq!(map.get(300).expect("3").runtime, Some(Runtime::Docker));
    }
}
