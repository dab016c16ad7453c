#!/usr/bin/python3
"""The PyTorch peer of `moon embed`: products/s for the same manifest, config, batch and threads.

Per batch of products it does what `moon embed` does: open each image with Pillow, convert to RGB on
white, bicubic square resize to the config's image size, SigLIP normalisation ((x/255 - 0.5) / 0.5), build
the model batch, and run the twin's forward (scripts/moon_twin.py, grouped MoE, real bf16 GEMMs with
--dtype bf16) under no_grad. Text: the product text ("title | key: value; ...") as UTF-8 bytes, cut at
--max-tokens, every row of a batch padded to the batch's longest text (moon pads to the longest too, so
both compute the same number of positions; the twin runs padded positions as moon does). Weights are
freshly drawn (as `moon embed --config`); their init is not timed, nor is moon's.

  OMP_NUM_THREADS=2 /usr/bin/python3 scripts/bench_embed_peer.py --config small \
      --manifest data/fm/manifest.jsonl --batch 32 --threads 2 [--dtype bf16]
Prints one JSON line with products_per_s.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moon_twin  # noqa: E402
from bench_loader_peer import open_rgb_on_white  # noqa: E402


def product_text(p):
    text = p.get("title", "")
    attrs = p.get("attributes") or {}
    if attrs:
        text += " | " + "; ".join(f"{k}: {v}" for k, v in attrs.items())
    return text


def load_image(path, size):
    img = open_rgb_on_white(path).resize((size, size), Image.BICUBIC)
    x = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(((x - 0.5) / 0.5).transpose(2, 0, 1).copy())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = moon_twin.load_named_config(args.config)
    gen = torch.Generator().manual_seed(0)
    params = {}
    for name, (shape, kind) in moon_twin.param_shapes(cfg).items():
        params[name] = (torch.randn(shape, generator=gen) * 0.02 if kind == "w"
                        else torch.ones(shape) if kind == "one" else torch.zeros(shape))
    twin = moon_twin.Twin(cfg, params, args.dtype == "bf16", fast=True)
    root = os.path.dirname(os.path.abspath(args.manifest))
    with open(args.manifest) as f:
        products = [json.loads(line) for line in f if line.strip()]
    if args.limit:
        products = products[:args.limit]
    size = cfg["vision"]["image_size"]
    start = time.perf_counter()
    done = 0
    with torch.no_grad():
        for i in range(0, len(products), args.batch):
            chunk = products[i:i + args.batch]
            pixels = torch.stack([load_image(os.path.join(root, p["images"][0]), size) for p in chunk])
            texts = [list(product_text(p).encode("utf-8"))[:args.max_tokens] for p in chunk]
            L = max(len(t) for t in texts)
            batch = moon_twin.synthetic_batch(cfg, len(chunk), L, gen)
            batch["pixels"] = pixels
            M = batch["vision_slot"].ge(0).sum(1)[0].item()
            for r, t in enumerate(texts):
                batch["token_ids"][r, 3 + M:3 + M + len(t)] = torch.tensor(t, dtype=torch.int64) + 9
            out = twin.forward(batch)["embedding"]
            done += out.shape[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"impl": "torch-twin", "config": args.config, "products": done, "seconds": seconds,
                      "products_per_s": done / seconds, "batch": args.batch, "threads": args.threads,
                      "dtype": args.dtype, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
