//! A layer config applied to a [`Graph`]: its Tucker-2 ranks first
//! ([`super::graph_tucker`]), then its pruning ratios by dependency group
//! ([`super::group_prune`]), named as in the decomposed graph (a group by its first
//! conv: `layer2.0.conv2`, or `layer2.0.conv2_tucker_2` once that conv is decomposed).

use super::graph_tucker::decompose_graph;
use super::group_prune::prune_groups;
use crate::config::LayerConfig;
use crate::graph::Graph;
use crate::weights::Weights;

/// `graph` and `weights` compressed as `config` says; errors name the layer or group.
pub fn apply_config(
    graph: &Graph,
    weights: &Weights,
    config: &LayerConfig,
) -> Result<(Graph, Weights), String> {
    let ranks = config
        .decomposition
        .iter()
        .flat_map(|d| d.ranks.iter().map(|(k, v)| (k.clone(), *v)))
        .collect();
    let (g, w) =
        decompose_graph(graph, weights, &ranks).map_err(|e| format!("decomposition: {e}"))?;
    let ratios = config
        .pruning
        .iter()
        .flat_map(|p| p.ratios.iter().map(|(k, v)| (k.clone(), *v)))
        .collect();
    prune_groups(&g, &w, &ratios).map_err(|e| format!("pruning: {e}"))
}
