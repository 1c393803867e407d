"""Load a rankprune model into PyTorch: an nn.Module built from the architecture name and
a layer config (the reference JSON format, or `rankprune export`'s output), with
rankprune's safetensors weights loaded into it. Needs only torch and safetensors.

    import torch, rankprune_torch
    model = rankprune_torch.load("vgg19_bn", "model.safetensors", "config.json")
    x = torch.randn(8, 3, 32, 32)        # normalised images, as rankprune's data pipeline
    logits = model(x)                    # [8, classes]

The layer plan (which convs, pools, BatchNorms) comes from the architecture name and which
convs are Tucker-2 units from the config's decomposition ranks; every channel count comes
from the weights' shapes, so pruned models need no pruning arithmetic here. Parameter
names match rankprune's (PyTorch's) keys: `features.3.weight`, `features.3_tucker_1.weight`,
`classifier.bias`.
"""

import json

import torch
from safetensors.torch import load_file
from torch import nn

# torchvision's VGG plans; "M" is a 2x2 max-pool.
PLANS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def plan(arch):
    """(items, batch_norm) for `vgg19_bn`, `vgg16@0.25`, `cfg_bn:16,M,32`: items are "C"
    (a conv) or "M"; widths are left to the weights."""
    name = arch.split("@")[0]
    if name.startswith("cfg"):
        head, _, items = name.partition(":")
        if head not in ("cfg", "cfg_bn") or not items:
            raise ValueError(f"architecture {arch!r}: expected cfg:16,M,32 or cfg_bn:...")
        return ["M" if i == "M" else "C" for i in items.split(",")], head == "cfg_bn"
    bn = name.endswith("_bn")
    base = name[: -len("_bn")] if bn else name
    if base not in PLANS:
        raise ValueError(f"architecture {arch!r}: expected one of {sorted(PLANS)} "
                         "(optionally _bn, @WIDTH) or cfg[_bn]:...")
    return ["M" if i == "M" else "C" for i in PLANS[base]], bn


class RankpruneVGG(nn.Module):
    """A VGG whose convs may be Tucker-2 units (1x1, kxk, 1x1; bias on the last only)."""

    def __init__(self, arch, state, ranks):
        super().__init__()
        items, bn = plan(arch)
        self.features = nn.Module()
        self.steps = []  # (kind, module names) in execution order
        index = 0
        for item in items:
            if item == "M":
                self.features.add_module(str(index), nn.MaxPool2d(2, 2))
                self.steps.append(("pool", [str(index)]))
                index += 1
                continue
            name = f"features.{index}"
            subs = [f"{index}_tucker_{i}" for i in range(3)] if name in ranks else [str(index)]
            for sub in subs:
                w = state[f"features.{sub}.weight"]
                out_c, in_c, k, _ = w.shape
                has_bias = f"features.{sub}.bias" in state
                self.features.add_module(
                    sub, nn.Conv2d(in_c, out_c, k, padding=k // 2, bias=has_bias))
            step = list(subs)
            if bn:
                channels = state[f"features.{index + 1}.weight"].shape[0]
                self.features.add_module(str(index + 1), nn.BatchNorm2d(channels))
                step.append(str(index + 1))
            self.steps.append(("conv", step, bn))
            index += 3 if bn else 2
        out_f, in_f = state["classifier.weight"].shape
        self.classifier = nn.Linear(in_f, out_f)

    def forward(self, x):
        for step in self.steps:
            if step[0] == "pool":
                x = getattr(self.features, step[1][0])(x)
                continue
            for sub in step[1]:
                x = getattr(self.features, sub)(x)
            x = torch.relu(x)
        return self.classifier(torch.flatten(x, 1))


def load(arch, weights, config=None):
    """The model of `arch` (e.g. "vgg19_bn") with the Tucker units `config` (a path or a
    dict; None for none) decomposes, weights loaded from the `weights` safetensors file,
    in eval mode."""
    if isinstance(config, str):
        with open(config) as f:
            config = json.load(f)
    ranks = ((config or {}).get("decomposition") or {}).get("ranks") or {}
    state = load_file(weights)
    model = RankpruneVGG(arch, state, ranks)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit {arch} with that config: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


class OnnxGraph(nn.Module):
    """Any graph `rankprune compress` or `export-model` writes as ONNX (residual networks
    included), run with torch ops: Conv, BatchNormalization, Relu, MaxPool, AveragePool,
    GlobalAveragePool, Add, Flatten, Gemm and Identity. Every initializer becomes a
    parameter (a buffer for BatchNorm statistics) under its PyTorch key, so the model can
    be fine-tuned. Needs the `onnx` package to read the file."""

    def __init__(self, model):
        super().__init__()
        from onnx import numpy_helper
        self.nodes = []
        self.keys = {}
        for i, t in enumerate(model.graph.initializer):
            value = torch.from_numpy(numpy_helper.to_array(t).copy())
            key = f"p{i}"
            if t.name.endswith(("running_mean", "running_var")):
                self.register_buffer(key, value)
            else:
                self.register_parameter(key, nn.Parameter(value))
            self.keys[t.name] = key
        for n in model.graph.node:
            attrs = {a.name: (list(a.ints) if a.ints else (a.f if a.type == 1 else a.i))
                     for a in n.attribute}
            self.nodes.append((n.op_type, list(n.input), list(n.output), attrs))
        self.input = model.graph.input[0].name
        self.output = model.graph.output[0].name

    def forward(self, x):
        env = {self.input: x}
        get = lambda name: getattr(self, self.keys[name]) if name in self.keys else env[name]
        for op, ins, outs, a in self.nodes:
            v = [get(i) for i in ins if i]
            if op == "Conv":
                pad, stride = a.get("pads", [0] * 4), a.get("strides", [1, 1])
                y = nn.functional.conv2d(v[0], v[1], v[2] if len(v) > 2 else None,
                                         stride=stride, padding=pad[:2])
            elif op == "BatchNormalization":
                y = nn.functional.batch_norm(v[0], v[3], v[4], v[1], v[2], False, 0.0,
                                             a.get("epsilon", 1e-5))
            elif op == "Relu":
                y = torch.relu(v[0])
            elif op in ("MaxPool", "AveragePool"):
                k, s = a["kernel_shape"], a.get("strides", [1, 1])
                p = a.get("pads", [0] * 4)[:2]
                y = (nn.functional.max_pool2d(v[0], k, s, p) if op == "MaxPool" else
                     nn.functional.avg_pool2d(v[0], k, s, p,
                                              count_include_pad=bool(a.get("count_include_pad", 0))))
            elif op == "GlobalAveragePool":
                y = v[0].mean(dim=(2, 3), keepdim=True)
            elif op == "Add":
                y = v[0] + v[1]
            elif op == "Flatten":
                y = torch.flatten(v[0], a.get("axis", 1))
            elif op == "Gemm":
                y = nn.functional.linear(v[0], v[1], v[2])
            elif op == "Identity":
                y = v[0]
            else:
                raise ValueError(f"unsupported op {op}")
            env[outs[0]] = y
        return env[self.output]


def load_onnx(path):
    """The ONNX model at `path` (rankprune's export of a residual, imported or compressed
    network) as a PyTorch module, in eval mode."""
    import onnx
    return OnnxGraph(onnx.load(path)).eval()
