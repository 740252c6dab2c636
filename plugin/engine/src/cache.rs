//! What the node that serves requests keeps of storage, so that a sidecar's
//! poll costs no storage read: the config, pool records, keyrings with
//! their material, and per pool the ready bundle answer.
//!
//! Storage stays authoritative. Every entry is dropped by the engine's own
//! writes (after the write) and by the host's invalidation of the key, and
//! a mount that starts again starts empty, so a standby, a reloaded plugin
//! or a restarted server never serves what storage no longer says.
//!
//! A loader reads [`Cache::epoch`] before it reads storage and offers its
//! result with that epoch; every drop advances the epoch under the same
//! lock, so a result read before a drop is refused rather than cached.
//!
//! Per pool, a watch channel tells waiting long-polls that the pool's
//! answer may have changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use lockstep_model::bundle::PoolMode;
use lockstep_model::schedule::Keyring;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::keygen::Material;
use crate::pool::Pool;

/// A keyring as stored: its record and the material of its versions that
/// are not destroyed, read together under the keyring's lock.
#[derive(Debug)]
pub struct CachedRing {
    /// The record.
    pub ring: Keyring,
    /// Material by version number.
    pub material: BTreeMap<u64, Material>,
}

/// A pool's bundle, ready to send.
pub struct Answer {
    /// The bundle's revision.
    pub revision: String,
    /// The pool's mode.
    pub mode: PoolMode,
    /// The keyrings of the bundle as a JSON object, material included.
    pub keyrings: Zeroizing<String>,
    /// When a version in it stops verifying, which changes the answer.
    pub valid_until: Option<i64>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("revision", &self.revision)
            .field("mode", &self.mode)
            .field("keyrings", &format_args!("{} bytes …", self.keyrings.len()))
            .field("valid_until", &self.valid_until)
            .finish()
    }
}

impl Answer {
    /// Whether it still holds at `t`.
    pub fn valid_at(&self, t: i64) -> bool {
        self.valid_until.is_none_or(|until| t < until)
    }
}

/// The cache of one mount.
#[derive(Debug, Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    epoch: u64,
    config: Option<Config>,
    /// The names of every pool, once listed.
    pool_names: Option<Arc<Vec<String>>>,
    /// Pool records; `None` for a pool known not to exist.
    pools: HashMap<String, Option<Arc<Pool>>>,
    /// Keyrings; `None` for one known not to exist.
    rings: HashMap<String, Option<Arc<CachedRing>>>,
    answers: HashMap<String, Arc<Answer>>,
    watchers: HashMap<String, watch::Sender<u64>>,
}

impl Inner {
    fn notify(&mut self, pool: &str) {
        if let Some(sender) = self.watchers.get(pool) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
            if sender.receiver_count() == 0 {
                self.watchers.remove(pool);
            }
        }
    }

    fn notify_all(&mut self) {
        for sender in self.watchers.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
        self.watchers.retain(|_, s| s.receiver_count() > 0);
    }

    /// Drops what depends on keyring `name` and wakes the pools that may
    /// list it: those whose record says so, and those whose record is not
    /// at hand (a waiter may be reading it right now).
    fn drop_ring(&mut self, name: &str) {
        self.rings.remove(name);
        let affected: Vec<String> = self
            .watchers
            .keys()
            .chain(self.answers.keys())
            .filter(|pool| self.pools.get(*pool).is_none_or(|p| p.as_ref().is_none_or(|p| p.has(name))))
            .cloned()
            .collect();
        for pool in affected {
            self.answers.remove(&pool);
            self.notify(&pool);
        }
    }

    fn drop_pool(&mut self, name: &str) {
        self.pools.remove(name);
        self.pool_names = None;
        self.answers.remove(name);
        self.notify(name);
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    /// The epoch a loader reads before it reads storage.
    pub fn epoch(&self) -> u64 {
        locked(&self.inner).epoch
    }

    /// Drops what storage key `key` feeds, after it was written here or
    /// elsewhere, and wakes the long-polls whose answer it may change.
    pub fn drop_key(&self, key: &str) {
        let mut inner = locked(&self.inner);
        inner.epoch += 1;
        let (kind, rest) = key.split_once('/').unwrap_or((key, ""));
        let name = rest.split('/').next().unwrap_or_default();
        match kind {
            "config" => inner.config = None,
            "pools" => inner.drop_pool(name),
            "keyring" | "material" => inner.drop_ring(name),
            // Acknowledgements and tombstones feed no answer.
            "acks" | "tombstone" => {}
            _ => {
                let watchers = std::mem::take(&mut inner.watchers);
                *inner = Inner { epoch: inner.epoch, watchers, ..Inner::default() };
                inner.notify_all();
            }
        }
    }

    /// The config, if at hand.
    pub fn config(&self) -> Option<Config> {
        locked(&self.inner).config
    }

    /// Offers the config read at `epoch`.
    pub fn offer_config(&self, epoch: u64, config: Config) {
        let mut inner = locked(&self.inner);
        if inner.epoch == epoch {
            inner.config = Some(config);
        }
    }

    /// The names of every pool, if at hand.
    pub fn pool_names(&self) -> Option<Arc<Vec<String>>> {
        locked(&self.inner).pool_names.clone()
    }

    /// Offers the pool names listed at `epoch`.
    pub fn offer_pool_names(&self, epoch: u64, names: Vec<String>) {
        let mut inner = locked(&self.inner);
        if inner.epoch == epoch {
            inner.pool_names = Some(Arc::new(names));
        }
    }

    /// A pool record: `Some(None)` when it is known not to exist.
    pub fn pool(&self, name: &str) -> Option<Option<Arc<Pool>>> {
        locked(&self.inner).pools.get(name).cloned()
    }

    /// Offers a pool record read at `epoch`.
    pub fn offer_pool(&self, epoch: u64, name: &str, pool: Option<Arc<Pool>>) {
        let mut inner = locked(&self.inner);
        if inner.epoch == epoch {
            inner.pools.insert(name.to_string(), pool);
        }
    }

    /// A keyring: `Some(None)` when it is known not to exist.
    pub fn ring(&self, name: &str) -> Option<Option<Arc<CachedRing>>> {
        locked(&self.inner).rings.get(name).cloned()
    }

    /// Offers a keyring read at `epoch`.
    pub fn offer_ring(&self, epoch: u64, name: &str, ring: Option<Arc<CachedRing>>) {
        let mut inner = locked(&self.inner);
        if inner.epoch == epoch {
            inner.rings.insert(name.to_string(), ring);
        }
    }

    /// A pool's answer, if at hand and still valid at `t`.
    pub fn answer(&self, pool: &str, t: i64) -> Option<Arc<Answer>> {
        locked(&self.inner).answers.get(pool).filter(|a| a.valid_at(t)).cloned()
    }

    /// Offers an answer built from what was read at `epoch`.
    pub fn offer_answer(&self, epoch: u64, pool: &str, answer: Arc<Answer>) {
        let mut inner = locked(&self.inner);
        if inner.epoch == epoch {
            inner.answers.insert(pool.to_string(), answer);
        }
    }

    /// A receiver that wakes when `pool`'s answer may have changed.
    pub fn subscribe(&self, pool: &str) -> watch::Receiver<u64> {
        locked(&self.inner).watchers.entry(pool.to_string()).or_insert_with(|| watch::Sender::new(0)).subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Mode;

    fn pool(keyrings: &[&str]) -> Option<Arc<Pool>> {
        Some(Arc::new(Pool { keyrings: keyrings.iter().map(|k| k.to_string()).collect(), mode: Mode::Sign }))
    }

    fn answer() -> Arc<Answer> {
        Arc::new(Answer {
            revision: "r1".into(),
            mode: PoolMode::Sign,
            keyrings: Zeroizing::new("{}".into()),
            valid_until: Some(100),
        })
    }

    #[test]
    fn what_was_read_before_a_drop_is_refused() {
        let cache = Cache::default();
        let epoch = cache.epoch();
        cache.drop_key("pools/web");
        cache.offer_pool(epoch, "web", pool(&["jwt"]));
        assert!(cache.pool("web").is_none());
        cache.offer_pool(cache.epoch(), "web", pool(&["jwt"]));
        assert!(cache.pool("web").is_some());
    }

    #[test]
    fn a_keyring_write_drops_the_answers_of_pools_that_list_it_and_wakes_them() {
        let cache = Cache::default();
        let epoch = cache.epoch();
        cache.offer_pool(epoch, "web", pool(&["jwt"]));
        cache.offer_pool(epoch, "api", pool(&["other"]));
        cache.offer_answer(epoch, "web", answer());
        cache.offer_answer(epoch, "api", answer());
        let (web, api, unknown) = (cache.subscribe("web"), cache.subscribe("api"), cache.subscribe("new"));
        cache.drop_key("material/jwt/3");
        assert!(cache.answer("web", 50).is_none() && cache.answer("api", 50).is_some());
        assert!(web.has_changed().expect("open"));
        assert!(!api.has_changed().expect("open"));
        // A pool whose record is not at hand may list it: woken too.
        assert!(unknown.has_changed().expect("open"));
    }

    #[test]
    fn answers_expire_and_pool_writes_wake_their_pool() {
        let cache = Cache::default();
        cache.offer_answer(cache.epoch(), "web", answer());
        assert!(cache.answer("web", 99).is_some() && cache.answer("web", 100).is_none());
        let web = cache.subscribe("web");
        cache.drop_key("pools/web");
        assert!(web.has_changed().expect("open") && cache.answer("web", 0).is_none());
        let formatted = format!("{:?}", answer());
        assert!(formatted.contains("2 bytes …"), "{formatted}");
    }

    #[test]
    fn an_unknown_key_drops_everything() {
        let cache = Cache::default();
        let epoch = cache.epoch();
        cache.offer_config(epoch, Config::default());
        cache.offer_answer(epoch, "web", answer());
        let web = cache.subscribe("web");
        cache.drop_key("something/else");
        assert!(cache.config().is_none() && cache.answer("web", 0).is_none());
        assert!(web.has_changed().expect("open"));
    }
}
