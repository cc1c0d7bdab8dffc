#!/usr/bin/env python3
"""Give a share of one kind of relatives' records one mobile number between them.

    python3 benches/shared_mobile/share.py IN.csv IN_truth.csv KIND SHARE SEED OUT.csv

A file from `mpi synth` and its truth file (whose `hard_group` names twin groups
`twin-N` and father-and-son groups `jrsr-N`). For each group of KIND (`twin` or
`jrsr`), with probability SHARE, every record of its members is given one mobile
number (a parent's, say), and no one else's. The truth is unchanged: score the result
with `mpi eval --truth IN_truth.csv`. This is the case a mobile found personal must
not be trusted for: a few relatives sharing a number no one else at home shares.
"""

import csv
import random
import sys


def main() -> None:
    source, truth_path, kind, share, seed, out = sys.argv[1:7]
    share = float(share)
    rng = random.Random(int(seed))
    with open(truth_path, newline="") as handle:
        groups = {
            (row["source_system"], row["local_id"]): row["hard_group"]
            for row in csv.DictReader(handle)
        }
    with open(source, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames
        rows = list(reader)
    numbers: dict[str, str | None] = {}
    changed = 0
    for row in rows:
        group = groups.get((row["source_system"], row["local_id"]), "")
        if not group.startswith(kind + "-"):
            continue
        if group not in numbers:
            chosen = rng.random() < share
            numbers[group] = f"07700 9{rng.randrange(100000):05d}" if chosen else None
        if numbers[group]:
            row["phone"] = numbers[group]
            changed += 1
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    shared = sum(1 for number in numbers.values() if number)
    print(f"{changed} records of {shared} of {len(numbers)} {kind} groups share a mobile: {out}")


if __name__ == "__main__":
    main()
