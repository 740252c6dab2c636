//! Acknowledgements: which version of each keyring every sidecar instance
//! holds, and when it was last seen. They gate activation: a version is
//! committed only once every live pool holds it.
//!
//! The fleet lives in memory ([`Fleet`]); storage keeps one record per
//! instance, written when what the instance holds changes and otherwise
//! at most once per heartbeat interval (see [`Liveness`]), so a
//! mount that starts again (a reload, a restart, a new active node) knows
//! what everyone held. It has seen nobody yet, so until one liveness
//! window has passed it counts every instance with a record as seen at its
//! start: it waits for them rather than forget them.
//!
//! For a keyring with a pending version the fleet keeps a [`Gate`]: the
//! live instances that still lack the version. It is built once per
//! version (linear in the fleet) and each acknowledgement updates it in
//! constant time, so a rotation costs linear work, not quadratic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// The deliberately broken build the fault-injection test must catch in
/// a cluster: with the `test-clock` feature and
/// `LOCKSTEP_TEST_SKIP_HEARTBEATS=1` in the plugin's environment, standbys
/// never ask for heartbeats, answer every instance themselves and refresh
/// no record, so the active node hears of an instance that polls a standby
/// only when what it holds changes. Release builds have no such switch.
pub fn heartbeats_skipped() -> bool {
    cfg!(feature = "test-clock") && std::env::var_os("LOCKSTEP_TEST_SKIP_HEARTBEATS").is_some_and(|v| v == "1")
}

/// What an instance reported, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ack {
    /// When it was seen (as stored; memory knows later times).
    pub last_seen: i64,
    /// Highest version held, per keyring.
    pub held: BTreeMap<String, u64>,
    /// It polls a standby, which the active node does not hear: it counts
    /// as live for the heartbeat interval past the liveness window after
    /// `last_seen` (see [`Liveness::heartbeat_interval`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
}

/// What a sidecar says it holds of one keyring: the highest version, and
/// that version's kid (sidecars before kids were sent give none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The version's number.
    pub number: u64,
    /// The version's key id.
    pub kid: Option<String>,
    /// The keyring's generation in the caller's bundle.
    pub generation: Option<u64>,
}

/// Storage key of an instance's record.
pub fn key(pool: &str, instance: &str) -> String {
    format!("acks/{pool}/{instance}")
}

/// Which instances are live: seen within `window` seconds before `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// The instant of the decision.
    pub now: i64,
    /// The mount's liveness window, in seconds.
    pub window: i64,
}

impl Liveness {
    /// At `now`, with a window of `window` seconds.
    pub fn new(now: i64, window: u64) -> Self {
        Self { now, window: i64::try_from(window).unwrap_or(i64::MAX) }
    }

    fn live(self, seen: i64) -> bool {
        self.now.saturating_sub(seen) <= self.window
    }

    /// How often an instance that polls a standby has its `last_seen`
    /// stored (a heartbeat, carried by one of its polls to the active
    /// node): half the window.
    pub fn heartbeat_interval(self) -> i64 {
        self.window / 2
    }

    /// Whether an instance counts as live. One that polls a standby is
    /// known here only by its stored `last_seen`, which may be up to a
    /// heartbeat interval older than the standby's latest sight of it, so
    /// it counts for that much longer: no instance any node saw within the
    /// window is ever counted dead.
    fn live_instance(self, instance: &Instance) -> bool {
        let extra = if instance.remote { self.heartbeat_interval() } else { 0 };
        self.now.saturating_sub(instance.seen) <= self.window.saturating_add(extra)
    }
}

/// One instance as memory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    held: BTreeMap<String, u64>,
    /// When it counts as last seen.
    seen: i64,
    /// Whether storage has `held` as it is here.
    stored: bool,
    /// The boot id of the sidecar process that polled last.
    boot: Option<String>,
    /// The boots before it, latest first (at most [`OTHER_BOOTS`]), with
    /// what each held and when it last polled.
    others: Vec<OtherBoot>,
    /// When two boots last took turns under this id: two live sidecar
    /// processes share it.
    shared_at: Option<i64>,
    /// Versions it reported that this coordinator did not issue, per
    /// keyring (memory only: it says so again at every poll).
    ahead: BTreeMap<String, Claim>,
    /// It polls a standby (see [`Ack::remote`]).
    remote: bool,
    /// `last_seen` of its stored record, as this node last read or wrote
    /// it (`None`: no record known).
    stored_seen: Option<i64>,
}

/// A version an instance reported that this coordinator did not issue: its
/// number and the keyring's generation in the bundle it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The version's number.
    pub number: u64,
    /// The generation of the bundle that listed it.
    pub generation: u64,
}

/// How many earlier boots of an instance id are remembered: enough for the
/// replicas of a Deployment that all share one id to be seen taking turns.
const OTHER_BOOTS: usize = 8;

/// How many heartbeat requests a standby remembers before it forgets the
/// old ones.
const ASKED_BOUND: usize = 4_096;

/// A sidecar process that polled under an instance id before the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OtherBoot {
    boot: String,
    held: BTreeMap<String, u64>,
    seen: i64,
}

impl Instance {
    fn new(now: i64) -> Self {
        Self {
            held: BTreeMap::new(),
            seen: now,
            stored: false,
            boot: None,
            others: Vec::new(),
            shared_at: None,
            ahead: BTreeMap::new(),
            remote: false,
            stored_seen: None,
        }
    }

    /// Notes the boot id of a poll at `now`. A new boot (a restarted pod)
    /// replaces the old one; an earlier one polling again means two or
    /// more processes share the id (three replicas taking turns included).
    fn booted(&mut self, boot: &str, now: i64) {
        if self.boot.as_deref() == Some(boot) {
            return;
        }
        if let Some(i) = self.others.iter().position(|o| o.boot == boot) {
            self.shared_at = Some(now);
            self.others.remove(i);
        }
        if let Some(previous) = self.boot.replace(boot.to_string()) {
            self.others.insert(0, OtherBoot { boot: previous, held: self.held.clone(), seen: self.seen });
            self.others.truncate(OTHER_BOOTS);
        }
    }

    /// Whether two processes shared the id within the window.
    fn shared(&self, live: Liveness) -> bool {
        self.shared_at.is_some_and(|at| live.live(at))
    }

    /// What it holds of `keyring` for the gate: while processes share the
    /// id, the least of what each live one reported, so an up-to-date one
    /// never acknowledges for a stale one.
    fn holds(&self, keyring: &str, live: Liveness) -> Option<u64> {
        let mine = self.held.get(keyring).copied();
        if !self.shared(live) {
            return mine;
        }
        self.others.iter().filter(|o| live.live(o.seen)).map(|o| o.held.get(keyring).copied()).fold(mine, Option::min)
    }
}

/// Who polls: an instance id, and the boot id of its sidecar process when
/// it sends one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The instance id.
    pub instance: &'a str,
    /// The process's boot id.
    pub boot: Option<&'a str>,
    /// The poll carries a heartbeat a standby asked for.
    pub heartbeat: bool,
}

impl<'a> From<&'a str> for Caller<'a> {
    fn from(instance: &'a str) -> Self {
        Self { instance, boot: None, heartbeat: false }
    }
}

/// The live instances that lack one pending version of a keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Gate {
    version: u64,
    /// The pools that listed the keyring when the gate was built.
    pools: BTreeSet<String>,
    lacking: HashSet<(String, String)>,
    /// Acknowledgements since dead instances were last pruned: pruning
    /// costs the size of the set, so it runs once per that many.
    since_prune: usize,
}

impl Gate {
    fn prune(&mut self, instances: &HashMap<String, HashMap<String, Instance>>, live: Liveness) {
        self.lacking.retain(|(pool, instance)| {
            instances.get(pool).and_then(|p| p.get(instance)).is_some_and(|i| live.live_instance(i))
        });
        self.since_prune = 0;
    }
}

/// What one poll changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Polled {
    /// The record to store, when what the instance holds changed.
    pub store: Option<Ack>,
    /// Keyrings whose pending version this poll may have completed: their
    /// gate emptied, or they have none yet.
    pub decide: Vec<String>,
    /// Two sidecar processes poll under this instance id.
    pub shared: bool,
}

/// A poll from an instance the pool has no room for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pool {pool:?} already has {count} instances, the most max_instances_per_pool allows")]
pub struct PoolFull {
    /// The pool.
    pub pool: String,
    /// How many instances it has.
    pub count: usize,
}

/// One instance as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Instance id.
    pub instance: String,
    /// When it counts as last seen.
    pub last_seen: i64,
    /// Seen within the liveness window.
    pub live: bool,
    /// Highest version held of the keyring asked about.
    pub held: Option<u64>,
    /// Two sidecar processes polled under this id within the window.
    pub shared: bool,
}

/// One pool that may fetch a keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    /// Pool name.
    pub pool: String,
    /// Its instances, by id.
    pub instances: Vec<InstanceView>,
}

impl PoolView {
    /// Whether any instance is live.
    pub fn live(&self) -> bool {
        self.instances.iter().any(|i| i.live)
    }

    /// Live instances that do not hold `version`, as `pool/instance`.
    pub fn lacking(&self, version: u64) -> impl Iterator<Item = String> + '_ {
        self.instances
            .iter()
            .filter(move |i| i.live && i.held.is_none_or(|h| h < version))
            .map(|i| format!("{}/{}", self.pool, i.instance))
    }
}

/// Every instance of every pool, and the gates of pending versions.
#[derive(Debug, Default)]
pub struct Fleet {
    pools: HashMap<String, HashMap<String, Instance>>,
    gates: HashMap<String, Gate>,
    /// When a keyring last acted on one instance's word, per kind of act.
    alone: HashMap<(String, &'static str), i64>,
    /// On a standby: when it last asked an instance with no remote record
    /// for a heartbeat, per (pool, instance).
    asked: HashMap<(String, String), i64>,
    /// The latest sight of any instance through a heartbeat (stored here
    /// or read from a remote record): standbys answer polls.
    remote_heard: Option<i64>,
}

/// Where a standby stands with an instance, by its stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No record, or one no heartbeat marked remote: the active node counts
    /// only its own sights of the instance, so a standby must not record
    /// one.
    Unknown,
    /// Remote, but the stored sight is a whole heartbeat interval old (the
    /// heartbeat asked for has not landed): the active node would not count
    /// a sight this node made now.
    Overdue,
    /// Remote and fresh: a standby may answer it, and asks for a heartbeat
    /// from `due` on.
    Fresh {
        /// When the heartbeat falls due (Unix seconds).
        due: i64,
    },
}

impl Fleet {
    /// Adds or refreshes an instance from its stored record; `started` is
    /// the mount's start, the earliest it can count as seen.
    pub fn load(&mut self, pool: &str, instance: &str, ack: Ack, started: i64) {
        // One that never held anything is not waited for past its own last
        // poll: it cannot hold a commit longer than a window after it went
        // quiet, restart or not.
        let seen = if ack.held.is_empty() { ack.last_seen } else { ack.last_seen.max(started) };
        let slot = self.pools.entry(pool.to_string()).or_default();
        let entry = slot.entry(instance.to_string()).or_insert_with(|| Instance::new(seen));
        entry.seen = entry.seen.max(seen);
        entry.held = ack.held;
        entry.stored = true;
        entry.remote = ack.remote;
        entry.stored_seen = Some(ack.last_seen);
        if ack.remote {
            self.remote_heard = self.remote_heard.max(Some(ack.last_seen));
        }
        self.asked.remove(&(pool.to_string(), instance.to_string()));
        // A record changed behind this node's back: gates are rebuilt.
        self.gates.clear();
    }

    /// Records a poll at `live.now` by an instance of `pool`, which lists
    /// `keyrings`. A new instance is refused when the pool already has
    /// `cap` of them.
    pub fn poll(
        &mut self,
        pool: &str,
        keyrings: &[String],
        caller: Caller<'_>,
        held: BTreeMap<String, u64>,
        live: Liveness,
        cap: usize,
    ) -> Result<Polled, PoolFull> {
        let instance = caller.instance;
        let members = self.pools.entry(pool.to_string()).or_default();
        if !members.contains_key(instance) && members.len() >= cap {
            return Err(PoolFull { pool: pool.to_string(), count: members.len() });
        }
        let entry = members.entry(instance.to_string()).or_insert_with(|| Instance::new(live.now));
        // A caller without a boot id (a sidecar older than boot ids, or a
        // request made by hand) is one process of its own: it cannot slip
        // between the polls of one that sends an id unseen.
        entry.booted(caller.boot.unwrap_or_default(), live.now);
        entry.seen = entry.seen.max(live.now);
        // The record is also refreshed once a heartbeat interval, so that
        // storage (a standby, a new active node) knows the instance is
        // around: one write per instance per interval.
        let refresh = !heartbeats_skipped()
            && entry.stored_seen.is_some_and(|s| live.now.saturating_sub(s) >= live.heartbeat_interval());
        let changed = entry.held != held || !entry.stored || refresh;
        let mut polled = Polled { shared: entry.shared(live), ..Polled::default() };
        if changed {
            entry.held = held;
            entry.stored = false;
            polled.store = Some(Ack { last_seen: live.now, held: entry.held.clone(), remote: entry.remote });
        }
        // What it holds of each of the pool's keyrings, before the gates
        // (which need the whole fleet) are touched.
        let holds: Vec<Option<u64>> = keyrings.iter().map(|k| entry.holds(k, live)).collect();
        let member = (pool.to_string(), instance.to_string());
        for (keyring, holds) in keyrings.iter().zip(holds) {
            let Some(gate) = self.gates.get_mut(keyring) else {
                if changed && holds.is_some() {
                    polled.decide.push(keyring.clone());
                }
                continue;
            };
            if !gate.pools.contains(pool) {
                continue;
            }
            let before = gate.lacking.len();
            if holds.is_some_and(|h| h >= gate.version) {
                gate.lacking.remove(&member);
            } else {
                gate.lacking.insert(member.clone());
            }
            gate.since_prune += 1;
            if gate.since_prune >= gate.lacking.len().max(16) {
                gate.prune(&self.pools, live);
            }
            if before > 0 && gate.lacking.is_empty() {
                polled.decide.push(keyring.clone());
            }
        }
        Ok(polled)
    }

    /// Notes, after its poll, the versions an instance reported that this
    /// coordinator did not issue (none clears what it said before).
    pub fn reported_ahead(&mut self, pool: &str, instance: &str, ahead: BTreeMap<String, Claim>) {
        if let Some(entry) = self.pools.get_mut(pool).and_then(|p| p.get_mut(instance)) {
            entry.ahead = ahead;
        }
    }

    /// What instances reported of `keyring` that this coordinator did not
    /// issue, whoever they are: memory only, and never more than a report.
    pub fn claims<'a>(&'a self, keyring: &'a str) -> impl Iterator<Item = Claim> + 'a {
        self.pools.values().flat_map(HashMap::values).filter_map(move |i| i.ahead.get(keyring).copied())
    }

    /// The highest number of `keyring` an instance reported that this
    /// coordinator did not issue, among those at most `ceiling`: a new
    /// version is numbered past it, so no number names two versions, and
    /// a claim further ahead moves nothing (see
    /// [`lockstep_model::schedule::FLEET_NUMBERING_BOUND`]).
    pub fn highest_ahead(&self, keyring: &str, ceiling: u64) -> Option<u64> {
        self.claims(keyring).map(|c| c.number).filter(|n| *n <= ceiling).max()
    }

    /// Whether `keyring` may do `act` at `t` on one instance's word, as
    /// [`Fleet::act_alone`] answers, without counting this time.
    pub fn may_act_alone(&self, keyring: &str, act: &'static str, t: i64, window: i64) -> bool {
        self.alone.get(&(keyring.to_string(), act)).is_none_or(|last| t.saturating_sub(*last) >= window)
    }

    /// Whether `keyring` may do `act` at `t` on one instance's word: not if
    /// it did within `window` seconds. Counts this time if so.
    pub fn act_alone(&mut self, keyring: &str, act: &'static str, t: i64, window: i64) -> bool {
        let last = self.alone.entry((keyring.to_string(), act)).or_insert(i64::MIN);
        if t.saturating_sub(*last) < window {
            return false;
        }
        *last = t;
        true
    }

    /// Forgets an instance whose record was deleted elsewhere.
    pub fn remove(&mut self, pool: &str, instance: &str) {
        if let Some(members) = self.pools.get_mut(pool) {
            members.remove(instance);
        }
        self.gates.clear();
    }

    /// Notes that an instance's record was stored as memory has it.
    pub fn stored(&mut self, pool: &str, instance: &str, ack: &Ack) {
        if let Some(entry) = self.pools.get_mut(pool).and_then(|p| p.get_mut(instance)) {
            entry.stored_seen = Some(entry.stored_seen.map_or(ack.last_seen, |s| s.max(ack.last_seen)));
            if entry.held == ack.held {
                entry.stored = true;
            }
        }
    }

    /// A heartbeat of an instance that polls a standby, on the node that
    /// stores it: it counts as remote from now on (see [`Ack::remote`]);
    /// answers the record to store, unless one stored less than half a
    /// heartbeat interval ago already says as much.
    pub fn heartbeat(&mut self, pool: &str, instance: &str, live: Liveness) -> Option<Ack> {
        let entry = self.pools.get_mut(pool).and_then(|p| p.get_mut(instance))?;
        self.remote_heard = self.remote_heard.max(Some(live.now));
        let fresh = entry.stored
            && entry.remote
            && entry.stored_seen.is_some_and(|s| live.now - s < live.heartbeat_interval() / 2);
        entry.remote = true;
        (!fresh).then(|| Ack { last_seen: live.now, held: entry.held.clone(), remote: true })
    }

    /// Whether standbys answer polls: a heartbeat of some instance (which
    /// only a standby asks for) was heard within the liveness window.
    pub fn standbys_serve(&self, live: Liveness) -> bool {
        self.remote_heard.is_some_and(|at| live.live(at))
    }

    /// Where a standby stands with an instance (see [`Standing`]). The
    /// heartbeat falls due once the stored sight is three quarters of a
    /// heartbeat interval old: the last quarter covers the time it takes to
    /// arrive (the sidecar sends it with its next poll, at once).
    pub fn standing(&self, pool: &str, instance: &str, live: Liveness) -> Standing {
        let Some((stored, true)) =
            self.pools.get(pool).and_then(|p| p.get(instance)).and_then(|e| e.stored_seen.map(|s| (s, e.remote)))
        else {
            return Standing::Unknown;
        };
        let interval = live.heartbeat_interval();
        if live.now.saturating_sub(stored) >= interval {
            return Standing::Overdue;
        }
        Standing::Fresh { due: stored.saturating_add(interval - interval / 4) }
    }

    /// On a standby, for an instance it stands [`Standing::Unknown`] with:
    /// notes that it was asked for a heartbeat now. For a quarter of a
    /// heartbeat interval (at least a second) after, a poll of it waits a
    /// moment for the record that heartbeat writes (see
    /// [`Fleet::asked_recently`]).
    pub fn asked_heartbeat(&mut self, pool: &str, instance: &str, live: Liveness) {
        let quiet = (live.heartbeat_interval() / 4).max(1);
        if self.asked.len() >= ASKED_BOUND {
            self.asked.retain(|_, at| live.now.saturating_sub(*at) < quiet);
        }
        self.asked.insert((pool.to_string(), instance.to_string()), live.now);
    }

    /// Whether [`Fleet::asked_heartbeat`] noted an ask of this instance within the
    /// quiet spell.
    pub fn asked_recently(&self, pool: &str, instance: &str, live: Liveness) -> bool {
        let quiet = (live.heartbeat_interval() / 4).max(1);
        self.asked.get(&(pool.to_string(), instance.to_string())).is_some_and(|at| live.now.saturating_sub(*at) < quiet)
    }

    /// The live instances of `pools` that lack `version` of `keyring`, as
    /// `pool/instance`, sorted. Builds the keyring's gate when the version
    /// or the pools changed, and otherwise only prunes it.
    pub fn lacking(&mut self, keyring: &str, version: u64, pools: &BTreeSet<String>, live: Liveness) -> Vec<String> {
        let current = self.gates.get(keyring).is_some_and(|g| g.version == version && &g.pools == pools);
        if current {
            if let Some(gate) = self.gates.get_mut(keyring) {
                gate.prune(&self.pools, live);
            }
        } else {
            let gate = self.build(keyring, version, pools, live);
            self.gates.insert(keyring.to_string(), gate);
        }
        let mut names: Vec<String> = self.gates[keyring].lacking.iter().map(|(p, i)| format!("{p}/{i}")).collect();
        names.sort();
        names
    }

    fn build(&self, keyring: &str, version: u64, pools: &BTreeSet<String>, live: Liveness) -> Gate {
        let mut lacking = HashSet::new();
        for pool in pools {
            for (instance, entry) in self.pools.get(pool).into_iter().flatten() {
                if live.live_instance(entry) && entry.holds(keyring, live).is_none_or(|h| h < version) {
                    lacking.insert((pool.clone(), instance.clone()));
                }
            }
        }
        Gate { version, pools: pools.clone(), lacking, since_prune: 0 }
    }

    /// Forgets the gate of a keyring with nothing pending.
    pub fn idle(&mut self, keyring: &str) {
        self.gates.remove(keyring);
    }

    /// Instances of `pools`, for `status`.
    pub fn views(&self, keyring: &str, pools: &BTreeSet<String>, live: Liveness) -> Vec<PoolView> {
        pools
            .iter()
            .map(|pool| {
                let mut instances: Vec<InstanceView> = self
                    .pools
                    .get(pool)
                    .into_iter()
                    .flatten()
                    .map(|(id, i)| InstanceView {
                        instance: id.clone(),
                        last_seen: i.seen,
                        live: live.live_instance(i),
                        held: i.held.get(keyring).copied(),
                        shared: i.shared(live),
                    })
                    .collect();
                instances.sort_by(|a, b| a.instance.cmp(&b.instance));
                PoolView { pool: pool.clone(), instances }
            })
            .collect()
    }

    /// How many instances a pool has.
    pub fn size(&self, pool: &str) -> usize {
        self.pools.get(pool).map_or(0, HashMap::len)
    }

    /// Forgets instances last seen before `horizon`; returns them as
    /// (pool, instance), so their records can be deleted.
    pub fn forget_before(&mut self, horizon: i64) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for (pool, members) in &mut self.pools {
            members.retain(|instance, entry| {
                let keep = entry.seen >= horizon;
                if !keep {
                    gone.push((pool.clone(), instance.clone()));
                }
                keep
            });
        }
        self.pools.retain(|_, members| !members.is_empty());
        for gate in self.gates.values_mut() {
            for member in &gone {
                gate.lacking.remove(member);
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
        entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn pools(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    const CAP: usize = 100;

    #[test]
    fn a_poll_stores_only_what_changed() {
        let mut fleet = Fleet::default();
        let at = Liveness::new(100, 600);
        let rings = vec!["jwt".to_string()];
        let first = fleet.poll("web", &rings, "a".into(), held(&[("jwt", 1)]), at, CAP).expect("room");
        let ack = first.store.expect("a new instance is stored");
        assert_eq!(ack, Ack { last_seen: 100, held: held(&[("jwt", 1)]), remote: false });
        // Until the write is confirmed, the next poll stores again.
        assert!(fleet.poll("web", &rings, "a".into(), held(&[("jwt", 1)]), at, CAP).expect("room").store.is_some());
        fleet.stored("web", "a", &ack);
        let later = Liveness::new(350, 600);
        assert_eq!(fleet.poll("web", &rings, "a".into(), held(&[("jwt", 1)]), later, CAP).expect("room").store, None);
        let views = fleet.views("jwt", &pools(&["web"]), later);
        assert_eq!(views[0].instances[0].last_seen, 350);
        // A heartbeat interval after the record was stored, it is stored
        // again, with the new sight.
        let refreshed = fleet.poll("web", &rings, "a".into(), held(&[("jwt", 1)]), Liveness::new(400, 600), CAP);
        assert_eq!(refreshed.expect("room").store.map(|a| a.last_seen), Some(400));
    }

    #[test]
    fn an_instance_heard_through_heartbeats_counts_as_live_a_heartbeat_interval_longer() {
        let mut fleet = Fleet::default();
        let rings = vec!["jwt".to_string()];
        let web = pools(&["web"]);
        // Standby view: no record, or one no heartbeat marked remote, is
        // not this node's to answer.
        let at = |t| Liveness::new(t, 600);
        assert_eq!(fleet.standing("web", "far", at(100)), Standing::Unknown);
        fleet.load("web", "far", Ack { last_seen: 100, held: held(&[("jwt", 1)]), remote: false }, 0);
        assert_eq!(fleet.standing("web", "far", at(100)), Standing::Unknown);
        // Once remote: answered here, with a heartbeat due at three
        // quarters of the interval, until the interval has passed.
        fleet.load("web", "far", Ack { last_seen: 100, held: held(&[("jwt", 1)]), remote: true }, 0);
        assert_eq!(fleet.standing("web", "far", at(324)), Standing::Fresh { due: 325 });
        assert_eq!(fleet.standing("web", "far", at(399)), Standing::Fresh { due: 325 });
        assert_eq!(fleet.standing("web", "far", at(400)), Standing::Overdue);
        // An unknown one asked for a heartbeat is waited for, for a
        // quarter interval; its record arriving ends the wait.
        assert!(!fleet.asked_recently("web", "new", at(100)));
        fleet.asked_heartbeat("web", "new", at(100));
        assert!(fleet.asked_recently("web", "new", at(174)));
        assert!(!fleet.asked_recently("web", "new", at(175)));
        fleet.asked_heartbeat("web", "new", at(175));
        fleet.load("web", "new", Ack { last_seen: 175, held: held(&[("jwt", 1)]), remote: true }, 0);
        assert!(!fleet.asked_recently("web", "new", at(176)));

        // Active view: one polls here, one only sends heartbeats.
        let mut fleet = Fleet::default();
        for instance in ["near", "far"] {
            let polled = fleet.poll("web", &rings, instance.into(), held(&[("jwt", 1)]), Liveness::new(100, 600), CAP);
            let ack = polled.expect("room").store.expect("stored");
            fleet.stored("web", instance, &ack);
        }
        let beat = fleet.heartbeat("web", "far", Liveness::new(100, 600)).expect("a heartbeat to store");
        assert!(beat.remote && beat.last_seen == 100, "{beat:?}");
        fleet.stored("web", "far", &beat);
        // A second one soon after stores nothing; one later does.
        assert_eq!(fleet.heartbeat("web", "far", Liveness::new(200, 600)), None);
        assert!(fleet.heartbeat("web", "far", Liveness::new(250, 600)).is_some());
        // Past the window: the one that polled here is dead, the remote one
        // (which a standby may have seen up to an interval after its last
        // stored sight) is waited for until the interval has passed too.
        assert_eq!(fleet.lacking("jwt", 2, &web, Liveness::new(800, 600)), vec!["web/far"]);
        assert_eq!(fleet.lacking("jwt", 2, &web, Liveness::new(1_000, 600)), vec!["web/far"]);
        assert!(fleet.lacking("jwt", 2, &web, Liveness::new(1_001, 600)).is_empty());
        // The record keeps saying so: a new active node knows it too.
        let polled = fleet.poll("web", &rings, "far".into(), held(&[("jwt", 2)]), Liveness::new(1_100, 600), CAP);
        assert!(polled.expect("room").store.is_some_and(|ack| ack.remote));
    }

    #[test]
    fn standbys_serve_while_a_heartbeat_was_heard_within_the_window() {
        let rings = vec!["jwt".to_string()];
        let mut fleet = Fleet::default();
        let polled = fleet.poll("web", &rings, "near".into(), held(&[("jwt", 1)]), Liveness::new(100, 600), CAP);
        fleet.stored("web", "near", &polled.expect("room").store.expect("stored"));
        assert!(!fleet.standbys_serve(Liveness::new(100, 600)), "only polls of its own");
        let _ = fleet.heartbeat("web", "near", Liveness::new(200, 600));
        assert!(fleet.standbys_serve(Liveness::new(800, 600)));
        assert!(!fleet.standbys_serve(Liveness::new(801, 600)), "no heartbeat for a whole window");
        // A new active node learns it from the remote records it reads.
        let mut fleet = Fleet::default();
        let record = Ack { last_seen: 500, held: BTreeMap::new(), remote: false };
        fleet.load("web", "a", record.clone(), 900);
        assert!(!fleet.standbys_serve(Liveness::new(900, 600)));
        fleet.load("web", "b", Ack { remote: true, ..record }, 900);
        assert!(fleet.standbys_serve(Liveness::new(900, 600)));
    }

    #[test]
    fn the_gate_empties_with_the_last_live_acknowledgement() {
        let mut fleet = Fleet::default();
        let rings = vec!["jwt".to_string()];
        let at = Liveness::new(100, 600);
        for (pool, instance) in [("web", "a"), ("web", "b"), ("api", "c")] {
            fleet.poll(pool, &rings, instance.into(), held(&[("jwt", 1)]), at, CAP).expect("room");
        }
        let both = pools(&["api", "web"]);
        assert_eq!(fleet.lacking("jwt", 2, &both, at), vec!["api/c", "web/a", "web/b"]);
        let step = |fleet: &mut Fleet, pool: &str, instance: &str, version: u64| {
            fleet.poll(pool, &rings, instance.into(), held(&[("jwt", version)]), at, CAP).expect("room").decide
        };
        assert!(step(&mut fleet, "web", "a", 2).is_empty());
        assert!(step(&mut fleet, "api", "c", 2).is_empty());
        // A poll that still lacks it keeps the gate closed.
        assert!(step(&mut fleet, "web", "b", 1).is_empty());
        assert_eq!(step(&mut fleet, "web", "b", 2), vec!["jwt"]);
        assert!(fleet.lacking("jwt", 2, &both, at).is_empty());
        // A new instance that does not hold it closes the gate again.
        assert!(step(&mut fleet, "web", "d", 1).is_empty());
        assert_eq!(fleet.lacking("jwt", 2, &both, at), vec!["web/d"]);
    }

    #[test]
    fn dead_instances_and_pools_outside_the_gate_do_not_hold_it() {
        let mut fleet = Fleet::default();
        let rings = vec!["jwt".to_string()];
        fleet.poll("web", &rings, "old".into(), held(&[("jwt", 1)]), Liveness::new(0, 600), CAP).expect("room");
        fleet.poll("web", &rings, "new".into(), held(&[("jwt", 1)]), Liveness::new(700, 600), CAP).expect("room");
        fleet.poll("other", &rings, "x".into(), held(&[("jwt", 1)]), Liveness::new(700, 600), CAP).expect("room");
        let at = Liveness::new(700, 600);
        assert_eq!(fleet.lacking("jwt", 2, &pools(&["web"]), at), vec!["web/new"]);
        // Later the new one goes quiet too: a prune at decision time drops it.
        assert!(fleet.lacking("jwt", 2, &pools(&["web"]), Liveness::new(1_400, 600)).is_empty());
    }

    #[test]
    fn a_mount_that_starts_waits_one_window_for_stored_instances() {
        let mut fleet = Fleet::default();
        fleet.load("web", "a", Ack { last_seen: 10, held: held(&[("jwt", 1)]), remote: false }, 1_000);
        // One that never fetched anything is not waited for past its window.
        fleet.load("web", "b", Ack { last_seen: 10, held: BTreeMap::new(), remote: false }, 1_000);
        let web = pools(&["web"]);
        assert_eq!(fleet.lacking("jwt", 2, &web, Liveness::new(1_500, 600)), vec!["web/a"]);
        assert!(fleet.lacking("jwt", 2, &web, Liveness::new(1_601, 600)).is_empty());
    }

    #[test]
    fn pools_have_a_cap_and_forgotten_instances_free_room() {
        let mut fleet = Fleet::default();
        let at = Liveness::new(100, 600);
        for i in 0..3 {
            fleet.poll("web", &[], format!("i{i}").as_str().into(), BTreeMap::new(), at, 3).expect("room");
        }
        let full = fleet.poll("web", &[], "i3".into(), BTreeMap::new(), at, 3).expect_err("full");
        assert_eq!(full.to_string(), "pool \"web\" already has 3 instances, the most max_instances_per_pool allows");
        // Known instances still poll; other pools have their own room.
        fleet.poll("web", &[], "i0".into(), BTreeMap::new(), Liveness::new(2_000, 600), 3).expect("known");
        fleet.poll("api", &[], "i3".into(), BTreeMap::new(), at, 3).expect("another pool");
        let mut gone = fleet.forget_before(1_000);
        gone.sort();
        assert_eq!(gone.len(), 3);
        assert_eq!(fleet.size("web"), 1);
        fleet.poll("web", &[], "i3".into(), BTreeMap::new(), at, 3).expect("room again");
    }

    #[test]
    fn two_processes_under_one_instance_id_are_seen_and_the_stale_one_holds_the_gate() {
        let mut fleet = Fleet::default();
        let rings = vec!["jwt".to_string()];
        let at = Liveness::new(100, 600);
        let (a, b) = (
            Caller { instance: "web-1", boot: Some("a"), heartbeat: false },
            Caller { instance: "web-1", boot: Some("b"), heartbeat: false },
        );
        // A restart: a new boot, the old one never polls again.
        fleet.poll("web", &rings, a, held(&[("jwt", 1)]), at, CAP).expect("room");
        let restarted = fleet.poll("web", &rings, b, held(&[("jwt", 1)]), at, CAP).expect("room");
        assert!(!restarted.shared);
        let web = pools(&["web"]);
        assert_eq!(fleet.lacking("jwt", 2, &web, at), vec!["web/web-1"]);
        // Then the old boot polls again: two processes share the id. The
        // up-to-date one does not acknowledge for the stale one.
        let back = fleet.poll("web", &rings, a, held(&[("jwt", 1)]), at, CAP).expect("room");
        assert!(back.shared);
        let ahead = fleet.poll("web", &rings, b, held(&[("jwt", 2)]), at, CAP).expect("room");
        assert!(ahead.shared && ahead.decide.is_empty());
        assert_eq!(fleet.lacking("jwt", 2, &web, at), vec!["web/web-1"]);
        assert!(fleet.views("jwt", &web, at)[0].instances[0].shared);
        // Once both hold it, the gate opens; a window later the alert ends.
        assert_eq!(fleet.poll("web", &rings, a, held(&[("jwt", 2)]), at, CAP).expect("room").decide, vec!["jwt"]);
        assert!(!fleet.views("jwt", &web, Liveness::new(800, 600))[0].instances[0].shared);
    }

    #[test]
    fn a_caller_without_a_boot_id_under_an_instance_id_in_use_is_another_process() {
        let mut fleet = Fleet::default();
        let rings = vec!["jwt".to_string()];
        let at = Liveness::new(100, 600);
        let web = pools(&["web"]);
        let (new, old) = (
            Caller { instance: "web-1", boot: Some("a"), heartbeat: false },
            Caller { instance: "web-1", boot: None, heartbeat: false },
        );
        fleet.poll("web", &rings, old, held(&[("jwt", 1)]), at, CAP).expect("room");
        assert!(!fleet.poll("web", &rings, new, held(&[("jwt", 1)]), at, CAP).expect("room").shared);
        // The boot-less one polls again, still stale, and the one with an
        // id is up to date: the stale one holds the gate.
        assert!(fleet.poll("web", &rings, old, held(&[("jwt", 1)]), at, CAP).expect("room").shared);
        assert_eq!(fleet.lacking("jwt", 2, &web, at), vec!["web/web-1"]);
        assert!(fleet.poll("web", &rings, new, held(&[("jwt", 2)]), at, CAP).expect("room").decide.is_empty());
        assert_eq!(fleet.lacking("jwt", 2, &web, at), vec!["web/web-1"]);
        // Boot-less polls alone are one process, as before boot ids.
        let lone = Caller { instance: "web-2", boot: None, heartbeat: false };
        for version in [1, 2] {
            assert!(!fleet.poll("web", &rings, lone, held(&[("jwt", version)]), at, CAP).expect("room").shared);
        }
    }

    #[test]
    fn three_processes_taking_turns_under_one_id_are_seen_and_the_stalest_holds_the_gate() {
        let mut fleet = Fleet::default();
        let rings = vec!["jwt".to_string()];
        let at = Liveness::new(100, 600);
        let web = pools(&["web"]);
        let boot = |b| Caller { instance: "web-1", boot: Some(b), heartbeat: false };
        for b in ["a", "b", "c"] {
            assert!(!fleet.poll("web", &rings, boot(b), held(&[("jwt", 1)]), at, CAP).expect("room").shared);
        }
        // The first comes round again: shared, though it never followed
        // the one before it directly.
        assert!(fleet.poll("web", &rings, boot("a"), held(&[("jwt", 1)]), at, CAP).expect("room").shared);
        // Two of three up to date: the third still holds the gate.
        fleet.poll("web", &rings, boot("b"), held(&[("jwt", 2)]), at, CAP).expect("room");
        fleet.poll("web", &rings, boot("a"), held(&[("jwt", 2)]), at, CAP).expect("room");
        assert_eq!(fleet.lacking("jwt", 2, &web, at), vec!["web/web-1"]);
        assert_eq!(
            fleet.poll("web", &rings, boot("c"), held(&[("jwt", 2)]), at, CAP).expect("room").decide,
            vec!["jwt"]
        );
    }

    #[test]
    fn numbering_follows_only_claims_within_the_ceiling_and_acting_alone_is_once_a_window() {
        let mut fleet = Fleet::default();
        let rings = vec!["jwt".to_string()];
        let at = Liveness::new(100, 600);
        let claim = |number| BTreeMap::from([("jwt".to_string(), Claim { number, generation: 9 })]);
        for instance in ["1", "2"] {
            fleet.poll("web", &rings, instance.into(), held(&[("jwt", 1)]), at, CAP).expect("room");
        }
        assert_eq!(fleet.highest_ahead("jwt", 20), None);
        fleet.reported_ahead("web", "1", claim(7));
        fleet.reported_ahead("web", "2", claim(9_999));
        assert_eq!(fleet.highest_ahead("jwt", 20), Some(7), "the far claim moves nothing");
        assert_eq!(fleet.highest_ahead("jwt", 6), None);
        assert_eq!(fleet.claims("jwt").map(|c| c.number).max(), Some(9_999), "but it is heard");
        fleet.reported_ahead("web", "1", BTreeMap::new());
        assert_eq!(fleet.highest_ahead("jwt", 20), None, "a claim withdrawn");
        // Acting on one instance's word: once per window, per keyring and act.
        assert!(fleet.may_act_alone("jwt", "generation", 100, 30));
        assert!(fleet.act_alone("jwt", "generation", 100, 30));
        assert!(!fleet.may_act_alone("jwt", "generation", 129, 30));
        assert!(!fleet.act_alone("jwt", "generation", 129, 30));
        assert!(fleet.act_alone("other", "generation", 129, 30));
        assert!(fleet.act_alone("jwt", "generation", 130, 30));
    }

    #[test]
    fn lacking_lists_live_instances_below_the_version() {
        let view = PoolView {
            pool: "web".into(),
            instances: vec![
                InstanceView { instance: "a".into(), last_seen: 0, live: true, held: Some(3), shared: false },
                InstanceView { instance: "b".into(), last_seen: 0, live: true, held: Some(2), shared: false },
                InstanceView { instance: "c".into(), last_seen: 0, live: false, held: None, shared: false },
            ],
        };
        assert_eq!(view.lacking(3).collect::<Vec<_>>(), vec!["web/b"]);
        assert!(view.live());
    }
}
