//! The `rankprune` command line.

mod cli;

use cli::BaseArgs;

use clap::{Args, Parser, Subcommand};
use rankprune::arch::Arch;
use rankprune::config::LayerConfig;
use rankprune::device::parse_device;
use rankprune::graph::Graph;
use rankprune::graph::cost::count;
use rankprune::model::GraphNet;
use rankprune::network::Network;
use rankprune::outpath::check_output;
use rankprune::report;
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
    /// The graph of a residual network (`resnet20`, `resnet18@0.5`) or of an ONNX file
    /// (`--arch model.onnx`), after the config if there is one; `None` for a VGG plan.
    fn residual(&self) -> Result<Option<Graph>> {
        let Some(graph) = self.base.graph()? else {
            return Ok(None);
        };
        let Some(path) = &self.config else {
            return Ok(Some(graph));
        };
        let config = LayerConfig::load(path)?;
        let g = rankprune::compress::graph_config::config_layout(&graph, &config)
            .map_err(|e| Error::BadInput(format!("{}: {e}", path.display())))?;
        Ok(Some(g))
    }

    /// The network a command runs, after the config if any: a residual or imported
    /// network's graph, or a VGG plan's graph with the plan (configs on plans are checked
    /// by the plan, whose errors suggest the nearest layer name).
    fn network(&self) -> Result<Network> {
        match self.residual()? {
            Some(graph) => Ok(Network { graph, plan: None }),
            None => Ok(self.resolve()?.1.into()),
        }
    }

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
    /// Predict a model's inference latency on this machine from the per-layer latency
    /// table (each layer shape timed once, cached in --table), and with --measure time
    /// the whole model beside it
    Latency {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: cli::latency::LatencyArgs,
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
    /// List the devices a worker can run on: the CPU and, in a wgpu build, every graphics
    /// adapter (`--device wgpu:N` or `wgpu:KIND:N`)
    Devices {
        /// Print one JSON object instead of a table
        #[arg(long)]
        json: bool,
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
    /// Look at a data folder
    #[command(subcommand)]
    Data(DataCmd),
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
        #[command(flatten)]
        args: cli::compress::CompressArgs,
    },
    /// Write a model (arch, optional config, weights) for another engine: ONNX
    ExportModel {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: cli::deploy::ExportModelArgs,
    },
    /// Logits of the first test images, with the images, as JSON (to check other engines)
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: cli::deploy::PredictArgs,
    },
    /// Run (or resume) the search a budget file describes, in the foreground
    Search {
        #[command(flatten)]
        args: cli::search::SearchArgs,
    },
    /// List the trials of a search (safe while the search runs)
    Trials {
        #[command(flatten)]
        args: cli::search::TrialsArgs,
    },
    /// Write a trial's layer config (reference format, with metrics and provenance)
    Export {
        #[command(flatten)]
        args: cli::search::ExportArgs,
    },
    /// Claim and run queued trials of the store's running studies (a worker process)
    Worker {
        #[command(flatten)]
        args: cli::search::WorkerArgs,
    },
    /// Run the daemon: every study submitted to the store, until SIGINT/SIGTERM
    Serve {
        #[command(flatten)]
        args: cli::daemon::ServeArgs,
    },
    /// Hand a budget's study to the daemon serving a store
    Submit {
        #[command(flatten)]
        args: cli::daemon::SubmitArgs,
    },
    /// Ask a study's controller to stop proposing trials
    Stop {
        #[command(flatten)]
        args: cli::daemon::StopArgs,
    },
    /// List the studies of a trial store with their state and best trial
    Studies {
        #[command(flatten)]
        args: cli::search::StudiesArgs,
    },
    /// Serve a live, read-only web dashboard of a trial store
    Dashboard {
        #[command(flatten)]
        args: cli::dashboard::DashboardArgs,
    },
    /// Write a study's accuracy-vs-FLOPs chart (the dashboard's) as an SVG file
    Plot {
        #[command(flatten)]
        args: cli::dashboard::PlotArgs,
    },
    /// Measure how well cheap candidate scores rank candidates like the final re-training
    Fidelity {
        #[command(flatten)]
        args: cli::fidelity::FidelityArgs,
    },
    /// Score one layer config with the cheap signals (one JSON line per signal)
    Score {
        #[command(flatten)]
        args: cli::fidelity::ScoreArgs,
    },
}

#[derive(Subcommand)]
enum DataCmd {
    /// Images per class, sizes, and per-channel mean and std of each split (a folder's
    /// are decoded and cached on the way)
    Stats {
        #[command(flatten)]
        args: cli::data::StatsArgs,
    },
}

#[derive(Subcommand)]
enum Recommend {
    /// VBMF ranks for every conv whose input has more than 3 channels
    Decomposition {
        #[command(flatten)]
        base: BaseArgs,
        #[command(flatten)]
        args: cli::compress::DecompositionArgs,
    },
    /// SLAMP pruning ratios per conv and Tucker sub-conv for a global target
    Pruning {
        #[command(flatten)]
        base: BaseArgs,
        #[command(flatten)]
        args: cli::compress::PruningArgs,
    },
}

/// Runs a command; returns the exit code on success. Long by design: one arm per
/// command, a table rather than logic.
fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Search { args } => return cli::search::run(args),
        Command::Trials { args } => cli::search::run_trials(args)?,
        Command::Export { args } => cli::search::run_export(args)?,
        Command::Studies { args } => cli::search::run_studies(args)?,
        Command::Worker { args } => cli::search::run_worker(args)?,
        Command::Serve { args } => cli::daemon::run_serve_cmd(args)?,
        Command::Submit { args } => cli::daemon::run_submit(args)?,
        Command::Stop { args } => cli::daemon::run_stop(args)?,
        Command::Dashboard { args } => cli::dashboard::run_dashboard(args)?,
        Command::Plot { args } => cli::dashboard::run_plot(args)?,
        Command::Fidelity { args } => cli::fidelity::run_fidelity(args)?,
        Command::Score { args } => cli::fidelity::run_score(args)?,
        Command::Train { model, args } => {
            args.check(model.config.as_deref())?;
            let net = model.network()?;
            let weights = cli::train::start_weights(&net, &args)?;
            cli::train::run_train(&net.graph, weights, args)?
        }
        Command::Eval { model, args } => {
            args.check()?;
            cli::train::run_eval(&model.network()?.graph, args)?
        }
        Command::Metrics { model, json } => {
            let c = count(&model.network()?.graph);
            if json {
                println!("{}", serde_json::to_string(&c).expect("cost serializes"));
            } else {
                print!("{}", report::cost_table(&c));
                if model.config.is_some() {
                    let base = count(&model.base.network()?.graph);
                    println!("{}", report::reduction_line(&base, &c));
                }
            }
        }
        Command::Init { model, out, seed } => {
            let config = model.config.iter().map(|c| ("--config", c.as_path()));
            check_output(&out, "--out", &config.collect::<Vec<_>>())?;
            let net = model.network()?;
            let (w, c) = (net.init_weights(seed), count(&net.graph));
            w.save_safetensors(&out)
                .map_err(|e| Error::Failure(e.to_string()))?;
            println!(
                "wrote {} ({} params, {:.2} MFLOPs)",
                out.display(),
                c.params,
                c.mflops()
            );
        }
        Command::Devices { json } => devices(json),
        Command::Data(DataCmd::Stats { args }) => cli::data::run_stats(args)?,
        Command::Check {
            model,
            weights,
            device,
        } => {
            let device = parse_device(&device)?;
            let file = weights.display().to_string();
            let w = cli::weights_file(&weights)?;
            let g = model.network()?.graph;
            let net = GraphNet::from_weights(&g, w, &file, &device)?;
            let x =
                burn::tensor::Tensor::<4>::zeros([1, g.input[0], g.input[1], g.input[2]], &device);
            let (name, tensors, y) = (
                g.model.clone(),
                net.to_weights().tensors.len(),
                net.forward(x),
            );
            let y = y
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| Error::Failure(format!("{e:?}")))?;
            if y.iter().any(|v| !v.is_finite()) {
                return Err(Error::Failure(format!(
                    "{file}: forward pass gives non-finite logits"
                )));
            }
            println!(
                "{file}: {tensors} tensors fit {name}; forward pass gives {} finite logits",
                y.len()
            );
        }
        Command::Recommend(Recommend::Decomposition { base, args }) => {
            cli::compress::run_recommend_decomposition(&base, args)?
        }
        Command::Recommend(Recommend::Pruning { base, args }) => {
            cli::compress::run_recommend_pruning(&base, args)?
        }
        Command::Compress { base, args } => cli::compress::run_compress(&base, args)?,
        Command::Predict { model, args } => {
            args.check(model.config.as_deref())?;
            cli::deploy::run_predict(&model.network()?.graph, args)?
        }
        Command::Latency { model, args } => {
            cli::latency::run_latency(&model.network()?.graph, args)?
        }
        Command::ExportModel { model, args } => {
            args.check(model.config.as_deref())?;
            cli::deploy::run_export_model(&model.network()?.graph, args)?
        }
    }
    Ok(0)
}

/// `rankprune devices`.
fn devices(json: bool) {
    let list = rankprune::device::adapters();
    let threads = rayon::current_num_threads();
    let wgpu = cfg!(feature = "wgpu");
    if json {
        let v = serde_json::json!({"cpu": {"threads": threads}, "wgpu_build": wgpu, "wgpu": list});
        println!("{v}");
        return;
    }
    println!("cpu        burn-flex, {threads} threads");
    if !wgpu {
        println!("wgpu       not in this build (cargo build --release --features wgpu)");
    } else if list.is_empty() {
        println!("wgpu       no graphics adapter found (Vulkan, Metal, DirectX 12, OpenGL)");
    }
    for a in &list {
        println!(
            "wgpu:{:<5}  wgpu:{}:{:<3} {} ({}, {} {})",
            a.index, a.kind, a.kind_index, a.name, a.kind, a.backend, a.driver
        );
    }
}

fn main() {
    rankprune::model::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "rankprune=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
