//! Benchmark (not a test) on a randomly initialised vgg19_bn's graph: VBMF rank
//! recommendation, Tucker-2 decomposition, group SLAMP ratios and applying the full
//! reference config.
//! Prints a Markdown table.
//!
//! Run: cargo bench --bench compress

use rankprune::arch::ArchSpec;
use rankprune::compress::decompose::recommend_graph_ranks;
use rankprune::compress::graph_config::{apply_config, ranks, ratios as config_ratios};
use rankprune::compress::graph_tucker::decompose_graph_with;
use rankprune::compress::group_prune::{prune_groups, recommend_group_ratios};
use rankprune::compress::slamp::PruneTarget;
use rankprune::compress::vbmf::evbmf;
use rankprune::graph::build::of_arch;
use rankprune::graph::cost::count;
use rankprune::weights::Weights;
use std::time::Instant;

fn main() {
    let arch = ArchSpec::parse("vgg19_bn").unwrap().build(100);
    let weights = Weights::init(&arch, 0);
    let graph = of_arch(&arch);
    println!("| step | layers | seconds |");
    println!("|---|---|---|");

    let t = Instant::now();
    let recs = recommend_graph_ranks(&graph, &weights, 0.0, |_| {}).unwrap();
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
        decompose_graph_with(&graph, &weights, &ranks(&config), None, |_| {}).unwrap();
    let sweeps: usize = layers.iter().map(|l| l.hooi_iterations).sum();
    println!(
        "| Tucker-2 HOSVD+HOOI at the reference ranks ({sweeps} HOOI sweeps) | {} | {:.3} |",
        layers.len(),
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let ratios = recommend_group_ratios(
        &decomposed,
        &dw,
        PruneTarget::FlopsReduction(2.0),
        0.9,
        &count(&decomposed),
    )
    .unwrap();
    println!(
        "| SLAMP ratios, reference-decomposed model, 2x FLOPs target | {} | {:.4} |",
        ratios.len(),
        t.elapsed().as_secs_f64()
    );

    let full = rankprune::config::LayerConfig::from_json(&reference, "ref").unwrap();
    let t = Instant::now();
    let (pruned, _) = apply_config(&graph, &weights, &full).unwrap();
    println!(
        "| full reference config (Tucker-2 then pruning) to {:.2}M params | {} | {:.3} |",
        count(&pruned).mparams(),
        layers.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let _ = prune_groups(&decomposed, &dw, &config_ratios(&full)).unwrap();
    println!(
        "| pruning step alone (reference ratios) | {} | {:.4} |",
        ratios.len(),
        t.elapsed().as_secs_f64()
    );

    let ranks_at_vbmf = recs.iter().map(|r| (r.layer.clone(), r.chosen)).collect();
    let t = Instant::now();
    let (_, _, layers) =
        decompose_graph_with(&graph, &weights, &ranks_at_vbmf, None, |_| {}).unwrap();
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
