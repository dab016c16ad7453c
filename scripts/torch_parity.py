#!/usr/bin/python3
"""PyTorch parity data for moon's ops.

For every case below: seeded random inputs (float32 values), the op run in PyTorch in float64 (inputs
widened exactly from float32), forward outputs, a seeded random upstream gradient for each floating output,
and the gradients of the differentiable inputs after one backward. Everything goes into one JSON file that
tests/test_torch_parity.cpp (doctest suite "parity") reads and replays through moon, comparing each output
and gradient element by element.

Run with Debian's interpreter, which has python3-torch (the pyenv `python3` on PATH does not):
    /usr/bin/python3 scripts/torch_parity.py --out build/parity.json
ctest does this for you (test `parity_data`, a fixture of test `parity`).

Adding an op: add a generator below (op name = the key in the C++ table in tests/test_torch_parity.cpp) and
a lambda under the same name there. The C++ test fails if either side has a name the other lacks.

JSON layout:
  {"generator", "torch", "reference_dtype": "float64", "input_dtype": "float32", "seed",
   "cases": [{"id", "op", "params": {...},
              "inputs":  [{"name", "shape", "dtype": "f32"|"i64"|"u8", "requires_grad", "data"}],
              "outputs": [{"shape", "dtype": "f64"|"i64"|"u8", "data"}],
              "grad_outputs": [tensor | null per output],     # the upstream gradient fed to backward
              "grads": [tensor | null per input],              # d(sum(out * grad_out)) / d input
              "tol": {"fwd": [atol, rtol], "grad": [atol, rtol]}}]}
  A value matches when |moon - torch| <= atol + rtol * |torch|.
"""

import argparse
import json
import os
import sys
import zlib

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    sys.exit(f"torch_parity.py: {e}. Run it with Debian's /usr/bin/python3 (apt-get install python3-torch "
             f"python3-numpy), not the pyenv python3 on PATH.")

FWD_TOL = (2e-5, 2e-5)
GRAD_TOL = (5e-5, 5e-5)


# ---------------------------------------------------------------------------------------------------- inputs
class Gen:
    """Seeded random inputs for one case. All floating values are exactly representable in float32."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def normal(self, *shape, std=1.0):
        return np.asarray(self.rng.standard_normal(shape) * std, dtype=np.float32)

    def uniform(self, lo, hi, *shape):
        return np.asarray(self.rng.uniform(lo, hi, shape), dtype=np.float32)

    def away(self, *shape, gap=0.1, hi=2.0, center=0.0):
        """Uniform magnitudes in [gap, hi) with random sign, around `center`: no input sits on a kink."""
        mag = self.rng.uniform(gap, hi, shape)
        sign = np.where(self.rng.uniform(0, 1, shape) < 0.5, -1.0, 1.0)
        return np.asarray(center + sign * mag, dtype=np.float32)

    def ints(self, lo, hi, *shape):
        return np.asarray(self.rng.integers(lo, hi, shape, dtype=np.int64))

    def mask(self, p, *shape):
        return np.asarray(self.rng.uniform(0, 1, shape) < p, dtype=np.uint8)


def inp(name, data, grad=None):
    """An input: floating inputs require grad by default, integer ones never."""
    if grad is None:
        grad = data.dtype == np.float32
    return {"name": name, "data": data, "requires_grad": bool(grad)}


CASES = []  # (op, id, params, seed -> (inputs, fn), tol overrides)


def case(op, params=None, tag="", fwd_tol=None, grad_tol=None):
    """Decorator: registers a case generator `build(g) -> (inputs, fn)`; fn maps torch tensors to outputs."""

    def wrap(build):
        cid = f"{op}/{tag}" if tag else op
        CASES.append({"op": op, "id": cid, "params": params or {}, "build": build,
                      "fwd_tol": fwd_tol or FWD_TOL, "grad_tol": grad_tol or GRAD_TOL})
        return build

    return wrap


# ---------------------------------------------------------------------------------------------------- cases
# Elementwise, broadcasting binary ops: same shape, a broadcast row, a column against a row, a 0-d scalar.
BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "maximum": torch.maximum, "minimum": torch.minimum,
}
BROADCASTS = {"same": ((4, 17), (4, 17)), "row": ((3, 5, 17), (17,)), "outer": ((6, 1), (1, 9)),
              "scalar": ((2, 7), ())}
for name, fn in BINARY.items():
    for tag, (sa, sb) in BROADCASTS.items():
        def build(g, fn=fn, sa=sa, sb=sb, name=name):
            a = g.normal(*sa)
            b = g.uniform(0.5, 2.0, *sb) if name == "div" else g.normal(*sb)  # (ties have probability 0)
            return [inp("a", a), inp("b", b)], lambda a, b: fn(a, b)
        case(name, {}, tag)(build)

# with a scalar
for s in (0.5, -3.25):
    case("add_scalar", {"s": s}, f"s={s}")(lambda g, s=s: ([inp("a", g.normal(5, 13))], lambda a: a + s))
    case("scale", {"s": s}, f"s={s}")(lambda g, s=s: ([inp("a", g.normal(5, 13))], lambda a: a * s))
for e in (2.0, 0.5, -1.5, 3.0):
    case("pow", {"exponent": e}, f"e={e}")(
        lambda g, e=e: ([inp("a", g.uniform(0.3, 2.0, 4, 11))], lambda a: torch.pow(a, e)))

# unary
UNARY = {
    "neg": (torch.neg, "normal"), "exp": (torch.exp, "normal"), "log": (torch.log, "positive"),
    "sqrt": (torch.sqrt, "positive"), "rsqrt": (torch.rsqrt, "positive"), "abs": (torch.abs, "away"),
    "square": (torch.square, "normal"), "tanh": (torch.tanh, "wide"), "sigmoid": (torch.sigmoid, "wide"),
    "relu": (torch.relu, "away"), "silu": (F.silu, "wide"),
}


def unary_input(g, kind, shape):
    if kind == "positive":
        return g.uniform(0.2, 4.0, *shape)
    if kind == "away":
        return g.away(*shape)
    if kind == "wide":  # reaches the saturated tails and the vectorised polynomial's range boundaries
        return g.normal(*shape, std=3.0)
    return g.normal(*shape)


for name, (fn, kind) in UNARY.items():
    for shape in ((3, 17), (2, 3, 33)):
        tag = "x".join(map(str, shape))
        case(name, {}, tag)(lambda g, fn=fn, kind=kind, shape=shape: (
            [inp("a", unary_input(g, kind, shape))], lambda a: fn(a)))

for approx in ("erf", "tanh"):
    for shape in ((3, 17), (2, 3, 33)):
        tag = approx + "/" + "x".join(map(str, shape))
        case("gelu", {"approximate": approx}, tag)(lambda g, approx=approx, shape=shape: (
            [inp("a", g.normal(*shape, std=2.5))],
            lambda a: F.gelu(a, approximate="none" if approx == "erf" else "tanh")))

for lo, hi in ((-0.5, 0.75), (0.0, 6.0)):
    def build(g, lo=lo, hi=hi):
        x = g.normal(4, 19, std=1.5)
        x = np.where(np.abs(x - lo) < 0.05, x + 0.1, x)  # away from the clamp's kinks
        x = np.where(np.abs(x - hi) < 0.05, x - 0.1, x).astype(np.float32)
        return [inp("a", x)], lambda a: torch.clamp(a, lo, hi)
    case("clamp", {"lo": lo, "hi": hi}, f"{lo},{hi}")(build)

# selection: masks are u8 in moon (nonzero = true) and broadcast
case("where", {}, "same")(lambda g: (
    [inp("cond", g.mask(0.5, 4, 9)), inp("a", g.normal(4, 9)), inp("b", g.normal(4, 9))],
    lambda c, a, b: torch.where(c.bool(), a, b)))
case("where", {}, "broadcast")(lambda g: (
    [inp("cond", g.mask(0.5, 1, 9)), inp("a", g.normal(4, 9)), inp("b", g.normal(4, 1))],
    lambda c, a, b: torch.where(c.bool(), a, b)))
for value in (0.0, -1e9):
    case("masked_fill", {"value": value}, f"v={value:g}")(lambda g, value=value: (
        [inp("a", g.normal(3, 5, 7)), inp("mask", g.mask(0.3, 1, 5, 7))],
        lambda a, m: a.masked_fill(m.bool(), value)))

# comparisons (u8 results, no gradient); small integers as floats so that eq has ties
for name, fn in (("eq", torch.eq), ("gt", torch.gt), ("lt", torch.lt)):
    case(name, {}, "")(lambda g, fn=fn: (
        [inp("a", g.ints(-2, 3, 4, 9).astype(np.float32), grad=False),
         inp("b", g.ints(-2, 3, 9).astype(np.float32), grad=False)],
        lambda a, b: fn(a, b).to(torch.uint8)))

# reductions
for shape in ((7,), (3, 17), (2, 5, 33)):
    tag = "x".join(map(str, shape))
    case("sum", {}, tag)(lambda g, shape=shape: ([inp("a", g.normal(*shape))], lambda a: a.sum()))
    case("mean", {}, tag)(lambda g, shape=shape: ([inp("a", g.normal(*shape))], lambda a: a.mean()))
    case("max", {}, tag)(lambda g, shape=shape: ([inp("a", g.normal(*shape))], lambda a: a.max()))
for dims, keep in (([0], False), ([1], True), ([-1], False), ([0, 2], True), ([2, 0], False)):
    tag = f"dims={dims},keepdim={int(keep)}"
    p = {"dims": dims, "keepdim": keep}
    case("sum_dims", p, tag)(lambda g, dims=dims, keep=keep: (
        [inp("a", g.normal(3, 4, 17))], lambda a: a.sum(dim=dims, keepdim=keep)))
    case("mean_dims", p, tag)(lambda g, dims=dims, keep=keep: (
        [inp("a", g.normal(3, 4, 17))], lambda a: a.mean(dim=dims, keepdim=keep)))
for dim, keep in ((0, False), (1, True), (-1, False), (2, True)):
    p = {"dim": dim, "keepdim": keep}
    tag = f"dim={dim},keepdim={int(keep)}"
    case("max_dim", p, tag)(lambda g, dim=dim, keep=keep: (
        [inp("a", g.normal(3, 4, 17))], lambda a: tuple(torch.max(a, dim=dim, keepdim=keep))))
    case("argmax", p, tag)(lambda g, dim=dim, keep=keep: (
        [inp("a", g.normal(3, 4, 17), grad=False)], lambda a: torch.argmax(a, dim=dim, keepdim=keep)))
for dim in (0, 1, -1):
    case("cumsum", {"dim": dim}, f"dim={dim}")(lambda g, dim=dim: (
        [inp("a", g.normal(3, 6, 17))], lambda a: torch.cumsum(a, dim=dim)))
for shape_in, target in (((4, 17), (17,)), ((3, 5, 7), (3, 1, 7)), ((2, 3, 4), (1, 1, 1)), ((5, 6), ())):
    case("sum_to", {"shape": list(target)}, "x".join(map(str, target)) or "scalar")(
        lambda g, shape_in=shape_in, target=target: (
            [inp("a", g.normal(*shape_in))],
            lambda a: a.sum(dim=[i for i in range(a.dim()) if i < a.dim() - len(target)
                                 or target[i - (a.dim() - len(target))] == 1], keepdim=True)
            .reshape(target)))

# views and copies (a matmul-free graph: checks moon's view backward through permute/expand/slice)
case("reshape", {"shape": [6, -1]}, "")(lambda g: ([inp("a", g.normal(2, 3, 10))], lambda a: a.reshape(6, -1)))
case("flatten", {"start": 1, "end": -1}, "")(lambda g: (
    [inp("a", g.normal(2, 3, 4, 5))], lambda a: torch.flatten(a, 1, -1)))
case("permute", {"dims": [2, 0, 1]}, "")(lambda g: (
    [inp("a", g.normal(3, 4, 5))], lambda a: a.permute(2, 0, 1)))
case("transpose", {"d0": 0, "d1": -1}, "")(lambda g: (
    [inp("a", g.normal(3, 4, 5))], lambda a: a.transpose(0, -1)))
case("slice", {"dim": 1, "start": 2, "end": 9}, "")(lambda g: (
    [inp("a", g.normal(3, 11, 4))], lambda a: a[:, 2:9]))
case("slice", {"dim": -1, "start": -5, "end": -1}, "negative")(lambda g: (
    [inp("a", g.normal(3, 11))], lambda a: a[..., -5:-1]))
case("select", {"dim": 1, "index": 3}, "")(lambda g: (
    [inp("a", g.normal(3, 5, 4))], lambda a: a.select(1, 3)))
case("expand", {"shape": [4, 3, 7]}, "")(lambda g: ([inp("a", g.normal(3, 1))], lambda a: a.expand(4, 3, 7)))
case("squeeze", {"dim": 1}, "")(lambda g: ([inp("a", g.normal(4, 1, 5))], lambda a: a.squeeze(1)))
case("unsqueeze", {"dim": -1}, "")(lambda g: ([inp("a", g.normal(4, 5))], lambda a: a.unsqueeze(-1)))
case("contiguous", {"permute": [1, 0]}, "")(lambda g: (
    [inp("a", g.normal(6, 9))], lambda a: a.permute(1, 0).contiguous()))


# indexing and combining (ops/index.h); integer index tensors are i64
case("embedding", {}, "")(lambda g: (
    [inp("weight", g.normal(11, 6)), inp("ids", g.ints(0, 11, 3, 7))], lambda w, i: F.embedding(i, w)))
for dim in (0, 1, -1):
    case("index_select", {"dim": dim}, f"dim={dim}")(lambda g, dim=dim: (
        [inp("x", g.normal(5, 6, 7)), inp("index", g.ints(0, [5, 6, 7][dim], 9))],
        lambda x, i: torch.index_select(x, dim, i)))
    case("gather", {"dim": dim}, f"dim={dim}")(lambda g, dim=dim: (
        [inp("x", g.normal(4, 6, 5)), inp("index", g.ints(0, [4, 6, 5][dim], *[[8, 3, 5], [4, 9, 2], [3, 6, 8]][dim]))],
        lambda x, i: torch.gather(x, dim, i)))
    case("scatter_add", {"dim": dim}, f"dim={dim}")(lambda g, dim=dim: (
        [inp("x", g.normal(4, 6, 5)), inp("index", g.ints(0, [4, 6, 5][dim], *[[8, 3, 5], [4, 9, 2], [3, 6, 8]][dim])),
         inp("src", g.normal(*[[8, 3, 5], [4, 9, 2], [3, 6, 8]][dim]))],
        lambda x, i, src: torch.scatter_add(x, dim, i, src)))
for dim in (0, 1, -1):
    case("concat", {"dim": dim}, f"dim={dim}")(lambda g, dim=dim: (
        [inp(f"t{j}", g.normal(*[[2 + j, 3, 4], [2, 1 + 2 * j, 4], [2, 3, 5 - j]][dim])) for j in range(3)],
        lambda *ts: torch.cat(ts, dim)))
for dim in (0, 2, -1):
    case("stack", {"dim": dim}, f"dim={dim}")(lambda g, dim=dim: (
        [inp(f"t{j}", g.normal(3, 5)) for j in range(3)], lambda *ts: torch.stack(ts, dim)))
case("split", {"sizes": [2, 5, 1], "dim": 1}, "")(lambda g: (
    [inp("x", g.normal(3, 8, 4))], lambda x: torch.split(x, [2, 5, 1], 1)))
case("chunk", {"chunks": 3, "dim": -1}, "")(lambda g: (
    [inp("x", g.normal(4, 9))], lambda x: torch.chunk(x, 3, -1)))
for k, dim, largest in ((3, -1, True), (2, 0, False), (5, 1, True)):
    case("topk", {"k": k, "dim": dim, "largest": largest}, f"k={k},dim={dim},largest={int(largest)}")(
        lambda g, k=k, dim=dim, largest=largest: (
            [inp("x", g.normal(6, 7, 9))], lambda x: tuple(torch.topk(x, k, dim, largest, sorted=True))))

# matrix products (ops/matmul.h), f32 through oneDNN
MM_TOL = (1e-4, 1e-4)
for tag, (sa, sb) in {"vv": ((17,), (17,)), "mv": ((5, 17), (17,)), "vm": ((17,), (17, 6)),
                      "mm": ((5, 17), (17, 6)), "batched": ((2, 3, 5, 9), (2, 3, 9, 4)),
                      "broadcast": ((2, 1, 5, 9), (3, 9, 4)), "shared_rhs": ((4, 5, 9), (9, 7))}.items():
    case("matmul", {}, tag, MM_TOL, MM_TOL)(lambda g, sa=sa, sb=sb: (
        [inp("a", g.normal(*sa)), inp("b", g.normal(*sb))], lambda a, b: torch.matmul(a, b)))
case("linear", {"bias": True}, "bias", MM_TOL, MM_TOL)(lambda g: (
    [inp("x", g.normal(2, 5, 12)), inp("weight", g.normal(7, 12, std=0.3)), inp("bias", g.normal(7))],
    lambda x, w, b: F.linear(x, w, b)))
case("linear", {"bias": False}, "nobias", MM_TOL, MM_TOL)(lambda g: (
    [inp("x", g.normal(9, 12)), inp("weight", g.normal(7, 12, std=0.3))], lambda x, w: F.linear(x, w)))
case("bmm", {}, "", MM_TOL, MM_TOL)(lambda g: (
    [inp("a", g.normal(3, 5, 17)), inp("b", g.normal(3, 17, 6))], lambda a, b: torch.bmm(a, b)))


# attention (ops/attention.h): written out in torch (1.13 has no F.scaled_dot_product_attention)
def sdpa_reference(q, k, v, causal=False, q_offset=0, key_keep=None, scale=0.0):
    hq, hkv, tq, tk, d = q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3]
    k = k.repeat_interleave(hq // hkv, dim=1)  # query head h reads kv head h // (Hq / Hkv)
    v = v.repeat_interleave(hq // hkv, dim=1)
    s = (q @ k.transpose(-1, -2)) * (scale if scale > 0 else d ** -0.5)  # (B, Hq, Tq, Tk)
    allowed = torch.ones(q.shape[0], 1, tq, tk, dtype=torch.bool)
    if causal:
        i = torch.arange(tq).view(tq, 1)
        j = torch.arange(tk).view(1, tk)
        allowed = allowed & (j <= i + q_offset)
    if key_keep is not None:
        allowed = allowed & key_keep.bool().view(q.shape[0], 1, 1, tk)
    p = torch.softmax(s.masked_fill(~allowed, -1e30), dim=-1)
    p = torch.where(allowed.any(dim=-1, keepdim=True), p, torch.zeros_like(p))  # a query that sees nothing -> 0
    return p @ v


ATT_TOL = (1e-4, 1e-4)
for tag, (b, hq, hkv, tq, tk, d, causal, q_offset, masked, scale) in {
        "plain": (2, 2, 2, 7, 7, 8, False, 0, False, 0.0),
        "causal": (1, 4, 4, 19, 19, 16, True, 0, False, 0.0),
        "gqa_causal": (2, 4, 2, 9, 9, 8, True, 0, False, 0.0),
        "decode_offset": (1, 2, 1, 3, 11, 8, True, 8, False, 0.0),
        "cross_long": (1, 2, 2, 5, 70, 16, False, 0, False, 0.0),
        "key_mask": (2, 2, 1, 6, 10, 8, False, 0, True, 0.0),
        "causal_mask_scale": (2, 2, 2, 8, 8, 4, True, 0, True, 0.3),
}.items():
    p = {"causal": causal, "q_offset": q_offset, "key_keep": masked, "scale": scale}

    def build(g, b=b, hq=hq, hkv=hkv, tq=tq, tk=tk, d=d, causal=causal, q_offset=q_offset, masked=masked,
              scale=scale):
        ins = [inp("q", g.normal(b, hq, tq, d)), inp("k", g.normal(b, hkv, tk, d)), inp("v", g.normal(b, hkv, tk, d))]
        if masked:
            keep = g.mask(0.7, b, tk)
            keep[:, 0] = 1  # every query keeps at least one key
            ins.append(inp("key_keep", keep))
        return ins, lambda q, k, v, m=None: sdpa_reference(q, k, v, causal, q_offset, m, scale)

    case("scaled_dot_product_attention", p, tag, ATT_TOL, ATT_TOL)(build)


def rope_reference(x, pos, theta):
    d = x.shape[-1]
    half = d // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / d)
    ang = pos.double().unsqueeze(-1) * inv  # (T, D/2) or (B, T, D/2)
    if ang.dim() == 3:
        ang = ang.unsqueeze(1)  # (B, 1, T, D/2)
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


for tag, (shape, per_batch, theta, maxpos) in {"shared_pos": ((2, 3, 7, 8), False, 10000.0, 7),
                                               "per_batch": ((2, 2, 5, 16), True, 10000.0, 50),
                                               "large_pos": ((1, 2, 4, 32), False, 1000000.0, 30000)}.items():
    case("rope", {"theta": theta}, tag, (5e-5, 5e-5), (5e-5, 5e-5))(
        lambda g, shape=shape, per_batch=per_batch, theta=theta, maxpos=maxpos: (
            [inp("x", g.normal(*shape)),
             inp("positions", g.ints(0, maxpos, *((shape[0], shape[2]) if per_batch else (shape[2],))))],
            lambda x, pos: rope_reference(x, pos, theta)))

# normalisations (ops/norm.h)
for dim, shape in ((-1, (4, 33)), (0, (5, 7)), (1, (2, 9, 3))):
    case("softmax", {"dim": dim}, f"dim={dim}")(lambda g, dim=dim, shape=shape: (
        [inp("x", g.normal(*shape, std=3.0))], lambda x: torch.softmax(x, dim)))
    case("log_softmax", {"dim": dim}, f"dim={dim}")(lambda g, dim=dim, shape=shape: (
        [inp("x", g.normal(*shape, std=3.0))], lambda x: torch.log_softmax(x, dim)))
case("softmax", {"dim": -1}, "huge")(lambda g: (  # max-shifted: no overflow at |x| ~ 1e4
    [inp("x", g.normal(3, 17, std=1e4))], lambda x: torch.softmax(x, -1)))
LN_TOL = (1e-4, 1e-4)
for tag, (shape, affine, eps) in {"affine": ((2, 5, 33), True, 1e-5), "plain": ((7, 64), False, 1e-5),
                                  "eps": ((3, 16), True, 1e-2)}.items():
    def build(g, shape=shape, affine=affine, eps=eps):
        c = shape[-1]
        x = g.normal(*shape, std=2.0) + g.normal(*shape[:-1], 1)  # rows with non-zero means
        ins = [inp("x", x.astype(np.float32))]
        if affine:
            ins += [inp("weight", g.normal(c, std=0.5) + 1), inp("bias", g.normal(c, std=0.5))]
        return ins, lambda x, w=None, b=None: F.layer_norm(x, (c,), w, b, eps)
    case("layer_norm", {"affine": affine, "eps": eps}, tag, LN_TOL, LN_TOL)(build)
for tag, (shape, weighted, eps) in {"weight": ((2, 5, 33), True, 1e-6), "plain": ((7, 64), False, 1e-6),
                                    "eps": ((3, 16), True, 1e-2)}.items():
    def build(g, shape=shape, weighted=weighted, eps=eps):
        ins = [inp("x", g.normal(*shape, std=2.0))]
        if weighted:
            ins.append(inp("weight", g.normal(shape[-1], std=0.5) + 1))

        def fn(x, w=None):
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            return y * w if w is not None else y
        return ins, fn
    case("rms_norm", {"weighted": weighted, "eps": eps}, tag, LN_TOL, LN_TOL)(build)


# dropout: the mask is moon's Philox stream, recomputed here (philox4x32-10, as runtime/rng.cpp)
def philox4x32(counter, key):
    m = 0xFFFFFFFF
    c0, c1, c2, c3 = counter & m, counter >> 32, 0, 0
    k0, k1 = key & m, key >> 32
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & m, (p0 >> 32) ^ c3 ^ k1, p0 & m
        k0, k1 = (k0 + 0x9E3779B9) & m, (k1 + 0xBB67AE85) & m
    return c0, c1, c2, c3


assert philox4x32(0, 0) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)  # Random123 known answer


def dropout_uniform(seed, offset, i):
    return (philox4x32(offset + i // 4, seed)[i % 4] >> 8) * (1.0 / 16777216.0)


for tag, (shape, prob, seed, offset, training) in {"p0.3": ((4, 33), 0.3, 7, 0, True),
                                                  "p0.5_offset": ((3, 5, 7), 0.5, 123456789, 1000, True),
                                                  "eval": ((4, 9), 0.5, 1, 0, False)}.items():
    def build(g, shape=shape, prob=prob, seed=seed, offset=offset, training=training):
        n = int(np.prod(shape))
        keep = np.array([dropout_uniform(seed, offset, i) >= prob for i in range(n)], dtype=np.float64)
        keep = torch.from_numpy(keep.reshape(shape))
        scale = 1.0 / (1.0 - prob)
        return [inp("x", g.normal(*shape))], (lambda x: x * keep * scale) if training else (lambda x: x * 1.0)
    case("dropout", {"p": prob, "seed": seed, "offset": offset, "training": training}, tag)(build)

# losses and similarities (ops/loss.h)
for tag, (n, c, ignore, smooth, n_ignored) in {"plain": (8, 11, -100, 0.0, 0), "smooth": (6, 33, -100, 0.1, 0),
                                               "ignore": (9, 5, -100, 0.0, 3), "ignore_smooth": (7, 17, 2, 0.2, 2),
                                               "one_row": (1, 4, -100, 0.0, 0)}.items():
    def build(g, n=n, c=c, ignore=ignore, smooth=smooth, n_ignored=n_ignored):
        t = g.ints(0, c, n)
        if ignore != -100:
            t = np.where(t == ignore, (ignore + 1) % c, t)  # the class equal to ignore_index appears only where chosen
        t[:n_ignored] = ignore
        return ([inp("logits", g.normal(n, c, std=2.0)), inp("targets", t)],
                lambda x, t: F.cross_entropy(x, t, ignore_index=ignore, label_smoothing=smooth))
    case("cross_entropy", {"ignore_index": ignore, "label_smoothing": smooth}, tag)(build)
for dim, shape in ((-1, (5, 16)), (0, (7, 3)), (1, (2, 6, 4))):
    case("l2_normalize", {"dim": dim, "eps": 1e-12}, f"dim={dim}")(lambda g, dim=dim, shape=shape: (
        [inp("x", g.normal(*shape))], lambda x: F.normalize(x, dim=dim, eps=1e-12)))
for tag, (n, m, d) in {"square": (6, 6, 16), "rect": (5, 9, 33)}.items():
    case("cosine_similarity_matrix", {"eps": 1e-8}, tag)(lambda g, n=n, m=m, d=d: (
        [inp("a", g.normal(n, d)), inp("b", g.normal(m, d))],
        lambda a, b: F.normalize(a, dim=-1, eps=1e-8) @ F.normalize(b, dim=-1, eps=1e-8).t()))

# ---------------------------------------------------------------------------------------------------- driver
def tensor_json(t, dtype=None):
    t = t.detach().cpu()
    if t.dtype in (torch.float32, torch.float64):
        kind, data = "f64", [float(x) for x in t.double().reshape(-1).tolist()]
    elif t.dtype == torch.uint8 or t.dtype == torch.bool:
        kind, data = "u8", [int(x) for x in t.to(torch.uint8).reshape(-1).tolist()]
    else:
        kind, data = "i64", [int(x) for x in t.to(torch.int64).reshape(-1).tolist()]
    return {"shape": list(t.shape), "dtype": dtype or kind, "data": data}


def array_json(a):
    kind = {np.dtype(np.float32): "f32", np.dtype(np.int64): "i64", np.dtype(np.uint8): "u8"}[a.dtype]
    data = [float(x) for x in a.reshape(-1)] if kind == "f32" else [int(x) for x in a.reshape(-1)]
    return {"shape": list(a.shape), "dtype": kind, "data": data}


def run_case(c, seed):
    g = Gen([seed, zlib.crc32(c["id"].encode())])
    inputs, fn = c["build"](g)
    tensors = []
    for i in inputs:
        a = np.ascontiguousarray(i["data"])
        i["data"] = a
        if a.dtype == np.float32:
            t = torch.from_numpy(a.astype(np.float64)).requires_grad_(i["requires_grad"])
        else:
            t = torch.from_numpy(a.copy())
        tensors.append(t)
    outs = fn(*tensors)
    if not isinstance(outs, (tuple, list)):
        outs = (outs,)
    roots, grads, grad_outputs = [], [], []
    for o in outs:
        if o.is_floating_point() and o.requires_grad:
            go = torch.from_numpy(g.normal(*o.shape).astype(np.float64))
            roots.append(o)
            grads.append(go)
            grad_outputs.append(tensor_json(go, "f32"))
        else:
            grad_outputs.append(None)
    if roots:
        torch.autograd.backward(roots, grads)
    input_grads = []
    for i, t in zip(inputs, tensors):
        if not i["requires_grad"]:
            input_grads.append(None)
        else:
            input_grads.append(tensor_json(t.grad if t.grad is not None else torch.zeros_like(t)))
    return {
        "id": c["id"], "op": c["op"], "params": c["params"],
        "inputs": [dict(name=i["name"], requires_grad=i["requires_grad"], **array_json(i["data"]))
                   for i in inputs],
        "outputs": [tensor_json(o) for o in outs],
        "grad_outputs": grad_outputs,
        "grads": input_grads,
        "tol": {"fwd": list(c["fwd_tol"]), "grad": list(c["grad_tol"])},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/parity.json", help="the JSON file to write")
    ap.add_argument("--seed", type=int, default=20240501, help="base seed (each case mixes in its id)")
    ap.add_argument("--only", default="", help="comma-separated op names to generate (default: all)")
    ap.add_argument("--list", action="store_true", help="print the op names and case counts, then exit")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    only = set(filter(None, args.only.split(",")))
    chosen = [c for c in CASES if not only or c["op"] in only]
    if args.list:
        counts = {}
        for c in chosen:
            counts[c["op"]] = counts.get(c["op"], 0) + 1
        for op, n in counts.items():
            print(f"{op:30s} {n}")
        print(f"{len(counts)} ops, {len(chosen)} cases")
        return
    ids = [c["id"] for c in CASES]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        sys.exit(f"torch_parity.py: duplicate case ids {sorted(dup)}")
    cases = [run_case(c, args.seed) for c in chosen]
    doc = {"generator": "scripts/torch_parity.py", "torch": torch.__version__, "reference_dtype": "float64",
           "input_dtype": "float32", "seed": args.seed, "cases": cases}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"), allow_nan=False)
    os.replace(tmp, args.out)
    print(f"torch_parity.py: {len(cases)} cases over {len({c['op'] for c in cases})} ops -> {args.out}")


if __name__ == "__main__":
    main()
