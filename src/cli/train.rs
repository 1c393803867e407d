//! `rankprune train` and `rankprune eval`.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rankprune::arch::Arch;
use rankprune::data::{DatasetKind, ImageSet, Split};
use rankprune::device::parse_device;
use rankprune::model::Vgg;
use rankprune::train::plateau::PlateauConfig;
use rankprune::train::{Control, LrSchedule, TrainConfig, evaluate, train};
use rankprune::weights::Weights;
use rankprune::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// Where the images come from.
#[derive(Args)]
pub struct DataArgs {
    /// Binary layout of the data directory
    #[arg(long, value_enum, default_value = "cifar100")]
    pub dataset: DatasetKind,
    /// Directory with train.bin/test.bin (cifar100), data_batch_*.bin/test_batch.bin (cifar10)
    /// or the IDX files train-images-idx3-ubyte[.gz] etc. (fashion-mnist)
    #[arg(long)]
    pub data: PathBuf,
    /// Training images held out for validation (the test set is never used to choose)
    #[arg(long, default_value_t = 5000)]
    pub val_split: usize,
}

impl DataArgs {
    /// (train, validation) from the training files.
    fn train_val(&self, classes: usize) -> Result<(ImageSet, ImageSet)> {
        ImageSet::train_val(&self.data, self.dataset, classes, self.val_split)
            .map_err(|e| Error::BadInput(format!("--val-split: {e}")))
    }

    pub fn test(&self, classes: usize) -> Result<ImageSet> {
        ImageSet::load(&self.data, self.dataset, Split::Test, classes)
            .map_err(|e| Error::BadInput(e.to_string()))
    }
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
}

pub fn run_train(arch: &Arch, args: TrainArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let classes = arch.num_classes();
    let (train_set, val_set) = args.data.train_val(classes)?;
    let test_set = args.data.test(classes)?;
    let weights = match &args.weights {
        Some(p) => Weights::load_for(p, arch)?,
        None => Weights::init(arch, args.seed),
    };
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        schedule: args.lr_schedule,
        plateau: PlateauConfig {
            factor: args.plateau_factor,
            patience: args.plateau_patience,
            min_lr: args.min_lr,
            ..PlateauConfig::default()
        },
        max_steps: args.max_steps,
        subset: args.subset,
        eval_every: args.eval_every,
        eval_at: Vec::new(),
        eval_limit: None,
        seed: args.seed,
        checkpoint_dir: args.checkpoint_dir.clone(),
        resume: args.resume,
    };
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
    let outcome = train(
        arch,
        weights,
        Arc::new(train_set),
        Arc::new(val_set),
        &cfg,
        &device,
        |r| {
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
            Control::Continue
        },
    )?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    outcome
        .best_weights
        .save_safetensors(&args.out)
        .map_err(|e| Error::Failure(e.to_string()))?;
    let best = Vgg::from_weights(arch, outcome.best_weights.clone(), "<best>", &device)?;
    let test = evaluate(&best, &Arc::new(test_set), 256, None, &device)?;
    if args.json {
        let v = serde_json::json!({
            "out": args.out, "epochs": outcome.epochs_run, "steps": outcome.steps, "seconds": seconds,
            "val": outcome.best_val, "test": test,
        });
        println!("{v}");
    } else {
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
            "{} epochs, {} steps in {:.1} s; wrote {}",
            outcome.epochs_run,
            outcome.steps,
            seconds,
            args.out.display()
        );
    }
    Ok(())
}

pub fn run_eval(arch: &Arch, args: EvalArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let classes = arch.num_classes();
    let set = match args.split {
        EvalSplit::Test => args.data.test(classes)?,
        EvalSplit::Val => args.data.train_val(classes)?.1,
    };
    let model = Vgg::from_weights(
        arch,
        Weights::load_for(&args.weights, arch)?,
        "<eval>",
        &device,
    )?;
    let r = evaluate(
        &model,
        &Arc::new(set),
        args.batch_size.max(1),
        None,
        &device,
    )?;
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
