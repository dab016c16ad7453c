#!/usr/bin/python3
"""PyTorch peer for moon_bench: the same ops and shapes, timed the same way, printed as JSON.

Run with Debian's Python and PyTorch 1.13 (not a pyenv python):
    OMP_NUM_THREADS=2 /usr/bin/python3 scripts/bench_torch.py [--threads 2] [--repeats 5] [--filter REGEX]

Each benchmark is named exactly like its moon_bench counterpart (e.g. "matmul_f32/512x512x512",
"softmax_bwd/4096x896", "attention_fwd_causal/B1xH8xT512xD64"). For every one the script warms up, then
takes `--repeats` samples, each the mean time of a batch of calls lasting about --min-time seconds, and
reports the median sample as seconds per call and as a rate (GFLOP/s or GB/s, with the same work counts as
moon_bench). Output: {"context": {...}, "benchmarks": [{"name", "seconds", "rate", "unit"}, ...]}.

Differences from moon worth knowing: torch 1.13 has no
rms_norm, so the composite x * rsqrt(mean(x^2) + eps) * w (as Hugging Face's Qwen2) is timed; attention is
torch.nn.functional._scaled_dot_product_attention (1.13's private, unfused math version).
"""
import argparse
import json
import math
import platform
import re
import statistics
import time

import torch
import torch.nn.functional as F

MM_SHAPES = [(512, 512, 512), (1024, 1024, 1024), (2048, 512, 2048), (4096, 896, 896), (4096, 896, 4864)]
MEM_SHAPES = [(4096, 896), (1024, 4864)]
ATTN = [(1, 8, T, D) for D in (64, 128) for T in (512, 1024)]


def time_call(fn, min_time, repeats, setup=None):
    """Median over `repeats` samples of the mean seconds per call of fn (setup runs untimed before each)."""
    for _ in range(2):
        if setup:
            setup()
        fn()
    # calls per sample, from one timed call
    t0 = time.perf_counter()
    if setup:
        setup()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    n = max(1, int(min_time / one))
    samples = []
    for _ in range(repeats):
        total = 0.0
        for _ in range(n):
            if setup:
                setup()
            t0 = time.perf_counter()
            fn()
            total += time.perf_counter() - t0
        samples.append(total / n)
    return statistics.median(samples)


def benchmarks():
    """Yields (name, work per call, unit, fn, setup)."""
    for M, K, N in MM_SHAPES:
        for dt, tag in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
            a = torch.randn(M, K).to(dt)
            b = torch.randn(K, N).to(dt)
            yield f"matmul_{tag}/{M}x{K}x{N}", 2.0 * M * N * K, "GFLOP/s", (lambda a=a, b=b: torch.matmul(a, b)), None

    for r, k, n in [(1024, 768, 3072), (4096, 896, 4864)]:
        x, w, bias = torch.randn(r, k), torch.randn(n, k), torch.randn(n)
        yield (f"linear_gelu_f32/{r}x{k}x{n}", 2.0 * r * k * n, "GFLOP/s",
               (lambda x=x, w=w, bias=bias: F.gelu(F.linear(x, w, bias), approximate="tanh")), None)

    for r, c in MEM_SHAPES:
        x = torch.randn(r, c)
        yield f"clone/{r}x{c}", 2.0 * r * c * 4, "GB/s", (lambda x=x: x.clone()), None

    def rms_norm(x, w, eps=1e-6):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    ops = {
        "softmax": lambda x, w, b: torch.softmax(x, -1),
        "layer_norm": lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b),
        "rms_norm": lambda x, w, b: rms_norm(x, w),
        "gelu": lambda x, w, b: F.gelu(x),
    }
    for backward in (False, True):
        for name, op in ops.items():
            for r, c in MEM_SHAPES:
                x = torch.randn(r, c)
                w = torch.randn(c)
                b = torch.randn(c)
                nbytes = (3.0 if backward else 2.0) * r * c * 4
                full = f"{name}_{'bwd' if backward else 'fwd'}/{r}x{c}"
                if not backward:
                    def fwd(op=op, x=x, w=w, b=b):
                        with torch.no_grad():
                            op(x, w, b)
                    yield full, nbytes, "GB/s", fwd, None
                else:
                    leaves = [t.requires_grad_() for t in (x, w, b)]
                    y = op(x, w, b)
                    g = torch.randn(r, c)

                    def clear(leaves=leaves):
                        for t in leaves:
                            t.grad = None
                    yield full, nbytes, "GB/s", (lambda y=y, g=g: y.backward(g, retain_graph=True)), clear

    for backward in (False, True):
        for B, H, T, D in ATTN:
            for causal in (False, True):
                fl = 4.0 * B * H * T * T * D / (2 if causal else 1) * (2.5 if backward else 1.0)
                full = f"attention_{'bwd' if backward else 'fwd'}{'_causal' if causal else ''}/B{B}xH{H}xT{T}xD{D}"
                q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
                if not backward:
                    def fwd(q=q, k=k, v=v, causal=causal):
                        with torch.no_grad():
                            F._scaled_dot_product_attention(q, k, v, None, 0.0, False, causal)
                    yield full, fl, "GFLOP/s", fwd, None
                else:
                    leaves = [t.requires_grad_() for t in (q, k, v)]
                    out = F._scaled_dot_product_attention(q, k, v, None, 0.0, False, causal)[0]
                    g = torch.randn_like(out)

                    def clear(leaves=leaves):
                        for t in leaves:
                            t.grad = None
                    yield full, fl, "GFLOP/s", (lambda out=out, g=g: out.backward(g, retain_graph=True)), clear


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per sample")
    ap.add_argument("--filter", default="", help="regex on benchmark names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pat = re.compile(args.filter)
    results = []
    for name, work, unit, fn, setup in benchmarks():
        if not pat.search(name):
            continue
        sec = time_call(fn, args.min_time, args.repeats, setup)
        results.append({"name": name, "seconds": sec, "rate": work * 1e-9 / sec, "unit": unit})
    ctx = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps({"context": ctx, "benchmarks": results}, indent=1))


if __name__ == "__main__":
    main()
