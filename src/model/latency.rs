//! Per-layer latency tables (in the spirit of NetAdapt, Yang et al., ECCV 2018): every
//! layer of a network (a step of the inference [`Engine`]: a conv with its BatchNorm and
//! ReLU, a pool, ...), keyed by its op and input shape at one batch size, is timed once
//! on this machine's inference engine, alone in a graph of its own; a network's
//! predicted latency is the sum of its layers' entries. A search then prices a candidate
//! in microseconds, and a table is cached in a JSON file between runs. [`measure`] times
//! a whole network for the check the table must pass (its sum against the measured
//! latency).

use super::infer::plan::{Span, spans};
use super::{Engine, GraphNet};
use crate::graph::{Conv, Graph, INPUT, NodeDef, Op};
use burn::tensor::Device;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// A table of layer latencies (milliseconds) on one machine, engine and batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    /// What the entries were measured on: CPU model, threads and engine.
    pub machine: String,
    pub batch: usize,
    /// Median milliseconds per layer key (see [`layer_keys`]).
    pub entries: BTreeMap<String, f64>,
    /// How many of the entries its file holds (read from it, or last written).
    #[serde(skip)]
    saved: usize,
}

/// The machine a table describes: `lscpu`'s model name (from `/proc/cpuinfo`), rayon's
/// threads and the engine, with the version of its kernels and of the timing method
/// (a table from an earlier version is refused: its entries would be stale).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!(
        "{cpu}, {} threads, rankprune engine v{TABLE_VERSION}",
        rayon::current_num_threads()
    )
}

/// Raised when the engine's kernels or the timing method change what a layer's entry
/// would be. 2: convs on 4x4 maps at batch 1 take the packed product, and caches are
/// evicted by one L2 per thread.
const TABLE_VERSION: u32 = 2;

/// Timed runs per layer or network (after two warm-ups), cut short past [`BUDGET_MS`].
const RUNS: usize = 15;

/// A measurement stops taking runs once they have taken this long in all.
const BUDGET_MS: f64 = 400.0;

impl LatencyTable {
    /// An empty table for this machine at `batch`.
    pub fn new(batch: usize) -> Self {
        Self {
            machine: machine(),
            batch,
            entries: BTreeMap::new(),
            saved: 0,
        }
    }

    /// The table cached in `path`, or an empty one when there is no such file. A file
    /// that is not a latency table, or holds one of another machine or batch size (which
    /// would mislead), is an error: it is never overwritten.
    pub fn open(path: &std::path::Path, batch: usize) -> Result<Self, String> {
        let shown = path.display();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new(batch)),
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        let mut table: Self = serde_json::from_str(&text)
            .map_err(|e| format!("{shown}: not a latency table ({e})"))?;
        table.saved = table.entries.len();
        let here = machine();
        if table.machine != here || table.batch != batch {
            return Err(format!(
                "{shown} holds the latency table of {} at batch {}, not of this machine ({here}) at batch {batch}: name another file",
                table.machine, table.batch
            ));
        }
        Ok(table)
    }

    /// Writes the table to `path` when it has entries its file lacks (through a
    /// temporary file, so that a crash leaves the old one whole).
    pub fn save(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        if self.entries.len() == self.saved {
            return Ok(());
        }
        let text = serde_json::to_string_pretty(self).expect("a table serialises");
        crate::outpath::write_atomic(path, text.as_bytes())?;
        self.saved = self.entries.len();
        Ok(())
    }

    /// Predicted milliseconds of one forward pass of `graph`: the sum of its layers'
    /// entries, measuring the layers the table lacks.
    pub fn predict(&mut self, graph: &Graph) -> f64 {
        self.rows(graph).iter().map(|r| r.1).sum()
    }

    /// `(key, milliseconds)` of each of `graph`'s [`layers`], in order, measuring the
    /// layers the table lacks.
    pub fn rows(&mut self, graph: &Graph) -> Vec<(String, f64)> {
        layers(graph)
            .into_iter()
            .map(|layer| {
                let ms = *self
                    .entries
                    .entry(layer.key.clone())
                    .or_insert_with(|| time_probe(&layer.probe, self.batch));
                (layer.key, ms)
            })
            .collect()
    }
}

/// A layer to time alone: a graph whose node `timed` is the layer (its other nodes feed
/// it).
#[derive(Debug, Clone)]
struct Probe {
    graph: Graph,
    timed: usize,
}

/// One layer of a network: a step of the [`Engine`] (a node, or a conv with the
/// BatchNorm and ReLU it folds, or a node with its ReLU).
#[derive(Debug, Clone)]
pub struct Layer {
    /// The step's first node: its index and name.
    pub node: usize,
    pub name: String,
    /// Its table key: op, settings and input shape.
    pub key: String,
    probe: Probe,
}

/// `graph`'s layers in order: the [`Engine`]'s steps.
pub fn layers(graph: &Graph) -> Vec<Layer> {
    let shapes = graph.shapes().expect("a checked graph");
    spans(graph)
        .into_iter()
        .map(|span| {
            let ins = graph.input_shapes(&shapes, span.first);
            let (key, probe) = probe_of(graph, span, &ins);
            Layer {
                node: span.first,
                name: graph.nodes[span.first].name.clone(),
                key,
                probe,
            }
        })
        .collect()
}

/// `"12x32x32"` for `[12, 32, 32]`.
fn dims(s: &[usize]) -> String {
    s.iter().map(usize::to_string).collect::<Vec<_>>().join("x")
}

/// A graph of `defs` reading an image of `input`.
fn graph_of(input: [usize; 3], defs: Vec<NodeDef>) -> Graph {
    Graph::new("probe", input, defs).expect("a probe graph is well formed")
}

fn def(name: &str, op: Op, inputs: &[&str]) -> NodeDef {
    NodeDef {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
    }
}

/// The key and probe of the step `span` of `graph`, with inputs of `ins`.
fn probe_of(graph: &Graph, span: Span, ins: &[Vec<usize>]) -> (String, Probe) {
    let node = &graph.nodes[span.first];
    let s = &ins[0];
    // What the step applies after its node: a folded BatchNorm, a ReLU.
    let mut after = Vec::new();
    if let Some(b) = span.bn {
        after.push(def("bn", graph.nodes[b].op.clone(), &["x"]));
    }
    if span.relu {
        let last = after.last().map_or("x", |d| d.name.as_str()).to_string();
        after.push(def("relu", Op::Relu, &[&last]));
    }
    let suffix = match (span.bn.is_some(), span.relu) {
        (true, true) => "+bn+relu",
        (true, false) => "+bn",
        (false, true) => "+relu",
        (false, false) => "",
    };
    let map = |s: &[usize]| -> [usize; 3] {
        match s {
            [c, h, w] => [*c, *h, *w],
            [f] => [*f, 1, 1],
            _ => unreachable!("a node's input is a map or features"),
        }
    };
    let one = |op: Op| {
        let mut defs = vec![def("x", op, &[INPUT])];
        defs.extend(after.iter().cloned());
        graph_of(map(s), defs)
    };
    let (key, graph, timed) = match &node.op {
        Op::Conv(Conv {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            bias,
        }) => (
            format!(
                "conv {in_channels}>{out_channels} k{kernel} s{stride} p{padding}{}{suffix} on {}",
                if *bias { " bias" } else { "" },
                dims(s)
            ),
            one(node.op.clone()),
            0,
        ),
        Op::BatchNorm { .. } => (
            format!("bn{suffix} on {}", dims(s)),
            one(node.op.clone()),
            0,
        ),
        Op::Add => {
            // The summands: the image through ReLUs (untimed) as distinct inputs.
            let names: Vec<String> = (0..ins.len()).map(|k| format!("a{k}")).collect();
            let mut defs: Vec<NodeDef> = names.iter().map(|n| def(n, Op::Relu, &[INPUT])).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            defs.push(def("x", Op::Add, &refs));
            let timed = defs.len() - 1;
            defs.extend(after.iter().cloned());
            (
                format!("add{}{suffix} on {}", ins.len(), dims(s)),
                graph_of(map(s), defs),
                timed,
            )
        }
        Op::Linear { .. } => {
            // Features arrive flat: a flatten (untimed) first.
            let mut defs = vec![
                def("f", Op::Flatten, &[INPUT]),
                def("x", node.op.clone(), &["f"]),
            ];
            defs.extend(after.iter().cloned());
            (
                format!("{}{suffix} on {}", op_name(&node.op), dims(s)),
                graph_of(map(s), defs),
                1,
            )
        }
        Op::Relu if s.len() == 1 => {
            let defs = vec![def("f", Op::Flatten, &[INPUT]), def("x", Op::Relu, &["f"])];
            (format!("relu on {}", dims(s)), graph_of(map(s), defs), 1)
        }
        op => (
            format!("{} on {}", op_name(op), dims(s)),
            one(op.clone()),
            0,
        ),
    };
    (key, Probe { graph, timed })
}

/// An op and its settings, for keys.
fn op_name(op: &Op) -> String {
    match op {
        Op::MaxPool(w) => format!("maxpool k{} s{} p{}", w.kernel, w.stride, w.padding),
        Op::AvgPool(w) => format!("avgpool k{} s{} p{}", w.kernel, w.stride, w.padding),
        Op::Linear {
            in_features,
            out_features,
        } => format!("linear {in_features}>{out_features}"),
        op => op.kind().to_lowercase(),
    }
}

/// Median milliseconds of `probe`'s layer at `batch`.
fn time_probe(probe: &Probe, batch: usize) -> f64 {
    let engine = engine_of(&probe.graph);
    let images = images(&probe.graph, batch);
    let mut times = vec![0.0; probe.graph.nodes.len()];
    let evict = vec![1f32; evict_floats()];
    median(runs(|| {
        evict_caches(&evict);
        engine.forward_timed(&images, batch, &mut times);
        times[probe.timed]
    }))
}

/// The engine of `graph` with fresh weights.
fn engine_of(graph: &Graph) -> Engine {
    let weights = GraphNet::init_weights(graph, 0);
    let net =
        GraphNet::from_weights(graph, weights, "init", &Device::flex()).expect("fresh weights fit");
    Engine::new(&net)
}

/// A batch of standard-normal images for `graph` (`[N, C, H, W]`), seeded.
fn images(graph: &Graph, batch: usize) -> Vec<f32> {
    let [c, h, w] = graph.input;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    (0..batch * c * h * w)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect()
}

/// Floats read before each timed run of a probe: as much as each thread's core's L2
/// holds, so that the layer's weights come from L3 or memory, as they do inside a
/// network, where the layers before it have used the L2 since its last run. More is
/// worse for small layers: reading 16 MiB (8 L2s here) made every step of the
/// reference-config model slower alone than inside the network (the table's sum +19%
/// at batch 1), where 4 MiB gave +2.8% (and +2.6% for vgg19_bn; +1.2% and +2.0% at
/// batch 16, -6.7% and -13.1% at batch 128, against +1.1, -4.3 and -0.6% for
/// vgg19_bn with 16 MiB; AVX-512 Xeon, 2 MiB L2 per core, 2 threads).
fn evict_floats() -> usize {
    let l2 = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size")
        .ok()
        .and_then(|s| parse_cache_size(s.trim()))
        .unwrap_or(DEFAULT_L2_BYTES);
    l2 * rayon::current_num_threads() / size_of::<f32>()
}

/// The L2 size assumed where sysfs does not say (2 MiB).
const DEFAULT_L2_BYTES: usize = 2 << 20;

/// Bytes of a sysfs cache size (`2048K`, `1M`, `512`).
fn parse_cache_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let scale = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        _ => return None,
    };
    digits.parse::<usize>().ok().map(|n| n * scale)
}

/// Reads `buffer` on every thread (each core's private caches).
fn evict_caches(buffer: &[f32]) {
    use rayon::prelude::*;
    let sum: f32 = buffer
        .par_chunks(1 << 14)
        .map(|c| c.iter().sum::<f32>())
        .sum();
    std::hint::black_box(sum);
}

/// Up to [`RUNS`] results of `run` after two warm-ups: fewer once they have taken
/// [`BUDGET_MS`] in all, but at least 3.
fn runs<T>(mut run: impl FnMut() -> T) -> Vec<T> {
    for _ in 0..2 {
        run();
    }
    let start = Instant::now();
    let mut out = Vec::with_capacity(RUNS);
    while out.len() < RUNS && (out.len() < 3 || start.elapsed().as_secs_f64() * 1e3 < BUDGET_MS) {
        out.push(run());
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A whole network timed: the median milliseconds of its [`Engine`]'s forward pass on
/// a random batch (images in, logits out), and each of its [`layers`]' median
/// milliseconds within those passes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    pub total_ms: f64,
    pub layer_ms: Vec<f64>,
}

/// [`Measured`] of `net`'s [`Engine`] at `batch`.
pub fn measure(net: &GraphNet, batch: usize) -> Measured {
    let engine = Engine::new(net);
    let images = images(&net.graph, batch);
    let samples = runs(|| {
        let mut times = vec![0.0; net.graph.nodes.len()];
        let start = Instant::now();
        std::hint::black_box(engine.forward_timed(&images, batch, &mut times));
        (start.elapsed().as_secs_f64() * 1e3, times)
    });
    Measured {
        total_ms: median(samples.iter().map(|s| s.0).collect()),
        layer_ms: layers(&net.graph)
            .iter()
            .map(|l| median(samples.iter().map(|s| s.1[l.node]).collect()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;
    use crate::graph::build::of_arch;

    /// sysfs's cache sizes, in each of its units, and what is not one.
    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("2048K"), Some(2 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("2G"), None);
        assert_eq!(parse_cache_size("K"), None);
    }

    /// The layers are the engine's steps (a conv with its BatchNorm and ReLU is one);
    /// the keys name the op, its settings and its input shape, so that equal layers
    /// share an entry.
    #[test]
    fn layers_are_the_steps_the_engine_runs() {
        let g = of_arch(&ArchSpec::parse("cfg_bn:8,M,8,8").unwrap().build(10));
        let keys: Vec<String> = layers(&g).into_iter().map(|l| l.key).collect();
        assert_eq!(
            keys,
            [
                "conv 3>8 k3 s1 p1 bias+bn+relu on 3x32x32",
                "maxpool k2 s2 p0 on 8x32x32",
                "conv 8>8 k3 s1 p1 bias+bn+relu on 8x16x16",
                "conv 8>8 k3 s1 p1 bias+bn+relu on 8x16x16",
                "flatten on 8x16x16",
                "linear 2048>10 on 2048",
            ]
        );
        // Three convs, each with its BatchNorm and ReLU folded in.
        assert_eq!(layers(&g).len(), g.nodes.len() - 2 * 3);
        // Probes build and run: one timing per distinct key.
        let mut table = LatencyTable::new(2);
        let ms = table.predict(&g);
        assert!(ms > 0.0 && ms.is_finite());
        let distinct: std::collections::BTreeSet<String> = keys.into_iter().collect();
        assert_eq!(table.entries.len(), distinct.len());
        // Saved and opened again at its batch size; refused at another, and a file
        // that is not a table is refused, never overwritten.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        assert_eq!(LatencyTable::open(&path, 2).unwrap().entries.len(), 0);
        table.save(&path).unwrap();
        // (JSON keeps each value to its last bit or so.)
        let back = LatencyTable::open(&path, 2).unwrap();
        assert_eq!((&back.machine, back.batch), (&table.machine, table.batch));
        assert!(back.entries.keys().eq(table.entries.keys()));
        for (a, b) in back.entries.values().zip(table.entries.values()) {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
        }
        let e = LatencyTable::open(&path, 4).unwrap_err();
        assert!(
            e.contains("at batch 2") && e.contains("name another file"),
            "{e}"
        );
        std::fs::write(&path, "{\"weights\": 1}").unwrap();
        let e = LatencyTable::open(&path, 2).unwrap_err();
        assert!(e.contains("not a latency table"), "{e}");
    }
}
