//! Training end to end on synthetic data whose label is learnable, exact resume, and
//! the typed failure on a diverging loss.

use crate::common::stripes;
use burn::tensor::Device;
use rankprune::arch::ArchSpec;
use rankprune::graph::build::of_arch;
use rankprune::train::{Control, LrSchedule, TrainConfig, evaluate, train};
use rankprune::weights::Weights;
use std::sync::Arc;

fn tiny_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        lr: 0.02,
        seed: 3,
        ..TrainConfig::default()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn learns_a_learnable_label_well_above_chance() {
    let device = Device::flex();
    let arch = ArchSpec::parse("cfg_bn:8,M,16,M").unwrap().build(4);
    let (train_set, val_set) = (Arc::new(stripes(256, 4, 1)), Arc::new(stripes(64, 4, 2)));
    let mut reports = 0;
    let out = train(
        &of_arch(&arch),
        Weights::init(&arch, 0),
        train_set,
        val_set.clone(),
        &tiny_config(4),
        &device,
        |_| {
            reports += 1;
            Control::Continue
        },
    )
    .unwrap();
    assert_eq!(out.epochs_run, 4);
    assert_eq!(out.steps, 4 * 8);
    assert_eq!(reports, 4 * 8 + 4); // every step, and every epoch end with validation
    let model =
        rankprune::model::Vgg::from_weights(&arch, out.best_weights, "best", &device).unwrap();
    let r = evaluate(&model, &val_set, 64, None, &device).unwrap();
    assert!(
        r.top1 >= 0.9,
        "accuracy {} on a 4-class problem (chance 0.25)",
        r.top1
    );
    assert_eq!(Some(r), out.best_val);
}

/// `stripes` with its label's colour channel brightened: a problem a network that
/// averages its maps globally can learn (the stripe's position alone it can hardly tell).
fn tinted(n: usize, classes: usize, seed: u64) -> rankprune::data::ImageSet {
    assert!(classes <= 3);
    let mut set = stripes(n, classes, seed);
    let plane = 32 * 32;
    for i in 0..n {
        let c = set.labels[i] as usize;
        let at = i * 3 * plane + c * plane;
        for p in &mut set.pixels[at..at + plane] {
            *p = p.saturating_add(40);
        }
    }
    set
}

/// A residual network (resnet8 at width 1/4: one BasicBlock per stage, projection
/// shortcuts) learns a learnable problem, and resumes from its checkpoint exactly.
#[test]
fn residual_networks_train_and_resume_exactly() {
    use rankprune::model::GraphNet;
    let device = Device::flex();
    let graph = crate::common::resnet("resnet8@0.25", 3, 32);
    let (train_set, val_set) = (Arc::new(tinted(192, 3, 1)), Arc::new(tinted(60, 3, 2)));
    let run = |cfg: &TrainConfig, seed: u64| {
        let w = GraphNet::init_weights(&graph, seed);
        train(
            &graph,
            w,
            train_set.clone(),
            val_set.clone(),
            cfg,
            &device,
            |_| Control::Continue,
        )
        .unwrap()
    };
    let straight = run(&tiny_config(2), 0);
    let model = GraphNet::from_weights(&graph, straight.best_weights, "best", &device).unwrap();
    let r = evaluate(&model, &val_set, 64, None, &device).unwrap();
    assert!(r.top1 >= 0.9, "accuracy {} (chance 1/3)", r.top1);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(1);
    cfg.checkpoint_dir = Some(dir.path().to_path_buf());
    run(&cfg, 0);
    (cfg.epochs, cfg.resume) = (2, true);
    let resumed = run(&cfg, 99); // the checkpoint's weights, not these
    assert_eq!(resumed.steps, straight.steps);
    for (k, a) in &straight.weights.tensors {
        let diff = max_abs_diff(&a.data, &resumed.weights.tensors[k].data);
        assert!(diff <= 1e-5, "{k} differs by {diff} after resume");
    }
}

#[test]
fn resume_continues_exactly() {
    let device = Device::flex();
    let arch = ArchSpec::parse("cfg_bn:4,M,8,M").unwrap().build(3);
    let (train_set, val_set) = (Arc::new(stripes(96, 3, 5)), Arc::new(stripes(30, 3, 6)));
    let straight = train(
        &of_arch(&arch),
        Weights::init(&arch, 1),
        train_set.clone(),
        val_set.clone(),
        &tiny_config(2),
        &device,
        |_| Control::Continue,
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(1);
    cfg.checkpoint_dir = Some(dir.path().to_path_buf());
    train(
        &of_arch(&arch),
        Weights::init(&arch, 1),
        train_set.clone(),
        val_set.clone(),
        &cfg,
        &device,
        |_| Control::Continue,
    )
    .unwrap();
    cfg.epochs = 2;
    cfg.resume = true;
    // The starting weights are ignored on resume: the checkpoint's are used.
    let resumed = train(
        &of_arch(&arch),
        Weights::init(&arch, 99),
        train_set,
        val_set,
        &cfg,
        &device,
        |_| Control::Continue,
    )
    .unwrap();
    assert_eq!(
        (resumed.epochs_run, resumed.steps),
        (straight.epochs_run, straight.steps)
    );
    for (k, a) in &straight.weights.tensors {
        let b = &resumed.weights.tensors[k];
        let diff = max_abs_diff(&a.data, &b.data);
        assert!(diff <= 1e-5, "{k} differs by {diff} after resume");
    }
}

#[test]
fn a_diverging_loss_is_a_typed_failure() {
    let device = Device::flex();
    let arch = ArchSpec::parse("cfg:4,M").unwrap().build(3);
    let data = Arc::new(stripes(64, 3, 7));
    let cfg = TrainConfig {
        lr: 1e30,
        ..tiny_config(3)
    };
    let e = train(
        &of_arch(&arch),
        Weights::init(&arch, 0),
        data.clone(),
        data,
        &cfg,
        &device,
        |_| Control::Continue,
    )
    .unwrap_err();
    assert!(e.to_string().contains("non-finite training loss"), "{e}");
    assert_eq!(e.exit_code(), 1);
}

#[test]
fn max_steps_and_stop_callback_end_early() {
    let device = Device::flex();
    let arch = ArchSpec::parse("cfg_bn:4,M").unwrap().build(3);
    let data = Arc::new(stripes(96, 3, 8));
    let cfg = TrainConfig {
        max_steps: Some(2),
        ..tiny_config(5)
    };
    let out = train(
        &of_arch(&arch),
        Weights::init(&arch, 0),
        data.clone(),
        data.clone(),
        &cfg,
        &device,
        |_| Control::Continue,
    )
    .unwrap();
    assert_eq!(out.steps, 2);
    assert!(out.stopped_early);
    let out = train(
        &of_arch(&arch),
        Weights::init(&arch, 0),
        data.clone(),
        data,
        &tiny_config(5),
        &device,
        |r| {
            if r.step == 1 {
                Control::Stop
            } else {
                Control::Continue
            }
        },
    )
    .unwrap();
    assert_eq!(out.steps, 1);
}

#[test]
fn linear_schedule_reaches_the_optimizer_and_resumes_exactly() {
    let device = Device::flex();
    let arch = ArchSpec::parse("cfg_bn:4,M").unwrap().build(3);
    let data = Arc::new(stripes(96, 3, 9));
    // 2 epochs of 3 batches: 6 planned steps.
    let linear = TrainConfig {
        schedule: LrSchedule::Linear,
        ..tiny_config(2)
    };
    let run = |cfg: &TrainConfig, lrs: &mut Vec<f64>| {
        train(
            &of_arch(&arch),
            Weights::init(&arch, 0),
            data.clone(),
            data.clone(),
            cfg,
            &device,
            |r| {
                if r.val.is_none() {
                    lrs.push(r.lr);
                }
                Control::Continue
            },
        )
        .unwrap()
    };
    let mut lrs = Vec::new();
    let decayed = run(&linear, &mut lrs);
    // Step t of T = 6 runs at lr * (1 - t / T), by definition.
    let want: Vec<f64> = (0..6).map(|t| 0.02 * (1.0 - t as f64 / 6.0)).collect();
    assert_eq!(lrs.len(), 6);
    for (got, want) in lrs.iter().zip(&want) {
        assert!((got - want).abs() < 1e-12, "{lrs:?}");
    }
    let constant = run(&tiny_config(2), &mut Vec::new());
    let key = "features.0.weight";
    let gap = max_abs_diff(
        &decayed.weights.tensors[key].data,
        &constant.weights.tensors[key].data,
    );
    assert!(gap > 1e-6, "the decayed run trained like the constant one");

    // Stopped after the first epoch's checkpoint, then resumed: the same decay.
    let dir = tempfile::tempdir().unwrap();
    let first = TrainConfig {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        ..linear
    };
    train(
        &of_arch(&arch),
        Weights::init(&arch, 0),
        data.clone(),
        data.clone(),
        &first,
        &device,
        |r| match r.val {
            Some(_) => Control::Stop,
            None => Control::Continue,
        },
    )
    .unwrap();
    let rest = TrainConfig {
        resume: true,
        ..first
    };
    let mut rest_lrs = Vec::new();
    let resumed = run(&rest, &mut rest_lrs);
    assert_eq!(rest_lrs, lrs[3..].to_vec());
    let diff = max_abs_diff(
        &decayed.weights.tensors[key].data,
        &resumed.weights.tensors[key].data,
    );
    assert!(diff <= 1e-5, "resumed weights differ by {diff}");
}
