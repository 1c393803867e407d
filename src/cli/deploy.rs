//! `rankprune export-model`: a model as a file another engine runs.

use clap::{Args, ValueEnum};
use rankprune::deploy::{fold, onnx};
use rankprune::outpath::{check_output, write_output};
use rankprune::{Error, Result};
use std::path::{Path, PathBuf};

/// A format `export-model` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModelFormat {
    /// ONNX, opset 13 (onnxruntime, TensorRT, OpenVINO, ...)
    Onnx,
}

#[derive(Args)]
pub struct ExportModelArgs {
    /// Weights (.safetensors, .pt, .pth) of the model `--arch` and `--config` describe
    #[arg(long)]
    pub weights: PathBuf,
    #[arg(long, value_enum, default_value = "onnx")]
    pub format: ModelFormat,
    /// Output file (its folder must exist)
    #[arg(long)]
    pub out: PathBuf,
    /// Keep BatchNormalization nodes instead of folding them into the convs
    #[arg(long)]
    pub keep_bn: bool,
}

impl ExportModelArgs {
    /// Refuses, before any work, an `--out` that is one of the inputs (`config`: the
    /// `--config` file, if any) or lies in a folder that does not exist.
    pub fn check(&self, config: Option<&Path>) -> Result<()> {
        let out = &self.out;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(Error::BadInput(format!(
                "--out {}: folder {} does not exist",
                out.display(),
                dir.display()
            )));
        }
        let mut inputs = vec![("--weights", self.weights.as_path())];
        inputs.extend(config.map(|c| ("--config", c)));
        check_output(out, "--out", &inputs)
    }
}

/// `export-model`: the network as ONNX, BatchNorms folded into the conv before them
/// (where that conv feeds nothing else) unless `--keep-bn`.
pub fn run_export_model(graph: &rankprune::graph::Graph, args: ExportModelArgs) -> Result<()> {
    use onnx_protobuf::Message;
    let w = super::graph_weights(graph, &args.weights)?;
    let (graph, w) = match args.keep_bn {
        true => (graph.clone(), w),
        false => fold::fold_graph_batch_norms(graph, w),
    };
    let bytes = onnx::graph_model(&graph, &w)
        .write_to_bytes()
        .map_err(|e| rankprune::Error::Failure(e.to_string()))?;
    write_output(&args.out, &bytes)?;
    let [c, h, wd] = graph.input;
    println!(
        "wrote {} ({:.1} MB, ONNX opset {}, BatchNorm {}): input \"{}\" [batch, {c}, {h}, {wd}], output \"{}\" [batch, {}]",
        args.out.display(),
        bytes.len() as f64 / 1e6,
        onnx::OPSET,
        if args.keep_bn {
            "kept"
        } else {
            "folded into the convs"
        },
        onnx::INPUT,
        onnx::OUTPUT,
        graph.num_classes().unwrap_or(0),
    );
    Ok(())
}

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub data: super::train::DataArgs,
    /// Weights (.safetensors, .pt, .pth) of the model `--arch` and `--config` describe
    #[arg(long)]
    pub weights: PathBuf,
    /// How many test images, from the first
    #[arg(long, default_value_t = 16)]
    pub limit: usize,
    /// Output JSON: the normalised images (`shape`, flat `images`), `labels`, `logits`
    #[arg(long)]
    pub out: PathBuf,
}

impl PredictArgs {
    /// Refuses, before any work, `--limit 0` and an `--out` that is one of the inputs
    /// (`config`: the `--config` file, if any).
    pub fn check(&self, config: Option<&Path>) -> Result<()> {
        super::at_least_one("--limit", self.limit)?;
        let mut inputs = self.data.inputs();
        inputs.push(("--weights".into(), self.weights.clone()));
        inputs.extend(config.map(|c| ("--config".into(), c.to_path_buf())));
        check_output(&self.out, "--out", &inputs)
    }
}

/// `predict`: writes the logits of `--weights` of `graph` (a VGG plan's, a residual or
/// an imported network) on the first `limit` test images, with the images themselves as
/// the model sees them (normalised): what other engines' outputs are checked against.
pub fn run_predict(graph: &rankprune::graph::Graph, args: PredictArgs) -> Result<()> {
    let classes = graph
        .num_classes()
        .map_err(|e| Error::BadInput(e.to_string()))?;
    let set = args.data.test_for(classes, graph.input[1])?;
    let device = burn::tensor::Device::flex();
    let w = super::graph_weights(graph, &args.weights)?;
    let model = rankprune::model::GraphNet::from_weights(graph, w, "<predict>", &device)?;
    write_predictions(&model, &set, classes, &args, &device)
}

/// Writes the logits of the first `--limit` images of `set` with the images.
fn write_predictions(
    model: &impl rankprune::model::Classifier,
    set: &rankprune::data::ImageSet,
    classes: usize,
    args: &PredictArgs,
    device: &burn::tensor::Device,
) -> Result<()> {
    let n = args.limit.min(set.len());
    if n == 0 {
        return Err(Error::BadInput("--data: no test images to predict".into()));
    }
    let order: Vec<usize> = (0..n).collect();
    let batch = rankprune::data::batches::batch_at(set, &order, None);
    let logits = model
        .logits(rankprune::train::images_tensor(&batch, device))
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Failure(format!("{e:?}")))?;
    let v = serde_json::json!({
        "shape": [n, 3, set.side, set.side],
        "images": batch.images,
        "labels": batch.labels,
        "logits": logits.chunks(classes).collect::<Vec<_>>(),
    });
    write_output(&args.out, v.to_string().as_bytes())?;
    println!("wrote {}: logits of {n} test images", args.out.display());
    Ok(())
}
