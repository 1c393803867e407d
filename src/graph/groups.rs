//! Dependency groups: the convs whose output channels must be pruned together.
//!
//! One walk over the graph gives each tensor the set of convs whose channels it
//! carries. BatchNorm, ReLU and pools pass their input's set on; an Add joins its
//! inputs' sets into one (union-find), as DepGraph (Fang et al., CVPR 2023) groups the
//! layers a residual sum couples. Each group lists its member convs (whose filters are
//! removed together), the BatchNorms on its channels and the layers that read them.
//! A group is named by its first member in the graph's order.

use super::{Graph, Op};

/// A layer that reads a group's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A conv's input channels (node index).
    Conv(usize),
    /// A Linear after Flatten; each channel owns `per_channel` consecutive features.
    Linear { node: usize, per_channel: usize },
}

impl Reader {
    /// The reading node's index.
    pub fn node(&self) -> usize {
        match *self {
            Reader::Conv(i) | Reader::Linear { node: i, .. } => i,
        }
    }
}

/// Convs tied to one channel set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The first member's name.
    pub name: String,
    /// Member convs, in graph order.
    pub members: Vec<usize>,
    /// BatchNorms over the group's channels.
    pub bns: Vec<usize>,
    pub readers: Vec<Reader>,
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Every conv's group, in the order of the groups' first members.
pub fn groups(graph: &Graph) -> Vec<Group> {
    let n = graph.nodes.len();
    let shapes = graph.shapes().expect("a built graph has shapes");
    // source[i]: the conv whose channels node i's output carries (None: the image's,
    // or features after a Linear).
    let mut source: Vec<Option<usize>> = vec![None; n];
    let mut parent: Vec<usize> = (0..n).collect();
    let input_source = |source: &[Option<usize>], i: usize| -> Option<usize> {
        graph.nodes[i].inputs.first().and_then(|&j| source[j])
    };
    for (i, node) in graph.nodes.iter().enumerate() {
        source[i] = match &node.op {
            Op::Conv(_) => Some(i),
            Op::Linear { .. } => None,
            Op::Add => {
                let sets: Vec<usize> = node.inputs.iter().filter_map(|&j| source[j]).collect();
                for w in sets.windows(2) {
                    let (a, b) = (find(&mut parent, w[0]), find(&mut parent, w[1]));
                    // The earlier node stays the root, so a group's root is its first.
                    parent[a.max(b)] = a.min(b);
                }
                sets.first().copied()
            }
            _ => input_source(&source, i),
        };
    }
    let mut out: Vec<Group> = Vec::new();
    let mut slot: Vec<Option<usize>> = vec![None; n];
    for (i, node) in graph.nodes.iter().enumerate() {
        if let Op::Conv(_) = node.op {
            let root = find(&mut parent, i);
            let g = *slot[root].get_or_insert_with(|| {
                out.push(Group {
                    name: graph.nodes[root].name.clone(),
                    members: Vec::new(),
                    bns: Vec::new(),
                    readers: Vec::new(),
                });
                out.len() - 1
            });
            out[g].members.push(i);
        }
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        let Some(src) = input_source(&source, i) else {
            continue;
        };
        let g = slot[find(&mut parent, src)].expect("every conv has a group");
        match &node.op {
            Op::Conv(_) => out[g].readers.push(Reader::Conv(i)),
            Op::BatchNorm { .. } => out[g].bns.push(i),
            Op::Linear { .. } => {
                // The Flatten before it: features per channel = its input's H * W.
                let flatten = node.inputs[0];
                let map = &graph.input_shapes(&shapes, flatten)[0];
                out[g].readers.push(Reader::Linear {
                    node: i,
                    per_channel: map.iter().skip(1).product(),
                });
            }
            _ => {}
        }
    }
    out
}
