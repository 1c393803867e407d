//! The `rankprune` command line.

mod cli;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rankprune::arch::{Arch, ArchSpec};
use rankprune::compress::decompose::{decompose_model, ranks_config, recommend_ranks};
use rankprune::compress::prune::prune_model;
use rankprune::compress::slamp::{PruneTarget, recommend_ratios};
use rankprune::config::LayerConfig;
use rankprune::cost;
use rankprune::device::parse_device;
use rankprune::model::Vgg;
use rankprune::report;
use rankprune::weights::Weights;
use rankprune::{Error, Result};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "rankprune",
    version,
    about = "Compress trained CNNs with Tucker-2 decomposition and filter pruning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The base (uncompressed) architecture a command works on.
#[derive(Args)]
struct BaseArgs {
    /// Architecture: vgg11|vgg13|vgg16|vgg19 with optional _bn and @WIDTH (vgg19_bn@0.25),
    /// or a custom plan cfg_bn:16,M,32,M
    #[arg(long, default_value = "vgg19_bn")]
    arch: String,
    /// Number of classes of the classifier
    #[arg(long, default_value_t = 100)]
    num_classes: usize,
}

impl BaseArgs {
    fn build(&self) -> Result<Arch> {
        if self.num_classes == 0 {
            return Err(Error::BadInput("--num-classes must be at least 1".into()));
        }
        Ok(ArchSpec::parse(&self.arch)?.build(self.num_classes))
    }
}

/// A base architecture, optionally compressed by a config.
#[derive(Args)]
struct ModelArgs {
    #[command(flatten)]
    base: BaseArgs,
    /// Layer config JSON (decomposition ranks, pruning ratios) applied to the base arch
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ModelArgs {
    /// The base arch and the arch after the config (the base itself without one).
    fn resolve(&self) -> Result<(Arch, Arch)> {
        let base = self.base.build()?;
        let arch = match &self.config {
            Some(path) => LayerConfig::load(path)?.apply(&base, &path.display().to_string())?,
            None => base.clone(),
        };
        Ok((base, arch))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print params, MACs, FLOPs and size per layer and in total
    Metrics {
        #[command(flatten)]
        model: ModelArgs,
        /// Print one JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Write freshly initialised weights (torchvision's VGG init) as safetensors
    Init {
        #[command(flatten)]
        model: ModelArgs,
        /// Output file (.safetensors)
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Load weights (.safetensors, .pt, .pth) into the architecture and run one forward pass
    Check {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        weights: PathBuf,
        /// cpu, or wgpu:N with the wgpu feature
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Recommend per-layer ranks or ratios from trained weights
    #[command(subcommand)]
    Recommend(Recommend),
    /// Train or fine-tune with the reference recipe; writes the best-by-validation weights
    Train {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: cli::train::TrainArgs,
    },
    /// Top-1 / top-5 accuracy and loss of weights on the test or validation split
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: cli::train::EvalArgs,
    },
    /// Apply a config (ranks, then pruning ratios) to trained weights and write the compressed weights
    Compress {
        #[command(flatten)]
        base: BaseArgs,
        /// Weights of the base (uncompressed) model: .safetensors, .pt or .pth
        #[arg(long)]
        weights: PathBuf,
        /// Layer config JSON (reference format)
        #[arg(long)]
        config: PathBuf,
        /// Output weights (.safetensors)
        #[arg(long)]
        out: PathBuf,
        /// Print one JSON object instead of tables
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Recommend {
    /// VBMF ranks for every conv whose input has more than 3 channels
    Decomposition {
        #[command(flatten)]
        base: BaseArgs,
        /// Trained weights (.safetensors, .pt or .pth)
        #[arg(long)]
        weights: PathBuf,
        /// Calibration ratio in [-1, 1]: 0 = VBMF ranks, 1 = full ranks, -1 = rank 1
        #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
        calibration: f64,
        /// Write the config (reference format) here
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print one JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// SLAMP pruning ratios per conv and Tucker sub-conv for a global target
    #[command(group(clap::ArgGroup::new("target").required(true).args(["ratio", "flops_reduction", "params_reduction"])))]
    Pruning {
        #[command(flatten)]
        base: BaseArgs,
        /// Weights of the base model, or of the model decomposed as --config says
        #[arg(long)]
        weights: PathBuf,
        /// Config with the decomposition ranks (its pruning section is replaced)
        #[arg(long)]
        config: Option<PathBuf>,
        /// Remove this fraction of all filters (e.g. 0.4)
        #[arg(long)]
        ratio: Option<f64>,
        /// Reach base FLOPs / X (e.g. 2.0 halves the FLOPs)
        #[arg(long)]
        flops_reduction: Option<f64>,
        /// Reach base params / X
        #[arg(long)]
        params_reduction: Option<f64>,
        /// Most of a layer's filters that may go
        #[arg(long, default_value_t = 0.9)]
        max_ratio: f64,
        /// Write the merged config (ranks + ratios) here
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print one JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// Loads weights and checks them against `arch`.
fn load_weights(path: &std::path::Path, arch: &Arch) -> Result<Weights> {
    Ok(Weights::load(path)?.matched_to(arch, &path.display().to_string())?)
}

/// Weights for the model `config` decomposes from `base`: given as such, or given for
/// `base` and decomposed here.
fn decomposed_weights(
    base: &Arch,
    config: &LayerConfig,
    path: &std::path::Path,
    file: &str,
) -> Result<(Arch, Weights)> {
    let ranks_only = LayerConfig {
        pruning: None,
        ..config.clone()
    };
    let arch = ranks_only.apply(base, file)?;
    let raw = Weights::load(path)?;
    let name = path.display().to_string();
    match raw.clone().matched_to(&arch, &name) {
        Ok(w) => Ok((arch, w)),
        Err(fit_err) => match raw.matched_to(base, &name) {
            Ok(w) if arch != *base => {
                let bar = layer_bar(
                    ranks_only
                        .decomposition
                        .as_ref()
                        .map_or(0, |d| d.ranks.len()),
                    "Tucker-2",
                );
                let (arch, w, _) = decompose_model(base, &w, &ranks_only, file, |n| {
                    bar.set_message(n.to_string());
                    bar.inc(1);
                })?;
                bar.finish_and_clear();
                Ok((arch, w))
            }
            _ => Err(fit_err.into()),
        },
    }
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

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train { model, args } => cli::train::run_train(&model.resolve()?.1, args)?,
        Command::Eval { model, args } => cli::train::run_eval(&model.resolve()?.1, args)?,
        Command::Metrics { model, json } => {
            let (base, arch) = model.resolve()?;
            let c = cost::count(&arch);
            if json {
                println!("{}", serde_json::to_string(&c).expect("cost serializes"));
            } else {
                print!("{}", report::cost_table(&c));
                if model.config.is_some() {
                    println!("{}", report::reduction_line(&cost::count(&base), &c));
                }
            }
        }
        Command::Init { model, out, seed } => {
            let (_, arch) = model.resolve()?;
            let w = Weights::init(&arch, seed);
            w.save_safetensors(&out)
                .map_err(|e| Error::Failure(e.to_string()))?;
            let c = cost::count(&arch);
            println!(
                "wrote {} ({} params, {:.2} MFLOPs)",
                out.display(),
                c.params,
                c.mflops()
            );
        }
        Command::Check {
            model,
            weights,
            device,
        } => {
            let (_, arch) = model.resolve()?;
            let device = parse_device(&device)?;
            let file = weights.display().to_string();
            let w = Weights::load(&weights)?;
            let vgg = Vgg::from_weights(&arch, w, &file, &device)?;
            let [c, h, wd] = arch.input;
            let x = burn::tensor::Tensor::<4>::zeros([1, c, h, wd], &device);
            let y = vgg
                .forward(x)
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| Error::Failure(format!("{e:?}")))?;
            if y.iter().any(|v| !v.is_finite()) {
                return Err(Error::Failure(format!(
                    "{file}: forward pass gives non-finite logits"
                )));
            }
            println!(
                "{file}: {} tensors fit {}; forward pass gives {} finite logits",
                vgg.to_weights().tensors.len(),
                arch.model,
                y.len()
            );
        }
        Command::Recommend(Recommend::Decomposition {
            base,
            weights,
            calibration,
            out,
            json,
        }) => {
            let arch = base.build()?;
            let w = load_weights(&weights, &arch)?;
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
                config.save(path).map_err(|e| {
                    Error::Failure(format!("{}: cannot write: {e}", path.display()))
                })?;
            }
            if json {
                let v = serde_json::json!({
                    "layers": recs, "calibration": calibration, "seconds": seconds,
                    "before": {"params": before.params, "flops": before.flops},
                    "after": {"params": after.params, "flops": after.flops},
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
        }
        Command::Recommend(Recommend::Pruning {
            base,
            weights,
            config,
            ratio,
            flops_reduction,
            params_reduction,
            max_ratio,
            out,
            json,
        }) => {
            let base = base.build()?;
            let (mut layer_config, file) = match &config {
                Some(p) => (LayerConfig::load(p)?, p.display().to_string()),
                None => (LayerConfig::for_arch(&base), "<no config>".to_string()),
            };
            layer_config.pruning = None;
            let (decomposed, w) = decomposed_weights(&base, &layer_config, &weights, &file)?;
            let target = match (ratio, flops_reduction, params_reduction) {
                (Some(r), _, _) => PruneTarget::Ratio(r),
                (_, Some(x), _) => PruneTarget::FlopsReduction(x),
                (_, _, Some(x)) => PruneTarget::ParamsReduction(x),
                _ => unreachable!("clap requires one target"),
            };
            let ratios = recommend_ratios(&decomposed, &w, target, max_ratio)?;
            layer_config.pruning = Some(rankprune::config::Pruning {
                method: rankprune::config::PRUNING_METHOD.to_string(),
                ratios: ratios.clone(),
            });
            let pruned = layer_config.apply(&base, &file)?;
            let (before, mid, after) = (
                cost::count(&base),
                cost::count(&decomposed),
                cost::count(&pruned),
            );
            if let Some(path) = &out {
                layer_config.save(path).map_err(|e| {
                    Error::Failure(format!("{}: cannot write: {e}", path.display()))
                })?;
            }
            if json {
                let v = serde_json::json!({
                    "ratios": ratios,
                    "before": {"params": mid.params, "flops": mid.flops},
                    "after": {"params": after.params, "flops": after.flops},
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
        }
        Command::Compress {
            base,
            weights,
            config,
            out,
            json,
        } => {
            let base = base.build()?;
            let file = config.display().to_string();
            let layer_config = LayerConfig::load(&config)?;
            // Validate the whole config before any slow work.
            layer_config.apply(&base, &file)?;
            let w = load_weights(&weights, &base)?;
            let n = layer_config
                .decomposition
                .as_ref()
                .map_or(0, |d| d.ranks.len());
            let bar = layer_bar(n, "Tucker-2");
            let (arch, new_w, layers) = decompose_model(&base, &w, &layer_config, &file, |name| {
                bar.set_message(name.to_string());
                bar.inc(1);
            })?;
            bar.finish_and_clear();
            let (arch, new_w) = prune_model(&base, &arch, &new_w, &layer_config, &file)?;
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
        }
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "rankprune=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
