#!/usr/bin/env bash
# libFuzzer over moon's parsers: builds the fuzz/ targets with clang (ASan + UBSan + libFuzzer) in
# build-fuzz, makes a seed corpus per target from real files on this machine (openclipart PNGs and SVGs,
# a Fashion-MNIST import, safetensors written by scripts/safetensors_tool.py, a trained tokenizer, the
# tokenizer sample), then runs each target for SECONDS. A crash leaves its input in
# build-fuzz/crashes/<target>/ and makes the script exit non-zero.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET ...]   e.g. bash scripts/fuzz.sh 300 fuzz_image
#
# Needs clang and libomp (Debian clang, libomp-dev); the CI runs the seeded corruption suites (fuzz_*)
# under ASan instead, which need no clang.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
SECONDS_PER_TARGET=${1:-60}
shift || true
DIR=${MOON_FUZZ_DIR:-build-fuzz}
ALL=(fuzz_image fuzz_safetensors fuzz_manifest fuzz_idx fuzz_svg fuzz_npy fuzz_tokenizer fuzz_encode)
[[ $# -gt 0 ]] && TARGETS=("$@") || TARGETS=("${ALL[@]}")

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found; apt-get install clang libomp-dev" >&2; exit 1; }
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$DIR" -G Ninja -DMOON_FUZZ=ON -DMOON_CUDA=OFF -DMOON_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$DIR" -j"$(nproc)" --target "${TARGETS[@]}" moon

# ---- seed corpora (rebuilt each run; small files only, libFuzzer mutates from them)
SEEDS="$DIR/seeds"
rm -rf "$SEEDS"
mkdir -p "$SEEDS"/{fuzz_image,fuzz_safetensors,fuzz_manifest,fuzz_idx,fuzz_svg,fuzz_npy,fuzz_tokenizer,fuzz_encode}
if [[ -d /usr/share/openclipart/png ]]; then
  mapfile -t pngs < <(find /usr/share/openclipart/png -name '*.png' -size -12k | sort | head -40)
  mapfile -t svgs < <(find /usr/share/openclipart/svg -name '*.svg' -size -6k | sort | head -40)
  for i in "${!pngs[@]}"; do cp "${pngs[$i]}" "$SEEDS/fuzz_image/clipart_$i.png"; done
  for i in "${!svgs[@]}"; do cp "${svgs[$i]}" "$SEEDS/fuzz_svg/clipart_$i.svg"; done
fi
/usr/bin/python3 - "$SEEDS" <<'PY'
import gzip, io, struct, sys, numpy as np
from PIL import Image
seeds = sys.argv[1]
img = Image.new("RGB", (13, 7))
img.putdata([(x * 19 % 256, y * 37 % 256, (x + y) * 11 % 256) for y in range(7) for x in range(13)])
img.save(f"{seeds}/fuzz_image/small.jpg", quality=80)
img.save(f"{seeds}/fuzz_image/small.bmp")
img.convert("LA").save(f"{seeds}/fuzz_image/grey_alpha.png")
for name, arr in {"f32": np.arange(12, dtype=np.float32).reshape(3, 4), "i64": np.arange(5, dtype=np.int64),
                  "u8": np.zeros((2, 2, 3), np.uint8)}.items():
    np.save(f"{seeds}/fuzz_npy/{name}.npy", arr)
labels = bytes(range(10))
with open(f"{seeds}/fuzz_idx/labels.idx", "wb") as f:
    f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + labels)
with open(f"{seeds}/fuzz_idx/images.idx.gz", "wb") as f:
    f.write(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 3, 3) + bytes(range(18))))
PY
/usr/bin/python3 scripts/safetensors_tool.py write --out "$SEEDS/fuzz_safetensors/a.safetensors" \
  --expect "$DIR/seeds_expect.json" --shard-dir "$DIR/seeds_shards" >/dev/null
find "$DIR/seeds_shards" -name '*.safetensors' -exec cp {} "$SEEDS/fuzz_safetensors/" \;
"$DIR/moon" data import fashion-mnist --out "$DIR/seeds_fmnist" --limit 20 --quiet --no-install >/dev/null
split -l 1 "$DIR/seeds_fmnist/manifest.jsonl" "$SEEDS/fuzz_manifest/line_"
head -c 20000 tests/data/tokenizer_sample.txt > "$DIR/seeds_corpus.txt"
"$DIR/moon" tokenize --train "$DIR/seeds_corpus.txt" --vocab-size 300 --out "$DIR/seeds_tok" >/dev/null
cp "$DIR/seeds_tok/tokenizer.json" "$SEEDS/fuzz_tokenizer/"
split -l 20 tests/data/tokenizer_sample.txt "$SEEDS/fuzz_encode/sample_"

# ---- run
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$DIR/corpus/$t" "$DIR/crashes/$t"
  echo "== fuzz.sh: $t for ${SECONDS_PER_TARGET}s"
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$DIR/$t" "$DIR/corpus/$t" "$SEEDS/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=20 \
      -rss_limit_mb=4096 -max_len=262144 -artifact_prefix="$DIR/crashes/$t/" -print_final_stats=1 \
      2>"$DIR/$t.log"; then
    echo "fuzz.sh: $t FAILED: see $DIR/$t.log and $DIR/crashes/$t/" >&2
    tail -30 "$DIR/$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$DIR/$t.log" | tail -2
  fi
done
exit $status
