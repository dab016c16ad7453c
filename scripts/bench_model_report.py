#!/usr/bin/python3
"""Model step benchmark, moon vs PyTorch, measured back to back in one run.

Runs moon_bench's model_step benchmarks (bench/bench_model.cpp: forward and forward+backward of a config,
f32 and bf16 compute) and the PyTorch twin's `bench` subcommand on the same config, batch shape, threads
and dtype, alternating the two `--rounds` times, and prints medians and the ratio torch_ms / moon_ms
(> 1: moon is faster).

  OMP_NUM_THREADS=2 /usr/bin/python3 scripts/bench_model_report.py --bench build/moon_bench \
      --threads 2 --rounds 3 --save bench/results/model-cpu-2026-11-22.json
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def moon_times(bench, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([bench, "--benchmark_filter=model_step", "--benchmark_format=json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    times = {}
    for b in json.loads(out)["benchmarks"]:
        # name: model_step/<kind>_<config>_<dtype>/B:8/L:24/...
        kind = b["name"].split("/")[1]
        times[kind] = b["real_time"]  # ms (manual time)
    return times


def torch_times(config, batch, text_len, threads, dtype):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "moon_twin.py"), "bench", "--config", config,
                          "--batch", str(batch), "--text-len", str(text_len), "--threads", str(threads),
                          "--dtype", dtype, "--warmup", "1", "--repeats", "3"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build/moon_bench")
    ap.add_argument("--config", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--text-len", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--save")
    args = ap.parse_args()
    moon_runs, torch_runs = [], {"f32": [], "bf16": []}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}: moon", file=sys.stderr)
        moon_runs.append(moon_times(args.bench, args.threads))
        for dtype in ("f32", "bf16"):
            print(f"round {r + 1}/{args.rounds}: torch {dtype}", file=sys.stderr)
            torch_runs[dtype].append(torch_times(args.config, args.batch, args.text_len, args.threads, dtype))
    rows = []
    for dtype in ("f32", "bf16"):
        for kind, key in (("forward", "forward_ms"), ("fwd_bwd", "fwd_bwd_ms")):
            name = f"{kind}_{args.config}_{dtype}"
            ours = statistics.median(run[name] for run in moon_runs)
            peer = statistics.median(run[key] for run in torch_runs[dtype])
            rows.append({"step": kind, "dtype": dtype, "moon_ms": ours, "torch_ms": peer, "ratio": peer / ours})
    info = torch_runs["f32"][0]
    print(f"\nconfig {args.config}, batch {args.batch} image+text rows, sequence {info['seq_len']}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}; torch {info['torch']} "
          f"(BLAS {info.get('blas', '?')}); medians of {args.rounds} alternating rounds\n")
    print("| step | dtype | moon ms | torch ms | torch / moon |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['step']} | {row['dtype']} | {row['moon_ms']:.1f} | {row['torch_ms']:.1f} | {row['ratio']:.2f}x |")
    if args.save:
        with open(args.save, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "moon": moon_runs, "torch": torch_runs}, f, indent=1)


if __name__ == "__main__":
    main()
