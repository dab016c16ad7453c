#!/usr/bin/python3
"""Runs moon_bench and scripts/bench_torch.py and prints one markdown table (ours vs peer/ceiling vs torch).

    OMP_NUM_THREADS=2 /usr/bin/python3 scripts/bench_report.py --bench build-bench/moon_bench \
        [--filter REGEX] [--repetitions 5] [--save bench/results/cpu-DATE.json]

--moon-json FILE / --torch-json FILE reuse earlier raw outputs instead of running (e.g. to re-print a saved
result: --from bench/results/cpu-DATE.json). --save writes both raw outputs into one JSON file.

Columns: op, shape, ours (rate), peer/ceiling (its rate, measured in the same iterations as ours), ratio
(ours / peer), torch (PyTorch 1.13 rate, separate process), ours/torch.
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def peer_label(op):
    if op.startswith("matmul"):
        return "oneDNN"
    if op.startswith("attention"):
        return "oneDNN QK^T+SV"
    if op == "memcpy":
        return ""
    return "memcpy"


def run_moon(bench, flt, reps, min_time):
    cmd = [bench, "--benchmark_format=json", f"--benchmark_repetitions={reps}",
           "--benchmark_report_aggregates_only=true"]
    if min_time:
        cmd.append(f"--benchmark_min_time={min_time}")
    if flt:
        cmd.append(f"--benchmark_filter={flt}")
    print("+", " ".join(cmd), file=sys.stderr)
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def run_torch(flt, reps):
    cmd = ["/usr/bin/python3", os.path.join(HERE, "bench_torch.py"), f"--repeats={reps}"]
    if flt:
        cmd.append(f"--filter={flt}")
    print("+", " ".join(cmd), file=sys.stderr)
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def moon_rows(moon):
    """name -> (unit, ours, peer, ratio) from the median aggregates (or plain runs)."""
    rows = {}
    for b in moon["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = re.sub(r"/manual_time$", "", b.get("run_name", b["name"]))
        unit = "GFLOP/s" if "GFLOP" in b else "GB/s"
        ours = b.get("GFLOP", b.get("GB"))
        peer = b.get("peer_GFLOP/s", b.get("peer_GB/s"))
        rows[name] = (unit, ours, peer, b.get("ratio"))
    return rows


def fmt(x, digits=1):
    return "" if x is None else f"{x:.{digits}f}"


def table(moon, torch):
    trows = {b["name"]: b["rate"] for b in (torch or {}).get("benchmarks", [])}
    out = ["| op | shape | ours | peer/ceiling | ratio | torch | ours/torch |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for name, (unit, ours, peer, ratio) in moon_rows(moon).items():
        op, shape = name.split("/", 1)
        t = trows.get(name)
        label = peer_label(op)
        out.append("| {} | {} | {} {} | {} | {} | {} | {} |".format(
            op, shape, fmt(ours), unit, f"{fmt(peer)} ({label})" if peer is not None else "",
            fmt(ratio, 2), fmt(t), fmt(ours / t, 2) if t and ours else ""))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build-bench/moon_bench")
    ap.add_argument("--filter", default="")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--min-time", default="", help="--benchmark_min_time for moon_bench")
    ap.add_argument("--moon-json")
    ap.add_argument("--torch-json")
    ap.add_argument("--from", dest="from_", help="a file written by --save")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--save")
    args = ap.parse_args()

    if args.from_:
        with open(args.from_) as f:
            saved = json.load(f)
        moon, torch = saved["moon"], saved.get("torch")
    else:
        if args.moon_json:
            with open(args.moon_json) as f:
                moon = json.load(f)
        else:
            moon = run_moon(args.bench, args.filter, args.repetitions, args.min_time)
        torch = None
        if args.torch_json:
            with open(args.torch_json) as f:
                torch = json.load(f)
        elif not args.no_torch:
            torch = run_torch(args.filter, args.repetitions)
    if args.save:
        with open(args.save, "w") as f:
            json.dump({"moon": moon, "torch": torch}, f, indent=1)
    print(table(moon, torch))


if __name__ == "__main__":
    main()
