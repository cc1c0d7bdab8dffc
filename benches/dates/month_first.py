"""Writes a records file again with one source system's dates month first, as a US
locale exports them: `13/02/1980` becomes `02/13/1980`, `3/4/51` becomes `4/3/51`.

    python3 month_first.py RECORDS.csv SOURCE_SYSTEM OUT.csv

Only dates of numbers written day/month/year with slashes change (and a time after
them stays); every other value and row is written as it was. The truth file of the
records is the truth of the new file too.
"""

import csv
import re
import sys

DAY_FIRST = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})(\s.*)?$")


def main(source: str, system: str, out: str) -> None:
    with open(source, newline="") as file:
        reader = csv.DictReader(file)
        fields = reader.fieldnames
        rows = list(reader)
    changed = 0
    for row in rows:
        if row.get("source_system") != system:
            continue
        match = DAY_FIRST.match(row.get("date_of_birth", ""))
        if match:
            day, month, year, time = match.groups()
            row["date_of_birth"] = f"{month}/{day}/{year}{time or ''}"
            changed += 1
    with open(out, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{changed} dates of {system} written month first", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
