//! `rankprune recommend decomposition|pruning` and `rankprune compress`.

use super::{BaseArgs, at_least_one, in_range};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rankprune::arch::Arch;
use rankprune::compress::Compressed;
use rankprune::compress::decompose::{
    LayerDecomposition, decompose_model, ranks_config, recommend_ranks,
};
use rankprune::compress::prune::prune_model;
use rankprune::compress::slamp::{PruneTarget, recommend_ratios};
use rankprune::config::LayerConfig;
use rankprune::cost;
use rankprune::data::{DatasetKind, Split};
use rankprune::graph::Graph;
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
    /// `c` repaired on `batches` calibration batches towards `reference`.
    fn repair(
        &self,
        reference: (&Arch, &Weights),
        c: Compressed,
        batches: usize,
        classes: usize,
    ) -> Result<Compressed> {
        let data = self.data.as_ref().ok_or_else(|| {
            Error::BadInput("--repair needs the training data: give --data (and --dataset)".into())
        })?;
        let side = reference.0.input[1];
        let source = self.folder.source(self.dataset, data, side)?;
        let (train, _) = super::train::train_val(&source, classes, self.val_split)?;
        let calibration = calibration_batches(&train, batches, self.batch_size, self.seed);
        let device = burn::tensor::Device::flex();
        repair_compressed(
            reference.0,
            reference.1,
            c,
            &calibration,
            self.seed,
            &device,
        )
    }
}

/// Weights for the model `config` decomposes from `base`: given as such, or given for
/// `base` and decomposed here (then with the per-layer report).
/// With the base model's weights when they were given (and decomposed here).
fn decomposed_weights(
    base: &Arch,
    config: &LayerConfig,
    path: &Path,
    file: &str,
) -> Result<(Arch, Weights, Vec<LayerDecomposition>, Option<Weights>)> {
    let ranks_only = LayerConfig {
        pruning: None,
        ..config.clone()
    };
    let arch = ranks_only.apply(base, file)?;
    let raw = Weights::load(path)?;
    let name = path.display().to_string();
    match raw.clone().matched_to(&arch, &name) {
        Ok(w) => Ok((arch, w, Vec::new(), None)),
        Err(fit_err) => match raw.matched_to(base, &name) {
            Ok(w) if arch != *base => {
                let (arch, dw, layers) = decompose_with_progress(base, &w, &ranks_only, file)?;
                Ok((arch, dw, layers, Some(w)))
            }
            _ => Err(fit_err.into()),
        },
    }
}

/// [`decompose_model`] with a per-layer progress bar.
fn decompose_with_progress(
    base: &Arch,
    weights: &Weights,
    config: &LayerConfig,
    file: &str,
) -> Result<(Arch, Weights, Vec<LayerDecomposition>)> {
    let n = config.decomposition.as_ref().map_or(0, |d| d.ranks.len());
    let bar = layer_bar(n, "Tucker-2");
    let out = decompose_model(base, weights, config, file, None, |name| {
        bar.set_message(name.to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    Ok(out)
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
    if let Some(graph) = base.graph()? {
        return recommend_graph_decomposition(&graph, &weights, calibration, out.as_deref(), json);
    }
    let arch = base.build()?;
    let w = Weights::load_for(&weights, &arch)?;
    let bar = layer_bar(
        arch.conv_units()
            .filter(|u| u.body.in_channels() > 3)
            .count(),
        "VBMF",
    );
    let started = std::time::Instant::now();
    let recs = recommend_ranks(&arch, &w, calibration, |name| {
        bar.set_message(name.to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let config = ranks_config(&arch, &recs);
    let new_arch = config.apply(&arch, "<recommendation>")?;
    let (before, after) = (cost::count(&arch), cost::count(&new_arch));
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

/// `recommend decomposition` for a residual or imported network.
fn recommend_graph_decomposition(
    graph: &Graph,
    weights: &Path,
    calibration: f64,
    out: Option<&Path>,
    json: bool,
) -> Result<()> {
    let w = super::graph_weights(graph, weights)?;
    let recs =
        rankprune::compress::decompose::recommend_graph_ranks(graph, &w, calibration, |_| {})?;
    let mut config = empty_config(graph);
    config.set_ranks(recs.iter().map(|r| (r.layer.clone(), r.chosen)).collect());
    let (g, _) = rankprune::compress::graph_config::apply_config(graph, &w, &config)
        .map_err(Error::Failure)?;
    let (before, after) = (
        rankprune::graph::cost::count(graph),
        rankprune::graph::cost::count(&g),
    );
    if let Some(path) = out {
        save_config(&config, path)?;
    }
    if json {
        let v = serde_json::json!({"layers": recs, "calibration": calibration,
            "before": cost_json(&before), "after": cost_json(&after), "config": config});
        println!("{v}");
    } else {
        print!("{}", report::rank_table(&recs, &before, &after));
        println!("{}", report::reduction_line(&before, &after));
        if let Some(path) = out {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// `graph` after `config`'s Tucker-2 ranks (its ratios ignored) and weights for it: the
/// file's weights of the base graph, decomposed here, or weights of the decomposed graph
/// already (a fine-tuned decomposition), as VGG's `compress` and `recommend pruning`
/// take both.
fn decomposed_graph(
    graph: &Graph,
    config: &LayerConfig,
    path: &Path,
    file: &str,
) -> Result<(Graph, Weights)> {
    use rankprune::compress::graph_config::apply_config;
    use rankprune::model::graph_weight_shapes;
    let ranks_only = LayerConfig {
        pruning: None,
        ..config.clone()
    };
    let decompose = |w: &Weights| {
        apply_config(graph, w, &ranks_only).map_err(|e| Error::BadInput(format!("{file}: {e}")))
    };
    let raw = super::weights_file(path)?;
    let name = path.display().to_string();
    let base_fit = raw
        .clone()
        .matched_to_shapes(graph_weight_shapes(graph), &name);
    if let Ok(w) = &base_fit {
        return decompose(w);
    }
    // The decomposed graph's layout (the ranks alone fix it), and the file against it.
    let decomposed = rankprune::compress::graph_config::config_layout(graph, &ranks_only)
        .map_err(|e| Error::BadInput(format!("{file}: {e}")))?;
    match raw.matched_to_shapes(graph_weight_shapes(&decomposed), &name) {
        Ok(w) if decomposed != *graph => Ok((decomposed, w)),
        // Neither fits: the error against the base graph, which a user's file most
        // often means.
        _ => Err(base_fit.expect_err("a fit returned above").into()),
    }
}

/// An empty config (no decomposition, no pruning) for `graph`.
fn empty_config(graph: &Graph) -> LayerConfig {
    LayerConfig {
        model: Some(graph.model.clone()),
        num_classes: None,
        input: Some(graph.input),
        decomposition: None,
        pruning: None,
        metrics: None,
        provenance: None,
    }
}

/// A model's params and FLOPs as the `--json` outputs give them.
fn cost_json(c: &rankprune::cost::Cost) -> serde_json::Value {
    serde_json::json!({"params": c.params, "flops": c.flops})
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
    if let Some(graph) = base.graph()? {
        let ask = GroupPruning {
            target,
            max_ratio,
            config: config.as_deref(),
            out: out.as_deref(),
            json,
        };
        return recommend_group_pruning(&graph, &weights, ask);
    }
    let base = base.build()?;
    let (mut layer_config, file) = match &config {
        Some(p) => (LayerConfig::load(p)?, p.display().to_string()),
        None => (LayerConfig::for_arch(&base), "<no config>".to_string()),
    };
    layer_config.pruning = None;
    let (decomposed, w, _, _) = decomposed_weights(&base, &layer_config, &weights, &file)?;
    let (before, mid) = (cost::count(&base), cost::count(&decomposed));
    if target.met_by(&mid, &before) {
        let (want, reached) = target.describe(&mid, &before);
        return Err(Error::BadInput(format!(
            "the decomposition alone already reaches {reached}, past the target of {want}: no pruning is needed (ask for a larger reduction, or higher ranks)"
        )));
    }
    let ratios = recommend_ratios(&decomposed, &w, target, max_ratio, &before)?;
    layer_config.pruning = Some(rankprune::config::Pruning {
        method: rankprune::config::PRUNING_METHOD.to_string(),
        ratios: ratios.clone(),
    });
    let pruned = layer_config.apply(&base, &file)?;
    let after = cost::count(&pruned);
    if let Some(path) = &out {
        save_config(&layer_config, path)?;
    }
    if json {
        let v = serde_json::json!({
            "ratios": ratios,
            "before": cost_json(&mid), "after": cost_json(&after),
            "config": layer_config,
        });
        println!("{v}");
    } else {
        print!("{}", report::ratio_table(&decomposed, &pruned, &ratios));
        if mid != before {
            println!("decomposed: {}", report::reduction_line(&before, &mid));
        }
        println!("pruned:     {}", report::reduction_line(&before, &after));
        if let Some(path) = &out {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// What `recommend pruning` asks of a residual or imported network.
struct GroupPruning<'a> {
    target: PruneTarget,
    max_ratio: f64,
    config: Option<&'a Path>,
    out: Option<&'a Path>,
    json: bool,
}

/// `recommend pruning` for a graph: group SLAMP ratios (a group named by its first conv)
/// after the `--config`'s ranks, if any, are applied to the base `weights`.
fn recommend_group_pruning(graph: &Graph, weights: &Path, ask: GroupPruning) -> Result<()> {
    use rankprune::compress::group_prune::{pruned_layout, recommend_group_ratios};
    use rankprune::graph::cost::count;
    let mut config = match ask.config {
        Some(p) => LayerConfig::load(p)?,
        None => empty_config(graph),
    };
    config.pruning = None;
    let file = ask
        .config
        .map_or("<no config>".into(), |p| p.display().to_string());
    let (decomposed, dw) = decomposed_graph(graph, &config, weights, &file)?;
    let (before, mid) = (count(graph), count(&decomposed));
    if ask.target.met_by(&mid, &before) {
        let (want, reached) = ask.target.describe(&mid, &before);
        return Err(Error::BadInput(format!(
            "the decomposition alone already reaches {reached}, past the target of {want}: no pruning is needed (ask for a larger reduction, or higher ranks)"
        )));
    }
    let ratios = recommend_group_ratios(&decomposed, &dw, ask.target, ask.max_ratio, &before)?;
    config.set_ratios(ratios.clone());
    // The pruned layout is all the table and the counts need: no weight surgery.
    let by_group = rankprune::compress::graph_config::ratios(&config);
    let pruned = pruned_layout(&decomposed, &by_group).map_err(Error::Failure)?;
    let after = count(&pruned);
    if let Some(path) = ask.out {
        save_config(&config, path)?;
    }
    if ask.json {
        let v = serde_json::json!({
            "ratios": ratios, "before": cost_json(&mid), "after": cost_json(&after),
            "config": config,
        });
        println!("{v}");
        return Ok(());
    }
    print!(
        "{}",
        report::group_ratio_table(&decomposed, &pruned, &ratios)
    );
    if mid != before {
        println!("decomposed: {}", report::reduction_line(&before, &mid));
    }
    println!("pruned:     {}", report::reduction_line(&before, &after));
    if let Some(path) = ask.out {
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
    if let Some(graph) = base.graph()? {
        if repair > 0 {
            return Err(Error::BadInput(
                "--repair: residual and imported networks are compressed without repair so far"
                    .into(),
            ));
        }
        return compress_graph(&graph, &weights, &config, &out, json);
    }
    let base = base.build()?;
    let file = config.display().to_string();
    let layer_config = LayerConfig::load(&config)?;
    // Validate the whole config before any slow work.
    layer_config.apply(&base, &file)?;
    // The weights may be the base model's or already decomposed at the config's ranks
    // (e.g. a fine-tuned decomposed model about to be pruned).
    let (dec_arch, dec_w, layers, base_w) =
        decomposed_weights(&base, &layer_config, &weights, &file)?;
    let (arch, new_w, kept) = prune_model(&base, &dec_arch, &dec_w, &layer_config, &file)?;
    let c = Compressed {
        arch,
        weights: new_w,
        kept,
    };
    let c = if repair > 0 {
        // The model the weights file describes, which the repair matches.
        let reference = match &base_w {
            Some(w) => (&base, w),
            None => (&dec_arch, &dec_w),
        };
        repair_data.repair(reference, c, repair, base.num_classes())?
    } else {
        c
    };
    let Compressed {
        arch,
        weights: new_w,
        ..
    } = c;
    new_w
        .save_safetensors(&out)
        .map_err(|e| Error::Failure(e.to_string()))?;
    let (before, after) = (cost::count(&base), cost::count(&arch));
    let file_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    if json {
        let v = serde_json::json!({
            "layers": layers, "out": out, "file_bytes": file_bytes,
            "before": {"params": before.params, "flops": before.flops, "size_bytes": before.size_bytes},
            "after": {"params": after.params, "flops": after.flops, "size_bytes": after.size_bytes},
        });
        println!("{v}");
    } else {
        if !layers.is_empty() {
            print!("{}", report::decomposition_table(&layers));
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

/// `compress` for a residual or imported network: the config's ranks, then its ratios
/// by group; writes safetensors, or ONNX when `out` ends with `.onnx`.
fn compress_graph(
    graph: &Graph,
    weights: &Path,
    config: &Path,
    out: &Path,
    json: bool,
) -> Result<()> {
    let layer_config = LayerConfig::load(config)?;
    let file = config.display().to_string();
    let (g, w) = decomposed_graph(graph, &layer_config, weights, &file)?;
    let ratios = rankprune::compress::graph_config::ratios(&layer_config);
    let (g, w) = rankprune::compress::group_prune::prune_groups(&g, &w, &ratios)
        .map_err(|e| Error::BadInput(format!("{file}: pruning: {e}")))?;
    if out.extension().is_some_and(|e| e == "onnx") {
        use onnx_protobuf::Message;
        let bytes = rankprune::deploy::onnx::graph_model(&g, &w)
            .write_to_bytes()
            .map_err(|e| Error::Failure(e.to_string()))?;
        rankprune::outpath::write_output(out, &bytes)?;
    } else {
        w.save_safetensors(out)?;
    }
    let (before, after) = (
        rankprune::graph::cost::count(graph),
        rankprune::graph::cost::count(&g),
    );
    if json {
        let v = serde_json::json!({"out": out, "before": {"params": before.params, "flops": before.flops},
            "after": {"params": after.params, "flops": after.flops}});
        println!("{v}");
    } else {
        println!("{}", report::reduction_line(&before, &after));
        println!("wrote {}", out.display());
    }
    Ok(())
}
