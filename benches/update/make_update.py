"""Makes the update file of the crowded update run in BENCHMARKS.md from a records file.

    python3 make_update.py RECORDS.csv OUT.csv

Every row is written again; the rows of every third postcode (in sorted order) move to
one of 300 new postcodes (`ZE1 1AL` ...) and a new address there, and one given name in
ten of them is cut to its initial. Seed 9: the same file every time. From the 1M
synthetic file (`mpi synth --people 500000 --seed 1`) it changes 321,853 rows, which
crowd into the 300 postcodes: a hard case for blocking and for memory.
"""

import csv
import random
import sys


def main(source: str, out: str) -> None:
    rng = random.Random(9)
    with open(source, newline="") as file:
        rows = list(csv.DictReader(file))
    postcodes = sorted({row["postcode"] for row in rows if row["postcode"]})
    moved = set(postcodes[::3])
    new_postcodes = [
        f"ZE{district} {sector}{a}{b}"
        for district in range(1, 4)
        for sector in range(1, 10)
        for a in "ABDEFGHJ"
        for b in "LNPQRSTU"
    ][:300]
    changed = 0
    with open(out, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        for row in rows:
            if row["postcode"] in moved:
                k = rng.randrange(300)
                row["postcode"] = new_postcodes[k]
                row["address_line1"] = f"{rng.randint(1, 200)} New Street {k}"
                row["address_line2"] = ""
                if rng.random() < 0.1 and row["given_name"]:
                    row["given_name"] = row["given_name"][0]
                changed += 1
            writer.writerow(row)
    print("changed", changed, "of", len(rows))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
