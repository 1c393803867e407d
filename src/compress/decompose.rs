//! VBMF rank recommendation for every conv of a network, and the Tucker-2 factors of
//! one conv (shared between candidates through [`TuckerCache`]); the whole-network
//! decomposition is [`super::graph_tucker`]'s.

use super::tucker::{HOOI_MAX_ITERS, tucker2, unfold0, unfold1};
use super::vbmf::{calibrated_rank, evbmf};
use crate::weights::{TensorF32, Weights};
use crate::{Error, Result};
use indexmap::IndexMap;
use std::sync::{Arc, Mutex};

/// Ranks for one conv: `[in_rank, out_rank]` as in configs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RankRecommendation {
    pub layer: String,
    /// `[S, T]`: input channels and filters (the full ranks).
    pub full: [usize; 2],
    /// EVBMF ranks of the mode-1 (input) and mode-0 (output) unfoldings, at least 1.
    pub vbmf: [usize; 2],
    /// After the calibration ratio.
    pub chosen: [usize; 2],
}

impl RankRecommendation {
    /// `[in, out]` ranks at calibration `c` (the simple flow's `--calibration`).
    pub fn at(&self, c: f64) -> [usize; 2] {
        [0, 1].map(|s| calibrated_rank(self.vbmf[s], self.full[s], c))
    }
}

fn conv_weight<'a>(weights: &'a Weights, name: &str) -> Result<&'a TensorF32> {
    let key = format!("{name}.weight");
    weights
        .get(&key)
        .ok_or_else(|| Error::BadInput(format!("weights have no tensor {key:?}")))
}

fn as_f64(t: &TensorF32) -> Vec<f64> {
    t.data.iter().map(|&v| f64::from(v)).collect()
}

/// VBMF ranks of one conv weight `[out, in, k, k]` (both channel modes), calibrated.
pub fn recommend_conv(layer: &str, w: &TensorF32, calibration: f64) -> RankRecommendation {
    let (t, s, kk) = (w.shape[0], w.shape[1], w.shape[2] * w.shape[3]);
    let w = as_f64(w);
    let out_rank = evbmf(&unfold0(&w, t, s, kk)).rank.max(1);
    let in_rank = evbmf(&unfold1(&w, t, s, kk)).rank.max(1);
    RankRecommendation {
        layer: layer.to_string(),
        full: [s, t],
        vbmf: [in_rank, out_rank],
        chosen: [
            calibrated_rank(in_rank, s, calibration),
            calibrated_rank(out_rank, t, calibration),
        ],
    }
}

/// VBMF ranks, calibrated by `calibration`, for every conv of `graph` with a kernel
/// larger than 1x1 and more than 3 input channels (3-channel input convs stay plain, as
/// in the reference); `on_layer` sees each conv's name first (a progress bar).
pub fn recommend_graph_ranks(
    graph: &crate::graph::Graph,
    weights: &Weights,
    calibration: f64,
    mut on_layer: impl FnMut(&str),
) -> Result<Vec<RankRecommendation>> {
    if !(-1.0..=1.0).contains(&calibration) {
        return Err(Error::BadInput(format!(
            "--calibration {calibration}: allowed range [-1, 1]"
        )));
    }
    let mut out = Vec::new();
    for node in &graph.nodes {
        let crate::graph::Op::Conv(c) = &node.op else {
            continue;
        };
        if c.in_channels <= 3 || c.kernel == 1 {
            continue;
        }
        on_layer(&node.name);
        let w = conv_weight(weights, &node.name)?;
        out.push(recommend_conv(&node.name, w, calibration));
    }
    Ok(out)
}

/// Per-layer outcome of a decomposition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerDecomposition {
    pub layer: String,
    pub ranks: [usize; 2],
    pub rel_error: f64,
    pub hooi_iterations: usize,
}

/// One conv's Tucker-2 replacement: the three conv weights and how well they fit.
#[derive(Debug)]
pub(crate) struct Factors {
    pub(crate) convs: [TensorF32; 3],
    pub(crate) rel_error: f64,
    pub(crate) iterations: usize,
}

impl Factors {
    fn bytes(&self) -> usize {
        self.convs.iter().map(|t| 4 * t.data.len()).sum()
    }
}

/// Tucker-2 results of one set of base weights, keyed by (layer, in_rank, out_rank), so
/// that search trials sharing a layer's ranks decompose it once. Holds at most
/// `max_bytes` of factors; the oldest entries go first. Shared between threads.
pub struct TuckerCache {
    max_bytes: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: IndexMap<(String, usize, usize), Arc<Factors>>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

impl TuckerCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::default(),
        }
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        let g = self.inner.lock().expect("cache lock");
        (g.hits, g.misses)
    }

    fn get(&self, key: &(String, usize, usize)) -> Option<Arc<Factors>> {
        let mut g = self.inner.lock().expect("cache lock");
        let hit = g.entries.get(key).cloned();
        if hit.is_some() {
            g.hits += 1;
        } else {
            g.misses += 1;
        }
        hit
    }

    fn put(&self, key: (String, usize, usize), f: Arc<Factors>) {
        let size = f.bytes();
        if size > self.max_bytes {
            return;
        }
        let mut g = self.inner.lock().expect("cache lock");
        if g.entries.contains_key(&key) {
            return;
        }
        while g.bytes + size > self.max_bytes {
            let Some((_, old)) = g.entries.shift_remove_index(0) else {
                break;
            };
            g.bytes -= old.bytes();
        }
        g.bytes += size;
        g.entries.insert(key, f);
    }
}

fn factors(w: &TensorF32, name: &str, in_rank: usize, out_rank: usize) -> Result<Factors> {
    let shape: [usize; 4] = w.shape.as_slice().try_into().map_err(|_| {
        Error::BadInput(format!(
            "{name}.weight has shape {:?}, expected 4 dimensions",
            w.shape
        ))
    })?;
    let tk = tucker2(&w.data, shape, in_rank, out_rank, HOOI_MAX_ITERS);
    Ok(Factors {
        convs: tk
            .conv_weights()
            .map(|(shape, data)| TensorF32::new(shape, data)),
        rel_error: tk.rel_error,
        iterations: tk.iterations,
    })
}

/// The Tucker-2 factors of conv `name` (weight `w`) at these ranks: from `cache` when it
/// holds them, computed (and added to it) otherwise.
pub(crate) fn cached_factors(
    cache: Option<&TuckerCache>,
    w: &TensorF32,
    name: &str,
    in_rank: usize,
    out_rank: usize,
) -> Result<Arc<Factors>> {
    let key = (name.to_string(), in_rank, out_rank);
    if let Some(f) = cache.and_then(|c| c.get(&key)) {
        return Ok(f);
    }
    let f = Arc::new(factors(w, name, in_rank, out_rank)?);
    if let Some(c) = cache {
        c.put(key, f.clone());
    }
    Ok(f)
}
