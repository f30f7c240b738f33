#!/usr/bin/env python3
"""Print the in-process evaluation benchmark (benches/eval.rs) as a markdown table.

Reads criterion's results, <criterion dir>/<group>/<id>/new/estimates.json, and prints
the median time per evaluation of each scenario (S1-S5) for each engine (ours,
yggdrasil, flagd-engine), plus the peer/ours ratios. For S5 it prints the 1-thread and
2-thread times (wall time per evaluation per thread) and the throughput scaling,
2 x t(1 thread) / t(2 threads), which is 2.0 when two threads go as fast as one.

Usage: python3 sdk/bench/table.py [CRITERION_DIR]   (default: target/criterion;
with CARGO_TARGET_DIR=X it is X/criterion). Standard library only.
"""

import json
import os
import sys

ENGINES = ["ours", "yggdrasil", "flagd-engine"]
PEERS = ENGINES[1:]
# (row label, group, path of the benchmark id under the group, given the engine)
ROWS = [
    ("S1 static flag", "S1", lambda e: [e]),
    ("S2 10% rollout", "S2", lambda e: [e]),
    ("S3 rule, else 25%", "S3", lambda e: [e]),
    ("S4 1,000 flags, random key", "S4", lambda e: [e]),
    ("S5 S2 on 1 thread", "S5", lambda e: [e, "1-thread"]),
    ("S5 S2 on 2 threads (per thread)", "S5", lambda e: [e, "2-threads"]),
]


def median_ns(root, group, parts):
    """(median point estimate in ns per iteration, file mtime), or (None, None)."""
    path = os.path.join(root, group, *parts, "new", "estimates.json")
    try:
        with open(path, encoding="utf-8") as f:
            value = float(json.load(f)["median"]["point_estimate"])
        return value, os.path.getmtime(path)
    except (OSError, KeyError, ValueError, TypeError):
        return None, None


def mixes_runs(mtimes_in_bench_order):
    """One run writes its results in bench order (S1 ours, yggdrasil, flagd-engine, S2
    ...); results written out of that order come from more than one run."""
    seen = [t for t in mtimes_in_bench_order if t is not None]
    return any(later < earlier for earlier, later in zip(seen, seen[1:]))


def fmt_time(ns):
    if ns is None:
        return "–"
    if ns >= 1_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1_000:.2f} µs"
    if ns >= 100:
        return f"{ns:.0f} ns"
    return f"{ns:.1f} ns"


def fmt_ratio(r):
    if r is None:
        return "–"
    return f"{r:.0f}×" if r >= 100 else f"{r:.1f}×"


def ratio(a, b):
    return a / b if a is not None and b else None


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    root = argv[1] if len(argv) == 2 else os.path.join("target", "criterion")
    if not os.path.isdir(root):
        print(f"no criterion results at {root}", file=sys.stderr)
        return 1

    found = {
        (label, e): median_ns(root, group, parts(e))
        for label, group, parts in ROWS
        for e in ENGINES
    }
    results = {label: {e: found[(label, e)][0] for e in ENGINES} for label, _, _ in ROWS}
    # The order benches/eval.rs runs them in: S1-S4 engine by engine, then S5 engine by
    # engine, 1 thread then 2.
    order = [(label, e) for label, _, _ in ROWS[:4] for e in ENGINES]
    order += [(label, e) for e in ENGINES for label, _, _ in ROWS[4:]]
    stale = mixes_runs([found[k][1] for k in order])
    if all(v is None for row in results.values() for v in row.values()):
        print(f"no S1-S5 results under {root}", file=sys.stderr)
        return 1

    header = ["scenario"] + ENGINES + [f"{p} / ours" for p in PEERS]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for label, _, _ in ROWS:
        row = results[label]
        cells = [label] + [fmt_time(row[e]) for e in ENGINES]
        cells += [fmt_ratio(ratio(row[p], row["ours"])) for p in PEERS]
        lines.append("| " + " | ".join(cells) + " |")

    # Throughput across both threads relative to one thread: 2 x t1 / t2.
    one = results["S5 S2 on 1 thread"]
    two = results["S5 S2 on 2 threads (per thread)"]
    scaling = {
        e: (2 * one[e] / two[e]) if one[e] is not None and two[e] else None
        for e in ENGINES
    }
    cells = ["S5 throughput, 2 threads / 1 thread"]
    cells += [f"{scaling[e]:.2f}×" if scaling[e] is not None else "–" for e in ENGINES]
    cells += [""] * len(PEERS)
    lines.append("| " + " | ".join(cells) + " |")

    print("\n".join(lines))
    print()
    print(
        "Median time per evaluation (criterion `median` estimate); S5 times are wall "
        "time per evaluation per thread. Ratios > 1 mean ours is faster."
    )
    if stale:
        print(
            "\nWARNING: these results come from more than one run (e.g. an ours-only run "
            "after a run with the peers); re-run with --features peers before comparing."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
