//! The dispatch loop: proposes trials, hands them to the controller's own workers
//! (blocking threads) or leaves them queued for worker processes, records what the
//! workers report, gives the early-stop verdicts, and ends on the budget, the wall-time
//! limit, a stop request, a signal or an exhausted strategy.

use super::shutdown::bar;
use super::{Controller, EXTERNAL_QUEUE, EXTERNAL_TICK, Signals, StopReason, TICK};
use crate::Result;
use crate::budget::Budget;
use crate::budget::Proxy;
use crate::config::LayerConfig;
use crate::device::parse_device;
use crate::ladder::Context;
use crate::search::STOP_GRACE;
use crate::search::promotion::verdict;
use crate::search::trial::{TrialEnd, Verdict, run_trial};
use crate::store::{Trial, TrialState};
use burn::tensor::Device;
use indicatif::ProgressBar;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A worker slot: a device and the trial it runs.
struct Slot {
    name: String,
    device: Device,
    busy: Option<i64>,
}

enum Msg {
    Eval {
        trial: i64,
        step: usize,
        acc: f64,
        reply: oneshot::Sender<Verdict>,
    },
    Done {
        slot: usize,
        trial: i64,
        end: TrialEnd,
        seconds: f64,
    },
}

/// One slot per CPU worker and per wgpu device of the budget.
fn worker_slots(budget: &Budget) -> Result<Vec<Slot>> {
    let mut slots: Vec<Slot> = (0..budget.workers.cpu)
        .map(|i| Slot {
            name: format!("cpu{i}"),
            device: Device::flex(),
            busy: None,
        })
        .collect();
    for &id in &budget.workers.wgpu {
        slots.push(Slot {
            name: format!("wgpu:{id}"),
            device: parse_device(&format!("wgpu:{id}"))?,
            busy: None,
        });
    }
    Ok(slots)
}

/// Starts a claimed trial on a blocking thread of slot `i`; its reports and its end come
/// back on `tx`.
fn spawn_trial(
    i: usize,
    trial: Trial,
    config: LayerConfig,
    device: Device,
    ctx: Context,
    tx: mpsc::UnboundedSender<Msg>,
    stop: Arc<AtomicBool>,
) {
    let id = trial.id;
    tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let eval_tx = tx.clone();
        let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_trial(&ctx, &config, &device, &stop, |step, acc| {
                let (reply, answer) = oneshot::channel();
                let msg = Msg::Eval {
                    trial: id,
                    step,
                    acc,
                    reply,
                };
                if eval_tx.send(msg).is_err() {
                    return Verdict::Continue;
                }
                answer.blocking_recv().unwrap_or(Verdict::Continue)
            })
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            TrialEnd::Failed(format!("panic: {what}"))
        });
        let _ = tx.send(Msg::Done {
            slot: i,
            trial: id,
            end,
            seconds: t0.elapsed().as_secs_f64(),
        });
    });
}

/// The progress bar's line: trials by state and the best so far.
fn refresh(ctl: &Controller, pb: &ProgressBar, trials: &[Trial]) {
    let count = |s| trials.iter().filter(|t| t.state == s).count();
    let best = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| t.proxy_acc.map(|a| (a, t)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    pb.set_position(trials.iter().filter(|t| t.finished_at.is_some()).count() as u64);
    pb.set_message(format!(
        "running {} · failed {} · early-stopped {} · best {}",
        count(TrialState::Running),
        count(TrialState::Failed),
        count(TrialState::EarlyStopped),
        best.map_or("-".into(), |(a, t)| format!(
            "{:.1}% (#{}, {:.1}x FLOPs)",
            100.0 * a,
            t.number,
            ctl.problem.base_cost.flops as f64 / t.cost.flops.max(1) as f64
        ))
    ));
}

impl Controller {
    /// The early-stop verdict on a report (none once a signal stops the search: the
    /// trial is interrupted anyway).
    fn verdict(
        &self,
        trial: i64,
        step: i64,
        acc: f64,
        stopping: Option<StopReason>,
    ) -> Result<Verdict> {
        if stopping == Some(StopReason::Signal) {
            return Ok(Verdict::Continue);
        }
        // A step-0 gate that has not earned its place ranks nothing: only the minimum
        // accuracy stops a trial there.
        if step == 0 && !self.gate_stops {
            let floor_only = Proxy {
                early_stop_median: false,
                ..self.budget.proxy.clone()
            };
            return Ok(verdict(&floor_only, 0, acc, &[]));
        }
        let others = self.store.values_at(self.study, step, trial)?;
        Ok(verdict(&self.budget.proxy, step as usize, acc, &others))
    }

    /// What worker processes changed in the store: finished trials are told to the
    /// strategy, and their new reports get a verdict.
    fn external_tick(
        &mut self,
        trials: &[Trial],
        observed: &mut HashSet<i64>,
        stopping: Option<StopReason>,
    ) -> Result<()> {
        for t in trials {
            if t.finished_at.is_some() && observed.insert(t.id) {
                self.observe(t);
            }
        }
        for (trial, step, acc) in self.store.pending_verdicts(self.study)? {
            let v = self.verdict(trial, step, acc, stopping)?;
            self.store.set_verdict(trial, step, v == Verdict::Stop)?;
        }
        Ok(())
    }

    /// Whether `rankprune stop` asked this study to stop.
    fn stop_requested(&self) -> Result<bool> {
        Ok(self
            .store
            .study_row(self.study)?
            .is_some_and(|s| s.stop_requested_at.is_some()))
    }

    /// Records how a local worker's trial ended and tells the strategy.
    fn record_end(
        &mut self,
        trial: i64,
        end: &TrialEnd,
        seconds: f64,
        observed: &mut HashSet<i64>,
    ) -> Result<()> {
        match end {
            TrialEnd::Complete { acc, loss } => self.store.complete(trial, *acc, *loss)?,
            TrialEnd::EarlyStopped { acc } => self.store.early_stop(trial, *acc)?,
            TrialEnd::Failed(why) => self.store.fail(trial, why)?,
            TrialEnd::Interrupted => self.store.interrupt(trial)?,
        }
        let t = self.store.trial(trial)?;
        if *end != TrialEnd::Interrupted && observed.insert(t.id) {
            self.observe(&t);
        }
        match end {
            TrialEnd::Failed(why) => {
                tracing::warn!(trial = t.number, seconds, "trial failed: {why}")
            }
            _ => tracing::info!(
                trial = t.number,
                state = t.state.as_str(),
                acc = t.proxy_acc,
                seconds,
                "trial ends"
            ),
        }
        Ok(())
    }

    /// Hands queued trials to the idle local slots.
    fn start_local(
        &mut self,
        slots: &mut [Slot],
        ctx: &Context,
        tx: &mpsc::UnboundedSender<Msg>,
    ) -> Result<()> {
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.busy.is_some() {
                continue;
            }
            let Some(trial) = self.store.claim(self.study, &slot.name)? else {
                break;
            };
            let config = match LayerConfig::from_json(&trial.config, "<stored trial>") {
                Ok(c) => c,
                Err(e) => {
                    self.store
                        .fail(trial.id, &format!("stored config unreadable: {e}"))?;
                    continue;
                }
            };
            slot.busy = Some(trial.id);
            tracing::debug!(trial = trial.number, worker = %slot.name, "trial starts");
            spawn_trial(
                i,
                trial,
                config,
                slot.device.clone(),
                ctx.clone(),
                tx.clone(),
                self.stop.clone(),
            );
        }
        Ok(())
    }

    /// Running trials: the local slots' or, with worker processes, the store's.
    fn running(&self, slots: &[Slot], trials: &[Trial]) -> usize {
        if self.budget.workers.processes {
            trials
                .iter()
                .filter(|t| t.state == TrialState::Running)
                .count()
        } else {
            slots.iter().filter(|s| s.busy.is_some()).count()
        }
    }
}

/// What one dispatch loop did: its ticks and the trial-list reads they made (one each:
/// see experiments/worker-scaling).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Dispatched {
    pub ticks: u64,
    pub trial_reads: u64,
}

/// Where the loop stands between ticks.
struct LoopState {
    stopping: Option<StopReason>,
    /// When the signal came, if one did.
    signalled_at: Option<Instant>,
    exhausted: bool,
    /// Finished trials already told to the strategy.
    observed: HashSet<i64>,
}

impl LoopState {
    /// At the loop's start: the study's finished trials were told to the strategy.
    fn new(ctl: &Controller) -> Result<Self> {
        Ok(Self {
            stopping: None,
            signalled_at: None,
            exhausted: false,
            observed: ctl
                .store
                .trials(ctl.study)?
                .iter()
                .filter(|t| t.finished_at.is_some())
                .map(|t| t.id)
                .collect(),
        })
    }
}

impl Controller {
    /// A tick's reading of the store: expired leases of worker processes, the study's
    /// trials (read once a tick, here: what the tick changes shows in the next one),
    /// what worker processes finished or reported, and a stop request.
    fn read_tick(&mut self, state: &mut LoopState) -> Result<Vec<Trial>> {
        let external = self.budget.workers.processes;
        if external {
            self.store.requeue_expired(self.study)?;
            // A stopped study's trial whose worker lost its lease (a slow worker under
            // load) is queued again above: withdrawn like the rest, not left queued.
            if state.stopping == Some(StopReason::Stopped) {
                self.store.withdraw_queued(self.study)?;
            }
        }
        let trials = self.store.trials(self.study)?;
        if external {
            self.external_tick(&trials, &mut state.observed, state.stopping)?;
        }
        if state.stopping.is_none() && self.stop_requested()? {
            let withdrawn = self.store.withdraw_queued(self.study)?;
            tracing::info!(
                withdrawn,
                "stop requested: no new trials start; running ones finish"
            );
            state.stopping = Some(StopReason::Stopped);
        }
        Ok(trials)
    }

    /// Proposes trials for the idle local slots (and, with worker processes, keeps the
    /// queue full for them), then starts the local ones.
    fn propose_and_start(
        &mut self,
        slots: &mut [Slot],
        trials: &[Trial],
        state: &mut LoopState,
        ctx: &Context,
        tx: &mpsc::UnboundedSender<Msg>,
    ) -> Result<()> {
        let local = slots.iter().filter(|s| s.busy.is_none()).count();
        let queue = if self.budget.workers.processes {
            EXTERNAL_QUEUE.max(self.running(slots, trials))
        } else {
            0
        };
        let idle = local + queue;
        if idle > 0 && !state.exhausted {
            state.exhausted = self.fill(idle, trials)?;
        }
        self.start_local(slots, ctx, tx)
    }

    /// A local worker's report (answered with a verdict) or end (recorded).
    fn on_message(&mut self, msg: Msg, slots: &mut [Slot], state: &mut LoopState) -> Result<()> {
        match msg {
            Msg::Eval {
                trial,
                step,
                acc,
                reply,
            } => {
                self.store.report(trial, step as i64, acc)?;
                let _ = reply.send(self.verdict(trial, step as i64, acc, state.stopping)?);
            }
            Msg::Done {
                slot,
                trial,
                end,
                seconds,
            } => {
                slots[slot].busy = None;
                self.record_end(trial, &end, seconds, &mut state.observed)?;
            }
        }
        Ok(())
    }

    /// Marks the trials still running on this controller's threads [`STOP_GRACE`] after
    /// a signal interrupted, as their own end would, and stops waiting for them: each
    /// is inside one long step (a slow device call) that does not see the stop flag.
    /// Their threads are left to the process's exit.
    fn abandon(&mut self, slots: &mut [Slot]) -> Result<()> {
        for slot in slots.iter_mut() {
            if let Some(trial) = slot.busy.take() {
                tracing::warn!(
                    trial,
                    worker = %slot.name,
                    "the trial did not stop within {STOP_GRACE:?} of the signal: marked interrupted, not waited for"
                );
                self.store.interrupt(trial)?;
            }
        }
        Ok(())
    }

    /// Whether the loop ends now, with `state.stopping` saying why. On a signal the
    /// controller waits for its own threads' trials only: worker processes go on with
    /// theirs, and the next controller collects them. Before the loop ends for want of
    /// proposals, the queued trials run too.
    fn loop_ends(&self, slots: &[Slot], trials: &[Trial], state: &mut LoopState) -> bool {
        let queued = trials.iter().filter(|t| t.state == TrialState::Queued);
        let waiting = match state.stopping {
            Some(StopReason::Signal) => slots.iter().filter(|s| s.busy.is_some()).count(),
            Some(_) => self.running(slots, trials),
            None => self.running(slots, trials) + queued.count(),
        };
        if waiting > 0 {
            return false;
        }
        if state.stopping.is_some() {
            return true;
        }
        if trials.len() >= self.budget.limits.max_trials
            && trials.iter().all(|t| t.finished_at.is_some())
        {
            state.stopping = Some(StopReason::Budget);
            return true;
        }
        if state.exhausted {
            state.stopping = Some(StopReason::Exhausted);
            return true;
        }
        false
    }
}

/// Runs the study's trials until the loop ends; returns why it ended, and its ticks.
pub(super) async fn dispatch(
    ctl: &mut Controller,
    ctx: &Context,
    signals: &mut Signals,
    progress: bool,
) -> Result<(StopReason, Dispatched)> {
    let budget = ctl.budget.clone();
    let mut slots = worker_slots(&budget)?;
    let pb = bar(
        budget.limits.max_trials as u64,
        "trials {bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]",
        progress,
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let deadline = budget
        .limits
        .max_wall_hours
        .map(|h| tokio::time::Instant::now() + Duration::from_secs_f64(h * 3600.0));
    let mut state = LoopState::new(ctl)?;
    // With worker processes the controller keeps trials queued for them and looks at
    // the store on a tick: their results, reports and expired leases.
    let tick = if budget.workers.processes {
        EXTERNAL_TICK
    } else {
        TICK
    };
    let reads_before = ctl.store.trial_reads();
    let mut ticks = 0;
    loop {
        if ctl.lease.lost() {
            ctl.stop.store(true, Ordering::Relaxed);
            pb.finish_and_clear();
            ctl.lease.check()?;
        }
        ticks += 1;
        let trials = ctl.read_tick(&mut state)?;
        if state.stopping.is_none() {
            ctl.propose_and_start(&mut slots, &trials, &mut state, ctx, &tx)?;
        }
        refresh(ctl, &pb, &trials);
        if state
            .signalled_at
            .is_some_and(|at| at.elapsed() >= STOP_GRACE)
        {
            ctl.abandon(&mut slots)?;
        }
        if ctl.loop_ends(&slots, &trials, &mut state) {
            break;
        }
        tokio::select! {
            msg = rx.recv() => {
                ctl.on_message(msg.expect("the controller holds a sender"), &mut slots, &mut state)?;
            }
            _ = tokio::time::sleep(tick) => {}
            _ = signals.recv(), if state.stopping != Some(StopReason::Signal) => {
                tracing::warn!("signal received: stopping; running trials are marked interrupted");
                state.stopping = Some(StopReason::Signal);
                state.signalled_at = Some(Instant::now());
                ctl.stop.store(true, Ordering::Relaxed);
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if state.stopping.is_none() && deadline.is_some() => {
                tracing::info!("wall-time limit reached: running trials finish, no new ones start");
                state.stopping = Some(StopReason::WallLimit);
            }
        }
    }
    pb.finish_and_clear();
    let done = Dispatched {
        ticks,
        trial_reads: ctl.store.trial_reads() - reads_before,
    };
    tracing::info!(
        ticks = done.ticks,
        trial_reads = done.trial_reads,
        "dispatch ends"
    );
    Ok((state.stopping.unwrap_or(StopReason::Budget), done))
}
