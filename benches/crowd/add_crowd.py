"""Appends a crowd of people given 1 January for a birth date not known to a records
file and its truth file: the case of the crowded birth date in BENCHMARKS.md.

    python3 add_crowd.py RECORDS.csv TRUTH.csv OUT.csv OUT_TRUTH.csv [N]

N people (1,000 by default), each a person of their own, men with names drawn from a
small pool common in one community (ten given names, six family names), born on 1
January of one of ten years, at a house of their own on a street at a postcode drawn
from the records file. Seeded: the same files every time.
"""

import csv
import random
import sys


def main(records: str, truth: str, out: str, out_truth: str, n: int) -> None:
    rng = random.Random(1)
    with open(records, newline="") as file:
        rows = list(csv.DictReader(file))
    header = list(rows[0].keys())
    postcodes = sorted({row["postcode"] for row in rows[:2000] if row.get("postcode")})
    given = ["Mohammad", "Ahmad", "Ali", "Hussain", "Reza", "Mahmood", "Abdul", "Jawad",
             "Farid", "Omid"]
    family = ["Ahmadi", "Karimi", "Rahimi", "Hashimi", "Mohammadi", "Sultani"]
    with open(out, "w", newline="") as file, open(out_truth, "w", newline="") as truth_out:
        writer = csv.DictWriter(file, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
        with open(truth, newline="") as truth_in:
            truth_out.write(truth_in.read())
        truth_writer = csv.writer(truth_out)
        for i in range(n):
            row = dict.fromkeys(header, "")
            row.update(
                source_system="council_asc", local_id=f"CROWD-{i}",
                given_name=rng.choice(given), family_name=rng.choice(family),
                date_of_birth=f"01/01/{1985 + rng.randrange(10)}", sex="M",
                address_line1=f"{rng.randrange(1, 300)} Station Road",
                postcode=rng.choice(postcodes))
            writer.writerow(row)
            truth_writer.writerow(["council_asc", f"CROWD-{i}", f"CROWD-P{i}", ""])


if __name__ == "__main__":
    main(*sys.argv[1:5], int(sys.argv[5]) if len(sys.argv) > 5 else 1000)
