//! Which nodes of a graph the inference engine runs as one step: a conv with the
//! BatchNorm that only it feeds folded into its weights, and a ReLU that is the only
//! reader of a conv, BatchNorm, Add or Linear applied to that node's values as they are
//! written. The latency table times the same steps.

use super::super::graph_net::uses;
use crate::graph::{Graph, Op};

/// One step: nodes `first..=last` of the graph, whose value is node `last`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: usize,
    pub last: usize,
    /// The BatchNorm folded into the conv `first` (node `first + 1`).
    pub bn: Option<usize>,
    /// Whether the step ends with a ReLU (node `last`).
    pub relu: bool,
}

/// `graph`'s steps, in order; every node is in exactly one.
pub fn spans(graph: &Graph) -> Vec<Span> {
    let nodes = &graph.nodes;
    let (readers, _) = uses(graph);
    // Whether node `i + 1` exists, is `want` and reads only node `i`, its only reader.
    let next_reads = |i: usize, want: &dyn Fn(&Op) -> bool| {
        readers[i] == 1
            && nodes
                .get(i + 1)
                .is_some_and(|n| want(&n.op) && n.inputs == [i])
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < nodes.len() {
        let mut span = Span {
            first: i,
            last: i,
            bn: None,
            relu: false,
        };
        let op = &nodes[i].op;
        if matches!(op, Op::Conv(_)) && next_reads(i, &|o| matches!(o, Op::BatchNorm { .. })) {
            span.bn = Some(i + 1);
            span.last = i + 1;
        }
        let fusable = matches!(
            op,
            Op::Conv(_) | Op::BatchNorm { .. } | Op::Add | Op::Linear { .. }
        );
        if fusable && next_reads(span.last, &|o| *o == Op::Relu) {
            span.relu = true;
            span.last += 1;
        }
        out.push(span);
        i = span.last + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;
    use crate::graph::build::of_arch;

    /// A VGG's conv, BN and ReLU are one step; a ResNet's block ends in one Add+ReLU
    /// step, and a conv whose output two nodes read (the shortcut's source) is not fused.
    #[test]
    fn convs_fold_their_batchnorm_and_relu() {
        let g = of_arch(&ArchSpec::parse("cfg_bn:8,M,8").unwrap().build(10));
        let kinds: Vec<(&str, bool, bool)> = spans(&g)
            .iter()
            .map(|s| (g.nodes[s.first].op.kind(), s.bn.is_some(), s.relu))
            .collect();
        assert_eq!(
            kinds,
            [
                ("Conv", true, true),
                ("MaxPool", false, false),
                ("Conv", true, true),
                ("Flatten", false, false),
                ("Linear", false, false),
            ]
        );
        let r = crate::network::resolve("resnet8", 10, 32, &crate::network::FLAGS)
            .unwrap()
            .graph;
        let spans = spans(&r);
        let covered: usize = spans.iter().map(|s| s.last - s.first + 1).sum();
        assert_eq!(covered, r.nodes.len());
        let adds: Vec<&Span> = spans
            .iter()
            .filter(|s| r.nodes[s.first].op == Op::Add)
            .collect();
        assert!(!adds.is_empty() && adds.iter().all(|s| s.relu), "{adds:?}");
    }
}
