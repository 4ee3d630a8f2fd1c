//! Several secondary processes on one tracking database: each process registers itself with a
//! random id and heartbeats every third of the lease period ([`Secondary::heartbeat_pass`]);
//! every claim it takes records that id (`claimed_by`); any process returns the claims of a
//! process silent for longer than the lease to `pending` ([`Secondary::release_silent`]), so a
//! dead process's rows come back within two lease periods, and a start never touches a live
//! process's rows. Named leases ([`crate::lease`]) keep one log cursor and one backfill active
//! ([`Secondary::holds`]); the backfill's position is in the database
//! ([`Secondary::backfill_position`]). A clean stop gives everything back at once
//! ([`Secondary::release_own`]).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use geo_core::{ReplicableDescriptor, replicables};

use super::{Secondary, SecondaryError};
use crate::db::AsDbConn;
use crate::lease;
use crate::registry::Registry;

/// This process as the tracking database knows it, and the leases it holds.
#[derive(Debug)]
pub(super) struct Membership {
    /// The random id in `geo_secondary_workers` and `claimed_by`.
    pub(super) id: String,
    host: String,
    pid: u32,
    /// Leases held, with when each lapses.
    held: Mutex<BTreeMap<&'static str, DateTime<Utc>>>,
    /// Leases another process holds, with when to ask again (when the holder's lapses, and at
    /// least every third of the lease period), so a waiting process does not write every pass.
    wait: Mutex<BTreeMap<&'static str, DateTime<Utc>>>,
}

impl Membership {
    pub(super) fn new() -> Self {
        Membership {
            id: new_worker_id(),
            host: this_host(),
            pid: std::process::id(),
            held: Mutex::new(BTreeMap::new()),
            wait: Mutex::new(BTreeMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, DateTime<Utc>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, DateTime<Utc>>> {
        self.wait.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// 32 hex digits from the standard library's randomly keyed hasher (fresh keys per process and
/// per call), mixed with the pid and the time: unique without a shared random source (the
/// injected [`geo_core::clock::Env`] may be deterministic in tests).
fn new_worker_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut halves = [0u64; 2];
    for (i, half) in halves.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_usize(i);
        *half = h.finish();
    }
    format!("{:016x}{:016x}", halves[0], halves[1])
}

/// The host name, and on Linux the process's pid namespace (`myhost pid:[4026531836]`): two
/// processes with the same value see the same process ids, so one can tell whether the other
/// is still running.
fn this_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    match std::fs::read_link("/proc/self/ns/pid") {
        Ok(ns) => format!("{name} {}", ns.display()),
        Err(_) => name,
    }
}

/// Whether process `pid` of this host runs (`None`: this platform cannot tell).
fn pid_alive(pid: i64) -> Option<bool> {
    if cfg!(target_os = "linux") {
        Some(std::path::Path::new(&format!("/proc/{pid}")).exists())
    } else {
        None
    }
}

impl Secondary {
    /// This process's id in `geo_secondary_workers`, recorded in the `claimed_by` of every row
    /// it claims.
    pub fn worker_id(&self) -> &str {
        &self.member.id
    }

    /// Registers this process, or records its heartbeat, and renews the leases it holds (a
    /// lease another process took meanwhile is dropped, with a warning). Run every third of the
    /// lease period by [`Secondary::spawn`].
    pub fn heartbeat_pass(&self) -> Result<(), SecondaryError> {
        let now = self.now();
        let mut conn = self.tracking.get()?;
        let m = &self.member;
        lease::heartbeat(&mut conn, &m.id, &m.host, m.pid, now)?;
        let names: Vec<&'static str> = m.held().keys().copied().collect();
        for name in names {
            self.try_hold(&mut conn, name, now)?;
        }
        Ok(())
    }

    /// Returns the claims of every process whose heartbeat is older than the lease period to
    /// `pending`, and removes those processes (one transaction per process). With
    /// `this_host_dead`, also processes registered from this host whose pid no longer runs,
    /// however fresh their heartbeat (a restart on the same machine takes its rows back at
    /// once). Never touches a live process's rows. Returns how many rows it released.
    pub fn release_silent(&self, this_host_dead: bool) -> Result<usize, SecondaryError> {
        let now = self.now();
        let mut conn = self.tracking.get()?;
        let cutoff = geo_core::transitions::timeout_cutoff(
            now,
            self.config.lease_period.to_std().unwrap_or_default(),
        );
        let mut gone = lease::silent_workers(&mut conn, cutoff)?;
        if this_host_dead {
            for w in lease::workers(&mut conn)? {
                let dead = w.host == self.member.host
                    && w.id != self.member.id
                    && pid_alive(w.pid) == Some(false);
                if dead && !gone.iter().any(|g| g.id == w.id) {
                    gone.push(w);
                }
            }
        }
        let mut released = 0;
        for w in gone.into_iter().filter(|w| w.id != self.member.id) {
            // A silent process that heartbeats again before the release keeps its rows.
            let silent_before = (w.heartbeat_at.get() < cutoff).then_some(cutoff);
            let Some(n) = self.release_worker(&mut conn, &w.id, silent_before)? else {
                continue;
            };
            tracing::info!(
                worker = %w.id,
                host = %w.host,
                pid = w.pid,
                last_heartbeat = %w.heartbeat_at.get(),
                rows = n,
                "released the claims of a secondary process that stopped heartbeating"
            );
            released += n;
        }
        Ok(released)
    }

    /// Whether another secondary process runs on this tracking database: registered, with a
    /// heartbeat younger than the lease period, and not a process of this host whose pid is
    /// gone. A process that is alone may, for example, remove every temporary file of the blob
    /// directory on start.
    pub fn other_processes_running(&self) -> Result<bool, SecondaryError> {
        let mut conn = self.tracking.get()?;
        Ok(!self.live_others(&mut conn)?.is_empty())
    }

    /// The ids of the other secondary processes running on this tracking database (as
    /// [`Secondary::other_processes_running`] judges them).
    pub(super) fn live_others(
        &self,
        conn: &mut impl AsDbConn,
    ) -> Result<std::collections::BTreeSet<String>, SecondaryError> {
        let cutoff = geo_core::transitions::timeout_cutoff(
            self.now(),
            self.config.lease_period.to_std().unwrap_or_default(),
        );
        Ok(lease::workers(conn)?
            .into_iter()
            .filter(|w| {
                w.id != self.member.id
                    && w.heartbeat_at.get() >= cutoff
                    && !(w.host == self.member.host && pid_alive(w.pid) == Some(false))
            })
            .map(|w| w.id)
            .collect())
    }

    /// Gives back everything this process holds: its claims go back to `pending`, its leases
    /// are released and it leaves `geo_secondary_workers`. Run by a clean stop of
    /// [`Secondary::spawn`]'s workers. Returns how many rows it released.
    pub fn release_own(&self) -> Result<usize, SecondaryError> {
        let mut conn = self.tracking.get()?;
        let n = self
            .release_worker(&mut conn, &self.member.id.clone(), None)?
            .unwrap_or(0);
        self.member.held().clear();
        if n > 0 {
            tracing::info!(rows = n, "released this process's claims on stop");
        }
        Ok(n)
    }

    /// One process's registration, leases and claims, in one transaction; with `silent_before`,
    /// only if its heartbeat is still older than that (`None` returned otherwise: it came back).
    /// Returns how many rows went back to `pending`.
    fn release_worker(
        &self,
        conn: &mut impl AsDbConn,
        id: &str,
        silent_before: Option<DateTime<Utc>>,
    ) -> Result<Option<usize>, SecondaryError> {
        conn.db().transaction(|c| {
            // The registration first: it locks the process's row, so a heartbeat waits for
            // this transaction and then registers the process anew, without its claims.
            match silent_before {
                Some(cutoff) => {
                    if !lease::deregister_if_silent(c, id, cutoff)? {
                        return Ok(None);
                    }
                }
                None => {
                    lease::deregister(c, id)?;
                }
            }
            lease::release_all(c, id)?;
            let mut n = 0;
            for d in replicables() {
                n += Registry::of(d).release_owned(c, id)?;
            }
            Ok(Some(n))
        })
    }

    /// Whether this process holds the lease `name` with at least a third of the lease period
    /// left, taking or renewing it when it has less (or none). A process runs the work a lease
    /// guards only while this is true.
    pub fn holds(&self, name: &'static str) -> Result<bool, SecondaryError> {
        let now = self.now();
        let margin = self.config.lease_period / 3;
        if self
            .member
            .held()
            .get(name)
            .is_some_and(|until| *until - now > margin)
        {
            return Ok(true);
        }
        if self.member.wait().get(name).is_some_and(|next| now < *next) {
            return Ok(false);
        }
        let mut conn = self.tracking.get()?;
        let ok = self.try_hold(&mut conn, name, now)?;
        if ok {
            self.member.wait().remove(name);
        } else {
            // Ask again when the holder's lease lapses (sooner if it gives it up: every third
            // of the lease period at the latest).
            let lapses = lease::holder(&mut conn, name)?.map(|(_, until)| until);
            let latest = now.checked_add_signed(margin).unwrap_or(now);
            let next = lapses.map_or(latest, |t| t.min(latest));
            self.member.wait().insert(name, next);
        }
        Ok(ok)
    }

    fn try_hold(
        &self,
        conn: &mut impl AsDbConn,
        name: &'static str,
        now: DateTime<Utc>,
    ) -> Result<bool, SecondaryError> {
        let period = self.config.lease_period;
        let ok = lease::try_hold(conn, name, &self.member.id, now, period)?;
        let had = {
            let mut held = self.member.held();
            if ok {
                held.insert(
                    name,
                    now.checked_add_signed(period)
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                )
                .is_some()
            } else {
                held.remove(name).is_some()
            }
        };
        match (had, ok) {
            (false, true) => {
                tracing::info!(lease = name, worker = %self.member.id, "took the lease")
            }
            (true, false) => {
                tracing::warn!(lease = name, worker = %self.member.id, "lost the lease to another process")
            }
            _ => {}
        }
        Ok(ok)
    }

    /// Where the backfill of `d` continues: the first id of its next range, from the tracking
    /// database (`1` before the first range), so a process that takes the backfill over
    /// continues where the last one stopped.
    pub fn backfill_position(
        &self,
        conn: &mut impl AsDbConn,
        d: &'static ReplicableDescriptor,
    ) -> Result<i64, SecondaryError> {
        Ok(lease::backfill_position(conn, d.name)?)
    }

    /// Records that the backfill of `d` continues at `next_id` (`1`: a new sweep).
    pub fn set_backfill_position(
        &self,
        conn: &mut impl AsDbConn,
        d: &'static ReplicableDescriptor,
        next_id: i64,
    ) -> Result<(), SecondaryError> {
        Ok(lease::set_backfill_position(
            conn,
            d.name,
            next_id,
            self.now(),
        )?)
    }

    /// How often the heartbeat runs: a third of the lease period (at least 10 ms).
    pub(super) fn heartbeat_interval(&self) -> std::time::Duration {
        (self.config.lease_period / 3)
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_millis(10))
    }
}

/// The default lease period: 30 s.
pub(super) fn default_lease_period() -> Duration {
    Duration::seconds(30)
}
