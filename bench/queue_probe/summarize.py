#!/usr/bin/env python3
"""bench/queue_probe/summarize.py [results.tsv]: medians and spreads of run.sh's
figures.  Ratios are per repetition (the variant against plain in the same
repetition), then the median and the range of those ratios."""
import sys, statistics as st
from collections import defaultdict
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1] if len(sys.argv) > 1 else 'results.tsv') if l.strip()]
v = defaultdict(dict)          # (metric, variant) -> {rep: value}
for rep, metric, var, val, unit in rows:
    try: v[(metric, var)][rep] = float(val)
    except ValueError: pass
def med_range(xs):
    return st.median(xs), min(xs), max(xs)
variants = ['plain', 'stream', 'a', 'b', 'c']
print('producer (ratio to plain in the same repetition; median [min-max], n reps)')
for var in variants:
    out = [var]
    for metric, better in (('copy_s', 'lower'), ('copy_cpu_s', 'lower'), ('insert_tps', 'higher')):
        base, x = v.get((metric, 'plain'), {}), v.get((metric, var), {})
        reps = sorted(set(base) & set(x))
        if not reps: out.append('-'); continue
        raw = [x[r] for r in reps]
        ratios = [(base[r] / x[r]) if better == 'lower' else (x[r] / base[r]) for r in reps]
        m, lo, hi = med_range(ratios); rm, rlo, rhi = med_range(raw)
        out.append(f'{metric} {rm:.1f} [{rlo:.1f}-{rhi:.1f}] ratio {m:.3f} [{lo:.3f}-{hi:.3f}] n={len(reps)}')
    print('  ' + ' | '.join(out))
print('reads (events/s = rows / seconds per repetition; median [min-max])')
for step in ('copy', 'insert'):
    for var in ['a', 'b', 'c', 'd_test_decoding', 'd_pgoutput']:
        n, s = v.get((f'drain_{step}_rows', var), {}), v.get((f'drain_{step}_s', var), {})
        reps = sorted(set(n) & set(s))
        if not reps: continue
        rates = [n[r] / s[r] for r in reps]
        m, lo, hi = med_range(rates)
        line = f'  {step:6s} {var:16s} rows {st.median([n[r] for r in reps]):.0f}  {m:,.0f} ev/s [{lo:,.0f}-{hi:,.0f}] n={len(reps)}'
        e = v.get((f'poll_empty_{step}_s', var), {})
        if e:
            em = [e[r] * 1000 for r in sorted(e)]
            line += f'  empty poll {st.median(em):.0f} ms [{min(em):.0f}-{max(em):.0f}]'
        print(line)
