//! Leases of the store's active daemon and of each study's controller, kept alive by a
//! heartbeat thread. A holder that cannot renew for two thirds of its lease counts
//! itself as having lost it, before anyone else may take it over, and its owner stops
//! acting (the controller stops at its next tick): so at no instant do two controllers
//! act on one study, short of a process frozen for longer than that margin.

use crate::store::{Lease, TrialStore, now};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The lease length of controllers and daemons unless told otherwise (seconds).
pub const DEFAULT_LEASE_S: f64 = 10.0;

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Who this process is, for the store's lease rows: `KIND on HOST (pid N)`.
pub fn holder_name(kind: &str) -> String {
    format!("{kind} on {} (pid {})", hostname(), std::process::id())
}

/// Whether `holder` (as [`holder_name`] writes it) names a process of this machine that
/// no longer exists: its lease can go at once instead of at its expiry.
pub fn gone_from_this_host(holder: &str) -> bool {
    let Some((who, pid)) = holder.rsplit_once(" (pid ") else {
        return false;
    };
    let Some(pid) = pid.strip_suffix(')').and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let on_this_host = who
        .split_once(" on ")
        .is_some_and(|(_, host)| host == hostname());
    on_this_host && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// A lease this process holds, renewed every third of its length by a thread with its
/// own store connection until dropped (which releases it).
pub struct HeldLease {
    pub lease: Lease,
    lost: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    db: PathBuf,
}

/// A live lease as a person reads it: who holds it and when it was last renewed.
pub fn describe(l: &Lease) -> String {
    format!(
        "{} (renewed {:.1} s ago)",
        l.holder,
        (now() - l.renewed_at).max(0.0)
    )
}

/// The live holder of `scope`, if any: a read, for pollers that try to take a lease only
/// once it is free.
pub fn live_holder(store: &TrialStore, scope: &str) -> Result<Option<Lease>> {
    Ok(store.leases(scope)?.pop().filter(|l| l.live_at(now())))
}

impl HeldLease {
    /// Takes `scope`'s lease through `store` (open on `db`) for `lease_s` seconds:
    /// Err(holder) when another live holder has it. The heartbeat gets a connection of
    /// its own once the lease is taken.
    pub fn acquire(
        store: &mut TrialStore,
        db: &Path,
        scope: &str,
        holder: &str,
        lease_s: f64,
    ) -> Result<std::result::Result<Self, Lease>> {
        let lease = match store.acquire_lease(scope, holder, lease_s)? {
            Ok(l) => l,
            Err(current) => return Ok(Err(current)),
        };
        tracing::debug!(scope, holder, id = lease.id, "lease taken");
        let store = TrialStore::open(db)?;
        let lost = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (id, l, d) = (lease.id, lost.clone(), done.clone());
        let scope_name = scope.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("lease {scope}"))
            .spawn(move || keep(store, id, lease_s, &scope_name, &l, &d))
            .map_err(|e| Error::Failure(format!("cannot start the lease thread: {e}")))?;
        Ok(Ok(Self {
            lease,
            lost,
            done,
            thread: Some(thread),
            db: db.to_path_buf(),
        }))
    }

    /// Whether the lease is lost (or about to be: not renewed for two thirds of it).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// The flag [`Self::lost`] reads, for whoever outlives this handle.
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// Whether it is still held: Err naming the scope when lost.
    pub fn check(&self) -> Result<()> {
        if self.lost() {
            return Err(Error::Failure(format!(
                "{}: lost the lease of {}; another process may have taken it over",
                self.db.display(),
                self.lease.scope
            )));
        }
        Ok(())
    }
}

/// The heartbeat: renews lease `id` every third of `lease_s` until `done`; sets `lost`
/// once the store refuses a renewal or none succeeded for two thirds of the lease.
fn keep(
    mut store: TrialStore,
    id: i64,
    lease_s: f64,
    scope: &str,
    lost: &AtomicBool,
    done: &AtomicBool,
) {
    let every = Duration::from_secs_f64(lease_s / 3.0);
    let margin = Duration::from_secs_f64(lease_s * 2.0 / 3.0);
    let mut renewed = Instant::now();
    loop {
        let next = Instant::now() + every;
        while Instant::now() < next {
            if done.load(Ordering::Relaxed) {
                if let Err(e) = store.release_lease(id) {
                    tracing::warn!(scope, "cannot release the lease: {e}");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20).min(every));
        }
        match store.renew_lease(id, lease_s) {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::error!(scope, "the lease was taken over");
                lost.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => tracing::warn!(scope, "cannot renew the lease: {e}"),
        }
        if renewed.elapsed() > margin {
            tracing::error!(
                scope,
                seconds = renewed.elapsed().as_secs_f64(),
                "the lease went unrenewed too long: giving it up"
            );
            lost.store(true, Ordering::Relaxed);
            return;
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_of_this_host_is_gone_and_others_are_not() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = hostname();
        assert!(gone_from_this_host(&format!(
            "search on {host} (pid {dead})"
        )));
        assert!(!gone_from_this_host(&holder_name("search")), "this process");
        assert!(
            !gone_from_this_host(&format!("serve on {host} (pid 1)")),
            "alive"
        );
        assert!(!gone_from_this_host(&format!(
            "serve on elsewhere.example (pid {dead})"
        )));
        assert!(!gone_from_this_host("not a holder"));
    }
}
