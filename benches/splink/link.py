"""Links a prepared CSV with Splink 5 (DuckDB backend), unsupervised, and writes the
clusters in mpi's results format (source_system, local_id, person_id), for
`mpi eval --results`.

    python3 link.py PREPARED.csv OUT.csv [--threshold=P] [--household-fields] [--link-only]
        [--wide-blocking]

The settings follow Splink's own examples for person data: out-of-the-box comparisons
(of the columns the data has; other identifiers, such as FEBRL's `soc_sec_id`, as one
exact-match column) with term-frequency adjustment on names and postcode, the probability two random
records match from deterministic rules, u by random sampling, m by EM blocked on date
of birth and then on full name, pairs clustered by connected components at the
threshold (0.5 by default, as the issue's Splink figures were taken). Address and phone
are compared only with --household-fields: Splink sums them as independent evidence,
which merges whole households (see BENCHMARKS.md).

With --link-only the records are split by source_system into two tables (FEBRL4's
febrl4a and febrl4b) and linked with link_type="link_only", source_system as the source
dataset column, so only pairs across the two files are compared. The comparisons and
prediction blocking are the same; the deterministic rules are taken at recall 0.8 and EM
is blocked on date of birth and then on postcode, as in Splink's own FEBRL4 example.
--wide-blocking adds that example's prediction rules on date of birth alone and on
postcode alone: without an identifier the default rules never compare 12.5% of FEBRL4's
true pairs.
"""

import sys
import time

import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on


def option(name: str, default: str) -> str:
    return next((arg.split("=", 1)[1] for arg in sys.argv if arg.startswith(name + "=")),
                default)


def main(prepared: str, out: str) -> None:
    threshold = float(option("--threshold", "0.5"))
    link_only = "--link-only" in sys.argv
    started = time.time()
    frame = pd.read_csv(prepared, dtype=str, keep_default_na=False).replace({"": None})
    frame["unique_id"] = frame["unique_id"].astype(int)
    comparisons = [
        cl.ExactMatch("identifier"),
        cl.ExactMatch("nhs_number"),
        cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
        cl.NameComparison("surname").configure(term_frequency_adjustments=True),
        cl.DateOfBirthComparison("dob", input_is_string=True),
        cl.ExactMatch("sex"),
        cl.PostcodeComparison("postcode").configure(term_frequency_adjustments=True),
        cl.EmailComparison("email"),
    ]
    if "--household-fields" in sys.argv:
        comparisons += [
            cl.JaroWinklerAtThresholds("address", [0.95, 0.88]),
            cl.ExactMatch("phone"),
        ]
    # Only the columns the data has (FEBRL has no NHS number, sex, phone or email).
    present = {column for column in frame.columns if frame[column].notna().any()}
    comparisons = [c for c in comparisons if c.create_output_column_name() in present]
    rules = [
        ("nhs_number",), ("identifier",), ("first_name", "surname"), ("surname", "dob"),
        ("first_name", "dob"), ("postcode", "first_name"), ("phone",), ("email",),
    ]
    blocking = [block_on(*rule) for rule in rules if set(rule) <= present]
    blocking.append(
        block_on("substr(surname, 1, 2)", "substr(dob, 1, 4)", "substr(postcode, 1, 2)"))
    if "--wide-blocking" in sys.argv:
        # Splink's FEBRL4 example also blocks on date of birth alone and postcode alone;
        # affordable for two files of 5,000 records, not for a large dedupe.
        blocking += [block_on(column) for column in ("dob", "postcode") if column in present]
    settings = SettingsCreator(
        link_type="link_only" if link_only else "dedupe_only",
        source_dataset_column_name="source_system",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=blocking,
    )
    db_api = DuckDBAPI()
    if link_only:
        sources = sorted(frame["source_system"].unique())
        if len(sources) != 2:
            sys.exit(f"--link-only needs two source systems, found {sources}")
        tables = [db_api.register(frame[frame["source_system"] == source].copy(),
                                  dataset_display_name=source)
                  for source in sources]
        linker = Linker(tables, settings)
    else:
        linker = Linker(db_api.register(frame), settings)
    deterministic = [block_on(column) for column in ("nhs_number", "identifier")
                     if column in present]
    linker.training.estimate_probability_two_random_records_match(
        deterministic + [block_on("first_name", "surname", "dob")],
        recall=0.8 if link_only else 0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e7, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("postcode") if link_only else block_on("first_name", "surname"))
    trained = time.time()
    predictions = linker.inference.predict(threshold_match_probability=min(threshold, 0.01))
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold).as_pandas_dataframe()
    done = time.time()
    ids = frame.set_index("unique_id")[["source_system", "local_id"]]
    clusters = clusters[["unique_id", "cluster_id"]].set_index("unique_id").join(ids)
    clusters.rename(columns={"cluster_id": "person_id"})[
        ["source_system", "local_id", "person_id"]].to_csv(out, index=False)
    print(f"splink: trained in {trained - started:.1f} s, predicted and clustered in "
          f"{done - trained:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
