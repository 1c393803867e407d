//! Our kernels' instruction sets, chosen at run time: a hot loop runs inside
//! [`vectorized`], which compiles it (inlined) for AVX-512, for AVX2 with FMA or for the
//! baseline x86-64 (SSE2) and calls the widest one this CPU has, through `pulp` (the SIMD
//! layer of the `gemm` crate). No `target-cpu` build flag is needed, and one binary serves
//! every x86-64 machine. `RANKPRUNE_SIMD=avx512|avx2|scalar` caps the choice (for
//! comparisons); [`with_level`] caps it in tests, which check every path against burn.

use pulp::Arch;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set our kernels may be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Baseline x86-64 (SSE2), or the target's scalar code elsewhere.
    Scalar = 1,
    /// AVX2 and FMA (x86-64-v3).
    Avx2 = 2,
    /// AVX-512 F/BW/CD/DQ/VL (x86-64-v4).
    Avx512 = 3,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    fn of(code: u8) -> Option<Level> {
        Level::ALL.into_iter().find(|l| *l as u8 == code)
    }
}

/// The cap on the level: 0 until first read (then `RANKPRUNE_SIMD` or no cap).
static CAP: AtomicU8 = AtomicU8::new(0);

fn cap() -> Level {
    match Level::of(CAP.load(Ordering::Relaxed)) {
        Some(l) => l,
        None => {
            let l = std::env::var("RANKPRUNE_SIMD")
                .ok()
                .and_then(|v| Level::ALL.into_iter().find(|l| l.name() == v))
                .unwrap_or(Level::Avx512);
            CAP.store(l as u8, Ordering::Relaxed);
            l
        }
    }
}

/// The widest level this CPU has, within the cap.
pub fn level() -> Level {
    match arch() {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Arch::V4(_) => Level::Avx512,
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Arch::V3(_) => Level::Avx2,
        _ => Level::Scalar,
    }
}

/// The `pulp` dispatcher for [`level`].
fn arch() -> Arch {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        let cap = cap();
        if cap >= Level::Avx512
            && let Some(v4) = pulp::x86::V4::try_new()
        {
            return Arch::V4(v4);
        }
        if cap >= Level::Avx2
            && let Some(v3) = pulp::x86::V3::try_new()
        {
            return Arch::V3(v3);
        }
        Arch::Scalar
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    Arch::new()
}

/// `f()` compiled for [`level`]: its loops vectorise to that width where `f`'s body
/// (and what it calls, marked `#[inline(always)]`) is inlined into it. Call it on the
/// thread that runs the loop: a rayon task inside `f` is compiled for the baseline.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    arch().dispatch(f)
}

/// `f()` with the level capped at `cap` (process-wide: the levels compute the same
/// values up to rounding, so other threads meanwhile only run a narrower path).
pub fn with_level<R>(cap: Level, f: impl FnOnce() -> R) -> R {
    let old = CAP.swap(cap as u8, Ordering::Relaxed);
    let out = f();
    CAP.store(old, Ordering::Relaxed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each cap gives at most that level, and at least the baseline.
    #[test]
    fn a_cap_limits_the_level() {
        for cap in Level::ALL {
            let l = with_level(cap, level);
            assert!(l <= cap, "{l:?} above the cap {cap:?}");
        }
        assert_eq!(with_level(Level::Scalar, level), Level::Scalar);
    }
}
