#!/usr/bin/env python3
"""Results of experiments/reference-pipeline: results.md, results.json and plot.svg in
the output folder (standard library only)."""

import json
import math
import os
import sys

out = sys.argv[1]
os.chdir(out)


def load(path):
    with open(path) as f:
        return json.load(f)


steps = {}
for line in open("steps.tsv"):
    name, secs = line.rstrip("\n").split("\t")
    steps[name] = float(secs)

# Steps behind each row (the search is charged to the search rows).
ROW_STEPS = {
    "original": ["train original"],
    "FD": ["vbmf ranks", "decompose", "fine-tune FD"],
    "FD + pruning": ["slamp ratios", "prune", "fine-tune FD+pruning"],
    "FD + pruning, one stage": [
        "compress FD+pruning, one stage",
        "fine-tune FD+pruning, one stage",
    ],
    "search FD": ["search", "export", "compress search FD", "fine-tune search FD"],
    "search FD + pruning": ["prune search FD+pruning", "fine-tune search FD+pruning"],
    "search FD + pruning, one stage": [
        "compress search FD+pruning, one stage",
        "fine-tune search FD+pruning, one stage",
    ],
}

rows = []
for line in open("rows.tsv"):
    name, config, weights = line.rstrip("\n").split("\t")
    ev = load(f"eval-{name}.json")
    m = load(f"metrics-{name}.json")
    rows.append(
        {
            "name": name,
            "config": None if config == "-" else config,
            "weights": weights,
            "top1": ev["top1"],
            "top5": ev["top5"],
            "test_images": ev["samples"],
            "flops": m["flops"],
            "params": m["params"],
            "file_bytes": os.path.getsize(weights),
            "seconds": sum(steps.get(s, 0.0) for s in ROW_STEPS.get(name, [])),
        }
    )
base = rows[0]
for r in rows:
    r["top1_delta"] = r["top1"] - base["top1"]
    r["flops_reduction"] = base["flops"] / r["flops"]
    r["params_reduction"] = base["params"] / r["params"]
    r["size_reduction"] = base["file_bytes"] / r["file_bytes"]

with open("results.json", "w") as f:
    json.dump({"rows": rows, "steps": steps}, f, indent=2)

lines = [
    "| model | top-1 (%) | delta | MFLOPs | FLOPs reduction | params (M) | params reduction | size (MB) | size reduction | wall time |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    lines.append(
        f"| {r['name']} | {100 * r['top1']:.2f} | {100 * r['top1_delta']:+.2f} | {r['flops'] / 1e6:.2f} "
        f"| {r['flops_reduction']:.2f}x | {r['params'] / 1e6:.3f} | {r['params_reduction']:.2f}x "
        f"| {r['file_bytes'] / 1e6:.2f} | {r['size_reduction']:.2f}x | {r['seconds'] / 60:.1f} min |"
    )
lines += ["", "| step | wall time (s) |", "|---|---|"]
lines += [f"| {k} | {v:.0f} |" for k, v in steps.items()]
# The search's final stage: the re-trained trials and what chose the winner.
trials = load("trials.json") if os.path.exists("trials.json") else []
finals = [t for t in trials if t.get("final")]
if finals:
    lines += [
        "",
        "| re-trained trial | chosen as | MFLOPs | FLOPs reduction | proxy (val) | after re-training: val | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in sorted(finals, key=lambda t: -(t["final"].get("val_top1") or 0.0)):
        fin, flops = t["final"], t["cost"]["flops"]
        val = fin.get("val_top1")
        # Why it was re-trained, as the store recorded it (stores older than schema v3
        # did not record it).
        why = {"top_k": "top-k by proxy", "warm_start": "best warm start by proxy"}.get(
            fin.get("reason"), "-"
        )
        lines.append(
            f"| {t['number']} | {why} | {flops / 1e6:.2f} | {base['flops'] / flops:.2f}x | {100 * t['proxy_acc']:.1f}% "
            f"| {'-' if val is None else f'{100 * val:.1f}%'} | {100 * fin['top1']:.2f}% |"
        )
with open("results.md", "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))

# Plot: every search trial (proxy accuracy vs MFLOPs), the Pareto front of completed
# trials, and the test accuracy of the table's models.
pts = [(t["cost"]["flops"] / 1e6, t["proxy_acc"], t["state"]) for t in trials if t.get("proxy_acc") is not None]
done = sorted((f, a) for f, a, s in pts if s == "complete")
front, best = [], -1.0
for f, a in done:
    if a > best:
        front.append((f, a))
        best = a
marks = [(r["flops"] / 1e6, r["top1"], r["name"]) for r in rows]
xs = [p[0] for p in pts] + [m[0] for m in marks]
# Log-scale FLOPs axis: the trials sit near the target, the original far to the right.
x_lo = min(xs) / 1.3 if xs else 1.0
x_hi = max(xs) * 1.3 if xs else 10.0
W, H, L, B, T, R = 720, 460, 70, 50, 30, 190


def sx(v):
    return L + (W - L - R) * math.log(v / x_lo) / math.log(x_hi / x_lo)


def sy(v):
    return T + (H - T - B) * (1.0 - v)


svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<line x1="{L}" y1="{sy(0)}" x2="{W - R}" y2="{sy(0)}" stroke="black"/>',
    f'<line x1="{L}" y1="{sy(0)}" x2="{L}" y2="{T}" stroke="black"/>',
]
for i in range(6):
    v = i / 5
    svg.append(f'<text x="{L - 8}" y="{sy(v) + 4}" text-anchor="end">{100 * v:.0f}%</text>')
    svg.append(f'<line x1="{L}" y1="{sy(v)}" x2="{W - R}" y2="{sy(v)}" stroke="#eeeeee"/>')
for k in range(math.floor(math.log10(x_lo)), math.ceil(math.log10(x_hi)) + 1):
    for m in (1, 2, 5):
        xv = m * 10.0**k
        if x_lo <= xv <= x_hi:
            svg.append(f'<line x1="{sx(xv):.1f}" y1="{sy(0)}" x2="{sx(xv):.1f}" y2="{sy(0) + 4}" stroke="black"/>')
            svg.append(f'<text x="{sx(xv):.1f}" y="{sy(0) + 18}" text-anchor="middle">{xv:g}</text>')
svg.append(f'<text x="{(L + W - R) / 2}" y="{H - 10}" text-anchor="middle">MFLOPs (log scale)</text>')
svg.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" text-anchor="middle">top-1 accuracy</text>')
target = next((r["flops"] / 1e6 for r in rows if r["name"] == "FD + pruning"), None)
if target:
    svg.append(f'<line x1="{sx(target):.1f}" y1="{sy(0)}" x2="{sx(target):.1f}" y2="{T}" stroke="#999999" stroke-dasharray="4 3"/>')
    svg.append(f'<text x="{sx(target) + 4:.1f}" y="{T + 10}" fill="#666666">search target</text>')
for f, a, s in pts:
    color = {"complete": "#4a7ebb", "early_stopped": "#bbbbbb", "pruned": "#bbbbbb"}.get(s, "#dd8888")
    svg.append(f'<circle cx="{sx(f):.1f}" cy="{sy(a):.1f}" r="3" fill="{color}"/>')
if front:
    path = " ".join(f"{sx(f):.1f},{sy(a):.1f}" for f, a in front)
    svg.append(f'<polyline points="{path}" fill="none" stroke="#4a7ebb" stroke-width="1.5"/>')
# Trials of the final stage: validation accuracy after the full re-training.
retrained = [
    (t["cost"]["flops"] / 1e6, t["final"]["val_top1"])
    for t in finals
    if t["final"].get("val_top1") is not None
]
for f, a in retrained:
    x, y = sx(f), sy(a)
    svg.append(f'<polygon points="{x:.1f},{y - 5:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x - 5:.1f},{y:.1f}" fill="#8c564b"/>')
colors = ["black", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf"]
for i, (f, a, name) in enumerate(marks):
    c = colors[i % len(colors)]
    svg.append(f'<rect x="{sx(f) - 5:.1f}" y="{sy(a) - 5:.1f}" width="10" height="10" fill="none" stroke="{c}" stroke-width="2"/>')
    svg.append(f'<rect x="{W - R + 12}" y="{T + 18 * i}" width="10" height="10" fill="none" stroke="{c}" stroke-width="2"/>')
    svg.append(f'<text x="{W - R + 28}" y="{T + 18 * i + 10}">{name} (test)</text>')
n = len(marks)
svg.append(f'<circle cx="{W - R + 17}" cy="{T + 18 * n + 5}" r="3" fill="#4a7ebb"/>')
svg.append(f'<text x="{W - R + 28}" y="{T + 18 * n + 10}">trial (proxy, val)</text>')
svg.append(f'<circle cx="{W - R + 17}" cy="{T + 18 * (n + 1) + 5}" r="3" fill="#bbbbbb"/>')
svg.append(f'<text x="{W - R + 28}" y="{T + 18 * (n + 1) + 10}">pruned trial</text>')
svg.append(f'<line x1="{W - R + 10}" y1="{T + 18 * (n + 2) + 5}" x2="{W - R + 24}" y2="{T + 18 * (n + 2) + 5}" stroke="#4a7ebb" stroke-width="1.5"/>')
svg.append(f'<text x="{W - R + 28}" y="{T + 18 * (n + 2) + 10}">Pareto front</text>')
if retrained:
    x, y = W - R + 17, T + 18 * (n + 3) + 5
    svg.append(f'<polygon points="{x},{y - 5} {x + 5},{y} {x},{y + 5} {x - 5},{y}" fill="#8c564b"/>')
    svg.append(f'<text x="{W - R + 28}" y="{y + 5}">re-trained trial (val)</text>')
svg.append("</svg>")
with open("plot.svg", "w") as f:
    f.write("\n".join(svg) + "\n")
print(f"wrote {out}/results.md, results.json, plot.svg")
