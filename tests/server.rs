//! `mpi serve` on 127.0.0.1: the real binary, spoken to over HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::util::{data, mpi, mpi_ok, partition, read_csv};

/// A running `mpi serve`, killed when dropped.
struct Server {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let log = dir.with_extension(format!("log{}", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mpi"))
            .args(["serve", "--data"])
            .arg(dir)
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("mpi serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the address line");
        let address = line
            .trim()
            .rsplit("http://")
            .next()
            .filter(|address| address.contains(':'))
            .unwrap_or_else(|| panic!("no address in {line:?}; log: {}", read(&log)))
            .to_owned();
        Server { child, address, log }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        read(&self.log)
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
        http(&self.address, method, path, token, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    location: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("JSON body expected: {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request on its own connection.
fn http(address: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("receive");
    let response = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status");
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        content_type: header("content-type").unwrap_or_default(),
        location: header("location"),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// PUTs a record that must be new (201); returns the response.
#[track_caller]
fn created(server: &Server, token: &str, path: &str, body: &Value) -> Value {
    let reply = server.call("PUT", path, Some(token), Some(&body.to_string()));
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.json()
}

fn key(dir: &Path, role: &str) -> String {
    mpi_ok(["keys", "create", "--data", dir.to_str().unwrap(), "--role", role, "--name", role])
        .trim()
        .to_owned()
}

struct Keys {
    reader: String,
    writer: String,
    steward: String,
    admin: String,
}

fn keys(dir: &Path) -> Keys {
    Keys {
        reader: key(dir, "reader"),
        writer: key(dir, "writer"),
        steward: key(dir, "steward"),
        admin: key(dir, "admin"),
    }
}

/// A distinctive person, so that the log check below means something.
const NHS: &str = "9434765919";
const GIVEN: &str = "Zebedee";
const FAMILY: &str = "Quillfeather";

fn zebedee(dob: &str) -> String {
    json!({
        "nhs_number": NHS, "given_name": GIVEN, "family_name": FAMILY,
        "date_of_birth": dob, "postcode": "LS1 4AB", "sex": "male",
    })
    .to_string()
}

#[test]
fn records_resolve_persons_roles_and_audit() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let out = dir.path().join("results.csv");
    mpi_ok([
        "link".as_ref(),
        data("sample/records.csv").as_os_str(),
        "--data".as_ref(),
        store.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    let keys = keys(&store);
    let server = Server::start(&store, &[]);

    // Health needs no token; everything else does, with the right role.
    assert_eq!(server.call("GET", "/healthz", None, None).status, 200);
    let ready = server.call("GET", "/readyz", None, None);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["records"], 2048);
    let record = zebedee("1961-07-14");
    let no_token = server.call("PUT", "/v1/records/gp/Z1", None, Some(&record));
    assert_eq!(no_token.status, 401);
    assert_eq!(no_token.content_type, "application/problem+json");
    let bad_token = server.call("PUT", "/v1/records/gp/Z1", Some("mpi_nope"), Some(&record));
    assert_eq!(bad_token.status, 401);
    assert_eq!(
        server.call("PUT", "/v1/records/gp/Z1", Some(&keys.reader), Some(&record)).status,
        403
    );
    assert_eq!(
        server.call("PUT", "/v1/records/gp/Z1", Some(&keys.steward), Some(&record)).status,
        403
    );

    // Create, then the same body again changes nothing.
    let created = server.call("PUT", "/v1/records/gp/Z1", Some(&keys.writer), Some(&record));
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    assert_eq!(created["decision"], "new");
    let person = created["person_id"].as_str().unwrap().to_owned();
    let again = server.call("PUT", "/v1/records/gp/Z1", Some(&keys.writer), Some(&record)).json();
    assert_eq!(again["unchanged"], true);
    assert_eq!(again["person_id"], person.as_str());
    assert_eq!(again["record_id"], created["record_id"]);

    // A second system's record of the same person links, with evidence; it is visible
    // to the next request (read-your-writes).
    let council = zebedee("14/07/1961");
    let linked = server.call("PUT", "/v1/records/council/C-77", Some(&keys.admin), Some(&council));
    assert_eq!(linked.status, 201, "{}", linked.body);
    let linked = linked.json();
    assert_eq!(linked["decision"], "linked");
    assert_eq!(linked["person_id"], person.as_str());
    assert!(linked["probability"].as_f64().unwrap() >= 0.95);
    assert!(linked["evidence"]["contributions"].as_array().is_some_and(|c| !c.is_empty()));
    let stored = server.call("GET", "/v1/records/council/C-77", Some(&keys.reader), None).json();
    assert_eq!(stored["person_id"], person.as_str());
    assert_eq!(stored["values"]["date_of_birth"], "14/07/1961");
    assert_eq!(
        server.call("GET", "/v1/records/council/nope", Some(&keys.reader), None).status,
        404
    );

    // The person: golden record, both source records, links with evidence.
    let found = server.call("GET", &format!("/v1/persons/{person}"), Some(&keys.reader), None);
    assert_eq!(found.status, 200, "{}", found.body);
    let found = found.json();
    assert_eq!(found["person_id"], person.as_str());
    assert_eq!(found["golden"]["nhs_number"], NHS);
    assert_eq!(found["golden"]["date_of_birth"], "1961-07-14");
    assert_eq!(found["records"].as_array().unwrap().len(), 2);
    assert!(found["links"].as_array().unwrap().iter().any(|link| link["evidence"].is_object()));
    assert_eq!(
        server.call("GET", "/v1/persons/not-a-person", Some(&keys.reader), None).status,
        404
    );

    // Who else knows this person: by NHS number in the body.
    let search = format!(r#"{{"nhs_number": "{NHS}"}}"#);
    let holders =
        server.call("POST", "/v1/persons/search", Some(&keys.reader), Some(&search)).json();
    assert_eq!(holders["persons"][0]["person_id"], person.as_str());
    assert_eq!(holders["persons"][0]["source_systems"], json!(["council", "gp"]));

    // Resolve: a system gets the one certain person; a steward may ask for a list.
    let probe = json!({"given_name": GIVEN, "family_name": FAMILY, "date_of_birth": "1961-07-14"})
        .to_string();
    let resolved = server.call("POST", "/v1/resolve", Some(&keys.reader), Some(&probe)).json();
    let candidates = resolved["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 1, "{resolved}");
    assert_eq!(candidates[0]["person_id"], person.as_str());
    assert_eq!(candidates[0]["grade"], "certain");
    assert!(candidates[0]["explanation"]["contributions"].is_array());
    let list = json!({"given_name": GIVEN, "family_name": FAMILY, "date_of_birth": "1961-07-14", "mode": "list"})
        .to_string();
    assert_eq!(server.call("POST", "/v1/resolve", Some(&keys.reader), Some(&list)).status, 403);
    let listed = server.call("POST", "/v1/resolve", Some(&keys.steward), Some(&list)).json();
    assert_eq!(listed["candidates"][0]["person_id"], person.as_str());
    // Nobody certain: no candidate for a system.
    let stranger =
        json!({"given_name": "Nobody", "family_name": "Atall", "date_of_birth": "1901-01-01"})
            .to_string();
    let none = server.call("POST", "/v1/resolve", Some(&keys.reader), Some(&stranger)).json();
    assert_eq!(none["candidates"], json!([]));

    // Bad input: a clear 4xx naming the field, never a 500.
    let cases: [(&str, u16, &str); 5] = [
        ("{not json", 400, "not valid JSON"),
        (r#"{"given_name": 42}"#, 400, "invalid type: integer"),
        (r#"{"surname": "Quillfeather"}"#, 400, "unknown field `surname`"),
        (r#"{"nhs_number": "1111111111", "date_of_birth": "31/02/2001"}"#, 422, "nothing to match"),
        (r#"[1, 2]"#, 400, "expected"),
    ];
    for (body, status, says) in cases {
        let reply = server.call("PUT", "/v1/records/gp/BAD", Some(&keys.writer), Some(body));
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert_eq!(reply.content_type, "application/problem+json");
        assert!(reply.body.contains(says), "{body}: {}", reply.body);
    }
    let unusable =
        json!({"nhs_number": "9434765918", "given_name": "Ada", "date_of_birth": "1990-02-30"})
            .to_string();
    let kept = server.call("PUT", "/v1/records/gp/ISSUES", Some(&keys.writer), Some(&unusable));
    assert_eq!(kept.status, 201, "{}", kept.body);
    let fields: Vec<String> = kept.json()["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|issue| issue["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["nhs_number", "date_of_birth"]);
    let huge = format!(r#"{{"given_name": "{}"}}"#, "a".repeat(100_000));
    let too_large = server.call("PUT", "/v1/records/gp/HUGE", Some(&keys.writer), Some(&huge));
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.content_type, "application/problem+json");
    assert!(too_large.body.contains("at most 65536 bytes"), "{}", too_large.body);
    let too_large =
        server.call("PUT", "/fhir/Patient?identifier=gp|HUGE", Some(&keys.writer), Some(&huge));
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.content_type, "application/fhir+json");
    assert_eq!(too_large.json()["issue"][0]["code"], "too-costly", "{}", too_large.body);
    let bad_query = server.call("GET", "/v1/events?after=abc", Some(&keys.reader), None);
    assert_eq!(
        (bad_query.status, bad_query.content_type.as_str()),
        (400, "application/problem+json")
    );
    assert!(bad_query.body.contains("after: invalid digit"), "{}", bad_query.body);
    let bad_method = server.call("PATCH", "/v1/records/gp/Z1", Some(&keys.writer), None);
    assert_eq!(
        (bad_method.status, bad_method.content_type.as_str()),
        (405, "application/problem+json")
    );

    // Delete: the person keeps its other record, then is retired with the last.
    let deleted = server.call("DELETE", "/v1/records/gp/Z1", Some(&keys.writer), None).json();
    assert_eq!(deleted["person_retired"], false);
    let found =
        server.call("GET", &format!("/v1/persons/{person}"), Some(&keys.reader), None).json();
    assert_eq!(found["records"].as_array().unwrap().len(), 1);
    let deleted =
        server.call("DELETE", "/v1/records/council/C-77", Some(&keys.writer), None).json();
    assert_eq!(deleted["person_retired"], true);
    assert_eq!(
        server.call("GET", &format!("/v1/persons/{person}"), Some(&keys.reader), None).status,
        410
    );
    assert_eq!(
        server.call("GET", "/v1/records/council/C-77", Some(&keys.reader), None).status,
        404
    );
    let none = server.call("POST", "/v1/resolve", Some(&keys.reader), Some(&probe)).json();
    assert_eq!(none["candidates"], json!([]), "a deleted record is not found again");

    // Audit: every response with personal data, with the person ids it carried.
    assert_eq!(server.call("GET", "/v1/audit", Some(&keys.steward), None).status, 403);
    let audit = server.call("GET", "/v1/audit?limit=1000", Some(&keys.admin), None).json();
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> =
        entries.iter().map(|entry| entry["action"].as_str().unwrap()).collect();
    for action in
        ["put_record", "read_record", "read_person", "search_persons", "resolve", "delete_record"]
    {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    assert!(entries.iter().any(|entry| {
        entry["action"] == "resolve"
            && entry["role"] == "reader"
            && entry["person_ids"] == json!([person])
    }));

    // No personal data in the logs, even at debug level: ids, counts and timings only.
    let log = server.log();
    assert!(log.contains("/v1/records/{source}/{local_id}"), "routes are logged as templates");
    for secret in [NHS, GIVEN, FAMILY, "Quill", "1961-07-14", "14/07/1961", "C-77", "LS1 4AB"] {
        assert!(!log.contains(secret), "{secret:?} found in the log");
    }
}

#[test]
fn one_process_owns_a_store_and_revoked_keys_stop_working() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let keys = keys(&store);
    let mut server = Server::start(&store, &[]);
    let out = dir.path().join("results.csv");
    let refused = mpi([
        "link".as_ref(),
        data("sample/records.csv").as_os_str(),
        "--data".as_ref(),
        store.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use by another mpi process"));
    let reply =
        server.call("PUT", "/v1/records/gp/1", Some(&keys.writer), Some(&zebedee("1961-07-14")));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let listed = mpi_ok(["keys", "list", "--data", store.to_str().unwrap()]);
    assert!(listed.contains("writer") && !listed.contains(&keys.writer), "tokens are never listed");
    mpi_ok(["keys", "revoke", "writer", "--data", store.to_str().unwrap()]);
    // Revocation takes effect within the key cache's few seconds.
    std::thread::sleep(Duration::from_secs(6));
    let reply =
        server.call("PUT", "/v1/records/gp/2", Some(&keys.writer), Some(&zebedee("1961-07-14")));
    assert_eq!(reply.status, 401);
    // A graceful stop releases the store.
    server.terminate();
    mpi_ok([
        "link".as_ref(),
        data("sample/records.csv").as_os_str(),
        "--data".as_ref(),
        store.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
}

/// Sample rows as (source, local id, JSON body) in file order.
fn sample_bodies(n: usize) -> Vec<(String, String, String)> {
    read_csv(&data("sample/records.csv"))
        .into_iter()
        .take(n)
        .map(|row| {
            let mut body = serde_json::Map::new();
            for (column, value) in &row {
                if column != "source_system" && column != "local_id" && !value.is_empty() {
                    body.insert(column.clone(), Value::String(value.clone()));
                }
            }
            (row["source_system"].clone(), row["local_id"].clone(), Value::Object(body).to_string())
        })
        .collect()
}

#[test]
fn rows_put_one_by_one_group_as_the_batch_does() {
    let dir = TempDir::new().unwrap();
    let n = 600;
    let bodies = sample_bodies(n);
    // The same rows as a file, through `mpi link` with the same (default) model.
    let file = dir.path().join("rows.csv");
    let text = std::fs::read_to_string(data("sample/records.csv")).unwrap();
    let lines: Vec<&str> = text.lines().take(n + 1).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let batch_store = dir.path().join("batch");
    let out = dir.path().join("batch.csv");
    mpi_ok([
        "link".as_ref(),
        file.as_os_str(),
        "--data".as_ref(),
        batch_store.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--model".as_ref(),
        data("default_model.json").as_os_str(),
    ]);
    let batch = partition(&read_csv(&out));

    let online_store = dir.path().join("online");
    let keys = keys(&online_store);
    let server = Server::start(&online_store, &[]);
    let mut rows = Vec::new();
    for (source, local_id, body) in &bodies {
        let reply = server.call(
            "PUT",
            &format!("/v1/records/{source}/{local_id}"),
            Some(&keys.writer),
            Some(body),
        );
        assert!(matches!(reply.status, 200 | 201), "{local_id}: {}", reply.body);
        let reply = reply.json();
        let mut row = std::collections::HashMap::new();
        row.insert("source_system".to_owned(), source.clone());
        row.insert("local_id".to_owned(), local_id.clone());
        row.insert("person_id".to_owned(), reply["person_id"].as_str().unwrap().to_owned());
        row.insert("decision".to_owned(), reply["decision"].as_str().unwrap().to_owned());
        rows.push(row);
    }
    assert_eq!(partition(&rows), batch, "the same grouping online and in batch");
}

#[test]
fn acknowledged_writes_survive_a_kill_and_the_index_catches_up() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let keys = keys(&store);
    let bodies = sample_bodies(usize::MAX);
    let total = bodies.len();
    let mut server = Server::start(&store, &[]);
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Four clients write as fast as they can (so the writer commits their changes in
    // groups); the server is killed (SIGKILL) under them.
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let bodies: Vec<_> = bodies.iter().skip(client).step_by(4).cloned().collect();
            let address = server.address.clone();
            let token = keys.writer.clone();
            let written = std::sync::Arc::clone(&progress);
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for (source, local_id, body) in bodies {
                    let path = format!("/v1/records/{source}/{local_id}");
                    let Ok(reply) = std::panic::catch_unwind(|| {
                        http(&address, "PUT", &path, Some(&token), Some(&body))
                    }) else {
                        break;
                    };
                    if reply.status != 201 {
                        break;
                    }
                    acknowledged
                        .push((path, reply.json()["person_id"].as_str().unwrap().to_owned()));
                    written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                acknowledged
            })
        })
        .collect();
    while progress.load(std::sync::atomic::Ordering::SeqCst) < 300 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let metrics = server.call("GET", "/metrics", Some(&keys.reader), None).body;
    server.kill();
    let acknowledged: Vec<(String, String)> =
        clients.into_iter().flat_map(|client| client.join().unwrap()).collect();
    assert!(acknowledged.len() >= 300, "writes were acknowledged before the kill");
    assert!(acknowledged.len() < total, "the kill came during the writes");
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let (groups, changes) = (counter("mpi_write_groups_total"), counter("mpi_write_changes_total"));
    assert!(changes >= 300, "{changes} changes committed");
    assert!(groups < changes, "concurrent writes share commits: {groups} groups for {changes}");

    let server = Server::start(&store, &[]);
    for (path, person) in &acknowledged {
        let reply = server.call("GET", path, Some(&keys.reader), None);
        assert_eq!(reply.status, 200, "{path} was acknowledged, so it survives");
        assert_eq!(reply.json()["person_id"], person.as_str());
    }
    // The index was behind (killed between commits) and replayed what it missed.
    let log = server.log();
    assert!(log.contains("replayed what it missed"), "{log}");
    assert!(!log.contains("rebuilding the blocking index"));
    // The index is level with the store: as many documents as stored records.
    let stored = server.call("GET", "/readyz", None, None).json()["records"].as_u64().unwrap();
    assert!(stored >= acknowledged.len() as u64);
    let mut server = server;
    server.terminate();
    let export = dir.path().join("export.csv");
    mpi_ok(["export", "--data", store.to_str().unwrap(), "--out", export.to_str().unwrap()]);
    assert_eq!(read_csv(&export).len() as u64, stored, "index and store agree");
}

fn sample_store(dir: &TempDir) -> PathBuf {
    let store = dir.path().join("store");
    let out = dir.path().join("results.csv");
    mpi_ok([
        "link".as_ref(),
        data("sample/records.csv").as_os_str(),
        "--data".as_ref(),
        store.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    store
}

fn open_reviews(server: &Server, token: &str) -> Vec<Value> {
    let reply = server.call("GET", "/v1/reviews?status=open&limit=500", Some(token), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["reviews"].as_array().unwrap().clone()
}

/// A steward's decision on a review.
fn decide_review(server: &Server, steward: &str, id: &str, body: &Value) -> Reply {
    server.call(
        "POST",
        &format!("/v1/reviews/{id}/decision"),
        Some(steward),
        Some(&body.to_string()),
    )
}

fn record_path(record: &Value) -> String {
    format!(
        "/v1/records/{}/{}",
        record["source_system"].as_str().unwrap(),
        record["local_id"].as_str().unwrap()
    )
}

#[test]
fn stewards_work_reviews_and_their_decisions_stick() {
    let dir = TempDir::new().unwrap();
    let store = sample_store(&dir);
    let keys = keys(&store);
    let server = Server::start(&store, &[]);

    let reviews = open_reviews(&server, &keys.steward);
    assert!(reviews.len() >= 2, "the sample opens reviews");
    assert_eq!(server.call("GET", "/v1/reviews", Some(&keys.writer), None).status, 403);
    let priorities: Vec<u64> = reviews.iter().map(|r| r["priority"].as_u64().unwrap()).collect();
    assert!(priorities.windows(2).all(|pair| pair[0] <= pair[1]), "ordered by priority");
    let reason = reviews.last().unwrap()["reason"].as_str().unwrap();
    let filtered = server
        .call("GET", &format!("/v1/reviews?status=open&reason={reason}"), Some(&keys.steward), None)
        .json();
    let filtered = filtered["reviews"].as_array().unwrap();
    assert!(!filtered.is_empty() && filtered.iter().all(|review| review["reason"] == reason));

    // A review shows both sides with a per-field comparison.
    let first = &reviews[0];
    let id = first["id"].as_str().unwrap();
    let detail = server.call("GET", &format!("/v1/reviews/{id}"), Some(&keys.steward), None).json();
    assert_eq!(detail["record"]["record_id"], first["record_id"]);
    assert!(detail["record"]["values"].is_object());
    let candidate = &detail["candidates"][0];
    assert!(candidate["best_record"]["values"].is_object());
    assert!(candidate["comparison"]["contributions"].as_array().is_some_and(|c| !c.is_empty()));
    let target = candidate["person_id"].as_str().unwrap().to_owned();
    // The list carries each open review's probability as it is now, as the detail does.
    let best_now = detail["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|candidate| candidate["probability"].as_f64())
        .fold(f64::MIN, f64::max);
    assert!((first["current_probability"].as_f64().unwrap() - best_now).abs() < 1e-9, "{first}");

    // match: the record joins the candidate person, manually.
    let no_reason = json!({"decision": "match", "reason": ""});
    assert_eq!(decide_review(&server, &keys.steward, id, &no_reason).status, 400);
    let body = json!({"decision": "match", "reason": "same person, checked with the GP"});
    let decided = decide_review(&server, &keys.steward, id, &body);
    assert_eq!(decided.status, 200, "{}", decided.body);
    assert_eq!(decided.json()["person_id"], target.as_str());
    let again = decide_review(&server, &keys.steward, id, &body);
    assert_eq!(again.status, 409, "a closed review cannot be decided again");
    let path = record_path(&detail["record"]);
    let record = server.call("GET", &path, Some(&keys.reader), None).json();
    assert_eq!(record["person_id"], target.as_str());
    // Sticky: the source sends the record again with a change; it stays.
    let mut values = record["values"].clone();
    values["email"] = json!("new.address@example.org");
    let resent = server.call("PUT", &path, Some(&keys.writer), Some(&values.to_string())).json();
    assert_eq!(resent["person_id"], target.as_str(), "a manual link is never undone");

    // no_match: the record keeps its own person, confirmed, and never joins the candidate.
    let second = reviews.iter().find(|review| review["record_id"] != first["record_id"]).unwrap();
    let id = second["id"].as_str().unwrap();
    let detail = server.call("GET", &format!("/v1/reviews/{id}"), Some(&keys.steward), None).json();
    let separated = detail["candidates"][0]["person_id"].as_str().unwrap().to_owned();
    let own = detail["record"]["person_id"].as_str().unwrap().to_owned();
    let body = json!({"decision": "no_match", "reason": "different people: twins"});
    let decided = decide_review(&server, &keys.steward, id, &body);
    assert_eq!(decided.status, 200, "{}", decided.body);
    assert_eq!(decided.json()["person_id"], own.as_str());
    let path = record_path(&detail["record"]);
    let mut values = server.call("GET", &path, Some(&keys.reader), None).json()["values"].clone();
    values["email"] = json!("another.address@example.org");
    let resent = server.call("PUT", &path, Some(&keys.writer), Some(&values.to_string())).json();
    assert_ne!(resent["person_id"], separated.as_str(), "a separated pair is never re-linked");
    let resolved =
        server.call("GET", "/v1/reviews?status=resolved", Some(&keys.steward), None).json();
    assert_eq!(resolved["total"], 2);
    assert!(resolved["reviews"].as_array().unwrap().iter().all(|r| r["decided_by"].is_string()));

    // The change feed carries all of it, in order, read page by page from a cursor.
    let mut events: Vec<Value> = Vec::new();
    let mut cursor = 0;
    loop {
        let page = server
            .call("GET", &format!("/v1/events?after={cursor}&limit=1000"), Some(&keys.reader), None)
            .json();
        let page_events = page["events"].as_array().unwrap().clone();
        if page_events.is_empty() {
            assert_eq!(page["next"].as_u64().unwrap(), cursor, "an empty page keeps the cursor");
            break;
        }
        assert_eq!(page_events[0]["seq"].as_u64().unwrap(), cursor + 1, "no gaps, no repeats");
        cursor = page["next"].as_u64().unwrap();
        events.extend(page_events);
    }
    let kinds: Vec<&str> = events.iter().map(|event| event["kind"].as_str().unwrap()).collect();
    for kind in
        ["person_created", "record_linked", "review_opened", "review_resolved", "record_unlinked"]
    {
        assert!(kinds.contains(&kind), "{kind} in the feed");
    }
    let seqs: Vec<u64> = events.iter().map(|event| event["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1));
    let resolved: Vec<&Value> =
        events.iter().filter(|event| event["kind"] == "review_resolved").collect();
    assert_eq!(resolved.len(), 2);
    assert!(resolved.iter().all(|event| event["actor"].is_string()));
}

#[test]
fn a_record_taken_as_a_pending_one_follows_the_stewards_match() {
    let dir = TempDir::new().unwrap();
    let store = sample_store(&dir);
    let keys = keys(&store);
    let server = Server::start(&store, &[]);
    let home = |given: Option<&str>, dob: &str| {
        json!({
            "given_name": given, "family_name": FAMILY, "date_of_birth": dob, "sex": "male",
            "address_line1": "138 Springfield Road", "postcode": "S6 9NE",
        })
    };
    // No given name: a man of this birth date and family name at this home, or his twin.
    let undated = created(&server, &keys.writer, "/v1/records/care/W1", &home(None, "1937-04-09"));
    let pending =
        created(&server, &keys.writer, "/v1/records/care/W2", &home(Some(GIVEN), "1937-04-09"));
    assert_eq!(pending["decision"], "review", "{pending}");
    // The same man again: he joins the pending record's person, not a review of his own.
    let again =
        created(&server, &keys.writer, "/v1/records/gp/W3", &home(Some(GIVEN), "09/04/1937"));
    assert_eq!(again["decision"], "linked", "{again}");
    assert_eq!(again["person_id"], pending["person_id"]);
    let reviews = open_reviews(&server, &keys.steward);
    let review = reviews
        .iter()
        .find(|review| review["record_id"] == pending["record_id"])
        .expect("the pending record's review");
    assert!(reviews.iter().all(|review| review["record_id"] != again["record_id"]));
    // The steward sees the record that joined the pending one, which a match moves too.
    let id = review["id"].as_str().unwrap();
    let detail = server.call("GET", &format!("/v1/reviews/{id}"), Some(&keys.steward), None).json();
    let joined = detail["joined"].as_array().unwrap();
    assert_eq!(joined.len(), 1, "{detail}");
    assert_eq!(joined[0]["record_id"], again["record_id"]);
    assert_eq!(joined[0]["values"]["date_of_birth"], "09/04/1937");

    // The steward says the pending record is the undated one's man: both records go.
    let body = json!({"decision": "match", "person_id": undated["person_id"], "reason": "one man, checked with the home"});
    let decided = decide_review(&server, &keys.steward, id, &body);
    assert_eq!(decided.status, 200, "{}", decided.body);
    for path in ["/v1/records/care/W2", "/v1/records/gp/W3"] {
        let record = server.call("GET", path, Some(&keys.reader), None).json();
        assert_eq!(record["person_id"], undated["person_id"], "{path}");
    }
    let retired = server.call(
        "GET",
        &format!("/v1/persons/{}", pending["person_id"].as_str().unwrap()),
        Some(&keys.reader),
        None,
    );
    assert_eq!(retired.status, 308, "the emptied pending person redirects");

    // Another pending record with a record that joined it; the pending one is deleted:
    // the other stands as a person of its own, no longer waiting on a review.
    let other_home = |given: Option<&str>, dob: &str| {
        json!({
            "given_name": given, "family_name": "Pemberton-Vale", "date_of_birth": dob,
            "sex": "female", "address_line1": "4 Orchard Close", "postcode": "LS8 2QT",
        })
    };
    created(&server, &keys.writer, "/v1/records/care/V1", &other_home(None, "1941-02-17"));
    let pending = created(
        &server,
        &keys.writer,
        "/v1/records/care/V2",
        &other_home(Some("Ottilie"), "1941-02-17"),
    );
    assert_eq!(pending["decision"], "review", "{pending}");
    let joined = created(
        &server,
        &keys.writer,
        "/v1/records/gp/V3",
        &other_home(Some("Ottilie"), "17/02/1941"),
    );
    assert_eq!(joined["person_id"], pending["person_id"], "{joined}");
    let person_path = format!("/v1/persons/{}", pending["person_id"].as_str().unwrap());
    let person = server.call("GET", &person_path, Some(&keys.reader), None).json();
    assert_eq!(person["provisional"], true, "{person}");
    assert_eq!(server.call("DELETE", "/v1/records/care/V2", Some(&keys.writer), None).status, 200);
    let person = server.call("GET", &person_path, Some(&keys.reader), None).json();
    assert_eq!(person["provisional"], false, "{person}");
    assert_eq!(person["records"].as_array().unwrap().len(), 1, "{person}");

    // So it does when a steward splits the pending record out.
    let third_home = |given: Option<&str>| {
        json!({
            "given_name": given, "family_name": "Ashworth-Lyle", "date_of_birth": "1938-11-02",
            "sex": "male", "address_line1": "9 Mill Lane", "postcode": "M20 4QT",
        })
    };
    created(&server, &keys.writer, "/v1/records/care/V6", &third_home(None));
    let pending =
        created(&server, &keys.writer, "/v1/records/care/V4", &third_home(Some("Ambrose")));
    let joined = created(&server, &keys.writer, "/v1/records/gp/V5", &third_home(Some("Ambrose")));
    assert_eq!(pending["decision"], "review", "{pending}");
    assert_eq!(joined["person_id"], pending["person_id"], "{joined}");
    let person_path = format!("/v1/persons/{}", pending["person_id"].as_str().unwrap());
    let split =
        json!({"records": [{"source_system": "care", "local_id": "V4"}], "reason": "checking"});
    let split = server.call(
        "POST",
        &format!("{person_path}/split"),
        Some(&keys.steward),
        Some(&split.to_string()),
    );
    assert_eq!(split.status, 200, "{}", split.body);
    let person = server.call("GET", &person_path, Some(&keys.reader), None).json();
    assert_eq!(person["provisional"], false, "{person}");
}

#[test]
fn merge_and_split_keep_history_redirect_and_reverse() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let keys = keys(&store);
    let server = Server::start(&store, &[]);
    let put = |path: &str, body: Value| {
        created(&server, &keys.writer, path, &body)["person_id"].as_str().unwrap().to_owned()
    };
    let a = put(
        "/v1/records/gp/A",
        json!({"given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1915-12-10", "postcode": "LS1 4AB"}),
    );
    let b = put(
        "/v1/records/council/B",
        json!({"given_name": "Augusta", "family_name": "King", "date_of_birth": "1915-12-01", "postcode": "M1 1AA"}),
    );
    assert_ne!(a, b);

    assert_eq!(
        server
            .call(
                "POST",
                &format!("/v1/persons/{a}/merge"),
                Some(&keys.writer),
                Some(&json!({"other": b, "reason": "x"}).to_string())
            )
            .status,
        403
    );
    let merge = json!({"other": b, "reason": "married name; confirmed by the ward"}).to_string();
    let merged =
        server.call("POST", &format!("/v1/persons/{a}/merge"), Some(&keys.steward), Some(&merge));
    assert_eq!(merged.status, 200, "{}", merged.body);
    let survivor = server.call("GET", &format!("/v1/persons/{a}"), Some(&keys.reader), None).json();
    assert_eq!(survivor["records"].as_array().unwrap().len(), 2);
    let redirect = server.call("GET", &format!("/v1/persons/{b}"), Some(&keys.reader), None);
    assert_eq!(redirect.status, 308);
    assert!(redirect.body.contains(&a));
    assert_eq!(
        server.call("GET", "/v1/records/council/B", Some(&keys.reader), None).json()["person_id"],
        a.as_str()
    );

    // The merge is undone by a split back into the retired id.
    let split = json!({"records": [{"source_system": "council", "local_id": "B"}], "reason": "merged in error", "into": b})
        .to_string();
    let split =
        server.call("POST", &format!("/v1/persons/{a}/split"), Some(&keys.steward), Some(&split));
    assert_eq!(split.status, 200, "{}", split.body);
    assert_eq!(split.json()["new_person_id"], b.as_str());
    assert_eq!(
        server.call("GET", &format!("/v1/persons/{b}"), Some(&keys.reader), None).status,
        200
    );
    let everything =
        json!({"records": [{"source_system": "gp", "local_id": "A"}], "reason": "all"}).to_string();
    assert_eq!(
        server
            .call("POST", &format!("/v1/persons/{a}/split"), Some(&keys.steward), Some(&everything))
            .status,
        422,
        "a split leaves a record behind"
    );

    // History: who, when, why.
    let history =
        server.call("GET", &format!("/v1/persons/{a}/history"), Some(&keys.steward), None);
    assert_eq!(history.status, 200, "{}", history.body);
    let history = history.json()["history"].as_array().unwrap().clone();
    let kinds: Vec<&str> = history.iter().map(|event| event["kind"].as_str().unwrap()).collect();
    for kind in ["person_created", "persons_merged", "person_split", "record_linked"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let merged = history.iter().find(|event| event["kind"] == "persons_merged").unwrap();
    assert_eq!(merged["detail"]["reason"], "married name; confirmed by the ward");
    assert!(merged["actor"].as_str().is_some_and(|actor| !actor.is_empty()));
    assert!(merged["at"].is_string());
    assert_eq!(
        server.call("GET", &format!("/v1/persons/{a}/history"), Some(&keys.reader), None).status,
        403
    );

    // Steward changes survive a restart.
    drop(server);
    let server = Server::start(&store, &[]);
    assert_eq!(
        server.call("GET", "/v1/records/council/B", Some(&keys.reader), None).json()["person_id"],
        b.as_str()
    );
}

fn parameters(patient: Value, only_certain: Option<bool>) -> String {
    let mut parameter = vec![json!({"name": "resource", "resource": patient})];
    if let Some(only) = only_certain {
        parameter.push(json!({"name": "onlyCertainMatches", "valueBoolean": only}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter}).to_string()
}

#[test]
fn fhir_match_read_search_metrics_and_openapi() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let keys = keys(&store);
    let server = Server::start(&store, &[]);
    let put = |path: &str, body: Value| {
        created(&server, &keys.writer, path, &body)["person_id"].as_str().unwrap().to_owned()
    };
    let person = put(
        "/v1/records/gp/A",
        json!({"nhs_number": NHS, "given_name": GIVEN, "family_name": FAMILY, "date_of_birth": "1961-07-14", "postcode": "LS1 4AB", "sex": "male"}),
    );
    put(
        "/v1/records/council/B",
        json!({"given_name": GIVEN, "family_name": FAMILY, "date_of_birth": "1961-07-14", "postcode": "LS1 4AB"}),
    );

    let patient = json!({
        "resourceType": "Patient",
        "name": [{"use": "official", "family": FAMILY, "given": [GIVEN]}],
        "birthDate": "1961-07-14",
        "address": [{"postalCode": "LS1 4AB"}],
    });
    let matched = server.call(
        "POST",
        "/fhir/Patient/$match",
        Some(&keys.reader),
        Some(&parameters(patient.clone(), None)),
    );
    assert_eq!(matched.status, 200, "{}", matched.body);
    assert_eq!(matched.content_type, "application/fhir+json");
    let bundle = matched.json();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    let entry = &bundle["entry"][0];
    assert_eq!(entry["resource"]["id"], person.as_str());
    assert!(entry["search"]["score"].as_f64().unwrap() >= 0.95);
    assert_eq!(
        entry["search"]["extension"][0]["url"],
        "http://hl7.org/fhir/StructureDefinition/match-grade"
    );
    assert_eq!(entry["search"]["extension"][0]["valueCode"], "certain");
    let identifier = &entry["resource"]["identifier"][0];
    assert_eq!(identifier["system"], "https://fhir.nhs.uk/Id/nhs-number");
    assert_eq!(identifier["value"], NHS);

    // A weaker probe: a steward sees the grade below certain; with onlyCertainMatches
    // (and always for a system) nothing comes back.
    let weaker = json!({
        "resourceType": "Patient",
        "name": [{"family": FAMILY}],
        "birthDate": "1961-07-14",
    });
    let steward = server
        .call(
            "POST",
            "/fhir/Patient/$match",
            Some(&keys.steward),
            Some(&parameters(weaker.clone(), Some(false))),
        )
        .json();
    let grades: Vec<&str> = steward["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["search"]["extension"][0]["valueCode"].as_str().unwrap())
        .collect();
    assert!(
        !grades.is_empty() && grades.iter().all(|grade| ["probable", "possible"].contains(grade)),
        "{grades:?}"
    );
    let certain_only = server
        .call(
            "POST",
            "/fhir/Patient/$match",
            Some(&keys.steward),
            Some(&parameters(weaker.clone(), Some(true))),
        )
        .json();
    assert_eq!(certain_only["total"], 0);
    let system = server
        .call(
            "POST",
            "/fhir/Patient/$match",
            Some(&keys.reader),
            Some(&parameters(weaker, Some(false))),
        )
        .json();
    assert_eq!(system["total"], 0, "a system gets certain matches only");

    // Errors are OperationOutcomes.
    let bad = server.call(
        "POST",
        "/fhir/Patient/$match",
        Some(&keys.reader),
        Some(r#"{"resourceType": "Patient"}"#),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["resourceType"], "OperationOutcome");
    let unauthorised = server.call("GET", &format!("/fhir/Patient/{person}"), None, None);
    assert_eq!(unauthorised.status, 401);
    assert_eq!(unauthorised.json()["resourceType"], "OperationOutcome");

    // Read and search.
    let read = server.call("GET", &format!("/fhir/Patient/{person}"), Some(&keys.reader), None);
    assert_eq!(read.status, 200, "{}", read.body);
    let read = read.json();
    assert_eq!(read["resourceType"], "Patient");
    assert_eq!(read["birthDate"], "1961-07-14");
    assert_eq!(read["name"][0]["family"], FAMILY);
    assert_eq!(read["link"].as_array().unwrap().len(), 2);
    let search = server.call(
        "GET",
        &format!("/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{NHS}"),
        Some(&keys.reader),
        None,
    );
    assert_eq!(search.status, 200, "{}", search.body);
    assert_eq!(search.json()["entry"][0]["resource"]["id"], person.as_str());

    // Metrics and the OpenAPI document.
    let metrics = server.call("GET", "/metrics", Some(&keys.reader), None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains(
            r#"mpi_requests_total{route="/fhir/Patient/$match",method="POST",status="200"}"#
        ),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("mpi_request_duration_seconds_bucket"));
    assert!(
        metrics.body.contains(r#"mpi_decisions_total{decision="linked"} 1"#),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("mpi_review_queue_depth 0"));
    assert_eq!(server.call("GET", "/metrics", None, None).status, 401);
    let openapi = server.call("GET", "/openapi.json", Some(&keys.reader), None).json();
    assert_eq!(openapi["openapi"], "3.0.3");
    assert!(openapi["paths"]["/v1/resolve"]["post"].is_object());

    // A source system stores its Patient by conditional update: the identifier names
    // the source system and the record's id there. An invalid NHS number is kept,
    // reported against its element, and not matched on; the person is in Location.
    let source_patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "943 476 5918"}],
        "name": [{"use": "official", "family": FAMILY, "given": [GIVEN]}],
        "birthDate": "1961-07-14",
        "gender": "male",
        "address": [{"use": "home", "line": ["1 Park Row"], "postalCode": "LS1 4AB"}],
    })
    .to_string();
    let path = "/fhir/Patient?identifier=https://trust.example/Id/mrn|MRN0042";
    let stored = server.call("PUT", path, Some(&keys.writer), Some(&source_patient));
    assert_eq!(stored.status, 201, "{}", stored.body);
    assert_eq!(stored.content_type, "application/fhir+json");
    assert_eq!(stored.location.as_deref(), Some(format!("/fhir/Patient/{person}").as_str()));
    let outcome = stored.json();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("linked"), "{outcome}");
    assert_eq!(outcome["issue"][1]["severity"], "warning");
    assert_eq!(outcome["issue"][1]["expression"][0], "Patient.identifier");
    assert!(!stored.body.contains("943"), "values are never echoed: {}", stored.body);
    let again = server.call("PUT", path, Some(&keys.writer), Some(&source_patient));
    assert_eq!(again.status, 200, "the same Patient again changes nothing");
    let record = server.call(
        "GET",
        "/v1/records/https:%2F%2Ftrust.example%2FId%2Fmrn/MRN0042",
        Some(&keys.reader),
        None,
    );
    assert_eq!(record.status, 200, "{}", record.body);
    assert_eq!(record.json()["person_id"], person.as_str());
    let refused = server.call("PUT", path, Some(&keys.reader), Some(&source_patient));
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["resourceType"], "OperationOutcome");
    let no_identifier =
        server.call("PUT", "/fhir/Patient", Some(&keys.writer), Some(&source_patient));
    assert_eq!(no_identifier.status, 400);
    assert_eq!(no_identifier.json()["resourceType"], "OperationOutcome");
}

#[test]
fn golden_records_follow_source_trust_then_recency() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let keys = keys(&store);
    let person_of = |server: &Server, path: &str, body: Value| {
        created(server, &keys.writer, path, &body)["person_id"].as_str().unwrap().to_owned()
    };
    let gp = json!({"nhs_number": NHS, "given_name": GIVEN, "family_name": FAMILY, "date_of_birth": "1961-07-14", "phone": "0113 496 0000"});
    let council = json!({"nhs_number": NHS, "given_name": GIVEN, "family_name": "Quillfeather-Smith", "previous_family_name": "née Brown", "date_of_birth": "1961-07-14", "email": "z@example.org"});
    {
        // Without a ranking the newest record wins each field.
        let server = Server::start(&store, &[]);
        let person = person_of(&server, "/v1/records/gp/1", gp.clone());
        assert_eq!(person_of(&server, "/v1/records/council/2", council.clone()), person);
        let golden = server
            .call("GET", &format!("/v1/persons/{person}"), Some(&keys.reader), None)
            .json()["golden"]
            .clone();
        assert_eq!(golden["family_name"], "quillfeather-smith");
        assert_eq!(golden["phone"], "+441134960000", "a field only one record has still survives");
        assert_eq!(golden["email"], "z@example.org");
        // Former family names from every record, shown as FHIR names of use old.
        assert_eq!(golden["previous_family_names"], json!(["brown"]));
        let patient =
            server.call("GET", &format!("/fhir/Patient/{person}"), Some(&keys.reader), None).json();
        assert_eq!(patient["name"][1], json!({"use": "old", "family": "Brown"}), "{patient}");
    }
    // Trusting the GP first, its values win where it has them.
    let server = Server::start(&store, &["--source-trust", "gp,council"]);
    let person =
        server.call("GET", "/v1/records/gp/1", Some(&keys.reader), None).json()["person_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let golden = server
        .call("GET", &format!("/v1/persons/{person}"), Some(&keys.reader), None)
        .json()["golden"]
        .clone();
    assert_eq!(golden["family_name"], "quillfeather");
    assert_eq!(golden["email"], "z@example.org");
    assert_eq!(golden["nhs_number"], NHS);

    // A PDS trace with another NHS number, merged in by a steward: outvoted by the two
    // local records, unless PDS is a verified source.
    let pds = json!({"nhs_number": "9990475636", "given_name": GIVEN, "family_name": FAMILY, "date_of_birth": "1961-07-14"});
    let traced = person_of(&server, "/v1/records/pds/T1", pds);
    assert_ne!(traced, person, "two valid NHS numbers are never linked automatically");
    let merge = json!({"other": traced, "reason": "PDS trace"}).to_string();
    assert_eq!(
        server
            .call("POST", &format!("/v1/persons/{person}/merge"), Some(&keys.steward), Some(&merge))
            .status,
        200
    );
    let golden = server
        .call("GET", &format!("/v1/persons/{person}"), Some(&keys.reader), None)
        .json()["golden"]
        .clone();
    assert_eq!(golden["nhs_number"], NHS, "most agreed");
    drop(server);
    let server = Server::start(&store, &["--verified-sources", "pds"]);
    let golden = server
        .call("GET", &format!("/v1/persons/{person}"), Some(&keys.reader), None)
        .json()["golden"]
        .clone();
    assert_eq!(golden["nhs_number"], "9990475636", "a verified source wins");
}

#[test]
fn the_feed_says_when_a_persons_nhs_number_changes() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let keys = keys(&store);
    let server = Server::start(&store, &[]);
    let base = json!({"given_name": GIVEN, "family_name": FAMILY, "date_of_birth": "1961-07-14", "postcode": "LS1 4AB", "address_line1": "12 High Street"});
    let put = |path: &str, body: &Value| created(&server, &keys.writer, path, body);
    let first = put("/v1/records/council/1", &base);
    let person = first["person_id"].as_str().unwrap().to_owned();
    // A GP record of the same person brings the NHS number the council lacked.
    let mut with_nhs = base.clone();
    with_nhs["nhs_number"] = json!(NHS);
    let linked = put("/v1/records/gp/1", &with_nhs);
    assert_eq!(linked["decision"], "linked", "{linked}");
    assert_eq!(linked["person_id"], person.as_str());
    let events =
        server.call("GET", "/v1/events?after=0", Some(&keys.reader), None).json()["events"].clone();
    let changed: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "nhs_number_changed")
        .collect();
    assert_eq!(changed.len(), 1, "{events}");
    assert_eq!(changed[0]["person_id"], person.as_str());
    assert!(!events.to_string().contains(NHS), "the feed carries ids, not NHS numbers");
    let golden = server
        .call("GET", &format!("/v1/persons/{person}"), Some(&keys.reader), None)
        .json()["golden"]
        .clone();
    assert_eq!(golden["nhs_number"], NHS);
}

#[test]
fn batch_runs_feed_nhs_number_changes_too() {
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let header = "source_system,local_id,nhs_number,given_name,family_name,date_of_birth,postcode,address_line1\n";
    let council = dir.path().join("council.csv");
    std::fs::write(&council, format!("{header}council,1,,{GIVEN},{FAMILY},1961-07-14,LS1 4AB,12 High Street\ncouncil,2,,Ada,Lovelace,1915-12-10,M1 1AA,1 Byron Road\n")).unwrap();
    let gp = dir.path().join("gp.csv");
    std::fs::write(
        &gp,
        format!("{header}gp,1,{NHS},{GIVEN},{FAMILY},1961-07-14,LS1 4AB,12 High Street\n"),
    )
    .unwrap();
    for file in [&council, &gp] {
        let out = dir.path().join("out.csv");
        mpi_ok([
            "link".as_ref(),
            file.as_os_str(),
            "--data".as_ref(),
            store.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--model".as_ref(),
            data("default_model.json").as_os_str(),
        ]);
    }
    let keys = keys(&store);
    let server = Server::start(&store, &[]);
    let person =
        server.call("GET", "/v1/records/council/1", Some(&keys.reader), None).json()["person_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let events =
        server.call("GET", "/v1/events?after=0", Some(&keys.reader), None).json()["events"].clone();
    let changed: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "nhs_number_changed")
        .collect();
    assert_eq!(changed.len(), 1, "{events}");
    assert_eq!(changed[0]["person_id"], person.as_str());
    assert_eq!(changed[0]["actor"], "mpi link");
}

#[test]
fn a_twin_is_never_a_certain_match() {
    // The sample holds twins: Harper (female) and Kwame (male) Young, born 2017-02-07,
    // at one address with one phone.
    let dir = TempDir::new().unwrap();
    let store = sample_store(&dir);
    let keys = keys(&store);
    let server = Server::start(&store, &[]);
    let resolve = |probe: Value| {
        let body = probe.to_string();
        let reply = server.call("POST", "/v1/resolve", Some(&keys.steward), Some(&body)).json();
        reply["candidates"].as_array().unwrap().clone()
    };
    let home = json!({"family_name": "Young", "date_of_birth": "2017-02-07",
        "postcode": "CF10 6JH", "phone": "01632 897441", "mode": "list"});
    let with = |extra: Value| {
        let mut probe = home.clone();
        probe.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        probe
    };

    // Harper herself is certain; her brother comes back flagged, at most possible.
    let found = resolve(with(json!({"given_name": "Harper"})));
    assert_eq!((found[0]["grade"].as_str(), found[0]["caution"].as_str()), (Some("certain"), None));
    let twin = found.iter().find(|candidate| candidate["caution"] == "possible_twins");
    let twin = twin.unwrap_or_else(|| panic!("the twin is flagged: {found:?}"));
    assert!(matches!(twin["grade"].as_str(), Some("possible" | "certainly-not")), "{twin}");
    assert_ne!(twin["person_id"], found[0]["person_id"]);

    // "Kwamee", a girl: his name with a slip, her sex. It scores high against Kwame, but
    // a boy and a girl of one birth date are twins to the engine, so the grade stays
    // possible.
    let found = resolve(with(json!({"given_name": "Kwamee", "sex": "female"})));
    for candidate in &found {
        if candidate["caution"].is_string() {
            assert!(matches!(candidate["grade"].as_str(), Some("possible" | "certainly-not")));
        }
    }
    assert!(
        found
            .iter()
            .any(|c| c["caution"] == "possible_twins" && c["probability"].as_f64() > Some(0.5))
    );
    // A system asking for one certain match gets none.
    let mut single = with(json!({"given_name": "Kwamee", "sex": "female"}));
    single.as_object_mut().unwrap().remove("mode");
    let body = single.to_string();
    let reply = server.call("POST", "/v1/resolve", Some(&keys.reader), Some(&body)).json();
    assert_eq!(reply["candidates"].as_array().map(Vec::len), Some(0), "{reply}");
}

/// The load generator `BENCHMARKS.md` measures the service with (`examples/load.rs`),
/// which `cargo test` builds beside the tests.
fn load(args: &[&str]) -> String {
    let test_binary = std::env::current_exe().expect("the test binary");
    let profile = test_binary.parent().and_then(Path::parent).expect("target/PROFILE");
    let load = profile.join("examples").join("load");
    assert!(load.exists(), "{} is built by cargo test", load.display());
    let output = Command::new(load).args(args).output().expect("the load generator runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[test]
fn the_load_generator_resolves_and_stores_through_the_service() {
    let dir = TempDir::new().unwrap();
    let store = sample_store(&dir);
    let keys = keys(&store);
    let server = Server::start(&store, &[]);
    let records = data("sample/records.csv");
    let records = records.to_str().unwrap();
    let common = ["--url", &server.address, "--records", records];
    // Every sample record once, as a new record of a fresh source, over 4 connections.
    let put = load(
        &[
            &["put", "--token", &keys.writer, "--source", "load_t", "--connections", "4"][..],
            &common,
            &["--requests", "300", "--seconds", "120"],
        ]
        .concat(),
    );
    assert!(put.contains("300 requests in"), "{put}");
    assert!(put.contains("statuses: 201: 300"), "{put}");
    // The 300 are in the store, each once.
    for n in [0, 150, 299] {
        let reply =
            server.call("GET", &format!("/v1/records/load_t/{n}"), Some(&keys.reader), None);
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let reply = server.call("GET", "/v1/records/load_t/300", Some(&keys.reader), None);
    assert_eq!(reply.status, 404);

    // Probes for a second: every one answered, and a key the service never gave is refused.
    let resolve = load(
        &[
            &["resolve", "--token", &keys.reader, "--seconds", "1", "--connections", "2"][..],
            &common,
        ]
        .concat(),
    );
    let answered = resolve.lines().find_map(|line| line.strip_prefix("statuses: 200: "));
    assert!(answered.is_some_and(|count| count.parse::<usize>().unwrap() > 0), "{resolve}");
    let refused = load(
        &[&["resolve", "--token", "mpi_0000", "--seconds", "1", "--connections", "1"][..], &common]
            .concat(),
    );
    assert!(refused.contains("statuses: 401: "), "{refused}");
}

#[test]
fn a_served_batch_gets_key_filters_in_the_background_and_answers_alike() {
    // Enough records for the batch's index segments to want key filters (10,000
    // documents each; the batch writes with two indexing threads).
    let dir = TempDir::new().unwrap();
    let records = dir.path().join("synth.csv");
    let store = dir.path().join("store");
    let results = dir.path().join("results.csv");
    mpi_ok(["synth", "--people", "12000", "--seed", "23", "--out", records.to_str().unwrap()]);
    mpi_ok([
        "link".as_ref(),
        "--data".as_ref(),
        store.as_os_str(),
        "--out".as_ref(),
        results.as_os_str(),
        records.as_os_str(),
    ]);
    let keys = keys(&store);
    let server = Server::start(&store, &[]);

    // The filters are made after start-up, off the request path.
    let segments = |state: &str| -> usize {
        let metrics = server.call("GET", "/metrics", Some(&keys.reader), None).body;
        let line = format!("mpi_index_segments{{key_filter=\"{state}\"}} ");
        metrics
            .lines()
            .find_map(|found| found.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("no {line:?} in {metrics}"))
            .parse()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while segments("pending") > 0 {
        assert!(std::time::Instant::now() < deadline, "filters still pending; {}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(segments("made") >= 1, "no segment has a key filter: {}", server.log());

    // With the filters, every probe still finds its own person among the candidates: a
    // filter that wrongly ruled out a key would lose some of them.
    let person_of: std::collections::HashMap<(String, String), String> = read_csv(&results)
        .into_iter()
        .map(|row| {
            ((row["source_system"].clone(), row["local_id"].clone()), row["person_id"].clone())
        })
        .collect();
    let rows = read_csv(&records);
    let mut probes = 0;
    for row in rows.iter().step_by(97) {
        let mut body = serde_json::Map::new();
        for (column, value) in row {
            if !["source_system", "local_id"].contains(&column.as_str()) && !value.is_empty() {
                body.insert(column.clone(), Value::String(value.clone()));
            }
        }
        body.insert("mode".to_owned(), Value::String("list".to_owned()));
        let body = Value::Object(body).to_string();
        let answer = server.call("POST", "/v1/resolve", Some(&keys.steward), Some(&body));
        assert_eq!(answer.status, 200, "{}", answer.body);
        let own = &person_of[&(row["source_system"].clone(), row["local_id"].clone())];
        let answer = answer.json();
        let candidates = answer["candidates"].as_array().unwrap();
        assert!(
            candidates.iter().any(|candidate| candidate["person_id"] == own.as_str()),
            "{row:?}: {answer}"
        );
        probes += 1;
    }
    assert!(probes >= 200, "{probes} probes");
}
