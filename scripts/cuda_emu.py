#!/usr/bin/env python3
"""Converts moon's CUDA kernels into host C++ for the CPU emulator test (tests/cuda_emu/).

Reads ops/cuda/*.cu, *.cuh, *.h and runtime/cuda/kernel_util.{cuh,cu} from the source tree and writes
host-compilable copies under OUT/emu/ (never into the source tree):
  * `kernel<<<grid, block, smem, stream>>>(args)` becomes
    `emu::Launch(grid, block, smem, stream).run([&] { kernel(args); })` (every CUDA thread a fiber);
  * `__shared__ T name[N];` becomes a static array refilled with a garbage byte at each block start,
    `extern __shared__ T name[];` the emulator's per-block dynamic shared memory;
  * namespace moon::cuda becomes moon::cuda_emu, so the copies never clash with the real kernels that
    libmoon_core.a holds in a CUDA build;
  * CUDA, CUB and cuBLASLt includes become tests/cuda_emu/cuda_emu_shim.h (host equivalents);
  * cuda::ptr() accepts host tensors, and blocks_for() honours the emulator's grid cap.
Files listed in SKIP are not converted. cuBLASLt itself is emulated by tests/cuda_emu/cublaslt_emu.h.

usage: cuda_emu.py SOURCE_DIR OUT_DIR [--list]   (--list prints the files it would write)
"""
import os
import re
import sys

SKIP = {}  # file name -> why it is not converted
SHIM = '#include "cuda_emu_shim.h"'


def fail(msg):
    sys.stderr.write('cuda_emu.py: error: %s\n' % msg)
    sys.exit(1)


def match_fwd(s, i, op, cl):
    depth = 0
    for j in range(i, len(s)):
        if s[j] == op:
            depth += 1
        elif s[j] == cl:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError('unbalanced %s%s' % (op, cl))


def strip_comments_keep_layout(s):
    """s with comments and string literals blanked (same length), for finding code tokens."""
    out = list(s)
    i, n = 0, len(s)
    while i < n:
        if s.startswith('//', i):
            j = s.find('\n', i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = ' '
            i = j
        elif s.startswith('/*', i):
            j = s.find('*/', i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if out[k] != '\n':
                    out[k] = ' '
            i = j
        elif s[i] == '"' or s[i] == "'":
            q = s[i]
            j = i + 1
            while j < n and s[j] != q:
                j += 2 if s[j] == '\\' else 1
            for k in range(i + 1, min(j, n)):
                out[k] = ' '
            i = j + 1
        else:
            i += 1
    return ''.join(out)


def convert_launches(s, fname):
    code = strip_comments_keep_layout(s)
    out, pos, count = [], 0, 0
    while True:
        a = code.find('<<<', pos)
        if a < 0:
            break
        b = code.find('>>>', a)
        if b < 0:
            fail('%s: unterminated <<< launch' % fname)
        cfg = s[a + 3:b].strip()
        j = a - 1
        while code[j].isspace():
            j -= 1
        if code[j] == '>':  # template argument list
            depth = 0
            while True:
                if code[j] == '>':
                    depth += 1
                elif code[j] == '<':
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
            j -= 1
        while code[j].isalnum() or code[j] in '_:':
            j -= 1
        k0 = j + 1
        kernel = s[k0:a].strip()
        p = b + 3
        while code[p].isspace():
            p += 1
        if code[p] != '(':
            fail('%s: launch of %s without an argument list' % (fname, kernel))
        q = match_fwd(code, p, '(', ')')
        args = s[p + 1:q]
        out.append(s[pos:k0])
        out.append('emu::Launch(%s).run([&] { %s(%s); })' % (cfg, kernel, args))
        pos = q + 1
        count += 1
    out.append(s[pos:])
    return ''.join(out), count


SHARED_STATIC = re.compile(r'(?<!extern )__shared__\s+(alignas\(\d+\)\s+)?([\w:<>, ]+?)\s+(\w+)((?:\[[^\];]+\])*)\s*;')
SHARED_EXTERN = re.compile(r'extern\s+__shared__\s+(alignas\(\d+\)\s+)?([\w:<>, ]+?)\s+(\w+)\s*\[\s*\]\s*;')


def convert_shared(s):
    s = SHARED_EXTERN.sub(lambda m: '%s* %s = emu::dynamic_shared<%s>();' % (m.group(2), m.group(3), m.group(2)), s)
    s = SHARED_STATIC.sub(lambda m: 'static %s%s %s%s; emu::shared_fill(&%s, sizeof(%s));' % (
        m.group(1) or '', m.group(2), m.group(3), m.group(4), m.group(3), m.group(3)), s)
    if re.search(r'\b__shared__\b', strip_comments_keep_layout(s)):
        fail('a __shared__ declaration the converter does not understand is left')
    return s


def rename_namespace(s):
    s = re.sub(r'\bnamespace\s+moon::cuda\b', 'namespace moon::cuda_emu', s)
    s = re.sub(r'\bnamespace\s+cuda\s*\{', 'namespace cuda_emu {', s)
    s = re.sub(r'(?<![\w"])cuda::', 'cuda_emu::', s)
    return s


def convert_includes(s, converted):
    def inc(m):
        path = m.group(1)
        if path in converted:
            return '#include "emu/%s"' % converted[path]
        if path in ('runtime/cuda/context.h', 'runtime/cuda/cuda_check.h'):
            return SHIM
        return m.group(0)
    s = re.sub(r'#include\s+"([^"]+)"', inc, s)
    s = re.sub(r'#include\s+<(cuda_runtime\.h|cuda_bf16\.h|cuda_fp16\.h|cublasLt\.h|cublas_v2\.h|cub/[^>]+)>', SHIM, s)
    return s


def convert(text, fname, converted):
    s = convert_includes(text, converted)
    s, launches = convert_launches(s, fname)
    s = convert_shared(s)
    s = rename_namespace(s)
    return s, launches


def patch_kernel_util(s):
    # Host tensors stand in for device tensors.
    check = 'MOON_CHECK(t.device().is_cuda(),'
    if check not in s:
        fail('runtime/cuda/kernel_util.cuh: the device check of ptr() changed; update scripts/cuda_emu.py')
    s = s.replace(check, 'MOON_CHECK(emu::host_tensor_ok(t.device()),')
    # The emulator may cap every grid (exercises the grid-stride loops); optional.
    m = re.search(r'(inline unsigned blocks_for\([^)]*\)\s*\{)', s)
    if m:
        s = s[:m.end()] + ' cap = emu::cap_grid(cap);' + s[m.end():]
    else:
        sys.stderr.write('cuda_emu.py: warning: blocks_for() not found; the grid cap is not emulated\n')
    return s


def write_if_changed(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    with open(path, 'w') as f:
        f.write(text)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    if len(args) != 2:
        fail('usage: cuda_emu.py SOURCE_DIR OUT_DIR [--list]')
    src, out = args
    ops = os.path.join(src, 'ops', 'cuda')
    names = sorted(os.listdir(ops))
    kernels = [n for n in names if n.endswith('.cu') and n not in SKIP]
    headers = [n for n in names if n.endswith('.h') or n.endswith('.cuh')]
    if '--list' in sys.argv:
        for n in kernels:
            print(os.path.join(out, 'emu', 'ops', 'cuda', n[:-3] + '.cpp'))
        print(os.path.join(out, 'emu', 'runtime', 'cuda', 'kernel_util.cpp'))
        print(os.path.join(out, 'emu', 'runtime', 'cuda', 'kernel_util.cuh'))
        for n in headers:
            print(os.path.join(out, 'emu', 'ops', 'cuda', n))
        return
    # source path -> generated path under OUT/emu
    converted = {'runtime/cuda/kernel_util.cuh': 'runtime/cuda/kernel_util.cuh'}
    for n in headers:
        converted['ops/cuda/' + n] = 'ops/cuda/' + n
    header = '// Generated by scripts/cuda_emu.py from %s: do not edit.\n'
    total = 0
    jobs = [('runtime/cuda/kernel_util.cuh', 'runtime/cuda/kernel_util.cuh'),
            ('runtime/cuda/kernel_util.cu', 'runtime/cuda/kernel_util.cpp')]
    jobs += [('ops/cuda/' + n, 'ops/cuda/' + n) for n in headers]
    jobs += [('ops/cuda/' + n, 'ops/cuda/' + n[:-3] + '.cpp') for n in kernels]
    for rel, gen in jobs:
        with open(os.path.join(src, rel)) as f:
            text = f.read()
        if rel == 'runtime/cuda/kernel_util.cuh':
            text = patch_kernel_util(text)
        s, launches = convert(text, rel, converted)
        total += launches
        write_if_changed(os.path.join(out, 'emu', gen), header % rel + s)
    if total == 0:
        fail('no kernel launches found in %s' % ops)


if __name__ == '__main__':
    main()
