"""Writes a store's records, as mpi normalised them, to a flat CSV for Splink.

Splink then sees the same cleaned values as mpi (names folded, dates parsed, postcodes
and phones in one form), so the comparison is of the linkage, not of the cleaning.

    python3 prepare.py STORE/mpi.sqlite3 OUT.csv
"""

import csv
import json
import sqlite3
import sys

COLUMNS = [
    "unique_id", "source_system", "local_id", "nhs_number", "first_name", "middle_names",
    "surname", "dob", "sex", "postcode", "address", "phone", "email", "identifier",
]


def main(store: str, out: str) -> None:
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    with open(out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        rows = connection.execute(
            "SELECT source_system, local_id, normalized FROM records ORDER BY id")
        for unique_id, (source_system, local_id, normalized) in enumerate(rows):
            record = json.loads(normalized)
            given = record.get("given_names") or []
            born = record.get("date_of_birth")
            dob = f"{born['year']:04d}-{born['month']:02d}-{born['day']:02d}" if born else ""
            writer.writerow([
                unique_id, source_system, local_id, record.get("nhs_number", ""),
                given[0] if given else "", " ".join(given[1:]), record.get("family_name", ""),
                dob, record.get("sex", ""), (record.get("postcode") or {}).get("code", ""),
                (record.get("address") or {}).get("text", ""), record.get("phone", ""),
                record.get("email", ""),
                " ".join(f"{i['system']}:{i['value']}" for i in record.get("identifiers", [])),
            ])


if __name__ == "__main__":
    main(*sys.argv[1:3])
