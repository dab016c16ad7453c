#!/usr/bin/env python3
"""The mbe-local benchmark and its ablation table (docs/results.md).

For each data set it imports the real data (moon data import), trains every ablation row with the same
budget (steps, batch, learning rate, seed, data), evaluates it on the test split with `moon eval`, and writes
a Markdown table. Rows, each adding one component to the one before (except the first):

  clip    a CLIP-style dual encoder (embedding.architecture=dual: separate image and text towers)
  moon    the MLLM with mean pooling (images enter the decoder), no MoE / fusion / FIRE     (MOON)
  moe     + the modality-driven MoE                                                        (MOON2.0)
  fusion  + multi-head modality fusion
  fire    + FIRE
  grpo    + joint contrastive + GRPO after a contrastive warm-up, evaluated with reasoning  (MOON3.0)

usage: scripts/ablation.py [--moon build/moon] [--out runs/ablation] [--datasets fashion-mnist]
                           [--steps 150] [--batch 32] [--eval-limit 1000] [--rows clip,moon,...]
                           [--results docs/results.md] [--bf16]
Only the standard library: runs with any python3.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

ROWS = {
    "clip": ("CLIP-style dual encoder", ["embedding.architecture=dual", "moe.enabled=false",
                                          "fusion.enabled=false", "fire.enabled=false"], False),
    "moon": ("MLLM, mean pooling (MOON)", ["moe.enabled=false", "fusion.enabled=false", "fire.enabled=false"], False),
    "moe": ("+ MoE (MOON2.0)", ["moe.enabled=true", "fusion.enabled=false", "fire.enabled=false"], False),
    "fusion": ("+ fusion", ["moe.enabled=true", "fusion.enabled=true", "fire.enabled=false"], False),
    "fire": ("+ FIRE", ["moe.enabled=true", "fusion.enabled=true", "fire.enabled=true"], False),
    "grpo": ("+ GRPO (MOON3.0)", ["moe.enabled=true", "fusion.enabled=true", "fire.enabled=true"], True),
}
COLUMNS = [("mm2mm.R@10", "mm→mm R@10"), ("t2mm.R@10", "t→mm R@10"), ("t2i.class@1", "t→i class@1"),
           ("i2t.R@10", "i→t R@10"), ("zeroshot.acc", "zero-shot acc"), ("attr.acc", "attribute acc"),
           ("match.R@1", "match R@1")]


def run(cmd, log):
    """Runs a command, teeing its output to `log`; stops the script with the log's tail on failure."""
    print("+ " + " ".join(cmd), flush=True)
    with open(log, "a") as f:
        f.write("+ " + " ".join(cmd) + "\n")
        f.flush()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        sys.exit(f"ablation: command failed (exit {code}): {' '.join(cmd)}\n--- {log} (tail)\n{tail}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moon", default="build/moon")
    ap.add_argument("--config", default="small")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--data", default="data", help="where the data sets are imported (DATA/<name>)")
    ap.add_argument("--datasets", default="fashion-mnist")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", default="5e-4")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--eval-limit", type=int, default=1000)
    ap.add_argument("--reason-tokens", type=int, default=8)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--results", default="docs/results.md")
    args = ap.parse_args()

    rows = args.rows.split(",")
    for r in rows:
        if r not in ROWS:
            sys.exit(f"ablation: unknown row '{r}' (rows: {', '.join(ROWS)})")
    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, "ablation.log")
    results = {}
    for ds in args.datasets.split(","):
        manifest = os.path.join(args.data, ds, "manifest.jsonl")
        if not os.path.exists(manifest):
            run([args.moon, "data", "import", ds, "--out", os.path.join(args.data, ds), "--quiet"], log)
        for r in rows:
            title, sets, grpo = ROWS[r]
            run_dir = os.path.join(args.out, ds, r)
            report = os.path.join(run_dir, "eval.json")
            if not os.path.exists(report):
                cmd = [args.moon, "train", "--config", args.config, "--manifest", manifest, "--out", run_dir,
                       "--steps", str(args.steps), "--batch", str(args.batch), "--lr", args.lr, "--seed", args.seed,
                       "--eval-limit", "0", "--quiet"]
                if os.path.exists(os.path.join(run_dir, "run.json")):
                    cmd.append("--resume")
                for s in sets:
                    cmd += ["--set", s]
                if grpo:
                    cmd += ["--grpo-start", str(args.steps * 2 // 3), "--reason-tokens", str(args.reason_tokens)]
                if args.bf16:
                    cmd.append("--bf16")
                t0 = time.time()
                run(cmd, log)
                train_s = time.time() - t0
                ev = [args.moon, "eval", "--model", run_dir, "--manifest", manifest, "--limit", str(args.eval_limit),
                      "--json", report]
                if grpo:
                    ev += ["--reason", str(args.reason_tokens)]
                if args.bf16:
                    ev.append("--bf16")
                run(ev, log)
                with open(report) as f:
                    rep = json.load(f)
                rep["train_seconds"] = train_s
                with open(report, "w") as f:
                    json.dump(rep, f, indent=1)
            with open(report) as f:
                results[(ds, r)] = json.load(f)

    sections = {}
    for ds in args.datasets.split(","):
        lines = [f"## {ds}", "",
                 f"`scripts/ablation.py --datasets {ds} --config {args.config} --steps {args.steps} --batch {args.batch} "
                 f"--lr {args.lr} --seed {args.seed} --eval-limit {args.eval_limit}{' --bf16' if args.bf16 else ''}` on "
                 f"{datetime.date.today().isoformat()}, {platform.machine()} with {os.cpu_count()} cores. "
                 f"Every row: {args.steps} steps of {args.batch} products (the same data order and seed), then "
                 f"`moon eval` on up to {args.eval_limit} test products. \"train s\" is the wall time of `moon train`.", "",
                 "| row | " + " | ".join(c[1] for c in COLUMNS) + " | train s |",
                 "|---|" + "---|" * (len(COLUMNS) + 1)]
        for r in rows:
            rep = results[(ds, r)]
            m = rep["metrics"]
            cells = [f"{100 * m[k]:.1f}" if k in m else "–" for k, _ in COLUMNS]
            lines.append(f"| {ROWS[r][0]} | " + " | ".join(cells) + f" | {rep.get('train_seconds', 0):.0f} |")
        sections[ds] = "\n".join(lines) + "\n"
    text = merge_results(args.results, sections)
    print(text)
    if args.results:
        with open(args.results + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.results + ".tmp", args.results)
        print(f"wrote {args.results}")


HEADER = """# mbe-local results

The ablation of `scripts/ablation.py`: each row adds one component to the row before it (the first is a
CLIP-style dual encoder), and every row of a data set trains with the same budget. Metrics are in percent on
the data set's test split; the tasks are defined in [eval.md](eval.md), the rows in
[training.md](training.md) and `scripts/ablation.py`. The script rewrites the section of each data set it
runs and keeps the others (and any other section, such as notes).
"""


def merge_results(path, sections):
    """The results file with `sections` ("## name" blocks) replaced or appended; other sections are kept."""
    kept = []  # (name, text) in file order
    if path and os.path.exists(path):
        with open(path) as f:
            body = f.read()
        for block in body.split("\n## ")[1:]:
            name = block.split("\n", 1)[0].strip()
            kept.append((name, "## " + block.rstrip("\n") + "\n"))
    names = [n for n, _ in kept]
    out = [sections.get(n, t) for n, t in kept]
    notes = next((i for i, n in enumerate(names) if n.lower().startswith("notes")), len(out))
    out[notes:notes] = [t for n, t in sections.items() if n not in names]  # new data sets go before the notes
    return HEADER + "\n" + "\n".join(out)


if __name__ == "__main__":
    main()
