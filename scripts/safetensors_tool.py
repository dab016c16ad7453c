#!/usr/bin/python3
"""safetensors files written and read by hand (struct + json + numpy), for the `safetensors_python` suite.

  write --out F --expect J --shard-dir D   writes F (every moon dtype, odd shapes, a scalar, empty tensors,
                                           an F64 tensor moon does not load, metadata, unaligned data),
                                           the same tensors sharded into D with an index, and J, the values.
  check --in F --expect J                  reads F (a file, a folder, or an index) with this reader and
                                           compares every tensor and the metadata with J; exit 1 on a mismatch.

J: {"metadata": {str: str}, "tensors": {name: {"dtype", "shape", "values": flat C-order list}}}, where float
values are exact (bf16/f16 decoded to float) and "nan", "inf", "-inf" stand for themselves.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

NUMPY_OF = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "u1"}


def bf16_bits(values_f32):
    """f32 -> bf16 bits, round to nearest even (NaN kept a quiet NaN)."""
    u = np.asarray(values_f32, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def decode(dtype, shape, raw):
    """Bytes -> float64 or int64 array of `shape`."""
    a = np.frombuffer(raw, dtype=NUMPY_OF[dtype])
    if dtype == "BF16":
        a = (a.astype(np.uint32) << 16).view("<f4")
    a = a.astype(np.float64) if dtype in ("F32", "F16", "BF16", "F64") else a.astype(np.int64)
    return a.reshape(shape)


def to_json_value(x):
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def from_json_value(v):
    return float(v) if isinstance(v, str) else v


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, dtype, shape, raw bytes), stored in list order with no alignment padding."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(raw for _, _, _, raw in tensors))


def read_safetensors(path):
    """-> ({name: array}, metadata), checking the layout as it goes."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = blob[8 + n :]
    out, spans = {}, []
    for name, e in header.items():
        begin, end = e["data_offsets"]
        spans.append((begin, end))
        out[name] = (e["dtype"], decode(e["dtype"], e["shape"], data[begin:end]))
    covered = 0
    for begin, end in sorted(spans):
        assert begin == covered, f"{path}: gap or overlap at byte {begin}"
        covered = end
    assert covered == len(data), f"{path}: {len(data) - covered} bytes belong to no tensor"
    return out, metadata


def read_checkpoint(path):
    """A file, a folder (model.safetensors or the index) or an index -> ({name: (dtype, array)}, metadata)."""
    if os.path.isdir(path):
        index = os.path.join(path, "model.safetensors.index.json")
        path = index if os.path.exists(index) else os.path.join(path, "model.safetensors")
    if not path.endswith(".json"):
        return read_safetensors(path)
    with open(path) as f:
        index = json.load(f)
    folder, tensors = os.path.dirname(path), {}
    for shard in sorted(set(index["weight_map"].values())):
        got, _ = read_safetensors(os.path.join(folder, shard))
        assert all(index["weight_map"].get(k) == shard for k in got), f"{shard}: tensor not mapped to it"
        tensors.update(got)
    assert set(tensors) == set(index["weight_map"]), "index and shards disagree"
    return tensors, index.get("metadata", {})


def sample_tensors():
    """(name, dtype, shape, raw bytes, exact values) for every case the C++ side checks."""
    import torch

    rng = np.random.default_rng(7)
    f32 = rng.standard_normal(2 * 3 * 5).astype("<f4") * 100
    f32[:6] = [-0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4028235e38]
    bf_src = rng.standard_normal(7).astype("<f4")
    bf_src[:3] = [np.inf, np.nan, -1.0000001]
    bf = bf16_bits(bf_src)
    f16 = np.array([0.5, -65504, 6.1e-5, 3.14159, -0.0, np.inf, 1e-7], dtype="<f2")
    i64 = np.array([-(2**63), -1, 0, 2**63 - 1, 12345678901234], dtype="<i8")
    i32 = np.array([-(2**31), 2**31 - 1, 0, -5, 77, 1, 2, 3, 4, 5, 6, 7], dtype="<i4")
    u8 = (np.arange(15) * 18 + 3).astype("u1")  # 3 .. 255
    # torch's own bf16 bytes pin the byte order: values exact in bf16, then some that torch must round.
    torch_vals = [1.0, -2.0, 0.5, 3.140625, -0.0078125, 65280.0, 1.5e-39, 0.1, 1.0 / 3.0]
    torch_bits = torch.tensor(torch_vals, dtype=torch.bfloat16).view(torch.int16).numpy().tobytes()
    torch_exact = torch.tensor(torch_vals, dtype=torch.bfloat16).float().numpy().astype(np.float64)
    assert list(torch_exact[:6]) == torch_vals[:6]
    decoded_bf = (bf.astype(np.uint32) << 16).view("<f4")
    return [
        ("u8_first", "U8", [15], u8.tobytes(), u8),  # 15 bytes first: everything after it is unaligned
        ("f32", "F32", [2, 3, 5], f32.tobytes(), f32),
        ("bf16", "BF16", [7], bf.tobytes(), decoded_bf),
        ("torch_bf16", "BF16", [9], torch_bits, torch_exact),
        ("f16", "F16", [7, 1], f16.tobytes(), f16),
        ("i64", "I64", [5], i64.tobytes(), i64),
        ("i32", "I32", [3, 1, 4], i32.tobytes(), i32),
        ("scalar", "F32", [], np.array(2.75, dtype="<f4").tobytes(), np.array([2.75])),
        ("empty", "F32", [2, 0, 3], b"", np.zeros(0)),
        ("empty_i64", "I64", [0], b"", np.zeros(0)),
        ("unsupported_f64", "F64", [2], np.array([1.5, -2.5], "<f8").tobytes(), np.array([1.5, -2.5])),
    ]


def cmd_write(args):
    samples = sample_tensors()
    metadata = {"moon.format_version": "1", "source": "safetensors_tool.py", "unicode": "héllo ✓"}
    write_safetensors(args.out, [s[:4] for s in samples], metadata)
    os.makedirs(args.shard_dir, exist_ok=True)
    groups = [samples[0:4], samples[4:8], samples[8:]]
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(os.path.join(args.shard_dir, name), [s[:4] for s in group], metadata)
        for s in group:
            weight_map[s[0]] = name
            total += len(s[3])
    with open(os.path.join(args.shard_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total, **metadata}, "weight_map": weight_map}, f, indent=2)
    expect = {"metadata": metadata, "tensors": {}}
    for name, dtype, shape, _, values in samples:
        flat = [to_json_value(x) for x in np.asarray(values).reshape(-1).tolist()]
        expect["tensors"][name] = {"dtype": dtype, "shape": shape, "values": flat}
    with open(args.expect, "w") as f:
        json.dump(expect, f, ensure_ascii=False)


def cmd_check(args):
    tensors, metadata = read_checkpoint(args.in_path)
    with open(args.expect) as f:
        expect = json.load(f)
    problems = []
    extra = {k: v for k, v in metadata.items() if k != "total_size"}
    if extra != expect["metadata"]:
        problems.append(f"metadata {extra} != {expect['metadata']}")
    if set(tensors) != set(expect["tensors"]):
        problems.append(f"tensor names {sorted(tensors)} != {sorted(expect['tensors'])}")
    for name, e in expect["tensors"].items():
        if name not in tensors:
            continue
        dtype, got = tensors[name]
        want = np.array([from_json_value(v) for v in e["values"]], dtype=got.dtype)
        flat = got.reshape(-1)
        same = dtype == e["dtype"] and list(got.shape) == e["shape"] and flat.shape == want.shape
        if same and got.dtype == np.float64:  # exact, with NaN == NaN and -0 != +0
            same = bool(np.all((flat == want) & (np.signbit(flat) == np.signbit(want)) | np.isnan(flat) & np.isnan(want)))
        elif same:
            same = bool(np.array_equal(flat, want))
        if not same:
            problems.append(f"{name}: {dtype}{list(got.shape)} {flat[:8]} != {e['dtype']}{e['shape']} {want[:8]}")
    for p in problems:
        print(f"{args.in_path}: {p}", file=sys.stderr)
    if not problems:
        print(f"{args.in_path}: {len(tensors)} tensors and the metadata match {args.expect}")
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--out", required=True)
    w.add_argument("--expect", required=True)
    w.add_argument("--shard-dir", required=True)
    c = sub.add_parser("check")
    c.add_argument("--in", dest="in_path", required=True)
    c.add_argument("--expect", required=True)
    args = parser.parse_args()
    if args.cmd == "write":
        cmd_write(args)
        return 0
    return cmd_check(args)


if __name__ == "__main__":
    sys.exit(main())
