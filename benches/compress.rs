//! Benchmark (not a test) on a randomly initialised vgg19_bn: VBMF rank recommendation,
//! Tucker-2 decomposition, SLAMP ratios and applying the full reference config.
//! Prints a Markdown table.
//!
//! Run: cargo bench --bench compress

use rankprune::arch::ArchSpec;
use rankprune::compress::decompose::{decompose_model, ranks_config, recommend_ranks};
use rankprune::compress::prune::prune_model;
use rankprune::compress::slamp::{PruneTarget, recommend_ratios};
use rankprune::compress::vbmf::evbmf;
use rankprune::weights::Weights;
use std::time::Instant;

fn main() {
    let arch = ArchSpec::parse("vgg19_bn").unwrap().build(100);
    let weights = Weights::init(&arch, 0);
    println!("| step | layers | seconds |");
    println!("|---|---|---|");

    let t = Instant::now();
    let recs = recommend_ranks(&arch, &weights, 0.0, |_| {}).unwrap();
    println!(
        "| VBMF recommendation (random init) | {} | {:.3} |",
        recs.len(),
        t.elapsed().as_secs_f64()
    );

    // Random weights are pure noise (VBMF rank 1); time HOOI at the reference's ranks,
    // which are what a trained model gives.
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/reference-search-config.json"
    ))
    .unwrap();
    let mut config = rankprune::config::LayerConfig::from_json(&reference, "ref").unwrap();
    config.pruning = None;
    let t = Instant::now();
    let (decomposed, dw, layers) =
        decompose_model(&arch, &weights, &config, "ref", None, |_| {}).unwrap();
    let sweeps: usize = layers.iter().map(|l| l.hooi_iterations).sum();
    println!(
        "| Tucker-2 HOSVD+HOOI at the reference ranks ({sweeps} HOOI sweeps) | {} | {:.3} |",
        layers.len(),
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let ratios = recommend_ratios(
        &decomposed,
        &dw,
        PruneTarget::FlopsReduction(2.0),
        0.9,
        &rankprune::cost::count(&decomposed),
    )
    .unwrap();
    println!(
        "| SLAMP ratios, reference-decomposed model, 2x FLOPs target | {} | {:.4} |",
        ratios.len(),
        t.elapsed().as_secs_f64()
    );

    let full = rankprune::config::LayerConfig::from_json(&reference, "ref").unwrap();
    let t = Instant::now();
    let (_, _, _) = decompose_model(&arch, &weights, &full, "ref", None, |_| {}).unwrap();
    let (pruned, _, _) = prune_model(&arch, &decomposed, &dw, &full, "ref").unwrap();
    println!(
        "| full reference config (Tucker-2 then pruning) to {:.2}M params | {} | {:.3} |",
        rankprune::cost::count(&pruned).mparams(),
        layers.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let _ = prune_model(&arch, &decomposed, &dw, &full, "ref").unwrap();
    println!(
        "| pruning step alone (reference ratios) | {} | {:.4} |",
        ratios.len(),
        t.elapsed().as_secs_f64()
    );

    let ranks_at_vbmf = ranks_config(&arch, &recs);
    let t = Instant::now();
    let (_, _, layers) =
        decompose_model(&arch, &weights, &ranks_at_vbmf, "vbmf", None, |_| {}).unwrap();
    println!(
        "| Tucker-2 HOSVD+HOOI at the VBMF ranks | {} | {:.3} |",
        layers.len(),
        t.elapsed().as_secs_f64()
    );

    // One large unfolding alone (512 x 4608).
    let w = weights.get("features.30.weight").unwrap();
    let y = rankprune::compress::tucker::unfold0(
        &w.data.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        512,
        512,
        9,
    );
    let t = Instant::now();
    let est = evbmf(&y);
    println!(
        "| EVBMF of one 512 x 4608 unfolding (rank {}) | 1 | {:.3} |",
        est.rank,
        t.elapsed().as_secs_f64()
    );
}
