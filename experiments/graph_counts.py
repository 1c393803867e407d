"""Reference parameter and MAC counts for the graph cost counter, computed by PyTorch.

Writes tests/fixtures/graph_counts.json: for each model, `params` (the sum of the
parameters' sizes) and `macs` (torch.utils.flop_counter's convolution and matmul FLOPs,
halved) for one image. The models are made here, independently of rankprune:
  - resnet20 and resnet56 for 10 classes: He et al. (2016)'s CIFAR ResNets with 1x1
    projection shortcuts (option B), written below;
  - resnet18 from torchvision, ImageNet stem, 1000 classes, 224x224;
  - resnet18 at 32x32 with the CIFAR stem (3x3 conv, no max-pool), 10 classes;
  - vgg19_bn for CIFAR-100 as the reference defines it (one Linear 512 -> 100).

Usage: python3 experiments/graph_counts.py   (needs torch and torchvision)
"""
import json
import os

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
import torchvision


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    def __init__(self, depth, classes):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for stage, width in enumerate((16, 32, 64)):
            blocks = []
            for b in range(n):
                blocks.append(Block(cin, width, 2 if stage > 0 and b == 0 else 1))
                cin = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def vgg19_bn(classes):
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
           512, 512, 512, 512, "M"]
    layers, cin = [], 3
    for c in cfg:
        if c == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            cin = c
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, classes))


def cifar_stem_resnet18(classes):
    m = torchvision.models.resnet18(num_classes=classes)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def counts(model, side):
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, side, side))
    return {"params": params, "macs": fc.get_total_flops() // 2}


def main():
    models = [
        ("resnet20", 10, 32, CifarResNet(20, 10)),
        ("resnet56", 10, 32, CifarResNet(56, 10)),
        ("resnet18", 1000, 224, torchvision.models.resnet18(num_classes=1000)),
        ("resnet18", 10, 32, cifar_stem_resnet18(10)),
        ("vgg19_bn", 100, 32, vgg19_bn(100)),
    ]
    rows = []
    for name, classes, side, model in models:
        rows.append({"model": name, "classes": classes, "side": side, **counts(model, side)})
        print(rows[-1])
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "graph_counts.json")
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
