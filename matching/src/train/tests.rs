use super::*;
use crate::compare::MISSING;

/// A small deterministic generator, so the tests need no rand crate.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Draws a level from (probability of each level).
fn draw(rng: &mut SplitMix, probabilities: &[f64]) -> u8 {
    let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for (level, p) in probabilities.iter().enumerate() {
        acc += p;
        if x < acc {
            return level as u8;
        }
    }
    (probabilities.len() - 1) as u8
}

/// Simulates pairs from known m and u, with a known share of matches.
fn simulate(rng: &mut SplitMix, n: usize, lambda: f64) -> PatternCounts {
    let mut counts = PatternCounts::new();
    for (gamma, _) in simulate_labelled(rng, n, lambda) {
        *counts.entry(gamma.pack()).or_default() += 1;
    }
    counts
}

/// Simulated pairs with their labels (true for a match).
fn simulate_labelled(rng: &mut SplitMix, n: usize, lambda: f64) -> Vec<(Gamma, bool)> {
    let truth = default_model();
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let is_match = rng.chance(lambda);
        let mut levels = [MISSING; N_FIELDS];
        for field in CompField::ALL {
            let params = &truth.fields[field.index()].levels;
            let probabilities: Vec<f64> =
                params.iter().map(|level| if is_match { level.m } else { level.u }).collect();
            levels[field.index()] = draw(rng, &probabilities);
        }
        pairs.push((Gamma(levels), is_match));
    }
    pairs
}

#[test]
fn em_recovers_m_and_classifies_without_labels() {
    let mut rng = SplitMix(7);
    let labelled = simulate_labelled(&mut rng, 200_000, 0.2);
    let mut blocked = PatternCounts::new();
    for (gamma, _) in &labelled {
        *blocked.entry(gamma.pack()).or_default() += 1;
    }
    let random = simulate(&mut rng, 200_000, 0.0);
    let model = train(&blocked, &random, &TrainOptions::default()).expect("enough data");
    let record = crate::compare::ComparableRecord::default();
    let n_correct = labelled
        .iter()
        .filter(|(gamma, is_match)| {
            (crate::model::probability(model.weight(gamma, &record, &record)) >= 0.5) == *is_match
        })
        .count();
    let accuracy = n_correct as f64 / labelled.len() as f64;
    assert!(accuracy > 0.995, "accuracy {accuracy}");
    let dob_exact = &model.fields[CompField::DateOfBirth.index()].levels[0];
    assert!((dob_exact.m - 0.93).abs() < 0.02, "m(dob exact) {}", dob_exact.m);
    let given_exact = &model.fields[CompField::GivenName.index()].levels[0];
    assert!((given_exact.m - 0.82).abs() < 0.03, "m(given exact) {}", given_exact.m);
}

#[test]
fn the_same_pairs_train_the_same_model_to_the_last_bit() {
    // Pattern counts live in hash maps, whose order differs from map to map (and run to
    // run); sums over them in that order differ in their last bits, and so did the
    // probabilities a batch stored. The same counts inserted in another order must
    // train the same model, bit for bit.
    let mut rng = SplitMix(11);
    let labelled = simulate_labelled(&mut rng, 100_000, 0.2);
    let random = simulate(&mut rng, 100_000, 0.0);
    let count = |pairs: &mut dyn Iterator<Item = &(Gamma, bool)>| {
        let mut counts = PatternCounts::new();
        for (gamma, _) in pairs {
            *counts.entry(gamma.pack()).or_default() += 1;
        }
        counts
    };
    let forward = count(&mut labelled.iter());
    let backward = count(&mut labelled.iter().rev());
    let options = TrainOptions::default();
    let first = train(&forward, &random, &options).expect("enough data");
    for _ in 0..4 {
        let again = train(&backward, &random.clone(), &options).expect("enough data");
        assert_eq!(serde_json::to_string(&first).unwrap(), serde_json::to_string(&again).unwrap());
    }
}

#[test]
fn agreement_counts_every_pair_once() {
    let agreement = Agreement::count(["a", "a", "b", "b", "b", "c"]).unwrap();
    assert_eq!(agreement, Agreement { pairs: 15.0, agreeing: 4.0 });
    assert!((agreement.rate() - 4.0 / 15.0).abs() < 1e-12);
    assert_eq!(Agreement::count(["a"]), None);
    assert_eq!(Agreement::count(Vec::<&str>::new()), None);
}

#[test]
fn counted_birth_date_agreement_is_u_without_the_matches() {
    // 200,000 blocked pairs, a fifth of them matches (about 93% of which share a birth
    // date), among 100 million pairs in all, of which 3 in 100,000 non-matches share one.
    let mut rng = SplitMix(7);
    let blocked = simulate(&mut rng, 200_000, 0.2);
    let random = simulate(&mut rng, 200_000, 0.0);
    let pairs = 1e8;
    let agreeing = 40_000.0 * 0.93 + (pairs - 40_000.0) * 3e-5;
    let options = TrainOptions {
        birth_date_agreement: Some(Agreement { pairs, agreeing }),
        ..TrainOptions::default()
    };
    let model = train(&blocked, &random, &options).expect("enough data");
    let levels = &model.fields[CompField::DateOfBirth.index()].levels;
    // The raw share (4.0e-4) is mostly the matches; without them it is the 3e-5.
    assert!((levels[0].u - 3e-5).abs() < 0.3e-5, "u(dob exact) {}", levels[0].u);
    let total: f64 = levels.iter().map(|level| level.u).sum();
    assert!((total - 1.0).abs() < 1e-9, "u sums to {total}");
    // Without the count, u comes from the random pairs as before.
    let sampled = train(&blocked, &random, &TrainOptions::default()).expect("enough data");
    let sampled_u = sampled.fields[CompField::DateOfBirth.index()].levels[0].u;
    assert!((sampled_u - levels[0].u).abs() > 1e-5, "{sampled_u}");
}

#[test]
fn counted_nhs_number_agreement_is_u_without_the_matches_beside_the_birth_date() {
    // As above, with both fields counted at once: the NHS number's agreeing pairs are
    // nearly all the matches (random pairs would say u is the match rate).
    let mut rng = SplitMix(11);
    let blocked = simulate(&mut rng, 200_000, 0.2);
    let random = simulate(&mut rng, 200_000, 0.0);
    let truth = default_model();
    let m_nhs = truth.fields[CompField::NhsNumber.index()].levels[0].m;
    let pairs = 1e8;
    let matches = 40_000.0;
    let nhs = Agreement { pairs, agreeing: matches * m_nhs + (pairs - matches) * 5e-5 };
    let dob = Agreement { pairs, agreeing: matches * 0.93 + (pairs - matches) * 3e-5 };
    let options = TrainOptions {
        birth_date_agreement: Some(dob),
        nhs_number_agreement: Some(nhs),
        ..TrainOptions::default()
    };
    let model = train(&blocked, &random, &options).expect("enough data");
    let u_nhs = model.fields[CompField::NhsNumber.index()].levels[0].u;
    let u_dob = model.fields[CompField::DateOfBirth.index()].levels[0].u;
    assert!(nhs.rate() > 4e-4, "the raw share {}", nhs.rate());
    assert!((u_nhs - 5e-5).abs() < 0.5e-5, "u(nhs exact) {u_nhs}");
    assert!((u_dob - 3e-5).abs() < 0.3e-5, "u(dob exact) {u_dob}");
}

#[test]
fn an_nhs_number_two_people_share_is_as_rare_as_the_count_says() {
    // Two people share a number in one pair in two billion; one person's records share
    // it in nearly every pair of them: the non-matches are an eight-hundredth of the
    // agreeing pairs, far below the twentieth a birth date is held to.
    let mut rng = SplitMix(12);
    let blocked = simulate(&mut rng, 200_000, 0.2);
    let random = simulate(&mut rng, 200_000, 0.0);
    let m_nhs = default_model().fields[CompField::NhsNumber.index()].levels[0].m;
    let (pairs, matches) = (1e8, 40_000.0);
    let nhs = Agreement { pairs, agreeing: matches * m_nhs + (pairs - matches) * 5e-7 };
    let options = TrainOptions { nhs_number_agreement: Some(nhs), ..TrainOptions::default() };
    let model = train(&blocked, &random, &options).expect("enough data");
    let u_nhs = model.fields[CompField::NhsNumber.index()].levels[0].u;
    // (So few non-matches are within the fit's error on the matches: the count is
    // trusted down to a thousandth of the raw share.)
    assert!(nhs.rate() / u_nhs > 500.0, "raw share {} against u {u_nhs}", nhs.rate());
    assert!(u_nhs < 1e-6, "u(nhs exact) {u_nhs}");
    // And it weighs what it says, past the bound other fields keep.
    let weight = model.level_weight(CompField::NhsNumber, 0, false);
    let m_trained = model.fields[CompField::NhsNumber.index()].levels[0].m;
    assert!(weight > 20.5 && (weight - (m_trained / u_nhs).log2()).abs() < 1e-9, "{weight}");
}

/// A pattern with the given (field, level) pairs and every other field missing.
fn pattern(levels: &[(CompField, u8)]) -> u64 {
    let mut gamma = Gamma([MISSING; N_FIELDS]);
    for &(field, level) in levels {
        gamma.0[field.index()] = level;
    }
    gamma.pack()
}

/// The highest level of a field: `different`.
fn different(field: CompField) -> u8 {
    (field.levels().len() - 1) as u8
}

/// Two people of one given name and birth date at two addresses, no NHS numbers: the
/// person fields alone take them for one person.
fn namesakes() -> u64 {
    use CompField::{Address, DateOfBirth, FamilyName, GivenName, Postcode, Sex};
    pattern(&[
        (GivenName, 0),
        (DateOfBirth, 0),
        (Sex, 0),
        (FamilyName, different(FamilyName)),
        (Address, different(Address)),
        (Postcode, different(Postcode)),
    ])
}

/// Two plainly different people.
fn strangers() -> u64 {
    use CompField::{Address, DateOfBirth, FamilyName, GivenName, Postcode};
    pattern(&[
        (GivenName, different(GivenName)),
        (DateOfBirth, different(DateOfBirth)),
        (FamilyName, different(FamilyName)),
        (Address, different(Address)),
        (Postcode, different(Postcode)),
    ])
}

#[test]
fn family_and_household_m_come_from_pairs_that_share_an_nhs_number() {
    use CompField::{Address, DateOfBirth, FamilyName, GivenName, NhsNumber, Postcode, Sex};
    let exact = 0;
    let mut blocked = PatternCounts::new();
    // 5,000 pairs of one person that share an NHS number: 2% with another family name,
    // a tenth of them moved (address and postcode differ), the rest at one address.
    for (moved, count) in [(false, 4410), (true, 490)] {
        let levels = [
            (NhsNumber, exact),
            (GivenName, exact),
            (DateOfBirth, exact),
            (Sex, exact),
            (FamilyName, exact),
            (Address, if moved { different(Address) } else { exact }),
            (Postcode, if moved { different(Postcode) } else { exact }),
        ];
        *blocked.entry(pattern(&levels)).or_default() += count;
    }
    let renamed = [
        (NhsNumber, exact),
        (GivenName, exact),
        (DateOfBirth, exact),
        (Sex, exact),
        (FamilyName, different(FamilyName)),
        (Address, different(Address)),
        (Postcode, different(Postcode)),
    ];
    *blocked.entry(pattern(&renamed)).or_default() += 100;
    // 5,000 namesakes and 20,000 plainly different people.
    *blocked.entry(namesakes()).or_default() += 5_000;
    *blocked.entry(strangers()).or_default() += 20_000;
    let mut rng = SplitMix(3);
    let random = simulate(&mut rng, 100_000, 0.0);
    let model = train(&blocked, &random, &TrainOptions::default()).expect("enough data");
    let m = |field: CompField, level: u8| model.fields[field.index()].levels[usize::from(level)].m;
    // 100 of 5,000, not the namesakes' half.
    let family_different = m(FamilyName, different(FamilyName));
    assert!((family_different - 0.02).abs() < 0.005, "m(family different) {family_different}");
    // The postcode weighs only pairs outside a household: of those, every one differs.
    let postcode_different = m(Postcode, different(Postcode));
    assert!(postcode_different > 0.98, "m(postcode different) {postcode_different}");
}

#[test]
fn the_prior_outside_households_is_counted_from_pairs_that_share_an_nhs_number() {
    use CompField::{Address, DateOfBirth, FamilyName, GivenName, NhsNumber, Postcode, Sex};
    let exact = 0;
    let one_person = |moved: bool| {
        let home = if moved { different(Address) } else { exact };
        let postcode = if moved { different(Postcode) } else { exact };
        pattern(&[
            (NhsNumber, exact),
            (GivenName, exact),
            (DateOfBirth, exact),
            (Sex, exact),
            (FamilyName, exact),
            (Address, home),
            (Postcode, postcode),
        ])
    };
    let mut blocked = PatternCounts::new();
    // 2,000 pairs of one person that share an NHS number outside a household (moved),
    // 3,000 at one address; 50,000 namesakes (one given name and birth date, no NHS
    // numbers) that the person fields alone take for matches; 20,000 strangers.
    *blocked.entry(one_person(true)).or_default() += 2_000;
    *blocked.entry(one_person(false)).or_default() += 3_000;
    *blocked.entry(namesakes()).or_default() += 50_000;
    *blocked.entry(strangers()).or_default() += 20_000;
    let mut rng = SplitMix(5);
    let random = simulate(&mut rng, 100_000, 0.0);
    // 100,000 records, half of them with an NHS number: a quarter of pairs have one on
    // both sides, so 2,000 sharing one outside a household stand for 8,000 matches.
    let n_records: u64 = 100_000;
    let with_nhs = 50_000.0;
    let options = TrainOptions {
        n_records,
        nhs_number_agreement: Some(Agreement {
            pairs: with_nhs * (with_nhs - 1.0) / 2.0,
            agreeing: 5_000.0,
        }),
        ..TrainOptions::default()
    };
    assert!((options.nhs_number_agreement.unwrap().items() - with_nhs).abs() < 1e-6);
    let model = train(&blocked, &random, &options).expect("enough data");
    let all_pairs = 100_000.0 * 99_999.0 / 2.0;
    let expected = 8_000.0 / all_pairs;
    assert!(
        (model.lambda - expected).abs() < expected * 0.01,
        "lambda {} where {expected}",
        model.lambda
    );
}

/// A mobile is found personal where two people at one home never share one, and stays
/// the household's where children's records carry a parent's (a third of the pairs of
/// two people at one home agree on it), or where a few twins share one that no one else
/// at home does: a thirtieth of the pairs that look like twins is above what the
/// typos among them explain. An email seen on too few pairs is not found personal.
#[test]
fn a_contact_is_personal_only_where_people_at_one_home_do_not_share_it() {
    use CompField::{Address, DateOfBirth, Email, FamilyName, GivenName, NhsNumber, Phone, Sex};
    let train_with = |relatives_sharing: u64, twins_sharing: u64| {
        let mut blocked = PatternCounts::new();
        let one_person = |phone: u8, email: Option<u8>| {
            let mut levels = vec![
                (NhsNumber, 0),
                (GivenName, 0),
                (DateOfBirth, 0),
                (Sex, 0),
                (FamilyName, 0),
                (Address, 0),
                (Phone, phone),
            ];
            levels.extend(email.map(|email| (Email, email)));
            pattern(&levels)
        };
        // One person's records at one home: most agree on their mobile.
        *blocked.entry(one_person(0, None)).or_default() += 3_000;
        *blocked.entry(one_person(different(Phone), None)).or_default() += 1_000;
        *blocked.entry(one_person(0, Some(0))).or_default() += 100;
        // Two people at one home, both with a phone: a parent and child (one family
        // name, another given name and birth date), twins (one birth date, another
        // given name) and a father and son of one name.
        // (The twins and namesakes differ in sex, which the toy model needs to read them
        // as two people.)
        let relatives = |given: u8, dob: u8, phone: u8, email: Option<u8>| {
            let sex = u8::from(given == 0 || dob == 0);
            let mut levels = vec![
                (GivenName, given),
                (DateOfBirth, dob),
                (Sex, sex),
                (FamilyName, 0),
                (Address, 0),
                (Phone, phone),
            ];
            levels.extend(email.map(|email| (Email, email)));
            pattern(&levels)
        };
        let (other_name, other_date) = (different(GivenName), different(DateOfBirth));
        *blocked.entry(relatives(other_name, other_date, different(Phone), None)).or_default() +=
            4_000 - relatives_sharing;
        *blocked.entry(relatives(other_name, other_date, 0, None)).or_default() +=
            relatives_sharing;
        *blocked
            .entry(relatives(other_name, other_date, different(Phone), Some(different(Email))))
            .or_default() += 100;
        *blocked.entry(relatives(other_name, 0, different(Phone), None)).or_default() +=
            300 - twins_sharing;
        *blocked.entry(relatives(other_name, 0, 0, None)).or_default() += twins_sharing;
        *blocked.entry(relatives(0, other_date, different(Phone), None)).or_default() += 300;
        *blocked.entry(strangers()).or_default() += 20_000;
        let mut rng = SplitMix(7);
        let random = simulate(&mut rng, 100_000, 0.0);
        train(&blocked, &random, &TrainOptions::default()).expect("enough data")
    };
    let personal = train_with(0, 0);
    let fields: Vec<(&str, &str)> = personal
        .personal_contacts
        .iter()
        .map(|contact| (contact.field.as_str(), contact.level.as_str()))
        .collect();
    assert_eq!(fields, [("phone", "exact_mobile")]);
    let mobile = &personal.personal_contacts[0];
    assert!(mobile.pairs > 4_400.0 && mobile.pairs < 4_800.0, "{mobile:?}");
    assert_eq!((mobile.twin_pairs, mobile.namesake_pairs), (300.0, 300.0), "{mobile:?}");
    assert!(mobile.weight() > 8.0, "{mobile:?}");
    let shared = train_with(1_300, 100);
    assert!(shared.personal_contacts.is_empty(), "{:?}", shared.personal_contacts);
    let twins_only = train_with(0, 10);
    assert!(twins_only.personal_contacts.is_empty(), "{:?}", twins_only.personal_contacts);
}

#[test]
fn too_few_pairs_is_an_error() {
    let mut rng = SplitMix(1);
    let blocked = simulate(&mut rng, 10, 0.5);
    let random = simulate(&mut rng, 10, 0.0);
    assert!(matches!(
        train(&blocked, &random, &TrainOptions::default()),
        Err(MatchError::NotEnoughData(_))
    ));
}

#[test]
fn default_model_is_valid_json_round_trip() {
    let model = default_model();
    let parsed = Model::from_json(&model.to_json()).expect("valid");
    assert_eq!(parsed, model);
}
