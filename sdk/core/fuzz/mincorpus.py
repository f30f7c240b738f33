#!/usr/bin/env python3
"""Picks a small corpus from a libFuzzer merge control file (-merge_control_file, run
with -use_counters=0 so that features are coverage edges): greedy set cover, each step
the input that adds the most edges not yet covered (the smaller one on a tie), until no
input adds at least MIN_GAIN edges. Copies the picked inputs to OUTDIR.

    mincorpus.py CONTROL OUTDIR [MIN_GAIN]   (used by minimize.sh)
"""
import os
import shutil
import sys


def main():
    control, out = sys.argv[1], sys.argv[2]
    min_gain = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    lines = open(control, encoding="utf-8").read().split("\n")
    n = int(lines[0])
    paths = lines[2:2 + n]
    cov = {}
    for line in lines[2 + n:]:
        if line.startswith("COV "):
            parts = line.split()
            cov[int(parts[1])] = set(map(int, parts[2:]))
    size = {i: os.path.getsize(paths[i]) for i in cov}
    edges = set().union(*cov.values()) if cov else set()
    left, picked = set(edges), []
    while left:
        best = max(cov, key=lambda i: (len(cov[i] & left), -size[i]))
        gain = cov[best] & left
        if len(gain) < min_gain:
            break
        picked.append(best)
        left -= gain
    os.makedirs(out, exist_ok=True)
    for i in picked:
        shutil.copy(paths[i], os.path.join(out, os.path.basename(paths[i])))
    kept = len(edges) - len(left)
    print(f"{len(picked)} of {len(cov)} inputs, {sum(size[i] for i in picked)} bytes, "
          f"{kept} of {len(edges)} edges ({kept / max(len(edges), 1):.1%})")


if __name__ == "__main__":
    main()
