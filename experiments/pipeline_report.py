#!/usr/bin/env python3
"""Results of experiments/reference-pipeline: results.md, results.json and plot.svg in
the output folder (standard library only; the plot is `rankprune plot`'s, found through
$RANKPRUNE or on PATH)."""

import json
import os
import subprocess
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
# The final stage's verdict on the winner against the one-shot heuristic (the control),
# over paired seeds, as `search --json` reported it.
search = load("search.json") if os.path.exists("search.json") else {}
verdict = search.get("verdict")
if verdict:
    pts = lambda v: "-" if v is None else f"{100 * v:+.2f}"

    def diff(p):
        if not p:
            return "-"
        i = p["interval"]
        return f"{pts(p['seeds']['mean'])} [{pts(i['lo'])}, {pts(i['hi'])}]"

    lines += [
        "",
        f"Final stage verdict: **{verdict['text']}** ({verdict['seeds']} paired seeds).",
        "",
        "| re-trained | seeds | validation % (mean ± sd) | test % (mean ± sd) |",
        "|---|---|---|---|",
    ]
    for s in verdict["subjects"]:
        sd = lambda m: f"{100 * m['mean']:.2f}" + ("" if m["sd"] is None else f" ± {100 * m['sd']:.2f}")
        lines.append(f"| {s['name']} | {s['seeds']} | {sd(s['val'])} | {sd(s['test'])} |")
    lines += [
        "",
        "| winner - control (points) | validation, 95% | test, 95% (reported only) |",
        "|---|---|---|",
        f"| trial {verdict['winner']} | {diff(verdict.get('val'))} | {diff(verdict.get('test'))} |",
    ]
with open("results.md", "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))

# Plot: rankprune's own accuracy-vs-FLOPs chart of the search (the dashboard's), with
# the table's models marked by their test accuracy.
if os.path.exists("search.sqlite"):
    marks = [{"name": f"{r['name']} (test)", "flops": r["flops"], "acc": r["top1"]} for r in rows]
    with open("marks.json", "w") as f:
        json.dump(marks, f, indent=2)
    rankprune = os.environ.get("RANKPRUNE", "rankprune")
    subprocess.run(
        [rankprune, "plot", "--db", "search.sqlite", "--marks", "marks.json", "--out", "plot.svg"],
        check=True,
    )
print(f"wrote {out}/results.md, results.json, plot.svg")
