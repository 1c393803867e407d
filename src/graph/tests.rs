use super::build::{ResNetSpec, from_arch};
use super::groups::{Reader, groups};
use super::*;
use crate::arch::ArchSpec;

fn resnet(text: &str, classes: usize, side: usize) -> Graph {
    ResNetSpec::parse(text)
        .unwrap()
        .unwrap()
        .build(classes, side)
        .unwrap()
}

/// tests/fixtures/graph_counts.json, made by experiments/graph_counts.py with PyTorch.
#[test]
fn counts_equal_pytorchs() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/graph_counts.json"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(rows.len(), 5);
    for row in rows {
        let (model, classes, side) = (
            row["model"].as_str().unwrap(),
            row["classes"].as_u64().unwrap() as usize,
            row["side"].as_u64().unwrap() as usize,
        );
        let graph = match ResNetSpec::parse(model) {
            Some(spec) => spec.unwrap().build(classes, side).unwrap(),
            None => from_arch(&ArchSpec::parse(model).unwrap().build_sized(classes, side)).unwrap(),
        };
        let c = cost::count(&graph);
        assert_eq!(c.params, row["params"].as_u64().unwrap(), "{model} {side}");
        assert_eq!(c.macs, row["macs"].as_u64().unwrap(), "{model} {side}");
    }
}

#[test]
fn vgg_graphs_cost_what_the_unit_list_costs() {
    let vgg = ArchSpec::parse("vgg19_bn").unwrap().build(100);
    let c = cost::count(&from_arch(&vgg).unwrap());
    assert_eq!(c, crate::cost::count(&vgg));
    assert_eq!(c.params, 20_086_692);
    assert_eq!(format!("{:.2}", c.mflops()), "796.79");
    // The reference config: Tucker units and pruned channels.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/reference-search-config.json"
    );
    let compressed = crate::config::LayerConfig::load(std::path::Path::new(path))
        .unwrap()
        .apply(&vgg, "reference")
        .unwrap();
    let c = cost::count(&from_arch(&compressed).unwrap());
    assert_eq!(c, crate::cost::count(&compressed));
    assert_eq!(c.params, 661_164);
}

#[test]
fn resnet_names_shapes_and_stems() {
    let g = resnet("resnet18", 1000, 224);
    let shapes = g.shapes().unwrap();
    let at = |name: &str| shapes[g.find(name).unwrap()].clone();
    assert_eq!(at("maxpool"), vec![64, 56, 56]);
    assert_eq!(at("layer2.0.downsample.0"), vec![128, 28, 28]);
    assert_eq!(at("layer4.1.relu"), vec![512, 7, 7]);
    assert_eq!(at("fc"), vec![1000]);
    // The CIFAR stem below 128x128: no max-pool, 3x3 conv at stride 1.
    let g = resnet("resnet18", 10, 32);
    assert!(g.find("maxpool").is_none());
    assert_eq!(
        g.shapes().unwrap()[g.find("layer4.1.relu").unwrap()],
        vec![512, 4, 4]
    );
    // resnet20: 19 convs + 2 projections, 3 x 3 blocks; widths scale with @.
    let g = resnet("resnet20@0.5", 10, 32);
    let convs = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_)))
        .count();
    assert_eq!(convs, 21);
    assert_eq!(
        g.shapes().unwrap()[g.find("layer3.2.relu").unwrap()],
        vec![32, 8, 8]
    );
    for bad in [
        "resnet21",
        "resnet20@0",
        "resnet20@x",
        "resnet50",
        "resnet152",
    ] {
        assert!(ResNetSpec::parse(bad).unwrap().is_err(), "{bad}");
    }
    assert!(ResNetSpec::parse("vgg19").is_none());
}

#[test]
fn residual_streams_form_one_group_each() {
    let g = resnet("resnet20", 10, 32);
    let gs = groups(&g);
    let name = |i: usize| g.nodes[i].name.as_str();
    // Three streams plus each block's first conv alone.
    assert_eq!(gs.len(), 3 + 9);
    let stream = |first: &str| gs.iter().find(|x| x.name == first).unwrap();
    let s1 = stream("conv1");
    let members: Vec<&str> = s1.members.iter().map(|&i| name(i)).collect();
    assert_eq!(
        members,
        [
            "conv1",
            "layer1.0.conv2",
            "layer1.1.conv2",
            "layer1.2.conv2"
        ]
    );
    let bns: Vec<&str> = s1.bns.iter().map(|&i| name(i)).collect();
    assert_eq!(bns, ["bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2"]);
    let readers: Vec<&str> = s1
        .readers
        .iter()
        .map(|r| match r {
            Reader::Conv(i) => name(*i),
            Reader::Linear { .. } => "fc",
        })
        .collect();
    assert_eq!(
        readers,
        [
            "layer1.0.conv1",
            "layer1.1.conv1",
            "layer1.2.conv1",
            "layer2.0.conv1",
            "layer2.0.downsample.0"
        ]
    );
    let s3 = stream("layer3.0.conv2");
    let members: Vec<&str> = s3.members.iter().map(|&i| name(i)).collect();
    assert_eq!(
        members,
        [
            "layer3.0.conv2",
            "layer3.0.downsample.0",
            "layer3.1.conv2",
            "layer3.2.conv2"
        ]
    );
    assert_eq!(
        s3.readers.last(),
        Some(&Reader::Linear {
            node: g.find("fc").unwrap(),
            per_channel: 1
        })
    );
    // Inside a block, conv1's channels are its own: read by conv2 only.
    let inner = stream("layer2.1.conv1");
    assert_eq!(inner.members.len(), 1);
    assert_eq!(
        inner.readers,
        [Reader::Conv(g.find("layer2.1.conv2").unwrap())]
    );
    // Every conv is in exactly one group.
    let total: usize = gs.iter().map(|x| x.members.len()).sum();
    assert_eq!(total, 21);
}

#[test]
fn a_vgg_has_one_group_per_conv() {
    let arch = ArchSpec::parse("cfg_bn:8,M,16,M")
        .unwrap()
        .build_sized(10, 64);
    let g = from_arch(&arch).unwrap();
    let gs = groups(&g);
    assert_eq!(gs.len(), 2);
    assert_eq!(
        gs[1].readers,
        [Reader::Linear {
            node: g.find("classifier").unwrap(),
            per_channel: 16 * 16
        }]
    );
}

fn def(name: &str, op: Op, inputs: &[&str]) -> NodeDef {
    NodeDef {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
    }
}

fn c(cin: usize, cout: usize) -> Op {
    Op::Conv(Conv {
        in_channels: cin,
        out_channels: cout,
        kernel: 3,
        stride: 1,
        padding: 1,
        bias: false,
    })
}

#[test]
fn nodes_in_any_order_are_sorted_and_bad_graphs_name_the_node() {
    // Given out of order: b reads a.
    let g = Graph::new(
        "t",
        [3, 8, 8],
        vec![def("b", c(4, 4), &["a"]), def("a", c(3, 4), &["input"])],
    )
    .unwrap();
    assert_eq!(g.nodes[0].name, "a");
    assert_eq!(g.nodes[1].inputs, vec![0]);
    let err = |defs: Vec<NodeDef>| Graph::new("t", [3, 8, 8], defs).unwrap_err().to_string();
    let e = err(vec![
        def("a", c(3, 4), &["input"]),
        def("b", c(4, 4), &["a", "d"]),
        def("d", Op::Add, &["b", "a"]),
    ]);
    assert!(e.contains("is on a cycle"), "{e}");
    let e = err(vec![
        def("a", c(3, 4), &["input"]),
        def("b", c(5, 4), &["a"]),
    ]);
    assert_eq!(e, "node b (Conv): takes 5 input channels, receives 4");
    let e = err(vec![
        def("a", c(3, 4), &["input"]),
        def("b", c(3, 6), &["input"]),
        def("s", Op::Add, &["a", "b"]),
    ]);
    assert!(
        e.starts_with("node s (Add): adds inputs of different shapes"),
        "{e}"
    );
    let e = err(vec![def("a", c(3, 4), &["x"])]);
    assert!(e.contains("reads \"x\", which no node produces"), "{e}");
    let e = err(vec![def("a", c(3, 4), &[]), def("a", c(3, 4), &[])]);
    assert!(e.contains("used twice"), "{e}");
    let e = err(vec![
        def("a", c(3, 4), &[]),
        def(
            "l",
            Op::Linear {
                in_features: 4,
                out_features: 2,
            },
            &["a"],
        ),
    ]);
    assert!(e.contains("node l (Linear): takes 4 features"), "{e}");
}
