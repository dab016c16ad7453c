#!/usr/bin/python3
"""Training step benchmark, moon vs PyTorch: one contrastive step (four views of B products, L_con, backward,
gradient clipping, AdamW) of a config, f32 and bf16.

Runs moon_bench's train_step (bench/bench_train.cpp) and the twin's `bench` (scripts/train_twin.py) in separate
processes, one process per implementation and dtype (so each peak RSS is its own), alternating moon and torch
`--rounds` times; prints the medians as a table (steps/s, peak RSS MB, ratios) and writes
bench/results/train-cpu-<date>.json (or --save PATH).

  OMP_NUM_THREADS=2 /usr/bin/python3 scripts/bench_train_report.py --bench build/moon_bench --rounds 3
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def load_average():
    return os.getloadavg()[0]


def moon_run(bench, config, dtype, threads, min_time):
    """-> {"step_ms", "peak_rss_mb"} of moon_bench's train_step/<config>_<dtype>."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [bench, f"--benchmark_filter=^train_step/{config}_{dtype}/", "--benchmark_format=json",
           f"--benchmark_min_time={min_time}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_train_report: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    runs = [b for b in json.loads(out.stdout)["benchmarks"] if b.get("run_type", "iteration") == "iteration"]
    if not runs:
        sys.exit(f"bench_train_report: {' '.join(cmd)} ran no benchmark (is train_step/{config}_{dtype} built?)")
    b = runs[0]
    return {"step_ms": b["real_time"], "peak_rss_mb": b["peak_rss_mb"], "iterations": b["iterations"]}


def torch_run(config, batch, text_len, dtype, threads, steps):
    """-> the twin's JSON line, with step_ms reduced to its median."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = ["/usr/bin/python3", os.path.join(HERE, "train_twin.py"), "bench", "--config", config, "--batch", str(batch),
           "--text-len", str(text_len), "--threads", str(threads), "--dtype", dtype, "--steps", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_train_report: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["steps_ms"] = result["step_ms"]
    result["step_ms"] = statistics.median(result["step_ms"])
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(REPO, "build", "moon_bench"))
    ap.add_argument("--config", default="small")
    ap.add_argument("--batch", type=int, default=32, help="products per step (moon's benchmark is built for 32)")
    ap.add_argument("--text-len", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed bf16 steps per torch process")
    ap.add_argument("--f32-steps", type=int, default=1,
                    help="timed f32 steps per torch process (its f32 GEMMs run on the reference BLAS: ~1 min a step)")
    ap.add_argument("--min-time", type=float, default=3.0, help="moon_bench --benchmark_min_time per process")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--save", help="default: bench/results/train-cpu-<date>.json")
    args = ap.parse_args()
    dtypes = args.dtypes.split(",")
    moon_runs = {d: [] for d in dtypes}
    torch_runs = {d: [] for d in dtypes}
    loads = [load_average()]
    for r in range(args.rounds):
        for dtype in dtypes:
            print(f"round {r + 1}/{args.rounds}: moon {dtype} (load {load_average():.2f})", file=sys.stderr)
            moon_runs[dtype].append(moon_run(args.bench, args.config, dtype, args.threads, args.min_time))
            print(f"round {r + 1}/{args.rounds}: torch {dtype} (load {load_average():.2f})", file=sys.stderr)
            steps = args.f32_steps if dtype == "f32" else args.steps
            torch_runs[dtype].append(torch_run(args.config, args.batch, args.text_len, dtype, args.threads, steps))
            loads.append(load_average())
    rows = []
    for dtype in dtypes:
        moon_ms = statistics.median(run["step_ms"] for run in moon_runs[dtype])
        torch_ms = statistics.median(run["step_ms"] for run in torch_runs[dtype])
        moon_rss = statistics.median(run["peak_rss_mb"] for run in moon_runs[dtype])
        torch_rss = statistics.median(run["peak_rss_mb"] for run in torch_runs[dtype])
        rows.append({"dtype": dtype, "moon_step_ms": moon_ms, "torch_step_ms": torch_ms,
                     "moon_steps_per_s": 1e3 / moon_ms, "torch_steps_per_s": 1e3 / torch_ms,
                     "speed_ratio": torch_ms / moon_ms, "moon_peak_rss_mb": moon_rss, "torch_peak_rss_mb": torch_rss,
                     "rss_ratio": moon_rss / torch_rss})
    info = torch_runs[dtypes[0]][0]
    print(f"\nconfig {args.config}, {args.batch} image+text products per step (views P, T, V, M: "
          f"{info['view_shapes']}), {args.threads} threads, {platform.processor() or platform.machine()}; "
          f"torch {info['torch']} (BLAS {info.get('blas', '?')}); medians of {args.rounds} alternating rounds; "
          f"load average {min(loads):.2f}-{max(loads):.2f}\n")
    print("| dtype | moon steps/s | torch steps/s | moon / torch speed | moon peak RSS MB | torch peak RSS MB | moon / torch RSS |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['dtype']} | {row['moon_steps_per_s']:.3f} | {row['torch_steps_per_s']:.3f} | "
              f"{row['speed_ratio']:.2f}x | {row['moon_peak_rss_mb']:.0f} | {row['torch_peak_rss_mb']:.0f} | "
              f"{row['rss_ratio']:.2f}x |")
    save = args.save or os.path.join(REPO, "bench", "results", f"train-cpu-{datetime.date.today().isoformat()}.json")
    with open(save, "w") as f:
        json.dump({"args": vars(args), "load_average": loads, "rows": rows, "moon": moon_runs, "torch": torch_runs},
                  f, indent=1)
    print(f"\nwrote {save}")


if __name__ == "__main__":
    main()
