//! Least-squares layer repair: after compression, refit the last conv of every conv unit
//! so that on a few calibration batches its output matches the base model's output for
//! the channels it kept. Units are repaired in order, each fed by the
//! already repaired candidate's own activations, so a refit also absorbs the error of
//! the layers before it (ThiNet, Luo et al., ICCV 2017, Sec. 3.2; the reconstruction
//! step of He et al., "Channel Pruning", ICCV 2017). Each refit is a ridge regression
//! towards the current weights, in closed form:
//! `W = argmin ||Z W^T - Y||^2 + lambda ||W - W0||^2 = (Y^T Z + lambda W0)(Z^T Z + lambda I)^-1`,
//! with `Z` the unit's last-conv input patches (plus a ones column for the bias) and `Y`
//! the base unit's conv output (before its BatchNorm, whose statistics the candidate took
//! over from the base). Each BatchNorm is then restated for its refitted input (same
//! inference function, its input's own statistics), so that training-mode BatchNorm
//! computes what inference does. The classifier is left as it is.

use crate::arch::{Arch, ConvSpec, ConvUnit, Unit};
use crate::compress::prune::{Kept, filter_norms, select};
use crate::data::batches::Batch;
use crate::model::{Vgg, bn_from, conv_from, values};
use crate::train::recalibrate::Pooled;
use crate::weights::{TensorF32, Weights};
use burn::nn::BatchNorm;
use burn::nn::pool::MaxPool2dConfig;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use std::ops::Range;

/// Ridge strengths tried, relative to the mean diagonal of `Z^T Z`: from nearly plain
/// least squares (a well-determined fit) to a strong pull towards the compressed weights
/// (an under-determined one: fewer calibration rows than unknowns).
const RIDGES: [f64; 5] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0];
/// Rows of `Z` sampled per refit: this many per unknown of a filter, at least
/// [`MIN_ROWS`] (all rows when there are fewer).
const ROWS_PER_UNKNOWN: usize = 8;
const MIN_ROWS: usize = 4096;

/// One refit: the relative residual `||Z W^T - Y|| / ||Y||` before and after, on the
/// sampled rows of the images it was fitted on and on those of the held-out images, and
/// the ridge strength chosen (`None`: the weights stayed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refit {
    pub layer: String,
    pub rows: usize,
    pub ridge: Option<f64>,
    pub before: f64,
    pub after: f64,
    pub held_out_before: f64,
    pub held_out_after: f64,
}

/// The four dimensions of an activation on the host, `[n, c, h, w]` row-major.
fn dims4(t: &TensorF32) -> [usize; 4] {
    t.shape[..].try_into().expect("a 4-D activation")
}

/// Inference BatchNorm (running statistics), whatever the device.
fn bn_eval(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let c = x.dims()[1];
    let shape = |t: Tensor<1>| t.reshape([1, c, 1, 1]);
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
    x * shape(scale) + shape(shift)
}

/// Makes the BatchNorm `name` (now `bn`) keep its inference function while its running
/// statistics become those of its actual input `y` over the calibration images. A refit
/// only approximates the base model's conv output, with less variance (the least-squares
/// residual is what it cannot predict); normalised by the base's statistics that
/// shrinkage is right, but a BatchNorm in training mode, or recalibrated, would normalise
/// by the batch's own statistics and blow it up again. With `(m, v)` the new statistics:
/// `gamma' = gamma sqrt(v + eps) / sqrt(v0 + eps)`,
/// `beta' = beta + gamma (m - m0) / sqrt(v0 + eps)`.
fn restate_bn(weights: &mut Weights, name: &str, bn: &BatchNorm, y: Tensor<4>) {
    let [n, c, h, w] = y.dims();
    let per_channel = y.swap_dims(0, 1).reshape([c, n * h * w]);
    let mean = per_channel.clone().mean_dim(1);
    let var = (per_channel - mean.clone()).powi_scalar(2).mean_dim(1);
    // Unbiased, as PyTorch stores it.
    let mut pooled = Pooled::default();
    pooled.add((n * h * w) as f64, &values(mean).data, &values(var).data);
    let f64s = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
    let (m, v) = pooled.stats();
    let (m, v) = (f64s(m), f64s(v));
    let host = |t: Tensor<1>| f64s(values(t).data);
    let (m0, v0) = (host(bn.running_mean.value()), host(bn.running_var.value()));
    let (gamma, beta) = (host(bn.gamma.val()), host(bn.beta.val()));
    let eps = bn.epsilon;
    let key = |field: &str| format!("{name}.{field}");
    let mut put = |field: &str, values: Vec<f64>| {
        let t = TensorF32::new(vec![c], values.into_iter().map(|x| x as f32).collect());
        weights.tensors.insert(key(field), t);
    };
    let s0: Vec<f64> = v0.iter().map(|v| (v + eps).sqrt()).collect();
    put(
        "weight",
        (0..c)
            .map(|i| gamma[i] * (v[i] + eps).sqrt() / s0[i])
            .collect(),
    );
    put(
        "bias",
        (0..c)
            .map(|i| beta[i] + gamma[i] * (m[i] - m0[i]) / s0[i])
            .collect(),
    );
    put("running_mean", m);
    put("running_var", v);
}

fn unit_out(bn: Option<&BatchNorm>, y: Tensor<4>) -> Tensor<4> {
    relu(match bn {
        Some(bn) => bn_eval(bn, y),
        None => y,
    })
}

/// Rows of the least-squares problem: input patches (plus a ones column for the bias)
/// and their targets.
struct Rows {
    a: Mat<f64>,
    b: Mat<f64>,
}

impl Rows {
    fn gram(&self) -> (Mat<f64>, Mat<f64>) {
        (self.a.transpose() * &self.a, self.a.transpose() * &self.b)
    }

    /// `||A X - B|| / ||B||` (0 without rows).
    fn residual(&self, x: &Mat<f64>) -> f64 {
        if self.a.nrows() == 0 {
            return 0.0;
        }
        (&self.a * x - &self.b).norm_l2() / self.b.norm_l2().max(f64::MIN_POSITIVE)
    }
}

/// Every this-many-th calibration image is held out to choose the ridge strength.
const HOLD_OUT_EVERY: usize = 5;

/// The rows of `spec` mapping `z` to `y` at sampled output positions: those of the
/// images kept for fitting, and those of the held-out images.
fn sampled_rows(
    spec: &ConvSpec,
    bias: bool,
    z: &TensorF32,
    y: &TensorF32,
    seed: u64,
) -> (Rows, Rows) {
    let [n, cin, h, w] = dims4(z);
    let [_, cout, ho, wo] = dims4(y);
    let k = spec.kernel;
    let d = cin * k * k + usize::from(bias);
    let total = n * ho * wo;
    let m = total.min(MIN_ROWS.max(ROWS_PER_UNKNOWN * d));
    let positions: Vec<usize> = if m == total {
        (0..total).collect()
    } else {
        let mut p = rand::seq::index::sample(&mut StdRng::seed_from_u64(seed), total, m).into_vec();
        p.sort_unstable();
        p
    };
    let pos = |p: usize| (p / (ho * wo), (p / wo) % ho, p % wo);
    let held = |p: &usize| n >= HOLD_OUT_EVERY && pos(*p).0 % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1;
    let (val, fit): (Vec<usize>, Vec<usize>) = positions.into_iter().partition(held);
    let rows = |positions: &[usize]| Rows {
        a: Mat::from_fn(positions.len(), d, |row, j| {
            if j == cin * k * k {
                return 1.0;
            }
            let (ni, oh, ow) = pos(positions[row]);
            let (c, kh, kw) = (j / (k * k), (j / k) % k, j % k);
            let ih = (oh * spec.stride + kh) as isize - spec.padding as isize;
            let iw = (ow * spec.stride + kw) as isize - spec.padding as isize;
            if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                return 0.0;
            }
            f64::from(z.data[((ni * cin + c) * h + ih as usize) * w + iw as usize])
        }),
        b: Mat::from_fn(positions.len(), cout, |row, o| {
            let (ni, oh, ow) = pos(positions[row]);
            f64::from(y.data[((ni * cout + o) * ho + oh) * wo + ow])
        }),
    };
    (rows(&fit), rows(&val))
}

/// `argmin ||A X - B||^2 + lambda ||X - X0||^2` from `G = A^T A` and `R = A^T B`, with
/// lambda = `factor` times the mean diagonal of `G` (`None` if the solve fails).
fn ridge(g: &Mat<f64>, r: &Mat<f64>, x0: &Mat<f64>, factor: f64) -> Option<Mat<f64>> {
    let d = g.nrows();
    let trace: f64 = (0..d).map(|j| g[(j, j)]).sum();
    let lambda = factor * (trace / d as f64).max(f64::MIN_POSITIVE);
    let mut g = g.clone();
    for j in 0..d {
        g[(j, j)] += lambda;
    }
    let rhs = r + x0 * faer::Scale(lambda);
    let x = g.llt(Side::Lower).ok()?.solve(&rhs);
    x.norm_l2().is_finite().then_some(x)
}

/// The weights (`[out, in, k, k]`) and bias of the conv `spec` refitted so that it maps
/// `z` to `y`, by ridge regression towards `w0` and `b0`. The ridge strength is the one
/// of [`RIDGES`] whose fit on the other images best predicts the held-out images; when
/// none beats the old weights there, they stay.
fn refit(
    spec: &ConvSpec,
    w0: &TensorF32,
    b0: Option<&TensorF32>,
    z: &TensorF32,
    y: &TensorF32,
    seed: u64,
) -> (TensorF32, Option<TensorF32>, Refit) {
    let (fit, held) = sampled_rows(spec, b0.is_some(), z, y, seed);
    let (d, cout) = (fit.a.ncols(), fit.b.ncols());
    let per = w0.data.len() / cout;
    // X0 = [W0 | b0]^T, d x out.
    let x0 = Mat::from_fn(d, cout, |j, o| match b0 {
        Some(bias) if j == per => f64::from(bias.data[o]),
        _ => f64::from(w0.data[o * per + j]),
    });
    let (g, r) = fit.gram();
    let chosen = if held.a.nrows() == 0 {
        Some(RIDGES[1])
    } else {
        let mut best = (held.residual(&x0), None);
        for &factor in &RIDGES {
            if let Some(x) = ridge(&g, &r, &x0, factor) {
                let e = held.residual(&x);
                if e < best.0 {
                    best = (e, Some(factor));
                }
            }
        }
        best.1
    };
    let x = match chosen {
        Some(factor) => {
            let (gh, rh) = held.gram();
            ridge(&(&g + &gh), &(&r + &rh), &x0, factor).unwrap_or_else(|| x0.clone())
        }
        None => x0.clone(),
    };
    let report = Refit {
        layer: spec.name.clone(),
        rows: fit.a.nrows() + held.a.nrows(),
        ridge: chosen,
        before: fit.residual(&x0),
        after: fit.residual(&x),
        held_out_before: held.residual(&x0),
        held_out_after: held.residual(&x),
    };
    let w = (0..cout)
        .flat_map(|o| (0..per).map(move |j| (o, j)))
        .map(|(o, j)| x[(j, o)] as f32)
        .collect();
    let bias =
        b0.map(|_| TensorF32::new(vec![cout], (0..cout).map(|o| x[(per, o)] as f32).collect()));
    (TensorF32::new(w0.shape.clone(), w), bias, report)
}

/// The calibration images of `batches` as one `[n, 3, H, W]` tensor.
fn images(batches: &[Batch], device: &Device) -> Tensor<4> {
    Tensor::cat(
        batches
            .iter()
            .map(|b| super::images_tensor(b, device))
            .collect(),
        0,
    )
}

/// Scales each refitted filter (and its bias) back to the norm the filter had before.
/// A BatchNorm follows, which makes the unit's output blind to a filter's scale (its
/// restated statistics absorb it), but training is not: a filter's effective learning
/// rate falls with the square of its norm, and a refit can grow norms tenfold (a
/// repaired Tucker unit's output 1x1 reached norm 24 where the factor had 3-4) and then
/// stall fine-tuning.
/// Returns the scale of each filter.
fn keep_filter_norms(w0: &TensorF32, w: &mut TensorF32, b: Option<&mut TensorF32>) -> Vec<f64> {
    let per = w.data.len() / w.shape[0];
    let scales: Vec<f64> = filter_norms(w0)
        .into_iter()
        .zip(filter_norms(w))
        .map(|(old, new)| {
            if new > 0.0 && old > 0.0 {
                old / new
            } else {
                1.0
            }
        })
        .collect();
    for (o, f) in w.data.chunks_mut(per).enumerate() {
        f.iter_mut()
            .for_each(|v| *v = (f64::from(*v) * scales[o]) as f32);
    }
    if let Some(b) = b {
        for (o, v) in b.data.iter_mut().enumerate() {
            *v = (f64::from(*v) * scales[o]) as f32;
        }
    }
    scales
}

/// Where a walk over a model's units stands in its flat conv and BatchNorm lists.
#[derive(Default)]
struct Cursor {
    conv: usize,
    bn: usize,
}

impl Cursor {
    /// The indices of conv unit `u`'s convs and of its BatchNorm; steps past them.
    fn take(&mut self, u: &ConvUnit) -> (Range<usize>, Option<usize>) {
        let convs = self.conv..self.conv + u.body.convs().len();
        self.conv = convs.end;
        let bn = u.bn.as_ref().map(|_| {
            self.bn += 1;
            self.bn - 1
        });
        (convs, bn)
    }
}

/// A candidate being repaired: its model (refitted convs swapped in as it goes), its
/// weights (refits and restated BatchNorms written in) and the refits so far.
struct Repairing<'a> {
    model: Vgg,
    weights: Weights,
    kept: &'a Kept,
    refits: Vec<Refit>,
    cursor: Cursor,
    device: &'a Device,
}

impl Repairing<'_> {
    /// Refits the last conv of candidate unit `u` so that, fed `x`, it gives the base
    /// unit's conv output `target` (for the channels it kept), restates its BatchNorm and
    /// returns the unit's output.
    fn unit(&mut self, u: &ConvUnit, x: Tensor<4>, target: &Tensor<4>, seed: u64) -> Tensor<4> {
        let (convs, bn) = self.cursor.take(u);
        let last = convs.end - 1;
        let mut z = x;
        for conv in &self.model.convs[convs.start..last] {
            z = conv.forward(z);
        }
        let spec = u.body.convs().last().expect("a body has a conv");
        let target = values(target.clone());
        let target = match self.kept.get(&spec.name) {
            Some(channels) => select(&target, 1, channels),
            None => target,
        };
        let (wkey, bkey) = (
            format!("{}.weight", spec.name),
            format!("{}.bias", spec.name),
        );
        let w0 = self.weights.tensors[&wkey].clone();
        let (mut w, mut b, r) = refit(
            spec,
            &w0,
            self.weights.tensors.get(&bkey),
            &values(z.clone()),
            &target,
            seed,
        );
        self.refits.push(r);
        // Filters back to their old norms when a BatchNorm follows (it absorbs the scale).
        let scales =
            u.bn.is_some()
                .then(|| keep_filter_norms(&w0, &mut w, b.as_mut()));
        self.weights.tensors.insert(wkey, w);
        if let Some(b) = b {
            self.weights.tensors.insert(bkey, b);
        }
        self.model.convs[last] = conv_from(spec, &self.weights, self.device);
        let y = self.model.convs[last].forward(z);
        if let (Some(name), Some(i), Some(scales)) = (&u.bn, bn, scales) {
            // Restated for the refit as fitted, then its statistics scale with the
            // filters (up to its epsilon, the same function).
            let c = scales.len();
            let per_channel = Tensor::<1>::from_data(
                TensorData::new(scales.iter().map(|&s| s as f32).collect(), [c]),
                self.device,
            );
            let unscaled = y.clone() / per_channel.reshape([1, c, 1, 1]);
            restate_bn(&mut self.weights, name, &self.model.bns[i], unscaled);
            for (field, power) in [("running_mean", 1), ("running_var", 2)] {
                let t = self.weights.tensors.get_mut(&format!("{name}.{field}"));
                let t = t.expect("a restated BatchNorm");
                for (v, s) in t.data.iter_mut().zip(&scales) {
                    *v = (f64::from(*v) * s.powi(power)) as f32;
                }
            }
            self.model.bns[i] = bn_from(name, &self.weights, self.device);
        }
        unit_out(bn.map(|i| &self.model.bns[i]), y)
    }
}

/// `weights` of the compressed `arch` (whose pruned convs kept `kept` of the base's
/// channels) with every conv unit's last conv refitted to the outputs of the `base` plan
/// with `base_weights` on `batches`, and each BatchNorm restated for its new input.
/// Returns the refits in order.
#[allow(clippy::too_many_arguments)]
pub fn repair(
    base: &Arch,
    base_weights: &Weights,
    arch: &Arch,
    weights: Weights,
    kept: &Kept,
    batches: &[Batch],
    seed: u64,
    device: &Device,
) -> crate::Result<(Weights, Vec<Refit>)> {
    if batches.is_empty() {
        return Ok((weights, Vec::new()));
    }
    let base = Vgg::from_weights(base, base_weights.clone(), "<base>", device)?;
    let mut cand = Repairing {
        model: Vgg::from_weights(arch, weights.clone(), "<candidate>", device)?,
        weights,
        kept,
        refits: Vec::new(),
        cursor: Cursor::default(),
        device,
    };
    let mut base_cursor = Cursor::default();
    let mut xb = images(batches, device);
    let mut xc = xb.clone();
    for (k, (ub, uc)) in base.arch.units.iter().zip(&arch.units).enumerate() {
        match (ub, uc) {
            (Unit::Conv(ub), Unit::Conv(uc)) => {
                let (convs, bn) = base_cursor.take(ub);
                let mut yb = xb;
                for conv in &base.convs[convs] {
                    yb = conv.forward(yb);
                }
                xc = cand.unit(uc, xc, &yb, seed.wrapping_add(k as u64));
                xb = unit_out(bn.map(|i| &base.bns[i]), yb);
            }
            (Unit::MaxPool { .. }, Unit::MaxPool { .. }) => {
                let pool = MaxPool2dConfig::new([2, 2]).init();
                xb = pool.forward(xb);
                xc = pool.forward(xc);
            }
            // The classifier keeps the base's weights for the features it still reads.
            // Refitted by least squares it matches the base's logits better (Fashion-MNIST
            // candidates: 65% validation accuracy straight after repair instead of 37%),
            // but with about 20 times the base's weight norm, and a fine-tune from there
            // collapses (41% after 60 steps instead of 71%).
            (Unit::Linear(_), Unit::Linear(_)) => break,
            _ => {
                return Err(crate::Error::BadInput(format!(
                    "repair: unit {k} of the candidate does not correspond to the base's"
                )));
            }
        }
    }
    Ok((cand.weights, cand.refits))
}

/// `candidate` (compressed from `base` with `base_weights`) repaired on `calibration`
/// (unchanged when it is empty).
pub fn repair_compressed(
    base: &Arch,
    base_weights: &Weights,
    candidate: crate::compress::Compressed,
    calibration: &[Batch],
    seed: u64,
    device: &Device,
) -> crate::Result<crate::compress::Compressed> {
    if calibration.is_empty() {
        return Ok(candidate);
    }
    let (weights, refits) = repair(
        base,
        base_weights,
        &candidate.arch,
        candidate.weights,
        &candidate.kept,
        calibration,
        seed,
        device,
    )?;
    for r in &refits {
        tracing::debug!(
            layer = %r.layer,
            rows = r.rows,
            ridge = ?r.ridge,
            before = r.before,
            after = r.after,
            held_out_before = r.held_out_before,
            held_out_after = r.held_out_after,
            "repair"
        );
    }
    Ok(crate::compress::Compressed {
        weights,
        ..candidate
    })
}
