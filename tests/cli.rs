//! `mpi` end to end: link, eval, export, explain, train, synth, bad input.

use std::fs;

use tempfile::TempDir;

use crate::util::*;

/// Accuracy floors: within 0.005 of the figures in BENCHMARKS.md (FEBRL4 0.9994, FEBRL3
/// 0.9989, sample 0.9837).
const FEBRL4_F1_FLOOR: f64 = 0.995;
const FEBRL3_F1_FLOOR: f64 = 0.994;
const SAMPLE_F1_FLOOR: f64 = 0.980;

fn link_args<'a>(dir: &'a TempDir, out: &'a std::path::Path) -> Vec<std::ffi::OsString> {
    vec![
        "link".into(),
        "--data".into(),
        dir.path().join("store").into(),
        "--out".into(),
        out.into(),
    ]
}

#[test]
fn sample_links_and_evaluates() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("results.csv");
    let mut args = link_args(&dir, &out);
    args.push(data("sample/records.csv").into());
    let summary = mpi_ok(&args);
    assert!(summary.contains("auto-links"), "{summary}");
    // No birth date of the sample is crowded.
    assert!(!summary.contains("crowded dates"), "{summary}");
    // The reviews are counted by reason under their total, and add up to it.
    let lines: Vec<&str> = summary.lines().collect();
    let at = lines.iter().position(|line| line.trim_start().starts_with("reviews")).unwrap();
    let total: usize = lines[at].split_whitespace().nth(1).unwrap().parse().unwrap();
    let by_reason: Vec<(usize, &str)> = lines[at + 1..]
        .iter()
        .map_while(|line| {
            let (count, code) = line.trim().split_once("  ")?;
            Some((count.parse().ok()?, code.trim()))
        })
        .collect();
    assert!(by_reason.iter().any(|&(_, code)| code == "uncertain"), "{summary}");
    assert_eq!(by_reason.iter().map(|&(count, _)| count).sum::<usize>(), total, "{summary}");

    // Every input row comes back, with the contract's leading columns in order.
    let rows = read_csv(&out);
    let input_rows = read_csv(&data("sample/records.csv"));
    assert_eq!(rows.len(), input_rows.len());
    assert_eq!(
        header(&out)[..6],
        ["source_system", "local_id", "person_id", "decision", "match_probability", "nhs_number"]
    );
    for row in &rows {
        assert!(["linked", "new", "review"].contains(&row["decision"].as_str()), "{row:?}");
        assert!(!row["person_id"].is_empty());
    }
    assert!(dir.path().join("results.csv.errors.csv").exists());
    assert_reviews_name_their_persons(&rows, &dir.path().join("results.csv.reviews.csv"), false);

    let eval = mpi_ok([
        "eval".as_ref(),
        "--json".as_ref(),
        "--data".as_ref(),
        dir.path().join("store").as_os_str(),
        "--truth".as_ref(),
        data("sample/truth.csv").as_os_str(),
    ]);
    let f1 = json_number(&eval, "f1");
    assert!(f1 >= SAMPLE_F1_FLOOR, "sample F1 {f1}");
    assert_eq!(json_number(&eval, "hard_groups_merged"), 0.0, "{eval}");
    // Every true pair not linked is put down to a decision, and the sample's reviews
    // hold some of them: accepting them all would link more.
    let value: serde_json::Value = serde_json::from_str(eval.trim()).unwrap();
    let missed = value["missed_pairs"].as_array().expect("missed_pairs");
    let share: f64 = missed.iter().map(|cause| cause["share"].as_f64().unwrap()).sum();
    assert!((share - (1.0 - json_number(&eval, "recall"))).abs() < 1e-9, "{eval}");
    // Another data set's truth names none of these records: an error, not a perfect score.
    let wrong = mpi([
        "eval".as_ref(),
        "--data".as_ref(),
        dir.path().join("store").as_os_str(),
        "--truth".as_ref(),
        data("febrl/febrl3_truth.csv").as_os_str(),
    ]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("none of the truth's"));
    assert!(missed.iter().any(|cause| cause["cause"].as_str().unwrap().starts_with("review: ")));
    assert!(
        value["if_reviews_accepted"]["recall"].as_f64().unwrap() > json_number(&eval, "recall")
    );

    // Export gives every record with its person, in the results format.
    let exported = export(&dir.path().join("store"), &dir.path().join("export.csv"));
    assert_eq!(partition(&exported), partition(&rows));

    // The results file measures as the store does, without the store; a file that
    // splits every person apart does not.
    let from_results = mpi_ok([
        "eval".as_ref(),
        "--json".as_ref(),
        "--results".as_ref(),
        out.as_os_str(),
        "--truth".as_ref(),
        data("sample/truth.csv").as_os_str(),
    ]);
    for figure in ["f1", "precision", "recall", "records", "false_merges", "hard_groups"] {
        assert_eq!(json_number(&from_results, figure), json_number(&eval, figure), "{figure}");
    }
    let apart = dir.path().join("apart.csv");
    let mut text = String::from("source_system,local_id,person_id\n");
    for (index, row) in rows.iter().enumerate() {
        text.push_str(&format!("{},{},P{index}\n", row["source_system"], row["local_id"]));
    }
    std::fs::write(&apart, text).unwrap();
    let split = mpi_ok([
        "eval".as_ref(),
        "--json".as_ref(),
        "--results".as_ref(),
        apart.as_os_str(),
        "--truth".as_ref(),
        data("sample/truth.csv").as_os_str(),
    ]);
    assert_eq!(json_number(&split, "recall"), 0.0, "{split}");
}

fn febrl_link(
    dir: &TempDir,
    files: &[&str],
    extra: &[&str],
) -> Vec<std::collections::HashMap<String, String>> {
    let out = dir.path().join("results.csv");
    let mut args = link_args(dir, &out);
    args.extend(FEBRL_MAP.iter().map(Into::into));
    args.extend(extra.iter().map(Into::into));
    args.extend(files.iter().map(|file| data(&format!("febrl/{file}")).into()));
    mpi_ok(&args);
    read_csv(&out)
}

fn febrl_f1(dir: &TempDir, truths: &[&str]) -> String {
    let mut args: Vec<std::ffi::OsString> =
        vec!["eval".into(), "--json".into(), "--data".into(), dir.path().join("store").into()];
    for truth in truths {
        args.push("--truth".into());
        args.push(data(&format!("febrl/{truth}")).into());
    }
    mpi_ok(&args)
}

#[test]
fn febrl4_links_two_files_unsupervised() {
    let dir = TempDir::new().unwrap();
    let rows = febrl_link(&dir, &["febrl4a.csv", "febrl4b.csv"], &[]);
    assert_eq!(rows.len(), 10_000);
    let eval = febrl_f1(&dir, &["febrl4a_truth.csv", "febrl4b_truth.csv"]);
    let f1 = json_number(&eval, "f1");
    assert!(f1 >= FEBRL4_F1_FLOOR, "FEBRL4 F1 {f1}: {eval}");
    assert!(json_number(&eval, "pair_completeness") >= 0.995, "{eval}");
}

#[test]
fn febrl3_dedupes_unsupervised() {
    let dir = TempDir::new().unwrap();
    febrl_link(&dir, &["febrl3.csv"], &[]);
    let eval = febrl_f1(&dir, &["febrl3_truth.csv"]);
    let f1 = json_number(&eval, "f1");
    assert!(f1 >= FEBRL3_F1_FLOOR, "FEBRL3 F1 {f1}: {eval}");
    let completeness = json_number(&eval, "pair_completeness");
    assert!(completeness >= 0.995, "{eval}");

    // The pairs blocking missed, written out: as many as the completeness leaves, each a
    // true pair.
    let unblocked = dir.path().join("unblocked.csv");
    mpi_ok([
        "eval".as_ref(),
        "--data".as_ref(),
        dir.path().join("store").as_os_str(),
        "--truth".as_ref(),
        data("febrl/febrl3_truth.csv").as_os_str(),
        "--unblocked".as_ref(),
        unblocked.as_os_str(),
    ]);
    let truth: std::collections::HashMap<String, String> =
        read_csv(&data("febrl/febrl3_truth.csv"))
            .into_iter()
            .map(|row| (row["local_id"].clone(), row["person_id"].clone()))
            .collect();
    let pairs = read_csv(&unblocked);
    let n_true_pairs = json_number(&eval, "true_pairs");
    let expected = ((1.0 - completeness) * n_true_pairs).round() as usize;
    assert!(!pairs.is_empty() && pairs.len().abs_diff(expected) <= 1, "{} {expected}", pairs.len());
    for pair in &pairs {
        assert_eq!(truth[&pair["local_id_a"]], truth[&pair["local_id_b"]], "{pair:?}");
    }
}

/// Every review names its candidate persons, a row each under one review id: one that
/// two persons match above the upper threshold names both (`several`: the run has one).
fn assert_reviews_name_their_persons(
    rows: &[std::collections::HashMap<String, String>],
    reviews: &std::path::Path,
    several: bool,
) {
    let reviews = read_csv(reviews);
    let mut by_review: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
    for row in &reviews {
        by_review.entry(row["review_id"].as_str()).or_default().push(row);
    }
    let in_review = rows.iter().filter(|row| row["decision"] == "review").count();
    assert_eq!(by_review.len(), in_review);
    let with_several: Vec<_> = by_review
        .values()
        .filter(|rows| rows[0]["reason"].starts_with("more than one person"))
        .collect();
    assert!(!several || !with_several.is_empty(), "{reviews:?}");
    for rows in with_several {
        let persons: std::collections::BTreeSet<&str> =
            rows.iter().map(|row| row["candidate_person_id"].as_str()).collect();
        assert!(persons.len() >= 2, "{rows:?}");
    }
}

#[test]
fn output_is_identical_at_one_and_eight_threads() {
    let dir = TempDir::new().unwrap();
    let records = dir.path().join("synth.csv");
    // With hospital numbers, so identifiers (exact and one character off) and their
    // blocking keys are part of what must not depend on the threads.
    let records_path = records.to_str().unwrap();
    mpi_ok([
        "synth",
        "--people",
        "6000",
        "--seed",
        "11",
        "--hospital-numbers",
        "--out",
        records_path,
    ]);
    let run = |threads: &str| {
        let store = dir.path().join(format!("store-{threads}"));
        let out = dir.path().join(format!("results-{threads}.csv"));
        mpi_ok([
            "link".as_ref(),
            "--threads".as_ref(),
            threads.as_ref(),
            "--map".as_ref(),
            "hospital_number=id:hosp".as_ref(),
            "--data".as_ref(),
            store.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            records.as_os_str(),
        ]);
        read_csv(&out)
    };
    let (one, eight) = (run("1"), run("8"));
    assert!(one.len() >= 10_000, "at least 10,000 records, got {}", one.len());
    assert_reviews_name_their_persons(&one, &dir.path().join("results-1.csv.reviews.csv"), true);
    assert_eq!(partition(&one), partition(&eight));
    let decisions =
        |rows: &[std::collections::HashMap<String, String>]| -> Vec<(String, String, String)> {
            rows.iter()
                .map(|row| {
                    (
                        row["local_id"].clone(),
                        row["decision"].clone(),
                        row["match_probability"].clone(),
                    )
                })
                .collect()
        };
    assert_eq!(decisions(&one), decisions(&eight));
}

#[test]
fn batch_and_one_by_one_agree() {
    let dir = TempDir::new().unwrap();
    let records = dir.path().join("synth.csv");
    let records_path = records.to_str().unwrap();
    mpi_ok([
        "synth",
        "--people",
        "2500",
        "--seed",
        "5",
        "--hospital-numbers",
        "--real-world-forms",
        "--out",
        records_path,
    ]);
    let model = data("default_model.json");
    let run = |mode: Option<&str>, name: &str| {
        let store = dir.path().join(format!("store-{name}"));
        let out = dir.path().join(format!("results-{name}.csv"));
        let mut args: Vec<std::ffi::OsString> = vec![
            "link".into(),
            "--map".into(),
            "hospital_number=id:hosp".into(),
            "--model".into(),
            model.clone().into(),
            "--data".into(),
            store.into(),
            "--out".into(),
            out.clone().into(),
        ];
        if let Some(mode) = mode {
            args.push(mode.into());
        }
        args.push(records.clone().into());
        mpi_ok(&args);
        read_csv(&out)
    };
    let batch = run(None, "batch");
    let online = run(Some("--online"), "online");
    assert_eq!(partition(&batch), partition(&online));
    let decisions = |rows: &[std::collections::HashMap<String, String>]| -> Vec<(String, String)> {
        rows.iter().map(|row| (row["local_id"].clone(), row["decision"].clone())).collect()
    };
    assert_eq!(decisions(&batch), decisions(&online));
}

/// A second file that updates stored records (households moving, names re-typed) and
/// adds new ones, in another order: linked in one batch it gives the same persons and
/// decisions as its rows sent one by one, each update seen as it was until its turn.
#[test]
fn batch_and_one_by_one_agree_on_a_file_of_updates() {
    let dir = TempDir::new().unwrap();
    let first = dir.path().join("synth.csv");
    let extra = dir.path().join("extra.csv");
    mpi_ok(["synth", "--people", "2500", "--seed", "5", "--out", first.to_str().unwrap()]);
    mpi_ok(["synth", "--people", "900", "--seed", "6", "--out", extra.to_str().unwrap()]);
    let rows = read_csv(&first);
    let columns = header(&first);
    let mut postcodes: Vec<&str> = rows.iter().map(|row| row["postcode"].as_str()).collect();
    postcodes.sort_unstable();
    postcodes.dedup();
    let second = dir.path().join("second.csv");
    let mut writer = csv::Writer::from_path(&second).unwrap();
    writer.write_record(&columns).unwrap();
    let extra_rows = read_csv(&extra);
    for (index, row) in rows.iter().rev().enumerate() {
        let mut row = row.clone();
        let home = postcodes.binary_search(&row["postcode"].as_str()).unwrap();
        if home % 3 == 0 && !row["postcode"].is_empty() {
            // The whole household moves.
            row.insert("address_line1".into(), format!("{} Moved Road", home + 1));
            row.insert("address_line2".into(), String::new());
            row.insert("postcode".into(), format!("LS{} {}AB", home % 27 + 1, home % 10));
        }
        if index % 7 == 0 {
            let initial: String = row["given_name"].chars().take(1).collect();
            row.insert("given_name".into(), initial);
        }
        writer.write_record(columns.iter().map(|column| row[column].as_str())).unwrap();
        if let Some(new) = extra_rows.get(index / 3).filter(|_| index % 3 == 0) {
            let mut new = new.clone();
            new.insert("local_id".into(), format!("N-{}", new["local_id"]));
            writer.write_record(columns.iter().map(|column| new[column].as_str())).unwrap();
        }
    }
    writer.flush().unwrap();
    drop(writer);

    let model = data("default_model.json");
    let run = |mode: Option<&str>, name: &str| {
        let store = dir.path().join(format!("store-{name}"));
        let link = |file: &std::path::Path, mode: Option<&str>, out: &str| {
            let mut args: Vec<std::ffi::OsString> = vec![
                "link".into(),
                "--model".into(),
                model.clone().into(),
                "--data".into(),
                store.clone().into(),
                "--out".into(),
                dir.path().join(out).into(),
            ];
            args.extend(mode.map(Into::into));
            args.push(file.into());
            mpi_ok(&args);
            read_csv(&dir.path().join(out))
        };
        link(&first, None, &format!("first-{name}.csv"));
        let results = link(&second, mode, &format!("second-{name}.csv"));
        (results, export(&store, &dir.path().join(format!("export-{name}.csv"))))
    };
    let (batch, batch_store) = run(None, "batch");
    let (online, online_store) = run(Some("--online"), "online");
    let decisions = |rows: &[std::collections::HashMap<String, String>]| -> Vec<(String, String)> {
        rows.iter().map(|row| (row["local_id"].clone(), row["decision"].clone())).collect()
    };
    let (batch, online) = (decisions(&batch), decisions(&online));
    assert!(batch.iter().any(|(_, decision)| decision == "linked"));
    let differing: Vec<_> = batch.iter().zip(&online).filter(|(a, b)| a != b).collect();
    assert!(differing.is_empty(), "batch and one by one differ: {differing:?}");
    assert_eq!(partition(&batch_store), partition(&online_store));
}

#[test]
fn a_second_file_reconciles_against_the_first_and_ids_stay() {
    let dir = TempDir::new().unwrap();
    let first = dir.path().join("gp.csv");
    let second = dir.path().join("council.csv");
    // (Birth dates of living people: one before 1900 is unusable, and two records at
    // one postcode without a usable birth date go to a steward.)
    fs::write(
        &first,
        "local_id,nhs_number,given_name,family_name,date_of_birth,postcode\n\
         G1,943 476 5919,Ada,Lovelace,1985-12-10,LS1 4AB\n\
         G2,,Charles,Babbage,1961-12-26,SW1A 1AA\n",
    )
    .unwrap();
    fs::write(
        &second,
        "local_id,given_name,family_name,date_of_birth,postcode\n\
         C9,ADA,LOVELACE,10/12/1985,ls14ab\n\
         C10,Mary,Somerville,26/12/1950,EH1 1YZ\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    let out1 = dir.path().join("r1.csv");
    let out2 = dir.path().join("r2.csv");
    let link = |out: &std::path::Path, file: &std::path::Path| {
        mpi_ok([
            "link".as_ref(),
            "--data".as_ref(),
            store.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            file.as_os_str(),
        ])
    };
    link(&out1, &first);
    link(&out2, &second);
    let r1 = read_csv(&out1);
    let r2 = read_csv(&out2);
    assert_eq!(r1[0]["source_system"], "gp");
    assert_eq!(r2[0]["source_system"], "council");
    // The council learns the NHS number it lacked, and the person id given out first.
    assert_eq!(r2[0]["person_id"], r1[0]["person_id"], "{r2:?}");
    assert_eq!(r2[0]["decision"], "linked");
    assert_eq!(r2[0]["nhs_number"], "9434765919");
    assert_eq!(r2[1]["decision"], "new");

    // Re-sending the same file changes nothing and duplicates nothing.
    let out3 = dir.path().join("r3.csv");
    let summary = link(&out3, &second);
    assert!(summary.contains("unchanged                   2"), "{summary}");
    let r3 = read_csv(&out3);
    assert_eq!(r3[0]["person_id"], r2[0]["person_id"]);
    assert_eq!(r3[0]["decision"], "linked", "an unchanged row reports its decision");

    // Sent again with one row changed: that row is decided again, the other kept.
    fs::write(
        &second,
        "local_id,given_name,family_name,date_of_birth,postcode
         C9,ADA,LOVELACE,10/12/1985,ls14ab
         C10,Mary,Somerville,26/12/1950,KY3 9AA
",
    )
    .unwrap();
    let out4 = dir.path().join("r4.csv");
    let summary = link(&out4, &second);
    assert!(summary.contains("unchanged                   1"), "{summary}");
    let r4 = read_csv(&out4);
    assert_eq!(r4[0]["person_id"], r2[0]["person_id"]);
    assert_eq!(r4[1]["person_id"], r2[1]["person_id"], "an update keeps its person");
    assert_eq!(export(&store, &dir.path().join("export.csv")).len(), 4);
}

#[test]
fn deleting_the_index_rebuilds_it_with_the_same_results() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let out = dir.path().join("a.csv");
    let args = |out: &std::path::Path| -> Vec<std::ffi::OsString> {
        vec![
            "link".into(),
            "--dry-run".into(),
            "--data".into(),
            store.clone().into(),
            "--out".into(),
            out.into(),
            data("sample/records.csv").into(),
        ]
    };
    // Load half the sample for real, then dry-run the whole sample twice:
    // once with the index as built, once after deleting it.
    let sample = fs::read_to_string(data("sample/records.csv")).unwrap();
    let half: Vec<&str> = sample.lines().take(sample.lines().count() / 2).collect();
    let half_path = dir.path().join("half.csv");
    fs::write(&half_path, half.join("\n") + "\n").unwrap();
    mpi_ok([
        "link".as_ref(),
        "--data".as_ref(),
        store.as_os_str(),
        "--out".as_ref(),
        dir.path().join("h.csv").as_os_str(),
        half_path.as_os_str(),
    ]);
    mpi_ok(args(&out));
    let before = read_csv(&out);
    fs::remove_dir_all(store.join("index")).unwrap();
    let out2 = dir.path().join("b.csv");
    mpi_ok(args(&out2));
    let after = read_csv(&out2);
    let decisions = |rows: &[std::collections::HashMap<String, String>]| -> Vec<(String, String)> {
        rows.iter().map(|row| (row["local_id"].clone(), row["decision"].clone())).collect()
    };
    assert_eq!(decisions(&before), decisions(&after));
    assert_eq!(partition(&before), partition(&after));

    // An index an older version built, with keys of another format, is rebuilt too,
    // though it says it is level with the store: here it is emptied and stamped with
    // the older format's tag, and the run still finds every candidate.
    let index = mpi_index::BlockingIndex::open_or_create(&store.join("index")).unwrap();
    let payload = index.commit_payload().unwrap();
    let (format, generation) = payload.split_once(' ').unwrap();
    assert_ne!(format, "k7", "the key format moved on from k7");
    let mut writer = index.writer(20_000_000).unwrap();
    writer.delete_all().unwrap();
    writer.commit(&format!("k7 {generation}")).unwrap();
    drop((writer, index));
    let out3 = dir.path().join("c.csv");
    mpi_ok(args(&out3));
    let again = read_csv(&out3);
    assert_eq!(decisions(&before), decisions(&again));
    assert_eq!(partition(&before), partition(&again));
}

#[test]
fn bad_rows_are_reported_and_the_rest_proceeds() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("council.csv");
    let mut bytes = b"local_id,nhs_number,given_name,family_name,date_of_birth\n\
        A1,943 476 5918,Ada,Lovelace,1815-12-10\n\
        A2,,Charles,Babbage,31/02/1791\n\
        A3,,too,many,fields,here\n\
        ,,No,Id,1900-01-02\n"
        .to_vec();
    bytes.extend_from_slice(b"A5,,\xff\xfe,Bad,1901-01-01\n");
    bytes.extend_from_slice(b"A6,,Mary,Shelley,1797-08-30\n");
    fs::write(&input, bytes).unwrap();
    let out = dir.path().join("results.csv");
    let store = dir.path().join("store");
    let output = mpi([
        "link".as_ref(),
        "--data".as_ref(),
        store.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        input.as_os_str(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows = read_csv(&out);
    let decisions: Vec<(&str, &str)> =
        rows.iter().map(|row| (row["local_id"].as_str(), row["decision"].as_str())).collect();
    assert_eq!(decisions.len(), 6);
    assert_eq!(decisions.iter().filter(|(_, decision)| *decision == "rejected").count(), 3);
    let errors = read_csv(&dir.path().join("results.csv.errors.csv"));
    let find = |line: &str, field: &str| {
        errors
            .iter()
            .find(|row| row["line"] == line && row["field"] == field)
            .unwrap_or_else(|| panic!("no error {line} {field}: {errors:?}"))
    };
    assert!(find("2", "nhs_number")["action"].contains("kept"));
    assert!(find("3", "date_of_birth")["action"].contains("kept"));
    assert!(find("4", "row")["action"].contains("rejected"));
    assert!(find("5", "local_id")["action"].contains("rejected"));
    assert!(find("6", "given_name")["action"].contains("rejected"));
    // No personal data in the errors file's reasons.
    for row in &errors {
        assert!(!row["reason"].contains("Lovelace") && !row["reason"].contains("1791"), "{row:?}");
    }

    // --strict: any rejected row fails the run and nothing is written.
    let strict_store = dir.path().join("strict-store");
    let output = mpi([
        "link".as_ref(),
        "--strict".as_ref(),
        "--data".as_ref(),
        strict_store.as_os_str(),
        "--out".as_ref(),
        dir.path().join("strict.csv").as_os_str(),
        input.as_os_str(),
    ]);
    assert!(!output.status.success());
    assert!(!strict_store.exists(), "nothing written under --strict");
}

#[test]
fn a_council_file_with_its_own_column_names_links_without_a_mapping() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("council.csv");
    fs::write(
        &input,
        "Client ID,Forename,Surname,Date of Birth,Gender,NHS Number,Post Code,Ethnicity\n\
         C1,John,Smith,01/02/1980,M,943 476 5919,LS1 4AB,X\n\
         C2,Jon,Smith,1980-02-01,Male,9434765919,LS1 4AB,X\n",
    )
    .unwrap();
    let out = dir.path().join("results.csv");
    let mut args = link_args(&dir, &out);
    args.push(input.into());
    let summary = mpi_ok(&args);
    assert!(
        summary.contains("Forename as given_name")
            && summary.contains("NHS Number as nhs_number")
            && summary.contains("Client ID as local_id"),
        "{summary}"
    );
    assert!(summary.contains("not read: Ethnicity"), "{summary}");
    let rows = read_csv(&out);
    assert_eq!(rows[1]["decision"], "linked", "{rows:?}");
    assert_eq!(rows[0]["person_id"], rows[1]["person_id"]);
    assert_eq!(rows[1]["nhs_number"], "9434765919");

    // The same people from Excel on Windows: Windows-1252, read with --encoding.
    let excel = dir.path().join("excel.csv");
    fs::write(
        &excel,
        b"Client ID,Forename,Surname,DOB,NHS No\nE1,Zo\xEB,O\x92Brien,02/03/1990,\n\
          E2,Zoe,O'Brien,1990-03-02,\n",
    )
    .unwrap();
    let excel_out = dir.path().join("excel-results.csv");
    let mut args = link_args(&dir, &excel_out);
    args.extend(["--encoding".into(), "windows-1252".into(), excel.clone().into()]);
    let summary = mpi_ok(&args);
    assert!(summary.contains("rejected                    0"), "{summary}");
    let rows = read_csv(&excel_out);
    assert_eq!(rows[1]["decision"], "linked", "{rows:?}");
    let mut args = link_args(&dir, &excel_out);
    args.extend(["--encoding".into(), "ebcdic".into(), excel.into()]);
    let output = mpi(&args);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("windows-1252"));
}

#[test]
fn a_us_locale_export_is_read_month_first() {
    // The shipped sample with the acute trust's dates (`13/02/1980`) written month
    // first (`02/13/1980`), as a US locale exports them.
    let dir = TempDir::new().unwrap();
    let us = dir.path().join("records.csv");
    let mut reader = csv::Reader::from_path(data("sample/records.csv")).unwrap();
    let mut writer = csv::Writer::from_path(&us).unwrap();
    let headers = reader.headers().unwrap().clone();
    writer.write_record(&headers).unwrap();
    let column = |name: &str| headers.iter().position(|header| header == name).unwrap();
    let (source, dob) = (column("source_system"), column("date_of_birth"));
    let mut swapped = 0;
    for row in reader.records() {
        let mut row: Vec<String> = row.unwrap().iter().map(str::to_owned).collect();
        let parts: Vec<&str> = row[dob].split('/').collect();
        if row[source] == "acute" && parts.len() == 3 {
            row[dob] = format!("{}/{}/{}", parts[1], parts[0], parts[2]);
            swapped += 1;
        }
        writer.write_record(&row).unwrap();
    }
    writer.flush().unwrap();
    assert!(swapped > 300, "{swapped}");

    let link = |input: &std::path::Path, name: &str, extra: &[&str]| {
        let store = dir.path().join(format!("store-{name}"));
        let out = dir.path().join(format!("{name}.csv"));
        let mut args: Vec<std::ffi::OsString> =
            vec!["link".into(), "--data".into(), store.into(), "--out".into(), out.clone().into()];
        args.extend(extra.iter().map(Into::into));
        args.push(input.into());
        (
            mpi_ok(&args),
            read_csv(&out),
            read_csv(&dir.path().join(format!("{name}.csv.errors.csv"))),
        )
    };
    let dob_errors = |errors: &[std::collections::HashMap<String, String>]| {
        errors.iter().filter(|error| error["field"] == "date_of_birth").count()
    };
    let (_, uk_rows, uk_errors) = link(&data("sample/records.csv"), "uk", &[]);
    let (summary, us_rows, us_errors) = link(&us, "us", &[]);
    assert!(summary.contains("dates of acute read month first"), "{summary}");
    // Read month first, the file links as the original does, person for person.
    assert_eq!(partition(&us_rows), partition(&uk_rows));
    assert_eq!(dob_errors(&us_errors), dob_errors(&uk_errors));
    // Read day first, every acute date after the twelfth is impossible.
    let (summary, _, day_first_errors) = link(&us, "forced", &["--dates", "day-first"]);
    assert!(!summary.contains("month first"), "{summary}");
    assert!(dob_errors(&day_first_errors) > dob_errors(&uk_errors) + 200);
}

#[test]
fn a_fhir_bulk_export_of_patients_links_with_a_council_file() {
    let dir = TempDir::new().unwrap();
    let council = dir.path().join("council.csv");
    fs::write(
        &council,
        "local_id,given_name,family_name,date_of_birth,sex,address_line1,postcode\n\
         C1,Margaret,Okafor,14/03/1941,F,12 Mill Road,LS6 2AB\n\
         C2,Tom,Bell,02/07/1990,M,4 High Street,BD1 1AA\n",
    )
    .unwrap();
    // Patients one a line, as FHIR Bulk Data export writes them; one line is broken.
    let gp = dir.path().join("gp.ndjson");
    fs::write(
        &gp,
        concat!(
            r#"{"resourceType":"Patient","id":"p-100","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],"name":[{"use":"official","family":"OKAFOR","given":["Margaret","Ada"]}],"gender":"female","birthDate":"1941-03-14","address":[{"use":"home","line":["12 Mill Rd"],"city":"Leeds","postalCode":"LS6 2AB"}]}"#,
            "\n",
            r#"{"resourceType":"Patient","id":"p-101","name":[{"family":"Bell","given":["Thomas"]}],"gender":"male","birthDate":"1990-07-02","address":[{"line":["4 High St"],"postalCode":"BD1 1AA"}]}"#,
            "\n",
            r#"{"resourceType":"Patient","id":"p-102","birthDate":19410314}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = dir.path().join("results.csv");
    let mut args = link_args(&dir, &out);
    args.extend([council.into(), gp.into()]);
    let summary = mpi_ok(&args);
    assert!(summary.contains("rejected                    1"), "{summary}");
    let rows = read_csv(&out);
    let row = |local_id: &str| rows.iter().find(|row| row["local_id"] == local_id).unwrap();
    for (patient, client) in [("p-100", "C1"), ("p-101", "C2")] {
        assert_eq!(row(patient)["source_system"], "gp");
        assert_eq!(row(patient)["decision"], "linked", "{rows:?}");
        assert_eq!(row(patient)["person_id"], row(client)["person_id"]);
    }
    // The council learns the NHS number the GP holds.
    assert_eq!(row("C1")["nhs_number"], "9434765919");
    assert_eq!(row("p-102")["decision"], "rejected");
    let errors = read_csv(&dir.path().join("results.csv.errors.csv"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0]["line"].as_str(), errors[0]["local_id"].as_str()), ("3", "p-102"));
    assert_eq!(errors[0]["reason"], "Patient.birthDate must be a string");
}

#[test]
fn a_fhir_bundle_links_with_a_council_file_and_a_patient_sent_again_updates_its_record() {
    let dir = TempDir::new().unwrap();
    let council = dir.path().join("council.csv");
    fs::write(
        &council,
        "local_id,given_name,family_name,date_of_birth,sex,address_line1,postcode\n\
         C1,Margaret,Okafor,14/03/1941,F,12 Mill Road,LS6 2AB\n",
    )
    .unwrap();
    // A FHIR server's answer to a search, pretty-printed, with a Practitioner it
    // included beside its match.
    let bundle = dir.path().join("gp.json");
    fs::write(
        &bundle,
        r#"{
  "resourceType": "Bundle",
  "type": "searchset",
  "entry": [
    {
      "search": { "mode": "match" },
      "resource": {
        "resourceType": "Patient",
        "id": "p-100",
        "identifier": [{ "system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919" }],
        "name": [{ "family": "Okafor", "given": ["Margaret"] }],
        "gender": "female",
        "birthDate": "1941-03-14",
        "address": [{ "line": ["12 Mill Rd"], "postalCode": "LS6 2AB" }]
      }
    },
    { "search": { "mode": "include" }, "resource": { "resourceType": "Practitioner", "id": "d1" } }
  ]
}"#,
    )
    .unwrap();
    let out = dir.path().join("results.csv");
    let mut args = link_args(&dir, &out);
    args.extend([council.into(), bundle.into()]);
    let summary = mpi_ok(&args);
    assert!(summary.contains("rejected                    0"), "{summary}");
    let rows = read_csv(&out);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1]["local_id"], "p-100");
    assert_eq!(rows[1]["decision"], "linked");
    assert_eq!(rows[0]["person_id"], rows[1]["person_id"]);
    assert_eq!(rows[0]["nhs_number"], "9434765919");

    // The same Patient read once more, on its own, after a move: its record is updated.
    let patient = dir.path().join("p-100.json");
    fs::write(
        &patient,
        r#"{"resourceType":"Patient","id":"p-100","name":[{"family":"Okafor","given":["Margaret"]}],"birthDate":"1941-03-14","address":[{"line":["3 Kirkstall Lane"],"postalCode":"LS5 3BT"}]}"#,
    )
    .unwrap();
    let mut args = link_args(&dir, &out);
    args.extend(["--source".into(), "gp".into(), patient.into()]);
    let summary = mpi_ok(&args);
    assert!(summary.contains("records in store            2"), "{summary}");
    let again = read_csv(&out);
    assert_eq!((again.len(), again[0]["local_id"].as_str()), (1, "p-100"));
    assert_eq!(again[0]["person_id"], rows[0]["person_id"]);
}

#[test]
fn each_file_may_be_given_its_own_source_system() {
    let dir = TempDir::new().unwrap();
    let council = dir.path().join("council.csv");
    fs::write(&council, "local_id,given_name,family_name\nC1,Ann,Smith\n").unwrap();
    // FHIR Bulk Data export names its file after the resource type, not the system.
    let export = dir.path().join("Patient.ndjson");
    fs::write(&export, r#"{"resourceType":"Patient","id":"p-1","name":[{"family":"Bell"}]}"#)
        .unwrap();
    let out = dir.path().join("results.csv");
    let source = format!("{}=gp-leeds", export.display());
    let mut args = link_args(&dir, &out);
    args.extend(["--source".into(), source.into(), council.clone().into(), export.clone().into()]);
    mpi_ok(&args);
    let sources: Vec<(String, String)> = read_csv(&out)
        .iter()
        .map(|row| (row["source_system"].clone(), row["local_id"].clone()))
        .collect();
    assert_eq!(sources, [("council".into(), "C1".into()), ("gp-leeds".into(), "p-1".into())]);

    // A name for a file the run does not read is a mistake, said before anything runs.
    let mut args = link_args(&dir, &out);
    args.extend(["--source".into(), "other.csv=x".into(), council.into()]);
    let output = mpi(&args);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no file"));
}

#[test]
fn malformed_files_fail_clearly_without_writing() {
    let dir = TempDir::new().unwrap();
    let utf16 = dir.path().join("utf16.csv");
    let text: Vec<u8> =
        "\u{feff}local_id,given_name\nA1,Ada\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
    fs::write(&utf16, text).unwrap();
    let no_id = dir.path().join("no_id.csv");
    fs::write(&no_id, "name,dob\nAda,1815\n").unwrap();
    let binary = dir.path().join("binary.csv");
    fs::write(&binary, [0u8, 159, 146, 150, 0, 0, 1, 2, 0, 0]).unwrap();
    // A good file, but an output path that cannot be written: the run fails before the
    // store is made.
    let good = dir.path().join("good.csv");
    fs::write(&good, "local_id,given_name\nA1,Ada\n").unwrap();
    let (out, unwritable) = (dir.path().join("r.csv"), dir.path().join("missing").join("r.csv"));
    for (file, out, expected) in [
        (&utf16, &out, "UTF-8"),
        (&no_id, &out, "local_id"),
        (&binary, &out, "UTF-8"),
        (&good, &unwritable, "creating"),
    ] {
        let store = dir.path().join("store");
        let output = mpi([
            "link".as_ref(),
            "--data".as_ref(),
            store.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            file.as_os_str(),
        ]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!store.exists(), "no partial write");
    }
    let output = mpi(["link", "--map", "nonsense", "x.csv"]);
    assert!(!output.status.success());
}

/// A store too small to train falls back on the shipped default model; an agreeing
/// hospital number still counts there (the synthetic data it was trained on has no
/// identifiers, so the file carries starting values for them, not neutral ones).
#[test]
fn an_agreeing_identifier_counts_on_the_shipped_default_model() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("tiny.csv");
    fs::write(
        &file,
        "source_system,local_id,given_name,family_name,date_of_birth,postcode,hospital_number\n\
         acute,1,Jonathan,Smyth,1980-01-01,LS1 4AB,H1234567\n\
         gp,2,John,Smith,,M1 1AA,H1234567\n",
    )
    .unwrap();
    let probability = |map: &[&str]| -> f64 {
        let run = TempDir::new().unwrap();
        let out = run.path().join("results.csv");
        let mut args = link_args(&run, &out);
        args.extend(map.iter().map(Into::into));
        args.push(file.clone().into());
        let summary = mpi_ok(&args);
        assert!(summary.contains("shipped default"), "{summary}");
        // Empty when no candidate was found at all.
        read_csv(&out)[1]["match_probability"].parse().unwrap_or(0.0)
    };
    let with = probability(&["--map", "hospital_number=id:hosp"]);
    let without = probability(&[]);
    assert!(with > 0.5, "the same hospital number: {with}");
    assert!(without < 0.01, "names alike, nothing else: {without}");
}

/// A woman's records under her maiden name and her married one, at two homes: a
/// council that records her previous surname (in its own column, or written `Evans
/// (nee Lewis)`) links them; without it, given name, birth date and sex alone do not.
#[test]
fn a_previous_surname_links_records_made_under_it() {
    let dir = TempDir::new().unwrap();
    let gp = dir.path().join("gp.csv");
    fs::write(
        &gp,
        "local_id,given_name,family_name,date_of_birth,sex,address_line1,postcode\n\
         G1,Harper,Clark,29/08/1931,F,137 London Road,L8 1ZQ\n\
         G2,Emilia,LEWIS,1987-01-19,F,48 The Crescent,W2 0NA\n",
    )
    .unwrap();
    let decisions = |council: &str| -> Vec<(String, String)> {
        let run = TempDir::new().unwrap();
        let file = run.path().join("council.csv");
        fs::write(&file, council).unwrap();
        let out = run.path().join("results.csv");
        let mut args = link_args(&run, &out);
        args.extend([gp.clone().into(), file.into()]);
        mpi_ok(&args);
        let rows = read_csv(&out);
        let person = |id: &str| rows.iter().find(|row| row["local_id"] == id).unwrap();
        ["C1", "C2"]
            .iter()
            .map(|id| (person(id)["decision"].clone(), person(id)["person_id"].clone()))
            .zip(["G1", "G2"].map(|id| person(id)["person_id"].clone()))
            .map(|((decision, person), gp_person)| {
                (decision, if person == gp_person { "same" } else { "other" }.to_owned())
            })
            .collect()
    };
    let linked = ("linked".to_owned(), "same".to_owned());
    let with = decisions(
        "local_id,given_name,family_name,previous_surname,date_of_birth,sex,address_line1,postcode\n\
         C1,Harper,Johnson,Clark,29/08/1931,F,60 Albert Rd,LS12 3WQ\n\
         C2,Emilia,Evans (nee Lewis),,19/1/1987,F,123 King St,CF24 7GE\n",
    );
    assert_eq!(with, [linked.clone(), linked.clone()]);
    let without = decisions(
        "local_id,given_name,family_name,date_of_birth,sex,address_line1,postcode\n\
         C1,Harper,Johnson,29/08/1931,F,60 Albert Rd,LS12 3WQ\n\
         C2,Emilia,Evans,19/1/1987,F,123 King St,CF24 7GE\n",
    );
    assert!(!without.contains(&linked), "{without:?}");
}

#[test]
fn explain_reads_as_a_breakdown() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("gp.csv");
    fs::write(
        &input,
        "local_id,given_name,family_name,date_of_birth,postcode\n\
         G1,Robert,Owen,1971-05-14,LS1 4AB\n\
         G2,Bob,Owen,14/05/1971,LS1 4AB\n\
         G3,,Owen,1971-05-14,LS1 4AB\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    mpi_ok([
        "link".as_ref(),
        "--data".as_ref(),
        store.as_os_str(),
        "--out".as_ref(),
        dir.path().join("r.csv").as_os_str(),
        input.as_os_str(),
    ]);
    let text = mpi_ok(["explain", "gp:G1", "gp:G2", "--data", store.to_str().unwrap()]);
    assert!(text.contains("given_name") && text.contains("nickname"), "{text}");
    // The values compared, side by side, as normalised: both dates read alike.
    let values = |field: &str| -> Vec<String> {
        let line = text.lines().find(|line| line.starts_with(field)).unwrap();
        line.split_whitespace().skip(1).map(str::to_owned).collect()
    };
    assert_eq!(values("field"), ["gp:G1", "gp:G2"], "{text}");
    assert_eq!(values("given_name"), ["robert", "bob"], "{text}");
    assert_eq!(values("date_of_birth"), ["1971-05-14", "1971-05-14"], "{text}");
    assert_eq!(values("nhs_number"), ["-", "-"], "{text}");
    assert!(text.contains("match probability"), "{text}");
    assert!(text.contains("at or above the upper threshold: a link"), "{text}");
    // A sure score the household rule holds for a steward says so, and why.
    let text = mpi_ok(["explain", "gp:G1", "gp:G3", "--data", store.to_str().unwrap()]);
    assert!(text.contains("but never linked without a\nsteward: same household"), "{text}");
    let missing = mpi(["explain", "gp:G1", "gp:NOPE", "--data", store.to_str().unwrap()]);
    assert!(!missing.status.success());
}

/// Sixty people given 1 January 1990 for a birth date not known, among the sample's
/// records: the model `mpi link` trains holds the date as crowded, and two records
/// agreeing on it gain nothing from it.
#[test]
fn agreeing_on_a_crowded_birth_date_says_nothing() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("records.csv");
    let mut text = fs::read_to_string(data("sample/records.csv")).unwrap();
    let (given, family) = (["Mohammad", "Ahmad", "Ali"], ["Ahmadi", "Karimi"]);
    for n in 0..60 {
        text.push_str(&format!(
            "council_asc,CROWD-{n},,{},{},01/01/1990,M,{} Station Road,,,,,\n",
            given[n % 3],
            family[n / 3 % 2],
            n + 1
        ));
    }
    fs::write(&input, text).unwrap();
    let mut args = link_args(&dir, &dir.path().join("r.csv"));
    args.push(input.into());
    mpi_ok(&args);
    let store = dir.path().join("store");
    let explain = |a: &str, b: &str| mpi_ok(["explain", a, b, "--data", store.to_str().unwrap()]);
    let date_line = |text: &str| -> String {
        let breakdown = text.split("comparison").nth(1).unwrap();
        breakdown.lines().find(|line| line.starts_with("date_of_birth")).unwrap().to_owned()
    };
    let crowd = explain("council_asc:CROWD-0", "council_asc:CROWD-6");
    let line = date_line(&crowd);
    assert!(line.contains("exact (adjusted for frequency)") && line.ends_with("+0.00"), "{crowd}");
    assert!(crowd.contains("The birth date is a crowded one"), "{crowd}");
    // A pair on an ordinary date does not say so.
    let ordinary = explain("gp:GP0000363", "gp:GP0000125");
    assert!(!ordinary.contains("crowded"), "{ordinary}");
}

/// A small store: sixty men given 1 January of ten years (six a date, too few to crowd a
/// date), ten given names and six family names among them, each at his own home. The
/// day is crowded, so no two of them are linked on the names and the date. (Before,
/// fifty were linked into ten persons.)
#[test]
fn a_small_stores_crowded_first_of_january_links_no_one() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("records.csv");
    let mut text = fs::read_to_string(data("sample/records.csv")).unwrap();
    let given = [
        "Mohammad", "Ahmad", "Ali", "Hussain", "Reza", "Mahmood", "Abdul", "Jawad", "Farid", "Omid",
    ];
    let family = ["Ahmadi", "Karimi", "Rahimi", "Hashimi", "Mohammadi", "Sultani"];
    let areas = ["LS", "S", "DN", "M", "NR", "EX", "B", "L", "NE", "BS"];
    for n in 0..60 {
        text.push_str(&format!(
            "council_asc,CROWD-{n},,{},{},01/01/{},M,{} Station Road,,,{}{} {}AB,,\n",
            given[n * 3 % 10],
            family[n / 10],
            1985 + n * 3 % 10,
            n + 1,
            areas[n % 10],
            n / 10 + 1,
            n % 9 + 1
        ));
    }
    fs::write(&input, text).unwrap();
    let out = dir.path().join("r.csv");
    let mut args = link_args(&dir, &out);
    args.push(input.into());
    let summary = mpi_ok(&args);
    // The summary says which dates it holds as estimates.
    assert!(
        summary.contains("crowded dates      1 January in every year (74 records)"),
        "{summary}"
    );
    let results = fs::read_to_string(&out).unwrap();
    let crowd: Vec<Vec<&str>> = results
        .lines()
        .filter(|line| line.contains(",CROWD-"))
        .map(|line| line.split(',').collect())
        .collect();
    assert_eq!(crowd.len(), 60);
    let persons: std::collections::HashSet<&str> = crowd.iter().map(|row| row[2]).collect();
    assert_eq!(persons.len(), 60, "{results}");
    assert!(crowd.iter().all(|row| row[3] != "linked"), "{crowd:?}");
}

/// `mpi synth --out /dev/stdout | head -1`: the reader goes away, and the command ends
/// quietly, as other command-line tools do, not with a panic.
#[cfg(unix)]
#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mpi"))
        .args(["synth", "--people", "20000", "--seed", "1", "--out", "/dev/stdout"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("source_system,local_id"), "{first}");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{:?} {stderr}", output.status);
}

#[test]
fn a_store_normalised_by_an_earlier_version_is_normalised_again_when_opened() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("gp.csv");
    fs::write(
        &input,
        "local_id,given_name,family_name,date_of_birth,address_line1,postcode\n\
         G1,Ann,Lee,1971-05-14,5 Queen's Rd,LS1 4AB\n\
         G2,Ann,Lee,1971-05-14,5 Queens Road,LS1 4AB\n",
    )
    .unwrap();
    let mut args = link_args(&dir, &dir.path().join("r.csv"));
    args.push(input.into());
    mpi_ok(&args);
    let store = dir.path().join("store");
    // As version 1 left it: the possessive's "s" read as "south", and no version noted.
    let database = rusqlite::Connection::open(store.join("mpi.sqlite3")).unwrap();
    let normalized_g1 = |database: &rusqlite::Connection| -> String {
        database
            .query_row("SELECT normalized FROM records WHERE local_id = 'G1'", [], |row| row.get(0))
            .unwrap()
    };
    let old = normalized_g1(&database).replace("queens road", "queen south road");
    database.execute("UPDATE records SET normalized = ?1 WHERE local_id = 'G1'", [&old]).unwrap();
    database.execute("DELETE FROM meta WHERE key = 'normalization_version'", []).unwrap();
    let generation = |database: &rusqlite::Connection| -> String {
        database
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |row| row.get(0))
            .unwrap()
    };
    let before = generation(&database);
    drop(database);

    // Opened again, the store's record compares as a new one would: one address.
    let text = mpi_ok(["explain", "gp:G1", "gp:G2", "--data", store.to_str().unwrap()]);
    // (The breakdown's line, after the values' line.)
    let address = text.lines().filter(|line| line.starts_with("address")).nth(1).unwrap();
    assert!(address.contains("exact"), "{text}");
    let database = rusqlite::Connection::open(store.join("mpi.sqlite3")).unwrap();
    assert!(normalized_g1(&database).contains("5 queens road"));
    assert_ne!(generation(&database), before, "the index re-reads what changed");
    let version: String = database
        .query_row("SELECT value FROM meta WHERE key = 'normalization_version'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(version, mpi_matching::NORMALIZATION_VERSION.to_string());
    drop(database);
    // Once is enough: the next open changes nothing.
    mpi_ok(["explain", "gp:G1", "gp:G2", "--data", store.to_str().unwrap()]);
    let database = rusqlite::Connection::open(store.join("mpi.sqlite3")).unwrap();
    assert_eq!(generation(&database), (before.parse::<u64>().unwrap() + 1).to_string());
}

#[test]
fn train_saves_a_new_model_version() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let mut args = link_args(&dir, &dir.path().join("r.csv"));
    args.push(data("sample/records.csv").into());
    mpi_ok(&args);
    let model_file = dir.path().join("model.json");
    let text = mpi_ok([
        "train",
        "--data",
        store.to_str().unwrap(),
        "--seed",
        "3",
        "--out",
        model_file.to_str().unwrap(),
    ]);
    assert!(text.contains("trained model v2"), "{text}");
    let model = fs::read_to_string(&model_file).unwrap();
    assert!(model.contains("\"format\": \"mpi-fellegi-sunter\""));
}
