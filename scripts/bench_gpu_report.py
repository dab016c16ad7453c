#!/usr/bin/env python3
"""Runs moon_bench's GPU benchmarks and PyTorch's on the same shapes, and writes one markdown report.

  python3 scripts/bench_gpu_report.py --bench build/moon_bench --out bench/results/<gpu>-<date>.md

Columns: ours (rate), the ceiling or peer measured in the same iterations (rate), their ratio, our time per
call, PyTorch's time per call and the speed-up over PyTorch (> 1: moon is faster). See bench/README.md, "GPU".
--moon-json / --torch-json re-use saved raw runs instead of running.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

REPS_PER_CALL = 10  # bench/bench_gpu.cpp kReps: each timed call is a batch of 10 launches


def run_moon(bench, repetitions):
    cmd = [bench, "--benchmark_filter=^gpu_", "--benchmark_format=json",
           f"--benchmark_repetitions={repetitions}", "--benchmark_report_aggregates_only=true"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out), " ".join(cmd)


def run_torch(repetitions):
    cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "bench_torch_gpu.py"), "--repeats", str(repetitions)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out), " ".join(cmd)


def medians(moon):
    rows = {}
    for b in moon["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"]
        unit = "GFLOP" if "GFLOP" in b else "GB"
        rows[name] = {
            "unit": unit,
            "ours": b.get(unit, 0.0),
            "peer": b.get(f"peer_{unit}/s", None),
            "ratio": b.get("ratio", None),
            "us": b["real_time"] / REPS_PER_CALL if b.get("time_unit") == "us" else None,
        }
    return rows


def fmt(x, nd=2):
    return "" if x is None else f"{x:.{nd}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/moon_bench")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--moon-json")
    ap.add_argument("--torch-json")
    a = ap.parse_args()
    if a.moon_json:
        moon, moon_cmd = json.load(open(a.moon_json)), f"(saved: {a.moon_json})"
    else:
        moon, moon_cmd = run_moon(a.bench, a.repetitions)
        json.dump(moon, open(a.out.replace(".md", "") + "-moon.json", "w"), indent=1)
    if a.torch_json:
        torch, torch_cmd = json.load(open(a.torch_json)), f"(saved: {a.torch_json})"
    else:
        torch, torch_cmd = run_torch(a.repetitions)
        json.dump(torch, open(a.out.replace(".md", "") + "-torch.json", "w"), indent=1)
    rows = medians(moon)
    t = torch["results"]
    lines = [
        f"# moon GPU benchmarks: {torch['device']}, {datetime.date.today().isoformat()}",
        "",
        f"- moon: `{moon_cmd}`",
        f"- PyTorch {torch['torch']}: `{torch_cmd}`",
        f"- report: `python3 scripts/bench_gpu_report.py --bench {a.bench} --out {a.out}`",
        "- rates are medians over the repetitions; `ceiling` is measured in the same iterations as ours: cuBLAS",
        "  (cublasGemmEx, same compute type) for matmul and the two GEMMs of attention, a device-to-device copy",
        "  of the same byte count for memory-bound ops. `vs torch` = torch time / our time (> 1: moon faster).",
        "",
        "| benchmark | ours | ceiling | ours/ceiling | ours µs | torch µs | vs torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        unit = "TFLOP/s" if r["unit"] == "GFLOP" else "GB/s"
        scale = 1e-3 if r["unit"] == "GFLOP" else 1.0
        peer = None if r["peer"] is None else r["peer"] * scale
        tt = t.get(name)
        speed = tt * 1e6 / r["us"] if tt and r["us"] else None
        lines.append(f"| {name} | {fmt(r['ours'] * scale)} {unit} | {fmt(peer)} | {fmt(r['ratio'])} | {fmt(r['us'], 1)} | "
                     f"{fmt(tt * 1e6 if tt else None, 1)} | {fmt(speed)} |")
    extra = [n for n in t if n not in rows]
    if extra:
        lines += ["", "PyTorch only (no moon counterpart in this run):", "",
                  "| benchmark | torch µs |", "|---|---|"]
        lines += [f"| {n} | {t[n] * 1e6:.1f} |" for n in extra]
    open(a.out, "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
