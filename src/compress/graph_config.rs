//! A layer config applied to a [`Graph`]: its Tucker-2 ranks first
//! ([`super::graph_tucker`]), then its pruning ratios by dependency group
//! ([`super::group_prune`]), named as in the decomposed graph (a group by its first
//! conv: `layer2.0.conv2`, or `layer2.0.conv2_tucker_2` once that conv is decomposed).

use super::graph_tucker::{decompose_graph, decomposed_layout};
use super::group_prune::{prune_groups, pruned_layout};
use crate::config::LayerConfig;
use crate::graph::Graph;
use crate::weights::Weights;
use std::collections::BTreeMap;

/// `graph` and `weights` compressed as `config` says; errors name the layer or group.
pub fn apply_config(
    graph: &Graph,
    weights: &Weights,
    config: &LayerConfig,
) -> Result<(Graph, Weights), String> {
    let (ranks, ratios) = parts(config);
    let (g, w) =
        decompose_graph(graph, weights, &ranks).map_err(|e| format!("decomposition: {e}"))?;
    prune_groups(&g, &w, &ratios).map_err(|e| format!("pruning: {e}"))
}

/// The graph [`apply_config`] gives, without weights (no factorisation, no norms): the
/// compressed network's layout, for counting it or checking weights against it.
pub fn config_layout(graph: &Graph, config: &LayerConfig) -> Result<Graph, String> {
    let (ranks, ratios) = parts(config);
    let g = decomposed_layout(graph, &ranks).map_err(|e| format!("decomposition: {e}"))?;
    pruned_layout(&g, &ratios).map_err(|e| format!("pruning: {e}"))
}

/// The config's ranks and ratios by layer (group) name.
type Parts = (BTreeMap<String, [usize; 2]>, BTreeMap<String, f64>);

fn parts(config: &LayerConfig) -> Parts {
    let ranks = config
        .decomposition
        .iter()
        .flat_map(|d| d.ranks.iter().map(|(k, v)| (k.clone(), *v)))
        .collect();
    let ratios = config
        .pruning
        .iter()
        .flat_map(|p| p.ratios.iter().map(|(k, v)| (k.clone(), *v)))
        .collect();
    (ranks, ratios)
}
