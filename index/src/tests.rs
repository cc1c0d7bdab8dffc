use quickcheck::{QuickCheck, TestResult, Testable};
use quickcheck_macros::quickcheck;

use super::*;

/// Test keys are written as short names and stored as their bytes.
fn keys(list: &[&str]) -> Vec<Key> {
    list.iter().map(|key| key.bytes().fold(0, |k, byte| (k << 8) | u64::from(byte))).collect()
}

fn index_of(records: &[(RecordId, &[&str])]) -> BlockingIndex {
    let index = BlockingIndex::create_in_ram().unwrap();
    let mut writer = index.writer(20_000_000).unwrap();
    for (id, record_keys) in records {
        writer.add(*id, &keys(record_keys)).unwrap();
    }
    writer.commit("test").unwrap();
    index.reload().unwrap();
    index
}

#[track_caller]
fn check(
    index: &BlockingIndex,
    probe: &[&str],
    below: Option<u64>,
    exclude: Option<u64>,
    limit: usize,
    expected: &[(u64, u32)],
) {
    let got: Vec<(u64, u32)> = index
        .candidates(&keys(probe), below, exclude, limit)
        .unwrap()
        .into_iter()
        .map(|candidate| (candidate.record_id, candidate.n_keys))
        .collect();
    assert_eq!(got, expected, "probe {probe:?} below {below:?} exclude {exclude:?} limit {limit}");
}

#[test]
fn ranks_by_shared_keys_then_record_id() {
    let index =
        index_of(&[(5, &["a", "b"]), (3, &["a"]), (9, &["a", "b", "c"]), (1, &["z"]), (7, &["b"])]);
    check(&index, &["a", "b", "c"], None, None, 10, &[(9, 3), (5, 2), (3, 1), (7, 1)]);
    // Ties at the limit go to the lower record id.
    check(&index, &["a", "b"], None, None, 3, &[(5, 2), (9, 2), (3, 1)]);
    check(&index, &["a", "a", "a"], None, None, 10, &[(3, 1), (5, 1), (9, 1)]);
    check(&index, &["nothing"], None, None, 10, &[]);
    check(&index, &[], None, None, 10, &[]);
}

#[test]
fn below_and_exclude_filter() {
    let index = index_of(&[(1, &["a"]), (2, &["a"]), (3, &["a"]), (4, &["a"])]);
    check(&index, &["a"], Some(3), None, 10, &[(1, 1), (2, 1)]);
    check(&index, &["a"], None, Some(2), 10, &[(1, 1), (3, 1), (4, 1)]);
    check(&index, &["a"], Some(4), Some(3), 10, &[(1, 1), (2, 1)]);
}

#[test]
fn update_delete_and_delete_all() {
    let index = index_of(&[(1, &["a"]), (2, &["a", "b"])]);
    let mut writer = index.writer(20_000_000).unwrap();
    writer.update(1, &keys(&["b"])).unwrap();
    writer.delete(2).unwrap();
    writer.add(3, &keys(&["a", "b"])).unwrap();
    writer.commit("two").unwrap();
    index.reload().unwrap();
    check(&index, &["a", "b"], None, None, 10, &[(3, 2), (1, 1)]);
    assert_eq!(index.num_records(), 2);
    assert_eq!(index.commit_payload().as_deref(), Some("two"));
    writer.delete_all().unwrap();
    writer.commit("empty").unwrap();
    index.reload().unwrap();
    check(&index, &["a", "b"], None, None, 10, &[]);
}

/// A batch of updates: the old keys of many records go in one operation, then their
/// new keys are added; records outside the set keep theirs, and the new keys survive.
#[test]
fn delete_many_then_add_replaces_those_records_only() {
    let index = index_of(&[(1, &["a"]), (2, &["a", "b"]), (3, &["a"]), (4, &["c"])]);
    let mut writer = index.bulk_writer(20_000_000).unwrap();
    writer.delete_many(&[1, 2, 4]).unwrap();
    writer.add(1, &keys(&["b"])).unwrap();
    writer.add(2, &keys(&["c"])).unwrap();
    writer.add(5, &keys(&["a"])).unwrap();
    writer.delete_many(&[]).unwrap();
    writer.commit("updated").unwrap();
    index.reload().unwrap();
    check(&index, &["a"], None, None, 10, &[(3, 1), (5, 1)]);
    check(&index, &["b"], None, None, 10, &[(1, 1)]);
    check(&index, &["c"], None, None, 10, &[(2, 1)]);
    assert_eq!(index.num_records(), 4);
}

#[test]
fn rollback_drops_uncommitted_changes() {
    let index = index_of(&[(1, &["a"])]);
    let mut writer = index.writer(20_000_000).unwrap();
    writer.add(2, &keys(&["a"])).unwrap();
    writer.rollback().unwrap();
    writer.commit("after rollback").unwrap();
    index.reload().unwrap();
    check(&index, &["a"], None, None, 10, &[(1, 1)]);
}

#[test]
fn reopens_from_disk_with_its_payload() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = BlockingIndex::open_or_create(dir.path()).unwrap();
        let mut writer = index.writer(20_000_000).unwrap();
        writer.add(1, &keys(&["a"])).unwrap();
        writer.commit("gen:7").unwrap();
    }
    let index = BlockingIndex::open_or_create(dir.path()).unwrap();
    assert_eq!(index.commit_payload().as_deref(), Some("gen:7"));
    check(&index, &["a"], None, None, 10, &[(1, 1)]);
}

/// A delete finds its record's document through the record's block of ids, in every
/// segment: the other records of the block, and records of other blocks, stay.
#[test]
fn deletes_reach_one_record_of_its_block_in_any_segment() {
    let index = BlockingIndex::create_in_ram().unwrap();
    let mut writer = index.bulk_writer(20_000_000).unwrap();
    // Four commits, so each block of 256 ids spreads over several segments.
    for part in 0..4u64 {
        for id in (0..1_200u64).filter(|id| id % 4 == part) {
            writer.add(id, &keys(&["a"])).unwrap();
        }
        writer.commit("part").unwrap();
    }
    let gone: Vec<u64> = (0..1_200).filter(|id| id % 7 == 3).collect();
    writer.delete_many(&gone[..gone.len() / 2]).unwrap();
    for &id in &gone[gone.len() / 2..] {
        writer.delete(id).unwrap();
    }
    // Ids never added, in blocks that exist and in one that does not, delete nothing.
    writer.delete_many(&[1_200, 1_201, 1_000_000]).unwrap();
    writer.commit("deleted").unwrap();
    index.reload().unwrap();
    let left: Vec<u64> = (0..1_200).filter(|id| id % 7 != 3).collect();
    assert_eq!(index.record_ids().unwrap(), left);
    let found: Vec<u64> = index
        .candidates(&keys(&["a"]), None, None, 2_000)
        .unwrap()
        .into_iter()
        .map(|candidate| candidate.record_id)
        .collect();
    assert_eq!(found, left);
}

/// An index on disk laid out by another version (other fields) is emptied when opened,
/// with no payload, so that its owner rebuilds it, instead of failing to open.
#[test]
fn an_index_of_another_layout_is_emptied_for_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut builder = Schema::builder();
        let rid = builder.add_u64_field("rid", tantivy::schema::INDEXED | tantivy::schema::FAST);
        let index = Index::create_in_dir(dir.path(), builder.build()).unwrap();
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut document = TantivyDocument::new();
        document.add_u64(rid, 1);
        writer.add_document(document).unwrap();
        let mut prepared = writer.prepare_commit().unwrap();
        prepared.set_payload("gen:3");
        prepared.commit().unwrap();
    }
    let index = BlockingIndex::open_or_create(dir.path()).unwrap();
    assert_eq!(index.num_records(), 0);
    assert_eq!(index.commit_payload(), None);
    let mut writer = index.writer(20_000_000).unwrap();
    writer.add(1, &keys(&["a"])).unwrap();
    writer.commit("gen:4").unwrap();
    let reopened = BlockingIndex::open_or_create(dir.path()).unwrap();
    assert_eq!(reopened.commit_payload().as_deref(), Some("gen:4"));
    check(&reopened, &["a"], None, None, 10, &[(1, 1)]);
}

/// The ranking by definition: (record, distinct probe keys it shares), most first, ties
/// by record id, at most `limit`.
fn brute_force<'a>(
    records: impl Iterator<Item = (u64, &'a [Key])>,
    probe_keys: &[Key],
    limit: usize,
) -> Vec<(u64, u32)> {
    let mut expected: Vec<(u64, u32)> = records
        .filter_map(|(id, record_keys)| {
            let mut shared: Vec<&Key> =
                probe_keys.iter().filter(|k| record_keys.contains(k)).collect();
            shared.sort();
            shared.dedup();
            (!shared.is_empty()).then_some((id, shared.len() as u32))
        })
        .collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    expected.truncate(limit);
    expected
}

/// Runs a property that builds a tantivy index a case on a quarter of the cases the
/// others run (`QUICKCHECK_TESTS`, which `cargo test` sets to 1,000 in
/// `.cargo/config.toml`; quickcheck's 100 without it): each case costs tens of
/// milliseconds (a segment writer's tables are allocated at every commit), and at
/// 1,000 cases these three took ninety seconds of CI, at 250 thirty.
fn with_tantivy_cases(property: impl Testable) {
    let cases = std::env::var("QUICKCHECK_TESTS")
        .ok()
        .and_then(|cases| cases.parse::<u64>().ok())
        .unwrap_or(100);
    QuickCheck::new().tests((cases / 4).max(1)).quickcheck(property);
}

/// Records as key sets over a tiny alphabet, so they collide; several commits make
/// several segments; some records are deleted or updated.
#[test]
fn candidates_match_a_brute_force_model() {
    with_tantivy_cases(
        candidates_match_a_brute_force_model_holds
            as fn(Vec<Vec<u8>>, Vec<u8>, Option<u8>, u8) -> TestResult,
    );
}

fn candidates_match_a_brute_force_model_holds(
    records: Vec<Vec<u8>>,
    probe: Vec<u8>,
    below: Option<u8>,
    limit: u8,
) -> TestResult {
    if records.len() > 40 {
        return TestResult::discard();
    }
    let key = |byte: &u8| u64::from(byte % 6);
    let index = BlockingIndex::create_in_ram().unwrap();
    let mut model: Vec<Option<Vec<Key>>> = Vec::new();
    let mut writer = index.writer(20_000_000).unwrap();
    for (position, record) in records.iter().enumerate() {
        let record_keys: Vec<Key> = record.iter().map(key).collect();
        writer.add(position as u64, &record_keys).unwrap();
        model.push(Some(record_keys));
        if position % 7 == 3 {
            writer.commit("segment").unwrap();
        }
        if position % 5 == 4 {
            // Delete an earlier record; update another.
            writer.delete((position - 2) as u64).unwrap();
            model[position - 2] = None;
            let updated: Vec<Key> = record.iter().rev().take(2).map(key).collect();
            writer.update((position - 1) as u64, &updated).unwrap();
            model[position - 1] = Some(updated);
        }
    }
    writer.commit("done").unwrap();
    index.reload().unwrap();
    let probe_keys: Vec<Key> = probe.iter().map(key).collect();
    let below = below.map(|b| u64::from(b % 45));
    let limit = usize::from(limit % 12);
    let records = model.iter().enumerate().filter_map(|(id, record_keys)| {
        let id = id as u64;
        record_keys
            .as_deref()
            .filter(|_| below.is_none_or(|below| id < below))
            .map(|keys| (id, keys))
    });
    let expected = brute_force(records, &probe_keys, limit);
    let got: Vec<(u64, u32)> = index
        .candidates(&probe_keys, below, None, limit)
        .unwrap()
        .into_iter()
        .map(|candidate| (candidate.record_id, candidate.n_keys))
        .collect();
    TestResult::from_bool(got == expected)
}

/// One of seven keys for a byte, spread over the high bits as hashed keys are, so that
/// an index's directory is exercised.
fn seven_keys(byte: &u8) -> Key {
    u64::from(byte % 7).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Records with ids from 1, keyed by [`seven_keys`].
fn keyed_records(records: &[Vec<u8>]) -> Vec<(u64, Vec<Key>)> {
    records
        .iter()
        .enumerate()
        .map(|(id, record)| (id as u64 + 1, record.iter().map(seven_keys).collect()))
        .collect()
}

/// The batch's in-memory index answers exactly as the tantivy index does.
#[test]
fn memory_index_matches_tantivy() {
    with_tantivy_cases(
        memory_index_matches_tantivy_holds
            as fn(Vec<Vec<u8>>, Vec<(Vec<u8>, Option<u8>, Option<u8>)>, u8) -> TestResult,
    );
}

fn memory_index_matches_tantivy_holds(
    records: Vec<Vec<u8>>,
    probes: Vec<(Vec<u8>, Option<u8>, Option<u8>)>,
    limit: u8,
) -> TestResult {
    if records.len() > 50 {
        return TestResult::discard();
    }
    let key = seven_keys;
    let keyed = keyed_records(&records);
    let index = BlockingIndex::create_in_ram().unwrap();
    let mut writer = index.writer(20_000_000).unwrap();
    for (position, (id, record_keys)) in keyed.iter().enumerate() {
        writer.add(*id, record_keys).unwrap();
        if position % 9 == 4 {
            writer.commit("segment").unwrap();
        }
    }
    writer.commit("done").unwrap();
    index.reload().unwrap();
    let memory = MemoryIndex::build(keyed.iter().map(|(id, keys)| (*id, keys.as_slice())));
    let limit = usize::from(limit % 15);
    for (probe, below, exclude) in probes {
        let probe_keys: Vec<Key> = probe.iter().map(key).collect();
        let below = below.map(|b| u64::from(b % 55));
        let exclude = exclude.map(|e| u64::from(e % 55));
        if index.candidates(&probe_keys, below, exclude, limit).unwrap()
            != memory.candidates(&probe_keys, below, exclude, limit)
        {
            return TestResult::failed();
        }
    }
    TestResult::passed()
}

/// Keys alike in their top bits (as blocking keys are: six bytes of hash in eight) are
/// found as surely as keys spread over all of them.
#[test]
fn memory_index_finds_keys_alike_in_their_top_bits() {
    let records: Vec<(u64, Vec<Key>)> =
        (1..=5_000u64).map(|id| (id, vec![(id / 2) << 4 | 3, (id % 97) << 4 | 5])).collect();
    let memory = MemoryIndex::build(records.iter().map(|(id, keys)| (*id, keys.as_slice())));
    for (id, keys) in records.iter().step_by(7) {
        let found: Vec<u64> = memory
            .candidates(&keys[..1], None, None, 10)
            .into_iter()
            .map(|candidate| candidate.record_id)
            .collect();
        let pair = id / 2;
        let expected: Vec<u64> =
            [pair * 2, pair * 2 + 1].into_iter().filter(|&i| (1..=5_000).contains(&i)).collect();
        assert_eq!(found, expected, "record {id}");
        let alike = (1..=5_000u64).filter(|other| other % 97 == id % 97).count();
        assert_eq!(memory.candidates(&keys[1..], None, None, 100).len(), alike);
    }
}

/// Hits filtered by any rule and ranked answer as `candidates` does for the rule
/// "below an id, not this one", and hits from two indexes over disjoint records rank
/// as one index over them all.
#[quickcheck]
fn ranked_hits_match_candidates(
    records: Vec<Vec<u8>>,
    probes: Vec<(Vec<u8>, u8, u8)>,
) -> TestResult {
    if records.len() > 50 {
        return TestResult::discard();
    }
    let key = seven_keys;
    let keyed = keyed_records(&records);
    let whole = MemoryIndex::build(keyed.iter().map(|(id, keys)| (*id, keys.as_slice())));
    let (odd, even): (Vec<_>, Vec<_>) = keyed.iter().partition(|(id, _)| id % 2 == 1);
    let odd = MemoryIndex::build(odd.iter().map(|(id, keys)| (*id, keys.as_slice())));
    let even = MemoryIndex::build(even.iter().map(|(id, keys)| (*id, keys.as_slice())));
    for (probe, below, limit) in probes {
        let probe_keys: Vec<Key> = probe.iter().map(key).collect();
        let (below, exclude, limit) =
            (u64::from(below % 55), u64::from(below % 7), usize::from(limit % 15));
        let visible = |id: u64| id < below && id != exclude;
        let expected = whole.candidates(&probe_keys, Some(below), Some(exclude), limit);
        let mut hits = Vec::new();
        whole.hits(&probe_keys, visible, &mut hits);
        if rank_hits(hits, limit) != expected {
            return TestResult::failed();
        }
        let mut hits = Vec::new();
        odd.hits(&probe_keys, visible, &mut hits);
        even.hits(&probe_keys, visible, &mut hits);
        if rank_hits(hits, limit) != expected {
            return TestResult::failed();
        }
    }
    TestResult::passed()
}

/// The live index answers, between commits and after them, exactly as a brute-force
/// model of the records as they stand.
#[test]
fn live_index_sees_every_change_at_once() {
    with_tantivy_cases(
        live_index_sees_every_change_at_once_holds
            as fn(Vec<(u8, u8, Vec<u8>)>, Vec<(Vec<u8>, u8)>) -> TestResult,
    );
}

fn live_index_sees_every_change_at_once_holds(
    operations: Vec<(u8, u8, Vec<u8>)>,
    probes: Vec<(Vec<u8>, u8)>,
) -> TestResult {
    if operations.len() > 60 {
        return TestResult::discard();
    }
    let key = |byte: &u8| u64::from(byte % 5).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut live = LiveIndex::new(BlockingIndex::create_in_ram().unwrap(), 20_000_000).unwrap();
    let mut model: std::collections::BTreeMap<u64, Vec<Key>> = std::collections::BTreeMap::new();
    for (step, (operation, id, keys)) in operations.iter().enumerate() {
        let id = u64::from(id % 12);
        let keys: Vec<Key> = keys.iter().map(key).collect();
        match operation % 5 {
            0 | 1 => {
                if model.contains_key(&id) {
                    live.update(id, &keys).unwrap();
                } else {
                    live.add(id, &keys).unwrap();
                }
                model.insert(id, keys);
            }
            2 => {
                live.delete(id).unwrap();
                model.remove(&id);
            }
            3 => live.commit(&format!("step {step}")).unwrap(),
            // The key filters of the committed segments, as a service makes them in
            // the background (later steps query with them).
            _ => {
                let made = live.unfiltered_segments().make().unwrap();
                live.add_filters(made);
                // (In these tests every segment wants a filter.)
                let census = live.key_filters();
                if !live.unfiltered_segments().is_empty()
                    || census != (KeyFilterCensus { made: census.made, pending: 0, unwanted: 0 })
                {
                    return TestResult::failed();
                }
            }
        }
        for (probe, limit) in &probes {
            let probe_keys: Vec<Key> = probe.iter().map(key).collect();
            let limit = usize::from(limit % 8);
            let records = model.iter().map(|(&id, keys)| (id, keys.as_slice()));
            let expected = brute_force(records, &probe_keys, limit);
            let got: Vec<(u64, u32)> = live
                .candidates(&probe_keys, None, None, limit)
                .unwrap()
                .into_iter()
                .map(|candidate| (candidate.record_id, candidate.n_keys))
                .collect();
            if got != expected {
                return TestResult::failed();
            }
        }
    }
    TestResult::passed()
}
