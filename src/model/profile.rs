//! Wall-clock totals per kind of op of our CPU kernels, for the per-op profile of a
//! training step (`cargo bench --bench train -- profile`). Off unless [`enable`]d; then
//! every kernel call adds its time to its op's total.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A kind of op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    ConvForward,
    /// A 3x3 conv's forward by Winograd's F(4x4, 3x3) or F(2x2, 3x3).
    WinogradForward,
    ConvInputGrad,
    /// A 3x3 conv's input gradient by Winograd's F(4x4, 3x3) or F(2x2, 3x3).
    WinogradInputGrad,
    ConvWeightGrad,
    /// A 3x3 conv's weight gradient by Winograd's F(2x2, 3x3).
    WinogradWeightGrad,
    PointwiseForward,
    PointwiseInputGrad,
    PointwiseWeightGrad,
    BnReluForward,
    BnReluBackward,
    BnReluInference,
    PoolForward,
    PoolBackward,
    /// Part of the kxk convs' forward and weight gradient.
    Im2col,
    /// Part of the kxk convs' input gradient.
    Col2im,
}

impl Op {
    /// Whether the op's time is part of another op's.
    pub fn nested(self) -> bool {
        matches!(self, Op::Im2col | Op::Col2im)
    }

    /// Whether the op is part of the backward pass.
    pub fn backward(self) -> bool {
        matches!(
            self,
            Op::ConvInputGrad
                | Op::WinogradInputGrad
                | Op::WinogradWeightGrad
                | Op::ConvWeightGrad
                | Op::PointwiseInputGrad
                | Op::PointwiseWeightGrad
                | Op::BnReluBackward
                | Op::PoolBackward
                | Op::Col2im
        )
    }

    pub const ALL: [Op; 16] = [
        Op::ConvForward,
        Op::WinogradForward,
        Op::ConvInputGrad,
        Op::WinogradInputGrad,
        Op::ConvWeightGrad,
        Op::WinogradWeightGrad,
        Op::PointwiseForward,
        Op::PointwiseInputGrad,
        Op::PointwiseWeightGrad,
        Op::BnReluForward,
        Op::BnReluBackward,
        Op::BnReluInference,
        Op::PoolForward,
        Op::PoolBackward,
        Op::Im2col,
        Op::Col2im,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::ConvForward => "kxk conv forward (im2col)",
            Op::WinogradForward => "3x3 conv forward (Winograd)",
            Op::ConvInputGrad => "kxk conv input gradient",
            Op::WinogradInputGrad => "3x3 conv input gradient (Winograd)",
            Op::WinogradWeightGrad => "3x3 conv weight gradient (Winograd)",
            Op::ConvWeightGrad => "kxk conv weight (+bias) gradient",
            Op::PointwiseForward => "1x1 conv forward",
            Op::PointwiseInputGrad => "1x1 conv input gradient",
            Op::PointwiseWeightGrad => "1x1 conv weight (+bias) gradient",
            Op::BnReluForward => "BN(+ReLU) forward (train)",
            Op::BnReluBackward => "BN(+ReLU) backward",
            Op::BnReluInference => "BN(+ReLU) inference",
            Op::PoolForward => "max-pool forward",
            Op::PoolBackward => "max-pool backward",
            Op::Im2col => "(im2col, within the kxk convs)",
            Op::Col2im => "(col2im, within the kxk input gradient)",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; Op::ALL.len()] = [const { AtomicU64::new(0) }; Op::ALL.len()];

/// Turns timing on or off.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// `f()`, its time added to `op`'s total when timing is on.
pub fn timed<T>(op: Op, f: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    NANOS[op as usize].fetch_add(nanos, Ordering::Relaxed);
    out
}

/// Every op's total since the last call, and zeroes them.
pub fn take() -> Vec<(Op, Duration)> {
    Op::ALL
        .iter()
        .map(|&op| {
            let nanos = NANOS[op as usize].swap(0, Ordering::Relaxed);
            (op, Duration::from_nanos(nanos))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_ops_add_up_only_when_enabled() {
        // Other tests' kernels may add while timing is on, never while it is off.
        take();
        timed(Op::PoolForward, || {
            std::thread::sleep(Duration::from_millis(2))
        });
        assert!(take().iter().all(|(_, d)| d.is_zero()));
        enable(true);
        let v = timed(Op::PoolForward, || {
            std::thread::sleep(Duration::from_millis(2));
            7
        });
        enable(false);
        assert_eq!(v, 7);
        let totals = take();
        let pool = totals
            .iter()
            .find(|(op, _)| *op == Op::PoolForward)
            .unwrap();
        assert!(pool.1 >= Duration::from_millis(2), "{totals:?}");
    }
}
