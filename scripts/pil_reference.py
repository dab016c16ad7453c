#!/usr/bin/python3
"""PIL reference data for the C++ suite `image_pil` (tests/test_image_pil.cpp).

Takes a deterministic set of real images:
  - 12 PNGs from Debian's openclipart-png (sorted paths, fixed stride), plus the first grey+alpha (LA) and
    the first RGB one found, so that RGBA, palette+transparency, LA and RGB files are all covered;
  - 4 Fashion-MNIST photos (28x28 grey, from the gzip'd IDX file of dataset-fashion-mnist), written as PNG;
  - one JPEG that PIL encodes (quality 90) from one of the real PNGs.
For each it records the file, and PIL's (Pillow 9.4) results as .npy files:
  rgb       : the image converted to RGB with alpha composited on white (Image.alpha_composite)
  resize    : rgb.resize((w, h), BICUBIC / BILINEAR / NEAREST) at sizes that shrink by a large and a small
              factor, enlarge, and change the aspect ratio
  crop      : torchvision-style centre crop of rgb (top = round((H - h) / 2), Python rounding)
  clip      : the full CLIP preprocess (shortest side to 224 bicubic, centre crop 224, /255, CLIP mean/std)
              as float32 (3, 224, 224), computed like torchvision's ToTensor + Normalize
and writes manifest.json describing every case.

usage: /usr/bin/python3 scripts/pil_reference.py --out DIR
"""
import argparse
import glob
import gzip
import json
import os
import struct
import sys

import numpy as np
from PIL import Image

OPENCLIPART = "/usr/share/openclipart/png"
FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def fail_missing(what):
    sys.exit(f"pil_reference.py: {what} is missing; install the data packages with `bash scripts/setup.sh` "
             "(dataset-fashion-mnist, openclipart-png, python3-pil)")


def rgb_on_white(im):
    """RGB with alpha composited on white, as moon's decode_image does."""
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def center_crop(im, h, w):
    """torchvision.transforms.functional.center_crop on a PIL image no larger than the crop."""
    W, H = im.size
    top = int(round((H - h) / 2.0))
    left = int(round((W - w) / 2.0))
    return im.crop((left, top, left + w, top + h))


def clip_preprocess(rgb, size=224):
    """CLIP: shortest side to `size` (bicubic), centre crop, ToTensor, Normalize."""
    W, H = rgb.size
    short, long = (W, H) if W <= H else (H, W)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if W <= H else (new_long, new_short)
    im = center_crop(rgb.resize((new_w, new_h), Image.BICUBIC), size, size)
    x = np.asarray(im, dtype=np.uint8).astype(np.float32) / np.float32(255)
    x = (x - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32)


def pick_openclipart():
    files = sorted(glob.glob(os.path.join(OPENCLIPART, "**", "*.png"), recursive=True))
    if len(files) < 100:
        fail_missing(f"{OPENCLIPART} (found {len(files)} PNGs)")
    stride = len(files) // 12
    chosen = [files[i * stride] for i in range(12)]
    for want in ("LA", "RGB"):  # make sure these modes are covered too
        for f in files[7::97]:
            if f not in chosen and Image.open(f).mode == want:
                chosen.append(f)
                break
    # 16-bit grey PNGs open as mode I in PIL (no 8-bit truncation): not a like-for-like comparison.
    return [f for f in chosen if Image.open(f).mode not in ("I", "I;16")]


def fashion_images(out_dir, indices=(0, 1234, 5000, 9999)):
    if not os.path.exists(FASHION):
        fail_missing(FASHION)
    with gzip.open(FASHION, "rb") as f:
        data = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    assert magic == 2051, f"{FASHION}: bad IDX magic {magic}"
    paths = []
    for i in indices:
        px = np.frombuffer(data, dtype=np.uint8, count=rows * cols, offset=16 + i * rows * cols).reshape(rows, cols)
        path = os.path.join(out_dir, f"fashion_{i}.png")
        Image.fromarray(px, "L").save(path)
        paths.append(path)
    return paths


def resize_plan(W, H):
    """(w, h) targets: large and small shrink, enlarge (bounded), aspect change, tiny."""
    plan = [(max(W // 7, 1), max(H // 7, 1)), (max(int(W * 0.8), 1), max(int(H * 0.8), 1)),
            (min(W * 2, W + 300), min(H * 2, H + 300)), (224, 160), (17, 33)]
    out = []
    for p in plan:
        if p not in out:
            out.append(p)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    sources = [(p, "png") for p in pick_openclipart()]
    sources += [(p, "png") for p in fashion_images(args.out)]
    jpeg_path = os.path.join(args.out, "openclipart_as.jpg")
    rgb_on_white(Image.open(sources[1][0])).save(jpeg_path, quality=90)
    sources.append((jpeg_path, "jpeg"))

    cases = []
    for n, (path, kind) in enumerate(sources):
        name = f"case{n:02d}"
        im = Image.open(path)
        mode = im.mode
        rgb = rgb_on_white(im)
        W, H = rgb.size
        case = {"name": name, "source": path, "kind": kind, "mode": mode, "width": W, "height": H,
                "rgb": f"{name}_rgb.npy", "resizes": []}
        np.save(os.path.join(args.out, case["rgb"]), np.asarray(rgb, dtype=np.uint8))
        for (w, h) in resize_plan(W, H):
            for fname in ("bicubic", "bilinear") + (("nearest",) if (w, h) == (224, 160) else ()):
                leaf = f"{name}_{fname}_{w}x{h}.npy"
                np.save(os.path.join(args.out, leaf), np.asarray(rgb.resize((w, h), FILTERS[fname]), dtype=np.uint8))
                case["resizes"].append({"filter": fname, "width": w, "height": h, "file": leaf})
        ch, cw = max(H - H // 3, 1), max(W - W // 4 - 1, 1)  # margins of both parities across the set
        case["crop"] = {"height": ch, "width": cw, "file": f"{name}_crop.npy"}
        np.save(os.path.join(args.out, case["crop"]["file"]), np.asarray(center_crop(rgb, ch, cw), dtype=np.uint8))
        case["clip"] = f"{name}_clip.npy"
        np.save(os.path.join(args.out, case["clip"]), clip_preprocess(rgb))
        cases.append(case)

    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"pillow": Image.__version__, "cases": cases}, f, indent=1)
    print(f"pil_reference.py: {len(cases)} images, "
          f"{sum(len(c['resizes']) for c in cases)} resizes -> {args.out}/manifest.json")


if __name__ == "__main__":
    main()
