//! Criterion benches of the hot paths: normalise a record, derive its blocking keys,
//! query the blocking index (tantivy, at the sample's size and at 1M records, and the
//! batch's in-memory copy at 1M records),
//! compare and score a pair.
//!
//! `cargo bench --bench hot_paths`. Inputs come from the shipped sample.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mpi::input::{ColumnMap, read_csv_bytes};
use mpi_index::{BlockingIndex, MemoryIndexBuilder};
use mpi_matching::{ComparableRecord, Demographics, blocking_keys, compare, default_model};

const SAMPLE: &str = include_str!("../data/sample/records.csv");

fn sample() -> Vec<Demographics> {
    let file = read_csv_bytes(
        std::path::Path::new("sample.csv"),
        SAMPLE.as_bytes(),
        0,
        &ColumnMap::default(),
        None,
        None,
    )
    .expect("the sample reads");
    file.rows.into_iter().map(|row| row.raw.demographics()).collect()
}

fn hot_paths(c: &mut Criterion) {
    let raws = sample();
    let normalizer = mpi_matching::Normalizer::new(mpi::normalize_options(false));
    let records: Vec<ComparableRecord> = raws
        .iter()
        .map(|raw| ComparableRecord::new(normalizer.normalize(raw).0, normalizer.nicknames()))
        .collect();
    let model = default_model();

    c.bench_function("normalise and prepare one record", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % raws.len();
            let (normalized, issues) = normalizer.normalize(black_box(&raws[i]));
            black_box((ComparableRecord::new(normalized, normalizer.nicknames()), issues))
        })
    });

    c.bench_function("blocking keys of one record", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % records.len();
            black_box(blocking_keys(black_box(&records[i])))
        })
    });

    let index = BlockingIndex::create_in_ram().expect("index");
    {
        let mut writer = index.writer(32 * 1024 * 1024).expect("writer");
        for (id, record) in records.iter().enumerate() {
            writer.add(id as u64 + 1, &blocking_keys(record)).expect("add");
        }
        writer.commit("bench").expect("commit");
    }
    index.reload().expect("reload");
    let keys: Vec<Vec<u64>> = records.iter().map(blocking_keys).collect();
    c.bench_function("candidates of one record (index query)", |b| {
        let searcher = index.searcher().expect("searcher");
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(
                searcher
                    .candidates(black_box(&keys[i]), None, Some(i as u64 + 1), 20)
                    .expect("query"),
            )
        })
    });

    // The batch's in-memory index at the size of the 1M run, where it is far larger
    // than the caches: a million records of eleven keys (hashes, as real keys are),
    // every other record sharing five keys with the one before (two records of one
    // person), and one key in 200,000 common values (a block of about five).
    let n_records = 1_000_000;
    let mut state = 0x1234_5678_9abc_def0_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut million: Vec<Vec<u64>> = Vec::with_capacity(n_records);
    for i in 0..n_records {
        let mut keys: Vec<u64> = (0..10).map(|_| (random() >> 24) << 4).collect();
        if i % 2 == 1 {
            keys[..5].copy_from_slice(&million[i - 1][..5]);
        }
        keys.push(((random() % 200_000) << 4) | 3);
        million.push(keys);
    }
    let mut builder = MemoryIndexBuilder::with_capacity(n_records * 11);
    for (i, keys) in million.iter().enumerate() {
        builder.add(i as u64 + 1, keys);
    }
    let memory = builder.build();
    c.bench_function("candidates of one record (in-memory index, 1M records)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i * 7_919 + 1) % n_records;
            let id = i as u64 + 1;
            black_box(memory.candidates(black_box(&million[i]), Some(id), Some(id), 20))
        })
    });

    // The same million records in tantivy, written as a batch writes them (a bulk
    // writer's segments, never merged): what the identity service queries.
    let on_disk = BlockingIndex::create_in_ram().expect("index");
    {
        let mut writer = on_disk.bulk_writer(64 * 1024 * 1024).expect("writer");
        for (i, keys) in million.iter().enumerate() {
            writer.add(i as u64 + 1, keys).expect("add");
        }
        writer.commit("bench").expect("commit");
    }
    on_disk.reload().expect("reload");
    c.bench_function("candidates of one record (index query, 1M records)", |b| {
        let searcher = on_disk.searcher().expect("searcher");
        let mut i = 0;
        b.iter(|| {
            i = (i * 7_919 + 1) % n_records;
            let id = i as u64 + 1;
            black_box(
                searcher.candidates(black_box(&million[i]), None, Some(id), 20).expect("query"),
            )
        })
    });
    drop(on_disk);

    c.bench_function("compare and score one pair", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % (records.len() - 1);
            let gamma = compare(black_box(&records[i]), black_box(&records[i + 1]));
            black_box(model.weight(&gamma, &records[i], &records[i + 1]))
        })
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
