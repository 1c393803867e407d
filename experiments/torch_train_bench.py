"""PyTorch baseline for `cargo bench --bench train`: vgg19_bn (CIFAR variant, 100
classes) training steps at batch 128 on the CPU, SGD momentum 0.9. Prints images/s.

Run: python3 experiments/torch_train_bench.py [STEPS]   (needs torch)
"""
import sys
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
    return nn.Sequential(nn.Sequential(*layers), nn.Flatten(), nn.Linear(512, classes))


steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
model = vgg19_bn()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(128, 3, 32, 32), torch.arange(128) % 100


def step():
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


step()
t = time.time()
for _ in range(steps):
    step()
print(f"| vgg19_bn (PyTorch {torch.__version__}, {torch.get_num_threads()} threads) | 128 | {steps} | {steps * 128 / (time.time() - t):.1f} |")
