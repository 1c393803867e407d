//! Signals and blocking work: SIGINT/SIGTERM set a stop flag that the running trial or
//! training watches, and long runs show their epochs on a progress bar.

use crate::train::Control;
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// The stop signal of one or many studies: SIGINT or SIGTERM of this process (or the
/// daemon's shutdown), shared by every clone.
#[derive(Clone)]
pub struct Signals(watch::Receiver<bool>);

impl Signals {
    /// Set by SIGINT or SIGTERM, whichever comes first (call inside the runtime).
    pub fn new() -> Result<Self> {
        let make = |k| signal(k).map_err(|e| Error::Failure(format!("signal handler: {e}")));
        let (mut int, mut term) = (
            make(SignalKind::interrupt())?,
            make(SignalKind::terminate())?,
        );
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            let _ = tx.send(true);
        });
        Ok(Self(rx))
    }

    /// Resolves once the signal came (at once if it already has).
    pub async fn recv(&mut self) {
        if self.0.wait_for(|set| *set).await.is_err() {
            // The handler is gone without a signal: none will come.
            std::future::pending::<()>().await;
        }
    }

    /// Whether the signal came.
    pub fn received(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs `f` on a blocking thread; a signal meanwhile sets `stop` (which `f` watches)
/// and is reported with the result.
pub(super) async fn blocking<T: Send + 'static>(
    signals: &mut Signals,
    stop: &Arc<AtomicBool>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<(T, bool)> {
    let mut handle = tokio::task::spawn_blocking(f);
    let mut signalled = false;
    let out = loop {
        tokio::select! {
            r = &mut handle => break r,
            _ = signals.recv(), if !signalled => {
                signalled = true;
                stop.store(true, Ordering::Relaxed);
                tracing::warn!("signal received: stopping");
            }
        }
    };
    let out = out.map_err(|e| Error::Failure(format!("worker thread: {e}")))?;
    Ok((out, signalled))
}

/// The per-epoch callback of a long training run: shows the validation accuracy on `bar`
/// and stops at the next epoch once `stop` is set.
pub(super) fn epoch_progress<'a>(
    bar: &'a ProgressBar,
    stop: &'a AtomicBool,
) -> impl FnMut(&crate::train::Report) -> Control + 'a {
    move |r| {
        if let Some(v) = &r.val {
            bar.set_position(r.epoch as u64);
            bar.set_message(format!("val top-1 {:.1}%", 100.0 * v.top1));
        }
        if stop.load(Ordering::Relaxed) {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}

pub(super) fn bar(len: u64, template: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(ProgressStyle::with_template(template).expect("valid template"));
    b
}
