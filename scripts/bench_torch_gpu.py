#!/usr/bin/env python3
"""PyTorch on the GPU, on the shapes of moon_bench's gpu_* benchmarks (bench/bench_gpu.cpp), same names.

Each entry is the median over --repeats samples; a sample is a batch of calls timed with CUDA events,
lasting at least --min-time seconds. Prints JSON: {"device": ..., "torch": ..., "results": {name: seconds}}.
Run it with the python that holds torch (on the GPU machine: plain python3).
"""
import argparse
import itertools
import json
import statistics

import torch
import torch.nn.functional as F


def seconds_for(fn, calls):
    """Seconds that `calls` back-to-back calls of fn take on the GPU (CUDA events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def timed(fn, repeats, min_time):
    fn()
    torch.cuda.synchronize()
    calls = 1
    while seconds_for(fn, calls) < min_time and calls < 1 << 16:  # a batch size lasting min_time
        calls *= 2
    return statistics.median(seconds_for(fn, calls) / calls for _ in range(repeats))


def dims(*d):
    return "x".join(str(x) for x in d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--filter", default="", help="only names containing this")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 GEMMs in f32, like moon
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda"
    res = {}

    def run(name, fn):
        if a.filter and a.filter not in name:
            return
        res[name] = timed(fn, a.repeats, a.min_time)

    for m, k, n in [(4096, 4096, 4096), (8192, 8192, 8192), (4096, 896, 4864)]:
        for dt, tag in [(torch.float32, "f32"), (torch.bfloat16, "bf16")]:
            x = torch.randn(m, k, device=dev).to(dt)
            y = torch.randn(k, n, device=dev).to(dt)
            run(f"gpu_matmul_{tag}/{dims(m, k, n)}", lambda x=x, y=y: torch.matmul(x, y))

    shapes = [(16384, 896), (4096, 4864), (8192, 32768)]
    for backward, (dt, tag), op, (r, c) in itertools.product(
            (False, True), [(torch.float32, ""), (torch.bfloat16, "_bf16")],
            ("add", "gelu", "softmax", "layer_norm", "rms_norm", "cross_entropy"), shapes):
        if (op == "cross_entropy" and c < 4864) or (op != "cross_entropy" and c > 4864):
            continue
        x = torch.randn(r, c, device=dev, dtype=dt, requires_grad=backward)
        x2 = torch.randn(r, c, device=dev, dtype=dt)
        w = torch.randn(c, device=dev, dtype=dt, requires_grad=backward and op in ("layer_norm", "rms_norm"))
        b = torch.randn(c, device=dev, dtype=dt, requires_grad=backward and op == "layer_norm")
        t = torch.randint(0, c, (r,), device=dev)
        f = {
            "add": lambda: x + x2,
            "gelu": lambda: F.gelu(x),
            "softmax": lambda: torch.softmax(x, -1),
            "layer_norm": lambda: F.layer_norm(x, (c,), w, b),
            "rms_norm": lambda: F.rms_norm(x, (c,), w, eps=1e-6),
            "cross_entropy": lambda: F.cross_entropy(x, t),
        }[op]
        name = f"gpu_{op}_{'bwd' if backward else 'fwd'}/{dims(r, c)}{tag}"
        if not backward:
            with torch.no_grad():
                run(name, f)
        else:
            y = f()
            dy = torch.ones_like(y) if y.dim() == 0 else torch.randn_like(y)
            params = [p for p in (x, w, b) if p.requires_grad]
            run(name, lambda y=y, dy=dy, params=params: torch.autograd.grad(y, params, dy, retain_graph=True))

    for backward in (False, True):
        for causal in (False, True):
            for T, D in [(1024, 64), (4096, 64), (1024, 128), (4096, 128)]:
                B, H = 4, 16 if D == 64 else 8
                for dt, tag in [(torch.float32, ""), (torch.bfloat16, "_bf16")]:
                    q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=dt, requires_grad=backward) for _ in range(3))
                    f = lambda q=q, k=k, v=v, causal=causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    name = f"gpu_attention_{'bwd' if backward else 'fwd'}{'_causal' if causal else ''}/{dims(B, H, T, D)}{tag}"
                    if not backward:
                        with torch.no_grad():
                            run(name, f)
                    else:
                        y = f()
                        dy = torch.randn_like(y)
                        run(name, lambda y=y, dy=dy, q=q, k=k, v=v: torch.autograd.grad(y, (q, k, v), dy, retain_graph=True))

    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": res}, indent=1))


if __name__ == "__main__":
    main()
