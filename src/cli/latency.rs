//! `rankprune latency`: a model's inference latency on this machine, predicted from the
//! per-layer latency table (measured once per layer shape, cached in a file) and, with
//! `--measure`, measured whole beside it, with the table's error.

use clap::Args;
use rankprune::graph::Graph;
use rankprune::model::GraphNet;
use rankprune::model::latency::{LatencyTable, layers, measure};
use rankprune::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct LatencyArgs {
    /// Images per forward pass
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The latency table (JSON): read when it was measured on this machine at this
    /// batch size, extended with the layers it lacks, and written back
    #[arg(long, default_value = "latency-table.json")]
    pub table: PathBuf,
    /// Also time the whole model and print the table's error
    #[arg(long)]
    pub measure: bool,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    batch: usize,
    layers: Vec<Row>,
    predicted_ms: f64,
    measured_ms: Option<f64>,
    /// (predicted - measured) / measured.
    error: Option<f64>,
}

#[derive(Serialize)]
struct Row {
    node: String,
    layer: String,
    /// From the table (the layer timed alone).
    ms: f64,
    /// Timed within the whole model, with `--measure`.
    in_model_ms: Option<f64>,
}

pub fn run_latency(graph: &Graph, args: LatencyArgs) -> Result<()> {
    if args.batch == 0 {
        return Err(Error::BadInput("--batch 0: allowed >= 1".into()));
    }
    let mut table = LatencyTable::open(&args.table, args.batch)
        .map_err(|e| Error::BadInput(format!("--table {e}")))?;
    let rows = table.rows(graph);
    table.save(&args.table).map_err(|e| {
        Error::Failure(format!(
            "writing the latency table {}: {e}",
            args.table.display()
        ))
    })?;
    let predicted_ms: f64 = rows.iter().map(|r| r.1).sum();
    let measured = args.measure.then(|| {
        let weights = GraphNet::init_weights(graph, 0);
        let net = GraphNet::from_weights(graph, weights, "init", &burn::tensor::Device::flex())
            .expect("fresh weights fit their graph");
        measure(&net, args.batch)
    });
    let measured_ms = measured.as_ref().map(|m| m.total_ms);
    let report = Report {
        machine: table.machine.clone(),
        batch: args.batch,
        layers: layers(graph)
            .into_iter()
            .zip(rows)
            .enumerate()
            .map(|(k, (layer, (key, ms)))| Row {
                node: layer.name,
                layer: key,
                ms,
                in_model_ms: measured.as_ref().map(|m| m.layer_ms[k]),
            })
            .collect(),
        predicted_ms,
        measured_ms,
        error: measured_ms.map(|m| (predicted_ms - m) / m),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serialises")
        );
        return Ok(());
    }
    println!("{} at batch {}", report.machine, report.batch);
    println!();
    println!("| node | layer | table ms | in the model ms |");
    println!("|---|---|---|---|");
    for r in &report.layers {
        let inside = r.in_model_ms.map_or("-".into(), |v| format!("{v:.3}"));
        println!("| {} | {} | {:.3} | {inside} |", r.node, r.layer, r.ms);
    }
    println!();
    println!("predicted (table sum): {predicted_ms:.3} ms");
    if let (Some(m), Some(e)) = (report.measured_ms, report.error) {
        println!(
            "measured (whole model): {m:.3} ms; table error {:+.1}%",
            100.0 * e
        );
    }
    Ok(())
}
