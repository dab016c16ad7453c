#!/usr/bin/env node
// GPT-2 reference ids from npm's gpt-3-encoder (its own encode()), for the tokenizer_gpt2 parity suite, and
// its encoding speed, for bench/bench_tokenizer.cpp.
//
//   node scripts/gpt2_reference.js PKG_DIR tests/data/tokenizer_sample.txt OUT.json
//       OUT.json = {"package_dir", "version", "cases": [{"text", "ids", "qwen2_pieces"}]}: every non-empty
//       line, every paragraph (blank-line separated) and the whole file; qwen2_pieces is the text split by
//       Qwen2's pre-tokenisation regex (run by this JavaScript engine), to check our hand-written matcher
//   node scripts/gpt2_reference.js --bench PKG_DIR TEXT_FILE
//       encodes TEXT_FILE line by line (each line with its "\n"), once to warm up and once timed; prints
//       {"bytes", "tokens", "seconds"}
// PKG_DIR is the folder scripts/fetch_gpt2_tokenizer.sh prints.
'use strict';
const fs = require('fs');
const path = require('path');

function loadEncoder(pkgDir) {
  return require(path.resolve(pkgDir, 'Encoder.js'));
}

// The lines of `text`, each keeping its "\n" (so that they concatenate back to `text`).
function linesWithNewlines(text) {
  const out = [];
  let start = 0;
  for (let i = 0; i < text.length; ++i) {
    if (text[i] === '\n') {
      out.push(text.slice(start, i + 1));
      start = i + 1;
    }
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}

// Qwen2's regex; node 20 has no inline (?i:...), so the contractions spell out both cases.
const qwen2Pattern = new RegExp(
    "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|" +
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", 'gu');

function reference(pkgDir, samplePath, outPath) {
  const { encode } = loadEncoder(pkgDir);
  const text = fs.readFileSync(samplePath, 'utf8');
  const texts = [];
  for (const line of text.split('\n')) if (line.length) texts.push(line);
  for (const para of text.split(/\n\s*\n/)) if (para.length) texts.push(para);
  texts.push(text);
  const cases = texts.map(t => ({ text: t, ids: encode(t), qwen2_pieces: Array.from(t.matchAll(qwen2Pattern), m => m[0]) }));
  const version = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;
  fs.writeFileSync(outPath, JSON.stringify({ package_dir: path.resolve(pkgDir), version, cases }));
  process.stderr.write(`gpt2_reference: ${cases.length} cases from ${samplePath} -> ${outPath}\n`);
}

function bench(pkgDir, textPath) {
  const { encode } = loadEncoder(pkgDir);
  const text = fs.readFileSync(textPath, 'utf8');
  const lines = linesWithNewlines(text);
  let tokens = 0;
  for (const line of lines) tokens += encode(line).length;  // warm-up (fills the word cache, JIT)
  const t0 = process.hrtime.bigint();
  tokens = 0;
  for (const line of lines) tokens += encode(line).length;
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ bytes: Buffer.byteLength(text, 'utf8'), tokens, seconds }) + '\n');
}

const args = process.argv.slice(2);
if (args[0] === '--bench' && args.length === 3) {
  bench(args[1], args[2]);
} else if (args.length === 3) {
  reference(args[0], args[1], args[2]);
} else {
  process.stderr.write('usage: gpt2_reference.js PKG_DIR SAMPLE_TXT OUT_JSON | --bench PKG_DIR TEXT_FILE\n');
  process.exit(2);
}
