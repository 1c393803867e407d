//! The per-layer latency table against whole-model timings, on this machine. A test
//! binary of its own, so that no other test runs beside its timings (cargo runs test
//! binaries one after another).

use burn::tensor::Device;
use rankprune::arch::ArchSpec;
use rankprune::graph::build::of_arch;
use rankprune::model::GraphNet;
use rankprune::model::latency::{LatencyTable, measure};

/// A small VGG and a small ResNet at batch 16: the table's sum (each layer timed alone)
/// is within 15% of the whole model's measured latency.
#[test]
fn the_tables_sum_is_within_15_percent_of_the_measured_latency() {
    rankprune::model::keep_freed_memory();
    let vgg = of_arch(&ArchSpec::parse("vgg11_bn@0.5").unwrap().build(10));
    let resnet = rankprune::network::resolve("resnet8", 10, 32, &rankprune::network::FLAGS)
        .unwrap()
        .graph;
    for (name, graph) in [("vgg11_bn@0.5", vgg), ("resnet8", resnet)] {
        let mut table = LatencyTable::new(16);
        let predicted = table.predict(&graph);
        let net = GraphNet::from_weights(
            &graph,
            GraphNet::init_weights(&graph, 0),
            "init",
            &Device::flex(),
        )
        .unwrap();
        let measured = measure(&net, 16).total_ms;
        let error = (predicted - measured) / measured;
        println!(
            "{name}: table {predicted:.3} ms, measured {measured:.3} ms, error {:+.1}%",
            100.0 * error
        );
        assert!(
            error.abs() <= 0.15,
            "{name} at batch 16: the table says {predicted:.3} ms, the model takes {measured:.3} ms"
        );
        // A second prediction reads the table: no layer is timed again.
        let entries = table.entries.len();
        assert_eq!(table.predict(&graph), predicted);
        assert_eq!(table.entries.len(), entries);
    }
}
