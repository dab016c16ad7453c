#!/usr/bin/python3
"""The peer of moon's data-loader benchmark: what a PyTorch user's Dataset does per product, in one process.

For each product of a moon manifest (the first --count with an image, in file order): PIL opens the
image, converts it to RGB (alpha composited on white, as moon does), resizes the shortest side to --size
with bicubic filtering, centre-crops, and normalises with the CLIP mean/std into a (3, S, S) float32 numpy
array; the title is not tokenised (no Python BPE here), so the peer does a little less work than moon.
Prints one JSON line: {"products": N, "seconds": T, "products_per_s": N/T}. A warm-up pass runs first.
"""
import argparse
import json
import os
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def open_rgb_on_white(path):
    """The image as RGB, transparency composited on white (what moon's decoder does)."""
    img = Image.open(path)
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return img.convert("RGB")


def preprocess(path, size):
    img = open_rgb_on_white(path)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = round((nw - size) / 2.0), round((nh - size) / 2.0)
    img = img.crop((left, top, left + size, top + size))
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--count", type=int, default=256)
    args = ap.parse_args()
    folder = os.path.dirname(os.path.abspath(args.manifest))
    paths = []
    with open(args.manifest, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            product = json.loads(line)
            if product.get("images"):
                paths.append(os.path.join(folder, product["images"][0]))
            if len(paths) == args.count:
                break
    for p in paths[: max(1, len(paths) // 8)]:  # warm-up: imports, file cache
        preprocess(p, args.size)
    t0 = time.perf_counter()
    for p in paths:
        preprocess(p, args.size)
    seconds = time.perf_counter() - t0
    print(json.dumps({"products": len(paths), "seconds": seconds, "products_per_s": len(paths) / seconds}))


if __name__ == "__main__":
    main()
