//! Normalisation, comparison, Fellegi-Sunter scoring and EM training of person records.
//!
//! This crate is pure: it does no IO, holds no global state and knows nothing about
//! HTTP, SQLite or tantivy. Reference tables it needs (the nickname table) are compiled
//! in from the workspace's `data/` folder.
//!
//! The flow for one pair: [`Normalizer::normalize`] each record, prepare it with
//! [`ComparableRecord::new`], [`compare`] the two into a [`Gamma`], and
//! [`Model::score`] the gamma into a match probability with its explanation.
#![warn(missing_docs)]

mod compare;
mod error;
mod keys;
mod model;
mod normalize;
mod record;
mod similarity;
mod train;

pub use crate::{
    compare::{
        CompField, ComparableRecord, GIVEN_ONE_NAME, Gamma, MISSING, N_FIELDS, compare,
        family_tokens,
    },
    error::MatchError,
    keys::{
        BlockingKey, KEY_KINDS, blocking_keys, key_kind, kinds_not_involving, shared_key_kinds,
    },
    model::{
        Contribution, CrowdedDate, FieldParams, LevelParams, MODEL_FORMAT, MODEL_FORMAT_VERSION,
        Model, PersonalContact, Score, TermFrequencies, Thresholds, TrainingInfo, probability,
    },
    normalize::{
        NORMALIZATION_VERSION, Nicknames, NormalizeOptions, Normalizer, date_order_evidence, fold,
        is_title, is_uk_mobile, nhs_check_digit_valid, normalize_address, normalize_birth_date,
        normalize_birth_date_in, normalize_email, normalize_family_name, normalize_given_names,
        normalize_nhs_number, normalize_phone, normalize_postcode, normalize_previous_family_names,
        normalize_sex, phonetic, sex_of_titles, split_former_family_names,
    },
    record::{
        Address, BirthDate, DateOrder, Demographics, Field, Identifier, Issue, IssueKind,
        NormalizedRecord, PostalCode, Sex,
    },
    similarity::{jaro_winkler, within_one_edit},
    train::{Agreement, PatternCounts, TrainOptions, default_model, train},
};
