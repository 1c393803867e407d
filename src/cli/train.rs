//! `rankprune train` and `rankprune eval`.

use super::{at_least_one, at_least_one_if_set, in_range};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rankprune::data::augment::Normalization;
use rankprune::data::{DatasetKind, FolderOptions, ImageSet, SPLIT_SEED, Source, Split};
use rankprune::device::parse_device;
use rankprune::graph::Graph;
use rankprune::model::GraphNet;
use rankprune::network::Network;
use rankprune::outpath::{check_output, write_output};
use rankprune::train::plateau::PlateauConfig;
use rankprune::train::{Control, LrSchedule, TrainConfig, evaluate, evaluate_each, train};
use rankprune::weights::Weights;
use rankprune::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How class-folder images are prepared (`--dataset folder`).
#[derive(Args, Clone, Default)]
pub struct FolderArgs {
    /// Folder data: resize each image's shorter side to this (bilinear) before the
    /// centre crop to --input-size; without it every image must have one size
    #[arg(long)]
    pub resize: Option<usize>,
    /// Folder data: per-channel mean of pixels in [0, 1] to normalise with (R,G,B);
    /// default: the training split's own, computed once and cached beside the data
    #[arg(long, value_delimiter = ',', requires = "std")]
    pub mean: Option<Vec<f32>>,
    /// Folder data: per-channel std to normalise with (R,G,B), with --mean
    #[arg(long, value_delimiter = ',', requires = "mean")]
    pub std: Option<Vec<f32>>,
}

impl FolderArgs {
    /// The data in `dir` of layout `kind`, prepared for `side` x `side` inputs.
    pub fn source(&self, kind: DatasetKind, dir: &Path, side: usize) -> Result<Source> {
        let three = |flag: &str, v: &Option<Vec<f32>>| -> Result<Option<[f32; 3]>> {
            v.as_ref()
                .map(|v| {
                    <[f32; 3]>::try_from(v.as_slice()).map_err(|_| {
                        Error::BadInput(format!(
                            "{flag} {v:?}: give three values, R,G,B (for example 0.5,0.5,0.5)"
                        ))
                    })
                })
                .transpose()
        };
        let (mean, std) = (three("--mean", &self.mean)?, three("--std", &self.std)?);
        if let Some(std) = std {
            for &v in &std {
                in_range("--std", f64::from(v), |v| v > 0.0, "positive values")?;
            }
        }
        if let Some(mean) = mean {
            for &v in &mean {
                in_range("--mean", f64::from(v), |_| true, "finite values")?;
            }
        }
        at_least_one_if_set("--resize", self.resize)?;
        let folder_only = self.resize.is_some() || mean.is_some();
        if folder_only && kind != DatasetKind::Folder {
            return Err(Error::BadInput(format!(
                "--resize, --mean and --std prepare folder data (--dataset folder); the {kind:?} layout has fixed 32x32 images and statistics"
            )));
        }
        Ok(Source {
            kind,
            dir: dir.to_path_buf(),
            folder: FolderOptions {
                side,
                resize: self.resize,
                norm: mean.zip(std).map(|(mean, std)| Normalization { mean, std }),
            },
        })
    }
}

/// Where the images come from.
#[derive(Args)]
pub struct DataArgs {
    /// Layout of the data directory
    #[arg(long, value_enum, default_value = "cifar100")]
    pub dataset: DatasetKind,
    /// Directory with train.bin/test.bin (cifar100), data_batch_*.bin/test_batch.bin
    /// (cifar10), the IDX files train-images-idx3-ubyte[.gz] etc. (fashion-mnist), or
    /// train/CLASS/*.png and test/CLASS/*.png (folder)
    #[arg(long)]
    pub data: PathBuf,
    /// Training images held out for validation (the test set is never used to choose)
    #[arg(long, default_value_t = 5000)]
    pub val_split: usize,
    #[command(flatten)]
    pub folder: FolderArgs,
}

impl DataArgs {
    /// The test split for a model of `classes` classes taking `side` x `side` images.
    pub fn test_for(&self, classes: usize, side: usize) -> Result<ImageSet> {
        self.split_for(EvalSplit::Test, classes, side)
    }

    fn train_val_for(&self, classes: usize, side: usize) -> Result<(ImageSet, ImageSet)> {
        let source = self.folder.source(self.dataset, &self.data, side)?;
        train_val(&source, classes, self.val_split)
    }

    /// The test split, or the validation images, for a model of `classes` classes that
    /// takes `side` x `side` images.
    fn split_for(&self, split: EvalSplit, classes: usize, side: usize) -> Result<ImageSet> {
        match split {
            EvalSplit::Test => {
                let source = self.folder.source(self.dataset, &self.data, side)?;
                load(&source, Split::Test, classes)
            }
            EvalSplit::Val => Ok(self.train_val_for(classes, side)?.1),
        }
    }

    /// The data files, labelled as inputs for [`check_output`].
    pub fn inputs(&self) -> Vec<(String, PathBuf)> {
        let source = Source::binary(self.dataset, &self.data);
        [Split::Train, Split::Test]
            .into_iter()
            .filter_map(|s| source.files(s).ok())
            .flatten()
            .map(|f| ("--data".to_string(), f))
            .collect()
    }
}

/// Every image of `split`; a label the model's `classes` cannot hold names
/// `--num-classes`.
pub fn load(source: &Source, split: Split, classes: usize) -> Result<ImageSet> {
    // Every byte is a label here, so that any other error is told as it is.
    let set = source
        .load(split, 256.max(classes))
        .map_err(|e| Error::BadInput(e.to_string()))?;
    if let Some(&max) = set.labels.iter().max()
        && max as usize >= classes
    {
        // Read again against the model's classes, for the file and record at fault.
        let at = source
            .load(split, classes)
            .err()
            .map_or(String::new(), |e| format!("{e}; "));
        return Err(Error::BadInput(format!(
            "--num-classes {classes}: {at}the data holds label {max}: give --num-classes {} or more",
            max as usize + 1
        )));
    }
    Ok(set)
}

/// `(train, validation)` from the training split: `val_split` images held out exactly
/// as [`Source::train_val`] holds them out.
pub fn train_val(
    source: &Source,
    classes: usize,
    val_split: usize,
) -> Result<(ImageSet, ImageSet)> {
    let all = load(source, Split::Train, classes)?;
    if val_split >= all.len() {
        return Err(Error::BadInput(format!(
            "--val-split {val_split}: leaves no training images ({} in the training files of {}); allowed below {}",
            all.len(),
            source.dir.display(),
            all.len()
        )));
    }
    Ok(all.split_off(val_split, SPLIT_SEED))
}

#[derive(Args)]
pub struct TrainArgs {
    /// Starting weights (.safetensors, .pt, .pth); fresh torchvision-style init if absent
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Best-by-validation weights are written here (.safetensors)
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Learning-rate schedule: plateau (ReduceLROnPlateau on validation loss, the
    /// recipe) or linear (from --lr down to zero over the run's steps, for runs cut far
    /// shorter than the recipe)
    #[arg(long, value_enum, default_value = "plateau")]
    pub lr_schedule: LrSchedule,
    /// ReduceLROnPlateau: factor, patience (epochs), minimum lr
    #[arg(long, default_value_t = 0.1)]
    pub plateau_factor: f64,
    #[arg(long, default_value_t = 10)]
    pub plateau_patience: usize,
    #[arg(long, default_value_t = 1e-5)]
    pub min_lr: f64,
    /// Stop after this many optimizer steps (proxy runs)
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Train on only this many images per epoch (proxy runs)
    #[arg(long)]
    pub subset: Option<usize>,
    /// Validate every N steps as well as at each epoch end
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a checkpoint here at every epoch end
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in --checkpoint-dir
    #[arg(long)]
    pub resume: bool,
    /// cpu, or wgpu:N with the wgpu feature
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object at the end instead of a summary
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSplit {
    Test,
    Val,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Weights (.safetensors, .pt, .pth)
    #[arg(long)]
    pub weights: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value = "test")]
    pub split: EvalSplit,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// cpu, or wgpu:N with the wgpu feature
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object ({top1, top5, loss, samples}) as the last line
    #[arg(long)]
    pub json: bool,
    /// Also write each image's top-1 correctness ('1' or '0', in the split's order) to
    /// this file: paired comparisons of two models on the same images need it
    #[arg(long)]
    pub per_image: Option<PathBuf>,
}

impl TrainArgs {
    /// Refuses, before any work, counts of zero, rates out of range, and an `--out` that
    /// is one of the inputs (`config`: the `--config` file, if any).
    pub fn check(&self, config: Option<&Path>) -> Result<()> {
        at_least_one("--epochs", self.epochs)?;
        at_least_one("--batch-size", self.batch_size)?;
        at_least_one_if_set("--max-steps", self.max_steps)?;
        at_least_one_if_set("--subset", self.subset)?;
        at_least_one_if_set("--eval-every", self.eval_every)?;
        // The best weights are chosen on the held-out images: none leaves nothing to choose by.
        at_least_one("--val-split", self.data.val_split)?;
        in_range("--lr", self.lr, |v| v > 0.0, "> 0")?;
        in_range(
            "--momentum",
            self.momentum,
            |v| (0.0..1.0).contains(&v),
            "[0, 1)",
        )?;
        in_range("--weight-decay", self.weight_decay, |v| v >= 0.0, ">= 0")?;
        in_range(
            "--plateau-factor",
            self.plateau_factor,
            |v| v > 0.0 && v < 1.0,
            "(0, 1)",
        )?;
        in_range("--min-lr", self.min_lr, |v| v >= 0.0, ">= 0")?;
        if self.resume && self.checkpoint_dir.is_none() {
            return Err(Error::BadInput("--resume needs --checkpoint-dir".into()));
        }
        let mut inputs: Vec<(String, PathBuf)> = self.data.inputs();
        inputs.extend(self.weights.iter().map(|w| ("--weights".into(), w.clone())));
        inputs.extend(config.map(|c| ("--config".into(), c.to_path_buf())));
        if let Some(dir) = &self.checkpoint_dir {
            use rankprune::train::checkpoint::{BEST_FILE, LAST_FILE, OPTIM_FILE, STATE_FILE};
            for f in [LAST_FILE, BEST_FILE, OPTIM_FILE, STATE_FILE] {
                inputs.push(("--checkpoint-dir".into(), dir.join(f)));
            }
        }
        check_output(&self.out, "--out", &inputs)
    }
}

impl EvalArgs {
    /// Refuses, before any work, a batch size of zero and an empty validation split.
    pub fn check(&self) -> Result<()> {
        at_least_one("--batch-size", self.batch_size)?;
        if self.split == EvalSplit::Val {
            at_least_one("--val-split", self.data.val_split)?;
        }
        Ok(())
    }
}

impl TrainArgs {
    /// The training recipe these options ask for.
    fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            schedule: self.lr_schedule,
            plateau: PlateauConfig {
                factor: self.plateau_factor,
                patience: self.plateau_patience,
                min_lr: self.min_lr,
                ..PlateauConfig::default()
            },
            max_steps: self.max_steps,
            subset: self.subset,
            eval_every: self.eval_every,
            eval_at: Vec::new(),
            eval_limit: None,
            seed: self.seed,
            checkpoint_dir: self.checkpoint_dir.clone(),
            resume: self.resume,
        }
    }
}

/// The progress bar's view of a training report (and a line per validation).
fn show_report(bar: &ProgressBar, r: &rankprune::train::Report) {
    bar.set_position(r.step as u64);
    let val = r
        .val
        .as_ref()
        .map(|v| format!(" val acc {:.2}%", 100.0 * v.top1))
        .unwrap_or_default();
    bar.set_message(format!(
        "epoch {} loss {:.4} acc {:.2}%{val} lr {:.0e} {:.1} img/s",
        r.epoch,
        r.train_loss,
        100.0 * r.train_acc,
        r.lr,
        r.images_per_s
    ));
    if r.val.is_some() && !bar.is_hidden() {
        bar.println(format!(
            "epoch {} step {}:{val} train loss {:.4}",
            r.epoch, r.step, r.train_loss
        ));
    }
}

/// The weights `train` starts from: `--weights`, checked against the network, or fresh
/// ones seeded by `--seed` (torchvision's VGG initialisation for a VGG plan, its ResNet
/// initialisation otherwise).
pub fn start_weights(net: &Network, args: &TrainArgs) -> Result<Weights> {
    Ok(match &args.weights {
        Some(p) => super::graph_weights(&net.graph, p)?,
        None => net.init_weights(args.seed),
    })
}

/// `train`: `weights` of `graph`, trained with the recipe the options give.
pub fn run_train(graph: &Graph, weights: Weights, args: TrainArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let classes = graph
        .num_classes()
        .map_err(|e| Error::BadInput(e.to_string()))?;
    let (train_set, val_set) = args.data.train_val_for(classes, graph.input[1])?;
    let test_set = args.data.test_for(classes, graph.input[1])?;
    let cfg = args.train_config();
    let total = cfg.planned_steps(train_set.len());
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    tracing::info!(
        train = train_set.len(),
        val = val_set.len(),
        test = test_set.len(),
        "data loaded"
    );
    let started = std::time::Instant::now();
    let mut data_wait = 0.0;
    let outcome = train(
        graph,
        weights,
        Arc::new(train_set),
        Arc::new(val_set),
        &cfg,
        &device,
        |r| {
            show_report(&bar, r);
            data_wait = r.data_wait;
            Control::Continue
        },
    )?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    outcome
        .best_weights
        .save_safetensors(&args.out)
        .map_err(|e| Error::Failure(e.to_string()))?;
    let best = GraphNet::from_weights(graph, outcome.best_weights.clone(), "<best>", &device)?;
    let test = evaluate(&best, &Arc::new(test_set), 256, None, &device)?;
    if args.json {
        let v = serde_json::json!({
            "out": args.out, "epochs": outcome.epochs_run, "steps": outcome.steps, "seconds": seconds,
            "val": outcome.best_val, "test": test, "data_wait": data_wait,
        });
        println!("{v}");
        return Ok(());
    }
    if let Some(v) = &outcome.best_val {
        println!(
            "best validation: top-1 {:.2}%, loss {:.4} ({} images)",
            100.0 * v.top1,
            v.loss,
            v.samples
        );
    }
    println!(
        "test: top-1 {:.2}%, top-5 {:.2}%, loss {:.4} ({} images)",
        100.0 * test.top1,
        100.0 * test.top5,
        test.loss,
        test.samples
    );
    println!(
        "{} epochs, {} steps in {:.1} s (waiting for data {:.1}% of it); wrote {}",
        outcome.epochs_run,
        outcome.steps,
        seconds,
        100.0 * data_wait,
        args.out.display()
    );
    Ok(())
}

/// `eval`: `--weights` of `graph` (a VGG plan's, a residual or an imported network)
/// scored on the split asked for.
pub fn run_eval(graph: &Graph, args: EvalArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let classes = graph
        .num_classes()
        .map_err(|e| Error::BadInput(e.to_string()))?;
    let set = args.data.split_for(args.split, classes, graph.input[1])?;
    let w = super::graph_weights(graph, &args.weights)?;
    let model = GraphNet::from_weights(graph, w, "<eval>", &device)?;
    report_eval(&model, set, &args, &device)
}

/// Evaluates `model` on `set` and prints the result (and writes `--per-image`).
fn report_eval(
    model: &impl rankprune::model::Classifier,
    set: ImageSet,
    args: &EvalArgs,
    device: &burn::tensor::Device,
) -> Result<()> {
    let device = device.clone();
    if let Some(path) = &args.per_image {
        check_output(path, "--per-image", &[("--weights", &args.weights)])?;
    }
    let (r, correct) = evaluate_each(model, &Arc::new(set), args.batch_size, None, &device)?;
    if let Some(path) = &args.per_image {
        write_output(path, rankprune::store::bits_text(&correct).as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r).expect("result serializes"));
    } else {
        println!(
            "top-1 {:.2}%, top-5 {:.2}%, loss {:.4} ({} images)",
            100.0 * r.top1,
            100.0 * r.top5,
            r.loss,
            r.samples
        );
    }
    Ok(())
}
