#!/usr/bin/env python3
"""Turns losskit_bench JSON output into ratio tables (and a speed-up chart).

For every losskit benchmark BM_<Name>/<args> it prints
  - "x ref":   items/s relative to its hardware reference kernel from the
               same run (BM_ReferenceStream for elementwise losses,
               BM_ReferenceExp for softmax-type losses; 1.0 = as fast as
               streaming the same data / exponentiating every element once);
  - "x torch": speed-up over BM_Torch_<Name>/<args>, the libtorch peer in
               the same run (libtorch time / losskit time; > 1 = faster).
Ratios, not absolute times: both sides of a ratio share the machine's noise.

Usage (python3 standard library only):
  OMP_NUM_THREADS=1 build/bench/bench/losskit_bench --benchmark_out=t1.json
  OMP_NUM_THREADS=2 build/bench/bench/losskit_bench --benchmark_out=t2.json
  python3 bench/ratios.py 1=t1.json 2=t2.json [--plot docs/img/torch_speedup.png] [--all]

Each input is LABEL=FILE (the label names the column, e.g. the thread
count) or just FILE (label = the "omp_threads" counter of its torch benchmarks).
By default only value+gradient rows are printed; --all prints every losskit
benchmark. With several inputs, "scaling" is losskit's time in the first
input over its time in the others (the multi-core speed-up). --plot writes a PNG bar chart of the
speed-ups over libtorch with gnuplot (Debian: gnuplot-nox).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

# Which reference kernel each loss family is compared to (by the name's
# first component). Elementwise losses stream memory; softmax-type losses
# are bounded by one exp per element.
REFERENCE = {
    "MSE": "BM_ReferenceStream",
    "ZLoss": "BM_ReferenceStream",
    # SSIM is compute-bound (≈ 180 multiply-adds per pixel): no hardware
    # reference in the binary, only the libtorch ratio.
    "CE": "BM_ReferenceExp",
    "BCE": "BM_ReferenceExp",
    "CompSum": "BM_ReferenceExp",
    "SmoothAdversarialCompSum": "BM_ReferenceExp",
    "LDRKL": "BM_ReferenceExp",
    "ALDRKL": "BM_ReferenceExp",
    # CS-IB's floor is the N×N Gram GEMM of the representation (bench_cs_ib.cpp).
    "CSIB": "BM_CSIB_GramReference",
}

# Issue 9's targets: speed-up over libtorch, value+gradient, 1 thread.
# And its multi-core targets: losskit's own speed-up from 1 to 2 threads.
SCALING_TARGETS = {
    ("CE_ValueGrad", "32000/4096"): 1.7,
    ("SSIM_ValueGrad", "N:8/C:3/H:256/W:256"): 1.7,
}
TARGETS = {
    ("MSE_ValueGrad", "16777216"): 2.0,
    ("CE_ValueGrad", "32000/256"): 3.0,
    ("SSIM_ValueGrad", "N:8/C:3/H:256/W:256"): 5.0,
    ("CSIB_ValueGrad", "512"): 3.0,
}


def parse_name(full):
    """'BM_CE_ValueGrad/32000/256/real_time' -> ('CE_ValueGrad', '32000/256')."""
    parts = full.split("/")
    base = parts[0][3:] if parts[0].startswith("BM_") else parts[0]
    args = [p for p in parts[1:] if p and not p.startswith(("real_time", "min_time", "iterations", "repeats", "threads"))]
    return base, "/".join(args)


def load(path, clock="real_time", stat="min"):
    """{(base, args): entry} with time in seconds and items per iteration."""
    with open(path) as f:
        data = json.load(f)
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    runs = {}
    medians = {}
    for b in data.get("benchmarks", []):
        if b.get("error_occurred") or "real_time" not in b:  # BigO / RMS fits have no time
            continue
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        key = parse_name(b.get("run_name", b["name"]))
        seconds = b[clock] * unit[b.get("time_unit", "ns")]
        # items_per_second is always per wall-clock second (UseRealTime).
        real = b["real_time"] * unit[b.get("time_unit", "ns")]
        entry = {
            "time": seconds,
            "items": b.get("items_per_second", 0.0) * real,
            "threads": b.get("omp_threads"),  # counter set by the torch benchmarks
        }
        if b.get("run_type") == "aggregate":
            medians[key] = entry
        else:
            runs.setdefault(key, []).append(entry)
    # Repetitions (--benchmark_repetitions): the fastest by default. Noise
    # from other processes only ever adds time, so on a shared machine the
    # minimum is the best estimate of the undisturbed cost; --stat median
    # gives the median instead.
    out = dict(medians)
    for key, entries in runs.items():
        entries.sort(key=lambda e: e["time"])
        out[key] = entries[0] if stat == "min" else entries[len(entries) // 2]
    return out, data.get("context", {})


def reference_for(base, args, runs):
    family = base.split("_")[0]
    ref = REFERENCE.get(family)
    if ref is None:
        return None
    ref_base = ref[3:]
    candidates = {a: e for (b, a), e in runs.items() if b == ref_base}
    if not candidates:
        return None
    # The reference with the loss's leading arguments (same C×N or n), else
    # the one closest in items per iteration.
    for a, e in candidates.items():
        if args == a or args.startswith(a + "/"):
            return e
    items = runs[(base, args)]["items"]
    if items <= 0:
        return None
    return min(candidates.values(), key=lambda e: abs(math.log(max(e["items"], 1.0) / items)))


def ratios(runs):
    """{(base, args): (time, x_ref or None, x_torch or None)} for losskit benchmarks."""
    out = {}
    for (base, args), e in runs.items():
        if base.startswith(("Reference", "Torch_")) or base.endswith("Reference"):
            continue
        ref = reference_for(base, args, runs)
        x_ref = None
        if ref and e["items"] > 0 and ref["items"] > 0:
            x_ref = (e["items"] / e["time"]) / (ref["items"] / ref["time"])
        peer = runs.get(("Torch_" + base, args))
        x_torch = peer["time"] / e["time"] if peer else None
        out[(base, args)] = (e["time"], x_ref, x_torch)
    return out


def fmt_shape(args):
    """'N:8/C:3/H:256/W:256' -> '8×3×256×256'."""
    return "×".join(a.split(":")[-1] for a in args.split("/")) if args else ""


def fmt_time(s):
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= f:
            return "%.3g %s" % (s / f, unit)
    return "%.3g ns" % (s * 1e9)


def fmt_ratio(r):
    return "—" if r is None else ("%.2f" % r if r < 10 else "%.1f" % r)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="LABEL=FILE or FILE (Google Benchmark JSON)")
    ap.add_argument("--plot", help="write a PNG chart of the speed-ups over libtorch (needs gnuplot)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="use CPU time instead of wall time: robust on a loaded machine, meaningful at 1 thread only")
    ap.add_argument("--stat", choices=("min", "median"), default="min",
                    help="which repetition to use when a benchmark was repeated (default: the fastest)")
    ap.add_argument("--all", action="store_true", help="every losskit benchmark, not only value+gradient with a peer")
    opts = ap.parse_args()

    columns = []  # (label, ratios)
    context = None
    for spec in opts.inputs:
        label, _, path = spec.rpartition("=")
        runs, ctx = load(path, "cpu_time" if opts.cpu_time else "real_time", opts.stat)
        context = context or ctx
        if not label:
            threads = {e["threads"] for (b, _), e in runs.items() if b.startswith("Torch_") and e["threads"]}
            label = "/".join(str(int(t)) for t in sorted(threads)) if threads else os.path.basename(path)
        columns.append((label, ratios(runs)))

    keys = sorted({k for _, r in columns for k in r})
    if not opts.all:
        keys = [k for k in keys if "ValueGrad" in k[0]]

    header = ["benchmark", "shape"]
    for i, (label, _) in enumerate(columns):
        header += ["time (%s thr)" % label, "× ref (%s)" % label, "× torch (%s)" % label]
        if i > 0:
            header.append("scaling %s→%s" % (columns[0][0], label))
    header.append("target × torch")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key in keys:
        row = [key[0], fmt_shape(key[1])]
        t_first = columns[0][1].get(key, (None, None, None))[0]
        for i, (_, r) in enumerate(columns):
            t, x_ref, x_torch = r.get(key, (None, None, None))
            row += [fmt_time(t) if t else "—", fmt_ratio(x_ref), fmt_ratio(x_torch)]
            if i > 0:  # losskit's own speed-up from more threads (time at the first column / here)
                row.append(fmt_ratio(t_first / t if t and t_first else None))
        target = TARGETS.get(key)
        if target is not None:
            first = columns[0][1].get(key, (None, None, None))[2]
            verdict = "" if first is None else (" met" if first >= target else " **missed**")
            row.append(">= %g (1 thr)%s" % (target, verdict))
        elif key in SCALING_TARGETS and len(columns) > 1:
            t1, t2 = columns[0][1].get(key, (None,))[0], columns[1][1].get(key, (None,))[0]
            target = SCALING_TARGETS[key]
            verdict = "" if not (t1 and t2) else (" met" if t1 / t2 >= target else " **missed**")
            row.append("scaling >= %g%s" % (target, verdict))
        else:
            row.append("")
        if key in SCALING_TARGETS and key in TARGETS and len(columns) > 1:
            t1, t2 = columns[0][1].get(key, (None,))[0], columns[1][1].get(key, (None,))[0]
            ok = t1 and t2 and t1 / t2 >= SCALING_TARGETS[key]
            row[-1] += "; scaling >= %g%s" % (SCALING_TARGETS[key], " met" if ok else " **missed**")
        print("| " + " | ".join(row) + " |")
    if context:
        print("\nMachine: %s CPUs at %s MHz, %s; %s" % (
            context.get("num_cpus"), context.get("mhz_per_cpu"),
            ", ".join("L%s %s %d KiB" % (c["level"], c["type"], c["size"] // 1024) for c in context.get("caches", [])[-2:]),
            context.get("date", "")))

    if opts.plot:
        plot(opts.plot, keys, columns)


def plot(path, keys, columns):
    rows = [k for k in keys if any(r.get(k, (0, 0, None))[2] is not None for _, r in columns)]
    if not rows:
        sys.exit("ratios.py: nothing to plot (no benchmark has a libtorch peer)")
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as f:
        f.write("name " + " ".join('"%s thread%s"' % (label, "" if label == "1" else "s") for label, _ in columns) + "\n")
        for k in rows:
            name = (k[0].replace("_ValueGrad", "") + " " + fmt_shape(k[1])).strip()
            vals = []
            for _, r in columns:
                x = r.get(k, (None, None, None))[2]
                vals.append("%.4g" % x if x else "NaN")
            f.write('"%s" %s\n' % (name, " ".join(vals)))
        dat = f.name
    n = len(columns)
    script = f"""
set terminal pngcairo size {max(900, 60 * len(rows) + 200)},560 font "DejaVu Sans,10"
set output "{path}"
set title "losskit vs libtorch 1.13 (value + gradient, float): speed-up = libtorch time / losskit time"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set yrange [0.25:64]
set ylabel "speed-up over libtorch (log scale)"
set grid ytics
set xtics rotate by -40 left noenhanced
set key top center horizontal opaque box
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "black"
set bmargin 9
plot {", ".join(f'"{dat}" using {i + 2}:xtic(1) title columnheader({i + 2})' for i in range(n))}
"""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.unlink(dat)
    print("\nwrote " + path)


if __name__ == "__main__":
    main()
