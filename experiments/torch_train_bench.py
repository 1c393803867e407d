"""PyTorch side of `cargo bench --bench train`: training (SGD momentum 0.9 step included)
and inference throughput at batch 128 on the CPU, of vgg19_bn (CIFAR variant, 100
classes) and of compressed models rebuilt from `rankprune metrics --json` output (every
conv's channel counts; kernel and bias follow from its parameter count: Tucker 1x1 ->
kxk -> 1x1, bias only on the last). Prints a Markdown table.

Run: python3 experiments/torch_train_bench.py [--steps N] [--threads T] [--device cpu|cuda] [NAME=METRICS.json ...]
(needs torch; experiments/throughput runs this and the Rust bench side by side)
"""
import argparse
import json
import time

import torch
import torch.nn as nn

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg19_bn(classes=100):
    layers, c = [], 3
    for v in CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(nn.Sequential(*layers), nn.Flatten(), nn.Linear(512, classes)), 100


def conv_of(layer):
    cin, cout, params = layer["in"], layer["out"], layer["params"]
    for k in (1, 3, 5, 7):
        for bias in (False, True):
            if cin * cout * k * k + (cout if bias else 0) == params:
                return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)
    raise ValueError(f"{layer['name']}: no kernel size fits {params} parameters")


def from_metrics(path):
    """The model whose layers `rankprune metrics --json` lists, with its parameter count checked."""
    metrics = json.load(open(path))
    layers, classifier = [], None
    for layer in metrics["layers"]:
        kind = layer["kind"]
        if kind == "conv":
            layers.append(conv_of(layer))
        elif kind == "batch_norm":
            layers += [nn.BatchNorm2d(layer["out"]), nn.ReLU(inplace=True)]
        elif kind == "max_pool":
            layers.append(nn.MaxPool2d(2))
        elif kind == "linear":
            classifier = nn.Linear(layer["in"], layer["out"])
    model = nn.Sequential(nn.Sequential(*layers), nn.Flatten(), classifier)
    params = sum(p.numel() for p in model.parameters())
    assert params == metrics["params"], f"{path}: {params} parameters, metrics says {metrics['params']}"
    return model, classifier.out_features


def sync(device):
    """Waits for the device's queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_rate(model, classes, steps, device, batch=128):
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = (torch.arange(batch) % classes).to(device)
    model.train()

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    sync(device)
    t = time.time()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.time() - t)


def inference_rate(model, steps, device, batch=128):
    model.to(device)
    x = torch.randn(batch, 3, 32, 32, device=device)
    model.eval()
    with torch.no_grad():
        model(x)
        sync(device)
        t = time.time()
        for _ in range(steps):
            model(x)
        sync(device)
    return steps * batch / (time.time() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--filter", default="", help="run models whose name contains it (=NAME: that one)")
    ap.add_argument("models", nargs="*", help="NAME=METRICS.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = [("vgg19_bn", vgg19_bn)] + [
        (name, lambda p=path: from_metrics(p)) for name, path in (m.split("=", 1) for m in args.models)
    ]
    print(f"| model | batch | steps | train images/s | inference images/s |  (PyTorch {torch.__version__}, {torch.get_num_threads()} threads, {device})")
    print("|---|---|---|---|---|")
    for name, build in models:
        exact = args.filter.startswith("=")
        if (name != args.filter[1:]) if exact else (args.filter not in name):
            continue
        model, classes = build()
        train = train_rate(model, classes, args.steps, device)
        infer = inference_rate(model, 4 * args.steps, device)  # as many batches as cargo bench --bench train
        print(f"| {name} | 128 | {args.steps} | {train:.1f} | {infer:.1f} |", flush=True)


if __name__ == "__main__":
    main()
