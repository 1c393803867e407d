//! `rankprune worker`: a process that claims queued trials of any running study in a
//! store, runs them and writes their reports and results. A claim is a lease that the
//! worker's heartbeats renew; a worker that dies stops renewing it, and the study's
//! controller queues the trial again for another worker. SIGINT/SIGTERM hand the running
//! trial back.
//!
//! The study's controller gives the early-stop verdicts: the worker writes each report
//! and waits for the controller's verdict on it in the store. Before its first trial of a
//! study the worker checks the SHA-256 of the base weights and data files it reads
//! against those the study started with, and refuses a mismatch.

use super::STOP_GRACE;
use super::identity::Identity;
use super::trial::{TrialEnd, Verdict, run_trial};
use crate::budget::Budget;
use crate::config::LayerConfig;
use crate::device::parse_device;
use crate::ladder::Context;
use crate::store::{StudyRow, Trial, TrialStore};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub db: PathBuf,
    pub device: String,
    /// Recorded with each trial it runs.
    pub name: String,
    /// Seconds a claim lasts without a heartbeat; heartbeats come every third of it.
    pub lease_s: f64,
    /// Stop after this many trials (None: until signalled).
    pub max_trials: Option<usize>,
    /// Benchmarking the scheduler: trials are not trained; each takes this many
    /// milliseconds and scores a made-up accuracy (see [`dry_run_trial`]).
    pub dry_run_ms: Option<u64>,
}

/// What a worker did before it stopped.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct WorkerOutcome {
    pub trials: usize,
    pub handed_back: usize,
    pub lost_leases: usize,
}

/// The worker's one connection to the store, shared by its trial and its heartbeats.
type Shared = Arc<Mutex<TrialStore>>;

fn with<T>(store: &Shared, f: impl FnOnce(&mut TrialStore) -> T) -> T {
    f(&mut store.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The study's context: its stored budget (paths resolved against the folder the
/// controller recorded), base weights and data, after the files were checked against
/// those the study started with.
fn context(row: &StudyRow) -> Result<Context> {
    if row.budget_dir.is_none() {
        return Err(Error::BadInput(format!(
            "study {}: the store does not record its budget's folder (it was started before worker processes existed)",
            row.name
        )));
    }
    let budget = Budget::of_study(row)?;
    match &row.identity {
        Some(recorded) => Identity::of(&budget)
            .map_err(|e| Error::BadInput(format!("study {}: {e}", row.name)))?
            .check_against(recorded, &row.name)?,
        None => {
            tracing::warn!(study = %row.name, "the study recorded no file identity; not checked")
        }
    }
    Context::load(&budget).map_err(|e| Error::BadInput(format!("study {}: {e}", row.name)))
}

/// SIGINT or SIGTERM sets the returned flag (a signal thread with its own runtime).
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failure(format!("signal runtime: {e}")))?;
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        rt.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(true);
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tracing::warn!("signal received: the running trial is handed back");
            flag.store(true, Ordering::Relaxed);
        })
    });
    match ready.recv() {
        Ok(true) => Ok(stop),
        _ => Err(Error::Failure("cannot install the signal handlers".into())),
    }
}

/// Renews `trial`'s lease every third of the lease until `done`; sets `lost` (and `stop`)
/// when the lease was taken away, and `stop` on a signal. A trial still running
/// [`STOP_GRACE`] after the signal is handed back here, and the process exits (0, as a
/// signalled worker does).
fn heartbeats(
    opts: &WorkerOptions,
    store: Shared,
    trial: i64,
    done: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    signal: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (name, lease) = (opts.name.clone(), opts.lease_s);
    std::thread::spawn(move || {
        let every = Duration::from_secs_f64(lease / 3.0);
        let tick = Duration::from_millis(50).min(every);
        let mut waited = Duration::ZERO;
        let mut signalled: Option<std::time::Instant> = None;
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            if signal.load(Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
                let since = *signalled.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= STOP_GRACE && !done.load(Ordering::Relaxed) {
                    tracing::warn!(
                        trial,
                        "the trial did not stop within {STOP_GRACE:?} of the signal: handed back, exiting"
                    );
                    if let Err(e) = with(&store, |s| s.hand_back(trial)) {
                        tracing::warn!(trial, "hand-back failed ({e}): its lease will expire");
                    }
                    std::process::exit(0);
                }
            }
            waited += tick;
            if waited < every {
                continue;
            }
            waited = Duration::ZERO;
            match with(&store, |s| s.heartbeat(trial, &name, lease)) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(trial, "the lease was lost: the trial is dropped here");
                    lost.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => tracing::warn!(trial, "heartbeat failed: {e}"),
            }
        }
    })
}

/// Writes a report and waits (up to `wait_s`, polling) for the controller's verdict on
/// it; without one by then (no controller running) the trial goes on.
fn controller_verdict(
    store: &Shared,
    trial: i64,
    step: i64,
    acc: f64,
    wait_s: f64,
    stop: &AtomicBool,
) -> crate::store::StoreResult<Verdict> {
    with(store, |s| s.report(trial, step, acc))?;
    let t0 = std::time::Instant::now();
    loop {
        match with(store, |s| s.verdict(trial, step))? {
            Some(true) => return Ok(Verdict::Stop),
            Some(false) => return Ok(Verdict::Continue),
            None if stop.load(Ordering::Relaxed) => return Ok(Verdict::Continue),
            None if t0.elapsed().as_secs_f64() > wait_s => {
                tracing::warn!(
                    trial,
                    step,
                    "no verdict from the study's controller; the trial goes on"
                );
                return Ok(Verdict::Continue);
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A trial that trains nothing, for measuring the scheduler: it takes `ms` milliseconds
/// split over its rungs, and scores an accuracy in [0.5, 0.9) made up from a hash of its
/// config (the same config scores the same), reported at each rung.
pub fn dry_run_trial(
    proxy: &crate::budget::Proxy,
    config: &str,
    ms: u64,
    stop: &AtomicBool,
    mut on_eval: impl FnMut(usize, f64) -> Verdict,
) -> TrialEnd {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    config.hash(&mut h);
    let acc = 0.5 + 0.4 * (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    let parts = proxy.rungs.len() as u64 + 1;
    for &step in &proxy.rungs {
        std::thread::sleep(Duration::from_millis(ms / parts));
        if stop.load(Ordering::Relaxed) {
            return TrialEnd::Interrupted;
        }
        let at = acc * (0.5 + 0.5 * step as f64 / proxy.steps.max(1) as f64);
        if on_eval(step, at) == Verdict::Stop {
            return TrialEnd::EarlyStopped { acc: at };
        }
    }
    std::thread::sleep(Duration::from_millis(ms / parts));
    if stop.load(Ordering::Relaxed) {
        return TrialEnd::Interrupted;
    }
    TrialEnd::Complete {
        acc,
        loss: 1.0 - acc,
    }
}

/// Runs one claimed trial and records how it ended.
fn run_one(
    opts: &WorkerOptions,
    store: &Shared,
    ctx: &Context,
    device: &burn::tensor::Device,
    t: &Trial,
    signal: &Arc<AtomicBool>,
    out: &mut WorkerOutcome,
) -> Result<()> {
    let config = match LayerConfig::from_json(&t.config, "<stored trial>") {
        Ok(c) => c,
        Err(e) => {
            let why = format!("stored config unreadable: {e}");
            return Ok(with(store, |s| s.fail(t.id, &why))?);
        }
    };
    let (done, lost) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    // The trial stops on a signal or when its lease is lost.
    let stop = Arc::new(AtomicBool::new(false));
    let beat = heartbeats(
        opts,
        store.clone(),
        t.id,
        done.clone(),
        lost.clone(),
        stop.clone(),
        signal.clone(),
    );
    let mut report_err = None;
    let on_eval = |step: usize, acc: f64| match controller_verdict(
        store,
        t.id,
        step as i64,
        acc,
        opts.lease_s,
        &stop,
    ) {
        Ok(v) => v,
        Err(e) => {
            report_err = Some(e);
            stop.store(true, Ordering::Relaxed);
            Verdict::Continue
        }
    };
    let end = match opts.dry_run_ms {
        Some(ms) => dry_run_trial(&ctx.proxy, &t.config, ms, &stop, on_eval),
        None => run_trial(ctx, &config, device, &stop, on_eval),
    };
    done.store(true, Ordering::Relaxed);
    let _ = beat.join();
    if let Some(e) = report_err {
        return Err(e.into());
    }
    let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
    // Renewed just before the result is written, a lease cannot expire (and the trial go
    // to another worker) in between; one that was lost already drops the result.
    if lost.load(Ordering::Relaxed) || !store.heartbeat(t.id, &opts.name, opts.lease_s)? {
        tracing::warn!(
            trial = t.number,
            "the lease was lost: another worker runs the trial"
        );
        out.lost_leases += 1;
        return Ok(());
    }
    match end {
        TrialEnd::Complete { acc, loss } => store.complete(t.id, acc, loss)?,
        TrialEnd::EarlyStopped { acc } => store.early_stop(t.id, acc)?,
        TrialEnd::Failed(why) => store.fail(t.id, &why)?,
        TrialEnd::Interrupted => {
            store.hand_back(t.id)?;
            out.handed_back += 1;
            return Ok(());
        }
    }
    out.trials += 1;
    tracing::info!(trial = t.number, study = t.study_id, worker = %opts.name, "trial ends");
    Ok(())
}

/// Claims and runs trials until signalled (or `max_trials` ran); waits while no study
/// has a queued trial.
pub fn run_worker(opts: &WorkerOptions) -> Result<WorkerOutcome> {
    let device = parse_device(&opts.device)?;
    let signal = stop_on_signal()?;
    let shared: Shared = Arc::new(Mutex::new(TrialStore::open(&opts.db)?));
    let mut contexts: HashMap<i64, Context> = HashMap::new();
    let mut out = WorkerOutcome::default();
    let mut waiting = false;
    while !signal.load(Ordering::Relaxed) && opts.max_trials.is_none_or(|m| out.trials < m) {
        let Some(t) = with(&shared, |s| s.claim_any(&opts.name, opts.lease_s))? else {
            if !waiting {
                tracing::info!(worker = %opts.name, "waiting for queued trials");
                waiting = true;
            }
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        waiting = false;
        if let std::collections::hash_map::Entry::Vacant(slot) = contexts.entry(t.study_id) {
            let row = with(&shared, |s| s.study_row(t.study_id))?
                .ok_or_else(|| Error::Failure(format!("trial {} has no study", t.id)))?;
            match context(&row) {
                Ok(c) => {
                    slot.insert(c);
                }
                Err(e) => {
                    // Hand the trial back for a worker that can read the study's files.
                    with(&shared, |s| s.hand_back(t.id))?;
                    return Err(e);
                }
            }
            // Reading the study's files took a while: renew the claim before the trial
            // (when it expired meanwhile, the trial was queued again).
            if !with(&shared, |s| s.heartbeat(t.id, &opts.name, opts.lease_s))? {
                tracing::warn!(
                    trial = t.number,
                    "the lease expired while the study's files were read"
                );
                continue;
            }
        }
        tracing::info!(trial = t.number, study = t.study_id, worker = %opts.name, "trial starts");
        run_one(
            opts,
            &shared,
            &contexts[&t.study_id],
            &device,
            &t,
            &signal,
            &mut out,
        )?;
    }
    Ok(out)
}
