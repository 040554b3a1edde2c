#!/usr/bin/env python3
"""Old against new losskit_bench in one run: every benchmark both binaries
have, in alternating passes (old first in even passes, new first in odd), the
minimum real time of each benchmark over the passes, then new/old.
Usage: tools/compare_bench.py OLD_BIN NEW_BIN PASSES [extra benchmark args...]
(e.g. two Release builds of losskit_bench: `cmake --preset bench -B DIR
-DLOSSKIT_BUILD_EXAMPLES=OFF && cmake --build DIR --target losskit_bench`
in each checkout). Each binary runs every benchmark the filter selects, and
only the names both have are compared, so pass --benchmark_filter (e.g. the
common names) to skip the rest."""
import json, os, subprocess, sys, tempfile

old, new, passes, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))

def names(b):
    out = subprocess.run([b, '--benchmark_list_tests=true'] + [a for a in extra if a.startswith('--benchmark_filter')],
                         capture_output=True, text=True, env=env).stdout
    return [l.strip() for l in out.splitlines() if l.strip()]

old_names, new_names = set(names(old)), set(names(new))
common = sorted(old_names & new_names)
only_old, only_new = sorted(old_names - new_names), sorted(new_names - old_names)
best = {old: {}, new: {}}

def run(b):
    with tempfile.NamedTemporaryFile(suffix='.json', delete=False) as f:
        path = f.name
    args = [b, '--benchmark_out=' + path, '--benchmark_out_format=json'] + \
           [a for a in extra if not a.startswith('--benchmark_filter')]
    filt = [a for a in extra if a.startswith('--benchmark_filter')]
    args += filt
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    data = json.load(open(path))
    os.unlink(path)
    for r in data['benchmarks']:
        if r.get('run_type', 'iteration') != 'iteration' or r.get('error_occurred'):
            continue
        t = r['real_time']
        n = r['name']
        best[b][n] = min(best[b].get(n, float('inf')), t)

for p in range(passes):
    for b in ((old, new) if p % 2 == 0 else (new, old)):
        run(b)
    print(f'pass {p + 1}/{passes} done', file=sys.stderr, flush=True)

rows, over = [], 0
for n in common:
    if n in best[old] and n in best[new]:
        r = best[new][n] / best[old][n]
        rows.append((n, best[old][n], best[new][n], r))
        over += r > 1.05
for n, o, w, r in rows:
    print(f'{r:6.3f}  {o:12.1f}  {w:12.1f}  {n}')
rs = sorted(r for *_, r in rows)
if rs:
    import math
    geo = math.exp(sum(math.log(r) for r in rs) / len(rs))
    print(f'# {len(rows)} benchmarks in both; new/old of min real time over {passes} passes: '
          f'median {rs[len(rs)//2]:.3f}, geometric mean {geo:.3f}, min {rs[0]:.3f}, max {rs[-1]:.3f}; over 1.05: {over}')
print(f'# only in old: {len(only_old)}; only in new: {len(only_new)}')
for n in only_old: print('#   old only:', n)
for n in only_new: print('#   new only:', n)
