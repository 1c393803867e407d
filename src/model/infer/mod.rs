//! The inference engine: a trained [`GraphNet`] compiled once into steps with their
//! weights prepared (as onnxruntime prepares a session), then run on plain `f32`
//! buffers, channel-major (`[C, N, H, W]`; features `[F, N]`).
//!
//! - A BatchNorm that only its conv reads is folded into the conv's weights and bias,
//!   and a ReLU that is the only reader of a conv, BatchNorm, Add or Linear is applied
//!   as its values are written ([`plan`]).
//! - A conv with 16 output pixels or fewer over the batch (the 2x2 and 4x4 maps at
//!   batch 1), any strided conv and every Linear is one product with `W` packed once
//!   (`packed`; a conv's on its first such pass): no per-call repacking of weights, and
//!   the conv's windows gathered from the map straight into the product's layout.
//! - Other convs take the training kernels' forward pass (`conv_gemm`: Winograd or
//!   `gemm`), a Winograd conv with its transformed weights kept between passes.
//! - The pool's threads stay awake during a pass, as onnxruntime's spin between layers.
//!
//! No burn tensors and no autodiff bookkeeping between layers. `tests` check whole
//! networks (VGG, Tucker-compressed VGG, ResNet, Winograd with both tilings, padded
//! pools) against burn's own layers at every SIMD level.

mod maps;
mod packed;
pub mod plan;

use super::GraphNet;
use super::conv_gemm::conv_values;
use super::graph_net::TWO_BY_TWO;
use super::max_pool::pool_values;
use super::profile::{Op as ProfileOp, timed};
use super::winograd::{self, Tile};
use crate::graph::{Conv, Graph, Op};
use crate::weights::Weights;
use maps::Dims;
use packed::{Act, Packed};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// The most output pixels over the batch for which a stride-1 conv takes the packed
/// product rather than the training kernels' forward pass (Winograd or `gemm`). Measured
/// on vgg19_bn and the reference-config model at batch 1 (AVX-512 Xeon, 2 cores, whole
/// model, `rankprune latency --measure`, two runs each): limits of 8, 16 and 64 pixels
/// gave 3.88-3.91, 3.54-3.61 and 3.58-3.67 ms, and 0.73-0.75, 0.74 and 0.90-0.92 ms.
/// On 4x4 maps at batch 1 the product that reads `W` once wins; on 8x8 maps `gemm`'s
/// kernels win for the compressed model's narrow convs.
const PACKED_MAX_PIXELS: usize = 16;

/// A compiled network.
#[derive(Debug, Clone)]
pub struct Engine {
    graph: Graph,
    steps: Vec<Step>,
    /// Each node's per-image output shape.
    shapes: Vec<Vec<usize>>,
}

#[derive(Debug, Clone)]
struct Step {
    span: plan::Span,
    kernel: Kernel,
}

/// What a step runs: the ops whose weights are prepared at compile time, or the
/// node's own op as the graph holds it.
#[derive(Debug, Clone)]
enum Kernel {
    Conv(ConvStep),
    Affine { scale: Vec<f32>, shift: Vec<f32> },
    Linear(Packed),
    Node,
}

/// A conv with its BatchNorm folded in: its weights as `[O, C, k, k]` for the training
/// kernels, and packed for the packed product (made on first use).
#[derive(Debug, Clone)]
struct ConvStep {
    conv: Conv,
    packed: OnceLock<Packed>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// The weights transformed for Winograd's F(2x2) and F(4x4), made on first use and
    /// kept (the training kernels transform them on every call). Kept transforms did
    /// not make Winograd pay where the training kernels' rule says it does not: at
    /// batch 1 on 8x8 maps it took 2.05 ms against im2col's 1.30 (vgg19_bn, whole model).
    winograd: [OnceLock<Vec<f32>>; 2],
}

/// A graph's weights (PyTorch keys and layouts), and its BatchNorms' epsilons in order.
struct Source<'a> {
    graph: &'a Graph,
    weights: &'a Weights,
    eps: &'a [f32],
}

impl Source<'_> {
    fn get(&self, node: usize, field: &str) -> &[f32] {
        let name = &self.graph.nodes[node].name;
        &self.weights.tensors[&format!("{name}.{field}")].data
    }

    /// The BatchNorm of node `node` as `x * scale + shift`.
    fn batch_norm(&self, node: usize) -> (Vec<f32>, Vec<f32>) {
        let index = self.graph.nodes[..node]
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm { .. }))
            .count();
        let e = self.eps[index];
        let (gamma, beta) = (self.get(node, "weight"), self.get(node, "bias"));
        let (mean, var) = (
            self.get(node, "running_mean"),
            self.get(node, "running_var"),
        );
        let scale: Vec<f32> = gamma
            .iter()
            .zip(var)
            .map(|(g, v)| g / (v + e).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        (scale, shift)
    }

    /// Conv node `node` with the BatchNorm `bn` folded in: `s W` and `s (b - mean) +
    /// beta`, `s = gamma / sqrt(var + eps)`.
    fn conv(&self, c: &Conv, node: usize, bn: Option<usize>) -> ConvStep {
        let mut weight = self.get(node, "weight").to_vec();
        let mut bias = match c.bias {
            true => self.get(node, "bias").to_vec(),
            false => vec![0.0; c.out_channels],
        };
        if let Some(b) = bn {
            let (scale, shift) = self.batch_norm(b);
            let per_out = weight.len() / c.out_channels;
            for (o, row) in weight.chunks_mut(per_out).enumerate() {
                row.iter_mut().for_each(|w| *w *= scale[o]);
                bias[o] = bias[o] * scale[o] + shift[o];
            }
        }
        ConvStep {
            conv: c.clone(),
            packed: OnceLock::new(),
            weight,
            bias,
            winograd: Default::default(),
        }
    }

    fn kernel(&self, span: plan::Span) -> Kernel {
        let i = span.first;
        match &self.graph.nodes[i].op {
            Op::Conv(c) => Kernel::Conv(self.conv(c, i, span.bn)),
            Op::BatchNorm { .. } => {
                let (scale, shift) = self.batch_norm(i);
                Kernel::Affine { scale, shift }
            }
            Op::Relu
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::Add
            | Op::Flatten => Kernel::Node,
            Op::Linear {
                in_features,
                out_features,
            } => Kernel::Linear(Packed::new(
                self.get(i, "weight"),
                self.get(i, "bias"),
                *out_features,
                *in_features,
            )),
        }
    }
}

/// A node's value: a map `[C, N, H, W]` or features `[F, N]`.
type Value = Vec<f32>;

impl Engine {
    /// `net` compiled: BatchNorms folded into convs, Linears' weights packed.
    pub fn new(net: &GraphNet) -> Self {
        let eps: Vec<f32> = net.bns.iter().map(|b| b.epsilon as f32).collect();
        Self::from_weights(&net.graph, &net.to_weights(), &eps)
    }

    /// `graph` compiled with `weights` (PyTorch keys and layouts, as
    /// [`GraphNet::to_weights`]), `eps[b]` the epsilon of its `b`-th BatchNorm.
    fn from_weights(graph: &Graph, weights: &Weights, eps: &[f32]) -> Self {
        let source = Source {
            graph,
            weights,
            eps,
        };
        let steps = plan::spans(graph)
            .into_iter()
            .map(|span| Step {
                span,
                kernel: source.kernel(span),
            })
            .collect();
        Self {
            graph: graph.clone(),
            steps,
            shapes: graph.shapes().expect("a checked graph"),
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Logits `[batch, classes]` (row-major) of images `[batch, C, H, W]`.
    pub fn forward(&self, images: &[f32], batch: usize) -> Vec<f32> {
        self.run(images, batch, None)
    }

    /// [`Engine::forward`] with the milliseconds of each step written at its first
    /// node in `times` (one per node; the other nodes of a step keep 0).
    pub fn forward_timed(&self, images: &[f32], batch: usize, times: &mut [f64]) -> Vec<f32> {
        self.run(images, batch, Some(times))
    }

    /// [`Engine::steps`] on one of rayon's threads, the pool's other threads kept
    /// awake meanwhile. A parallel loop started from outside the pool hands itself to
    /// the pool and back, and one whose helpers sleep waits for them to wake: either
    /// costs some microseconds, as much as a small layer takes. (onnxruntime's threads
    /// spin between layers likewise.)
    fn run(&self, images: &[f32], batch: usize, times: Option<&mut [f64]>) -> Vec<f32> {
        let [c, h, w] = self.graph.input;
        assert_eq!(images.len(), batch * c * h * w, "images [N, C, H, W]");
        let done = AtomicBool::new(false);
        let awake = AtomicUsize::new(0);
        // (The helpers stop however the pass ends: a panic in it would otherwise leave
        // the scope waiting for them forever. The calling thread never runs a helper of
        // its own: rayon's other threads steal the oldest jobs first, and the helpers are
        // spawned before anything else.)
        rayon::scope(|s| {
            let _stop = Stop(&done);
            let helpers = rayon::current_num_threads() - 1;
            for _ in 0..helpers {
                s.spawn(|_| {
                    awake.fetch_add(1, Ordering::AcqRel);
                    stay_awake(&done)
                });
            }
            // The first step starts with the helpers awake, as every later one does (a
            // latency table times a layer as a network's first step). Not forever: the
            // pool's other threads may be busy elsewhere.
            let start = Instant::now();
            while awake.load(Ordering::Acquire) < helpers && start.elapsed() < WAKE_WAIT {
                std::hint::spin_loop();
            }
            self.steps(images, batch, times)
        })
    }

    fn steps(&self, images: &[f32], batch: usize, mut times: Option<&mut [f64]>) -> Vec<f32> {
        let [c, h, w] = self.graph.input;
        let image = swap_leading(images, batch, c, h * w);
        let nodes = &self.graph.nodes;
        let last_read = self.last_reads();
        let mut values: Vec<Option<Value>> = vec![None; nodes.len()];
        for (s, step) in self.steps.iter().enumerate() {
            let start = Instant::now();
            let i = step.span.first;
            let ins: Vec<&[f32]> = match nodes[i].inputs.as_slice() {
                [] => vec![&image],
                inputs => inputs
                    .iter()
                    .map(|&j| values[j].as_deref().expect("an input runs first"))
                    .collect(),
            };
            let in_shape = self.graph.input_shapes(&self.shapes, i).swap_remove(0);
            let y = self.apply(step, &ins, &in_shape, batch);
            if let Some(t) = times.as_deref_mut() {
                t[i] = start.elapsed().as_secs_f64() * 1e3;
            }
            values[step.span.last] = Some(y);
            for &j in &nodes[i].inputs {
                if last_read[j] == Some(s) {
                    values[j] = None; // no later step reads it
                }
            }
        }
        let out = values.pop().flatten().expect("the last node's value");
        match self.shapes.last().map(Vec::as_slice) {
            // Features `[F, N]` to `[N, F]`.
            Some([f]) => transpose(&out, *f, batch),
            // A map `[C, N, H, W]` to `[N, C, H, W]`.
            Some([c, h, w]) => swap_leading(&out, *c, batch, h * w),
            _ => out,
        }
    }

    /// For each node, the last step that reads it (`None`: read by none, or the output).
    fn last_reads(&self) -> Vec<Option<usize>> {
        let mut last = vec![None; self.graph.nodes.len()];
        for (s, step) in self.steps.iter().enumerate() {
            for &j in &self.graph.nodes[step.span.first].inputs {
                last[j] = Some(s);
            }
        }
        last
    }

    /// One step on inputs `ins`, the first of per-image shape `shape`.
    fn apply(&self, step: &Step, ins: &[&[f32]], shape: &[usize], n: usize) -> Value {
        let act = match step.span.relu {
            true => Act::Relu,
            false => Act::Identity,
        };
        let dims = || match *shape {
            [c, h, w] => Dims { c, n, h, w },
            _ => panic!(
                "{} reads features where a map is due",
                step_name(self, step)
            ),
        };
        let x = ins[0];
        let op = match &step.kernel {
            Kernel::Conv(cs) => return conv(cs, x, dims(), act),
            Kernel::Affine { scale, shift } => {
                return maps::affine(x.to_vec(), scale, shift, step.span.relu);
            }
            Kernel::Linear(p) => return p.apply(x, n, act),
            Kernel::Node => &self.graph.nodes[step.span.first].op,
        };
        match op {
            Op::Relu => maps::relu(x.to_vec()),
            Op::MaxPool(w) => {
                let d = dims();
                match *w == TWO_BY_TWO && d.h.is_multiple_of(2) && d.w.is_multiple_of(2) {
                    true => pool_values(x, d.h, d.w),
                    false => maps::max_pool(x, d, w),
                }
            }
            Op::AvgPool(w) => maps::avg_pool(x, dims(), w),
            Op::GlobalAvgPool => maps::global_avg_pool(x, dims()),
            Op::Add => maps::add(ins, step.span.relu),
            Op::Flatten => maps::flatten(x, dims()),
            Op::Conv(_) | Op::BatchNorm { .. } | Op::Linear { .. } => {
                unreachable!("{} has a prepared kernel", step_name(self, step))
            }
        }
    }
}

fn step_name<'a>(engine: &'a Engine, step: &Step) -> &'a str {
    &engine.graph.nodes[step.span.first].name
}

/// How long a pass waits for the pool's threads to wake before it starts.
const WAKE_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// Sets its flag when dropped: when a pass ends, normally or by a panic.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// `cell`'s value, made by `make` if it has none. Unlike `OnceLock::get_or_init`, a
/// thread that `make` (a parallel loop) sends into another pass on the same cell makes
/// it again rather than waiting for itself.
fn kept<T>(cell: &OnceLock<T>, make: impl FnOnce() -> T) -> &T {
    if let Some(v) = cell.get() {
        return v;
    }
    let _ = cell.set(make());
    cell.get().expect("set above, here or by another thread")
}

/// Runs the pool's pending tasks, or spins, until `done`.
fn stay_awake(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

/// A conv step on `x` of `d`.
fn conv(cs: &ConvStep, x: &[f32], d: Dims, act: Act) -> Value {
    let Conv {
        kernel: k,
        stride,
        padding: p,
        ..
    } = cs.conv;
    let side = |s: usize| (s + 2 * p - k) / stride + 1;
    let pixels = d.n * side(d.h) * side(d.w);
    if stride == 1 && pixels > PACKED_MAX_PIXELS {
        let out = cs.bias.len();
        let s = winograd::Sizes::new(d.c, d.n, d.h, d.w, out);
        let y = if k == 3 && p == 1 && s.worth_it() {
            let u = kept(&cs.winograd[(s.tile == Tile::F4) as usize], || {
                winograd::transform(&cs.weight, s)
            });
            timed(ProfileOp::WinogradForward, || {
                winograd::forward_transformed(x, u, &cs.bias, s)
            })
        } else {
            conv_values(x, [d.c, d.n, d.h, d.w], &cs.weight, &cs.bias, k, p)
        };
        return match act {
            Act::Relu => maps::relu(y),
            Act::Identity => y,
        };
    }
    let packed = kept(&cs.packed, || {
        let depth = cs.weight.len() / cs.bias.len();
        Packed::new(&cs.weight, &cs.bias, cs.bias.len(), depth)
    });
    if k == 1 && stride == 1 && p == 0 {
        return packed.apply(x, pixels, act);
    }
    let (xp, cols) = packed::pack_windows(x, d, k, stride, p);
    packed.apply_packed(&xp, cols, act)
}

/// `[N, F]` to `[F, N]` or back (`rows x cols` to `cols x rows`).
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            y[c * rows + r] = x[r * cols + c];
        }
    }
    y
}

/// `[A, B, hw]` to `[B, A, hw]`, planes of `hw` values: images `[N, C, H, W]` to
/// channel-major `[C, N, H, W]` (`a = N`, `b = C`), and back (`a = C`, `b = N`).
fn swap_leading(x: &[f32], a: usize, b: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (p, plane) in x.chunks_exact(hw).enumerate() {
        let (i, j) = (p / b, p % b);
        out[(j * a + i) * hw..][..hw].copy_from_slice(plane);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;
    use crate::graph::build::{conv, of_arch};
    use crate::graph::{INPUT, NodeDef, Window};
    use crate::model::simd::{Level, with_level};
    use burn::tensor::{Device, Tensor, TensorData};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// Weights for `graph` with BatchNorm statistics, scales and shifts away from 1 and
    /// 0, and conv biases non-zero, so that folding them is put to the test.
    fn weights(graph: &Graph, seed: u64) -> Weights {
        let mut w = GraphNet::init_weights(graph, seed);
        let mut rng = StdRng::seed_from_u64(seed);
        for (key, t) in w.tensors.iter_mut() {
            if t.shape.len() != 1 {
                continue;
            }
            for v in t.data.iter_mut() {
                *v = match key.rsplit('.').next() {
                    Some("running_var") => rng.random_range(0.3..2.0),
                    Some("weight") => rng.random_range(0.5..1.5),
                    _ => rng.random_range(-0.3..0.3),
                };
            }
        }
        w
    }

    /// The engine's logits against burn's own layers (batch-major, [`GraphNet`]'s
    /// reference path) on random images, at every SIMD level.
    fn check(graph: &Graph, batch: usize, seed: u64) {
        let name = &graph.nodes[0].name;
        let device = Device::flex();
        let net = GraphNet::from_weights(graph, weights(graph, seed), "test", &device).unwrap();
        let engine = Engine::new(&net);
        let [c, h, w] = graph.input;
        let mut rng = StdRng::seed_from_u64(seed + 1);
        let images: Vec<f32> = (0..batch * c * h * w)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(images.clone(), [batch, c, h, w]), &device);
        let want = net
            .forward_reference(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for lv in Level::ALL {
            let got = with_level(lv, || engine.forward(&images, batch));
            assert_eq!(got.len(), want.len());
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - r).abs() <= 1e-4 * scale,
                    "graph of {name}.. batch {batch} {lv:?}: logit {i} is {g}, burn's {r}"
                );
            }
        }
    }

    /// A VGG with BatchNorms, at batch 1 and 3 (its convs on the training kernels'
    /// forward pass, its Linear on the packed product).
    #[test]
    fn a_vgg_matches_burns_layers() {
        let g = of_arch(&ArchSpec::parse("cfg_bn:8,M,16,M,24").unwrap().build(10));
        check(&g, 1, 1);
        check(&g, 3, 2);
    }

    /// A VGG whose 3x3 convs run by Winograd (enough channels and tiles), F(4x4) on the
    /// larger maps and F(2x2) on 4x4 ones, with the transformed weights kept between
    /// passes.
    #[test]
    fn winograd_with_kept_weights_matches_burns_layers() {
        let g = of_arch(
            &ArchSpec::parse("cfg_bn:16,M,24,M,16,M,16")
                .unwrap()
                .build(10),
        );
        check(&g, 16, 9);
        let net = GraphNet::from_weights(&g, weights(&g, 9), "test", &Device::flex()).unwrap();
        let engine = Engine::new(&net);
        engine.forward(&vec![0.5; 16 * 3 * 32 * 32], 16);
        let kept = |tile: usize| {
            engine.steps.iter().any(|s| match &s.kernel {
                Kernel::Conv(c) => c.winograd[tile].get().is_some(),
                _ => false,
            })
        };
        assert!(kept(0) && kept(1), "both tilings ran");
    }

    /// A Tucker-compressed VGG: 1x1 convs without bias, a core without BatchNorm.
    #[test]
    fn a_tucker_compressed_vgg_matches_burns_layers() {
        let mut arch = ArchSpec::parse("cfg_bn:8,M,16,M,24").unwrap().build(10);
        for name in arch.layer_names().into_iter().skip(1).take(2) {
            arch.decompose(&name, 5, 7).unwrap();
        }
        let g = of_arch(&arch);
        check(&g, 1, 3);
        check(&g, 2, 4);
    }

    /// A ResNet: strided convs, shortcut Adds with their ReLU, global average pooling.
    #[test]
    fn a_resnet_matches_burns_layers() {
        let g = crate::network::resolve("resnet8", 10, 16, &crate::network::FLAGS)
            .unwrap()
            .graph;
        check(&g, 1, 5);
        check(&g, 2, 6);
    }

    /// A graph of `defs` on images of `input`.
    fn graph(input: [usize; 3], defs: &[(&str, Op, &[&str])]) -> Graph {
        let defs = defs
            .iter()
            .map(|(name, op, inputs)| NodeDef {
                name: name.to_string(),
                op: op.clone(),
                inputs: inputs.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        Graph::new("test", input, defs).unwrap()
    }

    /// Small maps, where stride-1 convs take the packed product (16 output pixels or
    /// fewer: here 2x2 maps at batch 1 and 2), a 1x1 conv reads its input directly, a ReLU
    /// read twice stays a step of its own, a BatchNorm after an Add has no ReLU, and a
    /// 3x3 conv runs on a 1x1 map (taps in the padding only). The same layers ending in
    /// a map give that map batch-major.
    #[test]
    fn small_maps_and_unfused_layers_match_burns_layers() {
        let body: Vec<(&str, Op, &[&str])> = vec![
            ("c", conv(3, 8, 3, 1, 1, false), &[INPUT]),
            ("bn", Op::BatchNorm { channels: 8 }, &["c"]),
            ("r", Op::Relu, &["bn"]),
            ("p", conv(8, 6, 1, 1, 0, false), &["r"]),
            ("pr", Op::Relu, &["p"]),
            ("s", Op::Add, &["p", "pr"]),
            ("sb", Op::BatchNorm { channels: 6 }, &["s"]),
            (
                "m",
                Op::MaxPool(Window {
                    kernel: 2,
                    stride: 2,
                    padding: 0,
                }),
                &["sb"],
            ),
            ("one", conv(6, 5, 3, 1, 1, false), &["m"]),
        ];
        let head: Vec<(&str, Op, &[&str])> = vec![
            ("f", Op::Flatten, &["one"]),
            (
                "l",
                Op::Linear {
                    in_features: 5,
                    out_features: 4,
                },
                &["f"],
            ),
        ];
        let classifier = graph([3, 2, 2], &[body.clone(), head].concat());
        check(&classifier, 1, 10);
        check(&classifier, 2, 11);
        // Ending in the 1x1 map: the flattened features of `classifier` before its
        // Linear, batch-major.
        let maps = graph([3, 2, 2], &body);
        let features = graph(
            [3, 2, 2],
            &[body, vec![("f", Op::Flatten, &["one"] as &[&str])]].concat(),
        );
        let w = weights(&classifier, 12);
        let net = |g: &Graph| {
            let w = crate::weights::Weights {
                tensors: w
                    .tensors
                    .iter()
                    .filter(|(k, _)| !k.starts_with("l."))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            Engine::new(&GraphNet::from_weights(g, w, "test", &Device::flex()).unwrap())
        };
        let images: Vec<f32> = (0..3 * 12).map(|i| (i as f32 * 0.37).sin()).collect();
        // Equal up to rounding: another test may change the SIMD level (process-wide)
        // between the two passes, and with it fused or separate multiply-adds.
        let (a, b) = (
            net(&maps).forward(&images, 3),
            net(&features).forward(&images, 3),
        );
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "value {i}: {x} against {y}"
            );
        }
    }

    /// A pass that panics (here: images of the wrong size) panics, on a pool of two
    /// threads, instead of waiting forever for the threads it kept awake.
    #[test]
    fn a_failing_pass_panics_rather_than_hangs() {
        let g = graph([3, 2, 2], &[("c", conv(3, 4, 3, 1, 1, false), &[INPUT])]);
        let net = GraphNet::from_weights(&g, weights(&g, 13), "test", &Device::flex()).unwrap();
        let engine = Engine::new(&net);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| engine.forward(&[0.0; 5], 1))
        }));
        assert!(run.is_err());
        // And a pass whose step panics inside the scope.
        let maps = graph(
            [3, 2, 2],
            &[
                ("c", conv(3, 4, 3, 1, 1, false), &[INPUT]),
                ("f", Op::Flatten, &["c"]),
            ],
        );
        let bad = Engine {
            shapes: vec![vec![99], vec![99]],
            ..Engine::new(
                &GraphNet::from_weights(&maps, weights(&maps, 14), "test", &Device::flex())
                    .unwrap(),
            )
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| bad.forward(&[0.0; 12], 1))
        }));
        assert!(run.is_err());
    }

    /// The ops no built-in network has: padded, strided pools, a BatchNorm after a pool,
    /// a ReLU read twice, a Linear's ReLU.
    #[test]
    fn padded_pools_and_unfolded_batchnorms_match_burns_layers() {
        let win = |kernel, stride, padding| Window {
            kernel,
            stride,
            padding,
        };
        let linear = |in_features, out_features| Op::Linear {
            in_features,
            out_features,
        };
        let g = graph(
            [3, 11, 11],
            &[
                ("c", conv(3, 6, 3, 2, 1, true), &[INPUT]),
                ("a", Op::AvgPool(win(3, 1, 1)), &["c"]),
                ("m", Op::MaxPool(win(3, 2, 1)), &["a"]),
                ("b", Op::BatchNorm { channels: 6 }, &["m"]),
                ("r", Op::Relu, &["b"]),
                ("s", Op::Add, &["r", "r"]),
                ("f", Op::Flatten, &["s"]),
                ("l", linear(6 * 3 * 3, 20), &["f"]),
                ("lr", Op::Relu, &["l"]),
                ("o", linear(20, 4), &["lr"]),
            ],
        );
        check(&g, 1, 7);
        check(&g, 3, 8);
    }
}
