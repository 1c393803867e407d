//! `rankprune recommend decomposition|pruning` and `rankprune compress`.

use super::{BaseArgs, at_least_one, in_range};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rankprune::arch::Arch;
use rankprune::compress::Compressed;
use rankprune::compress::decompose::{LayerDecomposition, TuckerCache, recommend_graph_ranks};
use rankprune::compress::graph_config::{config_cost, config_layout, empty_config, ranks, ratios};
use rankprune::compress::graph_tucker::decompose_graph_with;
use rankprune::compress::group_prune::{prune_groups_kept, pruned_layout, recommend_group_ratios};
use rankprune::compress::slamp::PruneTarget;
use rankprune::config::LayerConfig;
use rankprune::cost::Cost;
use rankprune::data::{DatasetKind, Split};
use rankprune::graph::cost::count;
use rankprune::graph::{Graph, Op};
use rankprune::model::graph_weight_shapes;
use rankprune::outpath::check_output;
use rankprune::report;
use rankprune::train::recalibrate::calibration_batches;
use rankprune::train::repair::repair_compressed;
use rankprune::weights::Weights;
use rankprune::{Error, Result};
use std::path::{Path, PathBuf};

/// `rankprune recommend decomposition`
#[derive(Args)]
pub struct DecompositionArgs {
    /// Trained weights (.safetensors, .pt or .pth)
    #[arg(long)]
    pub weights: PathBuf,
    /// Calibration ratio in [-1, 1]: 0 = VBMF ranks, 1 = full ranks, -1 = rank 1
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub calibration: f64,
    /// Write the config (reference format) here
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `rankprune recommend pruning`
#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["ratio", "flops_reduction", "params_reduction"])))]
pub struct PruningArgs {
    /// Weights of the base model, or of the model decomposed as --config says
    #[arg(long)]
    pub weights: PathBuf,
    /// Config with the decomposition ranks (its pruning section is replaced)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Remove this fraction of all filters (e.g. 0.4)
    #[arg(long)]
    pub ratio: Option<f64>,
    /// Reach the original (uncompressed) model's FLOPs / X, decomposition included
    /// (e.g. 8.0: eight times fewer FLOPs than the original)
    #[arg(long)]
    pub flops_reduction: Option<f64>,
    /// Reach the original model's params / X, decomposition included
    #[arg(long)]
    pub params_reduction: Option<f64>,
    /// Most of a layer's filters that may go
    #[arg(long, default_value_t = 0.9)]
    pub max_ratio: f64,
    /// Write the merged config (ranks + ratios) here
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `rankprune compress`
#[derive(Args)]
pub struct CompressArgs {
    /// Weights of the base model, or of the model decomposed at the config's ranks
    /// (.safetensors, .pt or .pth)
    #[arg(long)]
    pub weights: PathBuf,
    /// Layer config JSON (reference format)
    #[arg(long)]
    pub config: PathBuf,
    /// Output weights (.safetensors)
    #[arg(long)]
    pub out: PathBuf,
    /// Least-squares repair of the result from this many batches of training images,
    /// towards the model --weights describes (0 = none; needs --data)
    #[arg(long, default_value_t = 0)]
    pub repair: usize,
    #[command(flatten)]
    pub repair_data: RepairData,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
}

/// The training images a repair calibrates on (the same a search with these settings uses).
#[derive(Args)]
pub struct RepairData {
    /// Layout of the data directory (with --repair)
    #[arg(long, value_enum, default_value = "cifar100")]
    pub dataset: DatasetKind,
    /// Data directory (with --repair; see `train --help`)
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Training images held out for validation, never calibrated on
    #[arg(long, default_value_t = 5000)]
    pub val_split: usize,
    /// Images per calibration batch
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Seed of the calibration images' shuffle (a search's search.seed)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub folder: super::train::FolderArgs,
}

impl RepairData {
    /// The weights of `c` (compressed from `dec` as `config` says, on VGG plan `plan`)
    /// repaired on `batches` calibration batches towards the model the weights file
    /// describes: the base plan when `dec` was decomposed here, the decomposed plan when
    /// the file held it.
    fn repair(
        &self,
        plan: &Arch,
        config: &LayerConfig,
        dec: &Decomposed,
        c: Compressed,
        batches: usize,
    ) -> Result<Weights> {
        let ranks_only = LayerConfig {
            pruning: None,
            ..config.clone()
        };
        let (arch, weights) = match &dec.base_weights {
            Some(w) => (plan.clone(), w),
            None => (ranks_only.apply(plan, "<config>")?, &dec.weights),
        };
        let reference = (&arch, weights);
        let classes = plan.num_classes();
        let data = self.data.as_ref().ok_or_else(|| {
            Error::BadInput("--repair needs the training data: give --data (and --dataset)".into())
        })?;
        let side = reference.0.input[1];
        let source = self.folder.source(self.dataset, data, side)?;
        let (train, _) = super::train::train_val(&source, classes, self.val_split)?;
        let calibration = calibration_batches(&train, batches, self.batch_size, self.seed);
        let device = burn::tensor::Device::flex();
        Ok(repair_compressed(
            reference.0,
            reference.1,
            c,
            &calibration,
            self.seed,
            &device,
        )?
        .weights)
    }
}

/// Writes a config, mapping an I/O error to a failure that names the file.
fn save_config(config: &LayerConfig, path: &Path) -> Result<()> {
    config
        .save(path)
        .map_err(|e| Error::Failure(format!("{}: cannot write: {e}", path.display())))
}

/// A per-layer progress bar on stderr (hidden when stderr is not a terminal).
fn layer_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} {{msg}} [{{elapsed}}]"
        ))
        .expect("valid template"),
    );
    bar
}

/// A graph decomposed as a config's ranks say, with its weights: decomposed here from the
/// base weights (then with the per-layer report, and those base weights), or read as
/// such (a fine-tuned decomposition).
struct Decomposed {
    graph: Graph,
    weights: Weights,
    layers: Vec<LayerDecomposition>,
    base_weights: Option<Weights>,
}

/// `graph` after `config`'s Tucker-2 ranks (its ratios ignored) and weights for it: the
/// file's weights of the base graph, decomposed here (with a progress bar), or weights
/// of the decomposed graph already, as `compress` and `recommend pruning` take both.
fn decomposed_graph(
    graph: &Graph,
    config: &LayerConfig,
    path: &Path,
    file: &str,
) -> Result<Decomposed> {
    let by_layer = ranks(config);
    let raw = super::weights_file(path)?;
    let name = path.display().to_string();
    let base_fit = raw
        .clone()
        .matched_to_shapes(graph_weight_shapes(graph), &name);
    if let Ok(w) = base_fit {
        let bar = layer_bar(by_layer.len(), "Tucker-2");
        let cache: Option<&TuckerCache> = None;
        let (g, dw, layers) = decompose_graph_with(graph, &w, &by_layer, cache, |layer| {
            bar.set_message(layer.to_string());
            bar.inc(1);
        })
        .map_err(|e| Error::BadInput(format!("{file}: {e}")))?;
        bar.finish_and_clear();
        let base_weights = (!layers.is_empty()).then_some(w);
        return Ok(Decomposed {
            graph: g,
            weights: dw,
            layers,
            base_weights,
        });
    }
    // The decomposed graph's layout (the ranks alone fix it), and the file against it.
    let ranks_only = LayerConfig {
        pruning: None,
        ..config.clone()
    };
    let decomposed =
        config_layout(graph, &ranks_only).map_err(|e| Error::BadInput(format!("{file}: {e}")))?;
    match raw.matched_to_shapes(graph_weight_shapes(&decomposed), &name) {
        Ok(w) if decomposed != *graph => Ok(Decomposed {
            graph: decomposed,
            weights: w,
            layers: Vec::new(),
            base_weights: None,
        }),
        // Neither fits: the error against the base graph, which a user's file most
        // often means.
        _ => Err(base_fit.expect_err("a fit returned above").into()),
    }
}

/// A model's params and FLOPs as the `--json` outputs give them.
fn cost_json(c: &Cost) -> serde_json::Value {
    serde_json::json!({"params": c.params, "flops": c.flops})
}

pub fn run_recommend_decomposition(base: &BaseArgs, args: DecompositionArgs) -> Result<()> {
    let DecompositionArgs {
        weights,
        calibration,
        out,
        json,
    } = args;
    in_range(
        "--calibration",
        calibration,
        |c| (-1.0..=1.0).contains(&c),
        "[-1, 1]",
    )?;
    if let Some(out) = &out {
        check_output(out, "--out", &[("--weights", weights.as_path())])?;
    }
    let graph = base.network()?.graph;
    let w = super::graph_weights(&graph, &weights)?;
    let decomposable = graph
        .nodes
        .iter()
        .filter(|n| matches!(&n.op, Op::Conv(c) if c.in_channels > 3 && c.kernel > 1))
        .count();
    let bar = layer_bar(decomposable, "VBMF");
    let started = std::time::Instant::now();
    let recs = recommend_graph_ranks(&graph, &w, calibration, |name| {
        bar.set_message(name.to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let mut config = empty_config(&graph);
    config.set_ranks(recs.iter().map(|r| (r.layer.clone(), r.chosen)).collect());
    let before = count(&graph);
    let after = config_cost(&graph, &config).map_err(Error::Failure)?;
    if let Some(path) = &out {
        save_config(&config, path)?;
    }
    if json {
        let v = serde_json::json!({
            "layers": recs, "calibration": calibration, "seconds": seconds,
            "before": cost_json(&before), "after": cost_json(&after),
            "config": config,
        });
        println!("{v}");
    } else {
        print!("{}", report::rank_table(&recs, &before, &after));
        println!("{}", report::reduction_line(&before, &after));
        println!(
            "VBMF on {} layers in {seconds:.2} s (calibration {calibration})",
            recs.len()
        );
        if let Some(path) = &out {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

pub fn run_recommend_pruning(base: &BaseArgs, args: PruningArgs) -> Result<()> {
    let PruningArgs {
        weights,
        config,
        ratio,
        flops_reduction,
        params_reduction,
        max_ratio,
        out,
        json,
    } = args;
    match (ratio, flops_reduction, params_reduction) {
        (Some(r), _, _) => in_range("--ratio", r, |r| (0.0..1.0).contains(&r), "[0, 1)")?,
        (_, Some(x), _) => in_range("--flops-reduction", x, |x| x >= 1.0, ">= 1")?,
        (_, _, Some(x)) => in_range("--params-reduction", x, |x| x >= 1.0, ">= 1")?,
        _ => {}
    }
    in_range(
        "--max-ratio",
        max_ratio,
        |r| (0.0..1.0).contains(&r),
        "[0, 1)",
    )?;
    if let Some(out) = &out {
        let mut inputs = vec![("--weights", weights.as_path())];
        inputs.extend(config.as_deref().map(|c| ("--config", c)));
        check_output(out, "--out", &inputs)?;
    }
    let target = match (ratio, flops_reduction, params_reduction) {
        (Some(r), _, _) => PruneTarget::Ratio(r),
        (_, Some(x), _) => PruneTarget::FlopsReduction(x),
        (_, _, Some(x)) => PruneTarget::ParamsReduction(x),
        _ => unreachable!("clap requires one target"),
    };
    let graph = base.network()?.graph;
    let mut layer_config = match &config {
        Some(p) => LayerConfig::load(p)?,
        None => empty_config(&graph),
    };
    layer_config.pruning = None;
    let file = config
        .as_deref()
        .map_or("<no config>".into(), |p| p.display().to_string());
    let dec = decomposed_graph(&graph, &layer_config, &weights, &file)?;
    let (before, mid) = (count(&graph), count(&dec.graph));
    if target.met_by(&mid, &before) {
        let (want, reached) = target.describe(&mid, &before);
        return Err(Error::BadInput(format!(
            "the decomposition alone already reaches {reached}, past the target of {want}: no pruning is needed (ask for a larger reduction, or higher ranks)"
        )));
    }
    let found = recommend_group_ratios(&dec.graph, &dec.weights, target, max_ratio, &before)?;
    layer_config.set_ratios(found.clone());
    // The pruned layout is all the table and the counts need: no weight surgery.
    let pruned = pruned_layout(&dec.graph, &ratios(&layer_config)).map_err(Error::Failure)?;
    let after = count(&pruned);
    if let Some(path) = &out {
        save_config(&layer_config, path)?;
    }
    if json {
        let v = serde_json::json!({
            "ratios": found, "before": cost_json(&mid), "after": cost_json(&after),
            "config": layer_config,
        });
        println!("{v}");
        return Ok(());
    }
    print!("{}", report::group_ratio_table(&dec.graph, &pruned, &found));
    if mid != before {
        println!("decomposed: {}", report::reduction_line(&before, &mid));
    }
    println!("pruned:     {}", report::reduction_line(&before, &after));
    if let Some(path) = &out {
        println!("wrote {}", path.display());
    }
    Ok(())
}

pub fn run_compress(base: &BaseArgs, args: CompressArgs) -> Result<()> {
    let CompressArgs {
        weights,
        config,
        out,
        repair,
        repair_data,
        json,
    } = args;
    at_least_one("--batch-size", repair_data.batch_size)?;
    let mut inputs = vec![
        ("--weights".to_string(), weights.clone()),
        ("--config".to_string(), config.clone()),
    ];
    if repair > 0 {
        let data = repair_data.data.as_ref().ok_or_else(|| {
            Error::BadInput("--repair needs the training data: give --data (and --dataset)".into())
        })?;
        let files = rankprune::data::Source::binary(repair_data.dataset, data)
            .files(Split::Train)
            .map_err(|e| Error::BadInput(e.to_string()))?;
        inputs.extend(files.into_iter().map(|f| ("--data".to_string(), f)));
    }
    check_output(&out, "--out", &inputs)?;
    let net = base.network()?;
    if repair > 0 && net.plan.is_none() {
        return Err(Error::BadInput(format!(
            "--repair: the least-squares repair works on VGG plans only; {} is compressed without it",
            net.graph.model
        )));
    }
    let file = config.display().to_string();
    let layer_config = LayerConfig::load(&config)?;
    // Validate the whole config before any slow work.
    config_layout(&net.graph, &layer_config)
        .map_err(|e| Error::BadInput(format!("{file}: {e}")))?;
    // The weights may be the base model's or already decomposed at the config's ranks
    // (e.g. a fine-tuned decomposed model about to be pruned).
    let dec = decomposed_graph(&net.graph, &layer_config, &weights, &file)?;
    let (g, w, kept) = prune_groups_kept(&dec.graph, &dec.weights, &ratios(&layer_config))
        .map_err(|e| Error::BadInput(format!("{file}: pruning: {e}")))?;
    let w = match &net.plan {
        Some(plan) if repair > 0 => {
            let c = Compressed {
                arch: layer_config.apply(plan, &file)?,
                weights: w,
                kept,
            };
            repair_data.repair(plan, &layer_config, &dec, c, repair)?
        }
        _ => w,
    };
    write_model(&g, &w, &out)?;
    let (before, after) = (count(&net.graph), count(&g));
    let file_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    if json {
        let v = serde_json::json!({
            "layers": dec.layers, "out": out, "file_bytes": file_bytes,
            "before": {"params": before.params, "flops": before.flops, "size_bytes": before.size_bytes},
            "after": {"params": after.params, "flops": after.flops, "size_bytes": after.size_bytes},
        });
        println!("{v}");
    } else {
        if !dec.layers.is_empty() {
            print!("{}", report::decomposition_table(&dec.layers));
        }
        println!("{}", report::reduction_line(&before, &after));
        println!(
            "wrote {} ({:.2} MB)",
            out.display(),
            file_bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// Writes a compressed model: ONNX when `out` ends with `.onnx` (BatchNorms kept),
/// safetensors otherwise.
fn write_model(g: &Graph, w: &Weights, out: &Path) -> Result<()> {
    if out.extension().is_some_and(|e| e == "onnx") {
        use onnx_protobuf::Message;
        let bytes = rankprune::deploy::onnx::graph_model(g, w)
            .write_to_bytes()
            .map_err(|e| Error::Failure(e.to_string()))?;
        rankprune::outpath::write_output(out, &bytes)?;
        return Ok(());
    }
    w.save_safetensors(out)
        .map_err(|e| Error::Failure(e.to_string()))
}
