//! FHIR R4: `Patient/$match`, Patient read and search by identifier, and a source
//! system's Patient stored by conditional update, over the same engine. Patients in are
//! source records' demographics; Patients out are golden records. Errors are
//! OperationOutcome resources.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mpi_matching::{Demographics, Identifier};
use serde_json::{Value, json};

use super::{Problem, Reply, Role, Service, blocking, golden_record, match_grade};
use crate::engine::PersonKey;
use crate::online::{Engine, has_something_to_match};

/// The NHS number's identifier system.
pub use crate::input::NHS_NUMBER_SYSTEM;

/// The match-grade extension of `Bundle.entry.search`.
pub const MATCH_GRADE_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/match-grade";

const FHIR_JSON: &str = "application/fhir+json";

fn fhir(status: StatusCode, body: Value) -> Reply {
    Ok((status, [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))], body.to_string())
        .into_response())
}

/// An error as an OperationOutcome.
pub(super) fn outcome(problem: Problem) -> Response {
    let code = match problem.status {
        StatusCode::UNAUTHORIZED => "login",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND | StatusCode::GONE => "not-found",
        StatusCode::PAYLOAD_TOO_LARGE => "too-costly",
        status if status.is_server_error() => "exception",
        _ => "invalid",
    };
    let text = match &problem.detail {
        Some(detail) => format!("{}: {detail}", problem.title),
        None => problem.title.clone(),
    };
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    });
    (
        problem.status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body.to_string(),
    )
        .into_response()
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid FHIR resource").detail(detail)
}

/// A FHIR Patient's demographics in the input contract's terms (see
/// [`crate::input::patient_demographics`]).
pub fn patient_demographics(patient: &Value) -> Result<Demographics, Problem> {
    crate::input::patient_demographics(patient).map_err(invalid)
}

fn title_case(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A person's golden record as a FHIR Patient, with links to its source records.
pub fn patient_resource(engine: &Engine, person: PersonKey) -> Value {
    let golden = golden_record(engine, person);
    let slot = &engine.linker.persons[person as usize];
    let mut identifiers = Vec::new();
    if let Some(nhs) = golden["nhs_number"].as_str() {
        identifiers.push(json!({"system": NHS_NUMBER_SYSTEM, "value": nhs}));
    }
    for identifier in golden["identifiers"].as_array().into_iter().flatten() {
        identifiers.push(identifier.clone());
    }
    let given: Vec<String> = golden["given_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(title_case)
        .collect();
    let mut name = serde_json::Map::new();
    name.insert("use".to_owned(), json!("official"));
    if let Some(family) = golden["family_name"].as_str() {
        name.insert("family".to_owned(), json!(title_case(family)));
    }
    if !given.is_empty() {
        name.insert("given".to_owned(), json!(given));
    }
    let mut names = vec![Value::Object(name)];
    for former in golden["previous_family_names"].as_array().into_iter().flatten() {
        if let Some(family) = former.as_str() {
            names.push(json!({"use": "old", "family": title_case(family)}));
        }
    }
    let mut patient = json!({
        "resourceType": "Patient",
        "id": slot.id,
        "identifier": identifiers,
        "active": true,
        "name": names,
        "link": slot.members.iter().map(|&position| {
            let entry = &engine.linker.entries[position];
            json!({
                "other": {"identifier": {"system": format!("urn:mpi:source:{}", entry.source_system), "value": entry.local_id}},
                "type": "seealso",
            })
        }).collect::<Vec<_>>(),
    });
    if let Some(birth) = golden["date_of_birth"].as_str() {
        patient["birthDate"] = json!(birth);
    }
    if let Some(sex) = golden["sex"].as_str() {
        patient["gender"] = json!(sex);
    }
    if golden["address"].is_string() || golden["postcode"].is_string() {
        let mut address = json!({"use": "home"});
        if let Some(text) = golden["address"].as_str() {
            address["text"] = json!(title_case(text));
        }
        if let Some(postcode) = golden["postcode"].as_str() {
            address["postalCode"] = json!(postcode);
        }
        patient["address"] = json!([address]);
    }
    let mut telecom = Vec::new();
    if let Some(phone) = golden["phone"].as_str() {
        telecom.push(json!({"system": "phone", "value": phone}));
    }
    if let Some(email) = golden["email"].as_str() {
        telecom.push(json!({"system": "email", "value": email}));
    }
    if !telecom.is_empty() {
        patient["telecom"] = json!(telecom);
    }
    patient
}

/// `POST /fhir/Patient/$match`.
pub async fn patient_match(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Reader)?;
        let parameters: Value = super::parse_body(&body)?;
        if parameters["resourceType"] != "Parameters" {
            return Err(invalid("the body must be a Parameters resource"));
        }
        let mut patient = None;
        let mut only_certain = false;
        let mut count: Option<u64> = None;
        for parameter in parameters["parameter"].as_array().into_iter().flatten() {
            match parameter["name"].as_str() {
                Some("resource") => patient = Some(parameter["resource"].clone()),
                Some("onlyCertainMatches") => {
                    only_certain = parameter["valueBoolean"]
                        .as_bool()
                        .ok_or_else(|| invalid("onlyCertainMatches needs valueBoolean"))?;
                }
                Some("count") => {
                    count = Some(
                        parameter["valueInteger"]
                            .as_u64()
                            .filter(|&n| n >= 1)
                            .ok_or_else(|| invalid("count needs a positive valueInteger"))?,
                    );
                }
                _ => {}
            }
        }
        let patient = patient.ok_or_else(|| invalid("a `resource` parameter with a Patient is required"))?;
        let raw = patient_demographics(&patient)?;
        let engine = service.read_engine();
        let (probe, _) = engine.prepare(&raw);
        if !has_something_to_match(&probe) {
            return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "the Patient has nothing to match on")
                .detail("it needs a valid NHS number, an identifier, a name or a birth date"));
        }
        // A system (reader) gets the national safety rule: one certain match or none.
        let steward = caller.role.allows(Role::Steward);
        let only_certain = only_certain || !steward;
        let thresholds = engine.thresholds;
        let matches = engine.resolve(&probe).map_err(Problem::internal)?;
        let mut chosen: Vec<_> = matches
            .iter()
            .filter(|found| found.probability >= thresholds.lower)
            .filter(|found| !only_certain || found.is_certain(thresholds))
            .collect();
        if !steward && chosen.len() > 1 {
            chosen.clear();
        }
        chosen.truncate(count.map_or(10, |count| count.min(100) as usize));
        let entries: Vec<Value> = chosen
            .iter()
            .map(|found| {
                let resource = patient_resource(&engine, found.person);
                json!({
                    "fullUrl": format!("Patient/{}", resource["id"].as_str().unwrap_or_default()),
                    "resource": resource,
                    "search": {
                        "mode": "match",
                        "score": found.probability,
                        "extension": [{"url": MATCH_GRADE_EXTENSION, "valueCode": match_grade(found, thresholds)}],
                    },
                })
            })
            .collect();
        let person_ids = chosen.iter().map(|found| engine.linker.persons[found.person as usize].id.to_string()).collect();
        drop(engine);
        service.audit(&caller, "fhir_match", person_ids)?;
        fhir(StatusCode::OK, json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": entries.len(),
            "entry": entries,
        }))
    })
    .await
}

/// `GET /fhir/Patient/{id}`: the golden record.
pub async fn patient_read(
    State(service): State<Arc<Service>>,
    Path(person_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Reader)?;
        let engine = service.read_engine();
        let person = match super::find_person(&engine, &person_id, "Patient")? {
            super::Found::Live(person) => person,
            super::Found::MergedInto(survivor) => {
                return Ok((
                    StatusCode::PERMANENT_REDIRECT,
                    [(header::LOCATION, format!("/fhir/Patient/{survivor}"))],
                    "",
                )
                    .into_response());
            }
        };
        let resource = patient_resource(&engine, person);
        drop(engine);
        service.audit(&caller, "fhir_read", vec![person_id])?;
        fhir(StatusCode::OK, resource)
    })
    .await
}

/// The `system|value` of an `identifier` query parameter.
fn identifier_token(query: &HashMap<String, String>) -> Result<(String, String), Problem> {
    let token = query
        .get("identifier")
        .ok_or_else(|| invalid("an identifier is needed: ?identifier=system|value"))?;
    token
        .split_once('|')
        .filter(|(system, value)| !system.is_empty() && !value.is_empty())
        .map(|(system, value)| (system.to_owned(), value.to_owned()))
        .ok_or_else(|| invalid("identifier is system|value"))
}

/// The FHIR element a field's values come from, for an issue's `expression`.
fn element(field: mpi_matching::Field) -> &'static str {
    use mpi_matching::Field;
    match field {
        Field::SourceSystem | Field::LocalId | Field::NhsNumber | Field::Identifier => {
            "Patient.identifier"
        }
        Field::GivenName => "Patient.name.given",
        Field::FamilyName => "Patient.name.family",
        Field::PreviousFamilyName => "Patient.name.family (use old or maiden)",
        Field::DateOfBirth => "Patient.birthDate",
        Field::Sex => "Patient.gender",
        Field::AddressLine1 | Field::AddressLine2 => "Patient.address.line",
        Field::Town => "Patient.address.city",
        Field::Postcode => "Patient.address.postalCode",
        Field::Phone | Field::Email => "Patient.telecom",
    }
}

/// `PUT /fhir/Patient?identifier=system|value`: a source system stores its Patient (a
/// conditional update). The identifier's system is the source system and its value
/// the record's id there; the record is decided exactly as `PUT /v1/records` decides
/// it. The answer is an OperationOutcome saying the decision and any unusable value,
/// with the person's golden record in `Location`.
pub async fn patient_update(
    State(service): State<Arc<Service>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Writer)?;
        let (source, local_id) = identifier_token(&query)?;
        super::check_id("identifier system", &source)?;
        super::check_id("identifier value", &local_id)?;
        let patient: Value = super::parse_body(&body)?;
        let raw = patient_demographics(&patient)?;
        let ingested = service.ingest(&caller, "fhir_update", &source, &local_id, raw)?;
        let mut issues = vec![json!({
            "severity": "information",
            "code": "informational",
            "diagnostics": format!(
                "record {}: {}{}",
                if ingested.unchanged { "unchanged" } else { "stored" },
                ingested.decision.as_str(),
                ingested.probability.map(|p| format!(" (probability {p:.6})")).unwrap_or_default(),
            ),
        })];
        issues.extend(ingested.issues.iter().map(|issue| {
            json!({
                "severity": "warning",
                "code": "value",
                "diagnostics": format!(
                    "{}: {}; the value is kept and not used for matching",
                    issue.field.as_str(),
                    issue.kind.reason()
                ),
                "expression": [element(issue.field)],
            })
        }));
        let status = if ingested.unchanged { StatusCode::OK } else { StatusCode::CREATED };
        let location = format!("/fhir/Patient/{}", ingested.person_id);
        Ok((
            status,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON)),
                (header::LOCATION, HeaderValue::from_str(&location).map_err(Problem::internal)?),
            ],
            json!({"resourceType": "OperationOutcome", "issue": issues}).to_string(),
        )
            .into_response())
    })
    .await
}

/// `GET /fhir/Patient?identifier=system|value`.
pub async fn patient_search(
    State(service): State<Arc<Service>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Reader)?;
        let (system, value) = identifier_token(&query)?;
        let raw = if system == NHS_NUMBER_SYSTEM {
            Demographics { nhs_number: Some(value), ..Demographics::default() }
        } else {
            Demographics {
                identifiers: vec![Identifier { system, value }],
                ..Demographics::default()
            }
        };
        let engine = service.read_engine();
        let persons = super::persons_holding(&engine, &raw)?;
        let entries: Vec<Value> = persons
            .iter()
            .map(|(person, _)| {
                let resource = patient_resource(&engine, *person);
                json!({
                    "fullUrl": format!("Patient/{}", resource["id"].as_str().unwrap_or_default()),
                    "resource": resource,
                    "search": {"mode": "match"},
                })
            })
            .collect();
        let person_ids = persons
            .iter()
            .map(|(person, _)| engine.linker.persons[*person as usize].id.to_string())
            .collect();
        drop(engine);
        service.audit(&caller, "fhir_search", person_ids)?;
        fhir(
            StatusCode::OK,
            json!({
                "resourceType": "Bundle",
                "type": "searchset",
                "total": entries.len(),
                "entry": entries,
            }),
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patient_reads_as_demographics() {
        let patient = json!({
            "resourceType": "Patient",
            "identifier": [
                {"system": NHS_NUMBER_SYSTEM, "value": "943 476 5919"},
                {"system": "https://council.example/case", "value": "C-1"}
            ],
            "name": [{"use": "nickname", "given": ["Bob"]}, {"use": "official", "family": "Smith", "given": ["Robert", "James"]}],
            "gender": "male",
            "birthDate": "1970-01-02",
            "address": [{"use": "home", "line": ["1 High Street", "Flat 2"], "city": "Leeds", "postalCode": "LS1 4AB"}],
            "telecom": [{"system": "email", "value": "r@example.org"}, {"system": "phone", "value": "0113 496 0000"}]
        });
        let demographics = patient_demographics(&patient).unwrap();
        assert_eq!(demographics.nhs_number.as_deref(), Some("943 476 5919"));
        assert_eq!(demographics.given_name.as_deref(), Some("Robert James"));
        assert_eq!(demographics.family_name.as_deref(), Some("Smith"));
        assert_eq!(demographics.address_line2.as_deref(), Some("Flat 2"));
        assert_eq!(demographics.town.as_deref(), Some("Leeds"));
        assert_eq!(demographics.phone.as_deref(), Some("0113 496 0000"));
        assert_eq!(demographics.identifiers.len(), 1);
        assert!(patient_demographics(&json!({"resourceType": "Observation"})).is_err());
        assert!(
            patient_demographics(&json!({"resourceType": "Patient", "birthDate": 1970})).is_err()
        );
    }
}
