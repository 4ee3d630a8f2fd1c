//! GraphQL against real sites over loopback HTTP: a primary with files, a secondary that
//! replicated from it (some rows failed), each serving `POST /api/graphql`. Every field, each
//! filter, pagination both ways, both mutations moving rows as GitLab's do, a bulk resync of
//! 100,000 rows, and every auth case.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use geo_diesel::admin::{self, BulkWorker, BulkWorkerHandle};
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore, LocalBlobStore};
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::state::{ReplicationState, VerificationState};
use geo_diesel::geo_core::{Replicable, Role};
use geo_diesel::registry::Registry;
use geo_diesel::replicable;
use geo_diesel::secondary::Secondary;
use geo_node::auth::{AdminToken, Credentials, KeyRing, Scope};
use geo_node::client::{HttpConfig, HttpSource};
use geo_node::server::{NodeState, PrimaryService, SecondaryService, ServerHandle};
use serde_json::{Value, json};

/// A second type, without verification (its primary migration is empty; the primary still
/// has its model table, which the backfill reads).
mod notes_schema {
    diesel::table! {
        /// Notes.
        notes (id) {
            /// Primary key.
            id -> BigInt,
            /// Blob path.
            path -> Text,
        }
    }
}
use notes_schema::notes;

/// A model without verification.
#[derive(Debug, Clone, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = notes)]
// Its table is created after the primary migrated, so it publishes by hand (no triggers).
#[replicable(strategy = "blob", verification = "none", events = "manual")]
pub struct Note {
    /// Primary key.
    pub id: i64,
    /// Blob path.
    #[replicable(file)]
    pub path: String,
}

const DOCS: usize = 30;
/// Docs whose primary file is gone before the secondary syncs: they fail, missing on primary.
const MISSING: [usize; 5] = [3, 8, 13, 21, 27];

fn doc_descriptor() -> &'static geo_diesel::geo_core::ReplicableDescriptor {
    <Doc as Replicable>::DESCRIPTOR
}

/// POSTs a GraphQL request: (status, JSON body).
fn post(addr: &str, headers: &[(&str, &str)], query: &str, variables: Value) -> (u16, Value) {
    let body = json!({"query": query, "variables": variables}).to_string();
    post_raw(addr, headers, &body)
}

fn post_raw(addr: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let (status, _, body) = http(addr, "POST", "/api/graphql", &all, body);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A primary, a secondary that replicated from it, and GraphQL on both.
struct Sites {
    _tmp: tempfile::TempDir,
    primary: Primary,
    primary_admin: ServerHandle,
    sec: Arc<Secondary>,
    _store: Arc<LocalBlobStore>,
    server: ServerHandle,
    admin: String,
    read: String,
    site_creds: Credentials,
    _bulk: Vec<BulkWorkerHandle>,
}

impl Sites {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let _ = <Note as Replicable>::DESCRIPTOR;
        let primary = Primary::direct(tmp.path());
        {
            use diesel::connection::SimpleConnection;
            let mut conn = primary.db.get().unwrap();
            sqlite(&mut conn)
                .batch_execute(
                    "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, path TEXT NOT NULL)",
                )
                .unwrap();
        }
        for i in 0..DOCS {
            create_doc(
                &primary.db,
                primary.store.as_ref(),
                &format!("docs/{i:03}.bin"),
                &data(i as u64, 100 + i),
            );
        }
        primary.verify_all();
        for i in MISSING {
            std::fs::remove_file(primary.dir.join(format!("primary-files/docs/{i:03}.bin")))
                .unwrap();
        }
        let (sec, store) = secondary(tmp.path(), &primary.url(), &primary.creds, Env::system());
        sec.run_until_idle(30).unwrap();
        let admin = AdminToken::generate();
        let read = AdminToken::generate();
        let ring = |creds: &Credentials| {
            let mut ring = KeyRing::with([creds.clone()]);
            ring.insert_admin(&admin, Scope::Admin, "ops");
            ring.insert_admin(&read, Scope::Read, "viewer");
            ring
        };
        let mut http = HttpConfig::new(primary.url(), primary.creds.clone());
        http.read_timeout = Duration::from_secs(5);
        let source = Arc::new(HttpSource::new(http));
        let state = NodeState::new("test-secondary", ring(&primary.creds))
            .with_secondary(SecondaryService::new(sec.clone(), source));
        let server = ServerHandle::start("127.0.0.1:0", Arc::new(state), 2).unwrap();
        let pstate = NodeState::new("test-primary", ring(&primary.creds)).with_primary(
            PrimaryService::direct(
                primary.db.clone(),
                primary.store.clone(),
                Some(primary.verifier.clone()),
            ),
        );
        let primary_admin = ServerHandle::start("127.0.0.1:0", Arc::new(pstate), 2).unwrap();
        let bulk = vec![
            BulkWorker::spawn(
                sec.tracking().clone(),
                Role::Secondary,
                Duration::from_millis(20),
            )
            .unwrap(),
            BulkWorker::spawn(primary.db.clone(), Role::Primary, Duration::from_millis(20))
                .unwrap(),
        ];
        Sites {
            _tmp: tmp,
            site_creds: primary.creds.clone(),
            primary,
            primary_admin,
            sec,
            _store: store,
            server,
            admin: admin.expose().to_owned(),
            read: read.expose().to_owned(),
            _bulk: bulk,
        }
    }

    fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    /// Runs `query` on the secondary as admin; panics on HTTP or GraphQL errors.
    fn query(&self, query: &str, variables: Value) -> Value {
        Self::ok(&self.addr(), &self.admin, query, variables)
    }

    /// Runs `query` on the primary as admin.
    fn query_primary(&self, query: &str, variables: Value) -> Value {
        Self::ok(
            &self.primary_admin.addr().to_string(),
            &self.admin,
            query,
            variables,
        )
    }

    fn ok(addr: &str, token: &str, query: &str, variables: Value) -> Value {
        let auth = Self::bearer(token);
        let (status, body) = post(addr, &[("Authorization", &auth)], query, variables);
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{query}\n{body:#}");
        body["data"].clone()
    }

    /// The GraphQL error messages of `query` on the secondary.
    fn errors(&self, query: &str, variables: Value) -> Vec<String> {
        let auth = Self::bearer(&self.admin);
        let (status, body) = post(&self.addr(), &[("Authorization", &auth)], query, variables);
        assert_eq!(status, 200, "{body}");
        body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["message"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn registry_rows(&self) -> Vec<admin::RegistryRecord> {
        let mut conn = self.sec.tracking().get().unwrap();
        let page = Registry::of(doc_descriptor())
            .list(
                &mut conn,
                &admin::RegistryFilter::default(),
                admin::RegistrySort::IdAsc,
                &admin::PageRequest {
                    first: Some(100),
                    ..Default::default()
                },
            )
            .unwrap();
        page.rows.into_iter().map(|(_, r)| r).collect()
    }

    fn row_by_model_id(&self, model_id: i64) -> admin::RegistryRecord {
        self.registry_rows()
            .into_iter()
            .find(|r| r.model_record_id == model_id)
            .unwrap()
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const ALL_FIELDS: &str = "id modelRecordId docId createdAt state retryCount retryAt lastSyncedAt \
    lastSyncFailure missingOnPrimary verificationState verificationStartedAt verifiedAt \
    verificationRetryAt verificationRetryCount verificationFailure verificationChecksum \
    verificationChecksumMismatched checksumMismatch forceToRedownload blobPath";

fn time_text(t: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

#[test]
fn every_field_equals_the_database() {
    let s = Sites::new();
    let data = s.query(
        &format!("{{ geoNode {{ name primary filesMaxCapacity verificationMaxCapacity minimumReverificationInterval docRegistries(first: 100) {{ count nodes {{ {ALL_FIELDS} }} }} }} }}"),
        json!({}),
    );
    let node = &data["geoNode"];
    assert_eq!(node["name"], "test-secondary");
    assert_eq!(node["primary"], false);
    assert_eq!(node["filesMaxCapacity"], 10);
    assert!(node["verificationMaxCapacity"].as_i64().unwrap() >= 1);
    assert_eq!(node["minimumReverificationInterval"], Value::Null);
    let rows = s.registry_rows();
    assert_eq!(rows.len(), DOCS);
    assert_eq!(node["docRegistries"]["count"], DOCS);
    let nodes = node["docRegistries"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), DOCS);
    let name = |st: ReplicationState| format!("{st:?}").to_uppercase();
    let vname = |st: VerificationState| format!("{st:?}").to_uppercase();
    let hex = |b: &Option<Vec<u8>>| b.as_ref().map_or(Value::Null, |b| hex::encode(b).into());
    for (n, r) in nodes.iter().zip(&rows) {
        let expected = json!({
            "id": format!("gid://geo/DocRegistry/{}", r.id),
            "modelRecordId": r.model_record_id,
            "docId": r.model_record_id.to_string(),
            "createdAt": time_text(Some(r.created_at)),
            "state": name(r.state),
            "retryCount": r.retry_count,
            "retryAt": time_text(r.retry_at),
            "lastSyncedAt": time_text(r.last_synced_at),
            "lastSyncFailure": r.last_sync_failure,
            "missingOnPrimary": r.missing_on_primary,
            "verificationState": vname(r.verification_state),
            "verificationStartedAt": time_text(r.verification_started_at),
            "verifiedAt": time_text(r.verified_at),
            "verificationRetryAt": time_text(r.verification_retry_at),
            "verificationRetryCount": r.verification_retry_count,
            "verificationFailure": r.verification_failure,
            "verificationChecksum": hex(&r.verification_checksum),
            "verificationChecksumMismatched": hex(&r.verification_checksum_mismatched),
            "checksumMismatch": r.checksum_mismatch,
            "forceToRedownload": null,
            "blobPath": r.blob_path,
        });
        assert_eq!(n, &expected);
    }
    // The replication outcome the fixture set up: the missing files failed, the rest synced
    // and verified.
    let failed: Vec<&Value> = nodes.iter().filter(|n| n["state"] == "FAILED").collect();
    assert_eq!(failed.len(), MISSING.len());
    assert!(failed.iter().all(|n| n["missingOnPrimary"] == true
        && n["lastSyncFailure"].as_str().is_some_and(|f| !f.is_empty())));
    assert!(nodes
        .iter()
        .filter(|n| n["state"] == "SYNCED")
        .all(|n| n["verificationState"] == "SUCCEEDED" && n["verificationChecksum"].is_string()));
}

#[test]
fn filters_narrow_the_list() {
    let s = Sites::new();
    let q = "query($r: ReplicationStateEnum, $v: VerificationStateEnum, $k: String, $ids: [ID!]) {
        geoNode { docRegistries(replicationState: $r, verificationState: $v, keyword: $k, ids: $ids, first: 100) {
            count nodes { id docId state verificationState blobPath } } } }";
    let run = |vars: Value| s.query(q, vars)["geoNode"]["docRegistries"].clone();
    let failed = run(json!({"r": "FAILED"}));
    assert_eq!(failed["count"], MISSING.len());
    assert!(
        failed["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "FAILED")
    );
    let synced = run(json!({"r": "SYNCED"}));
    assert_eq!(synced["count"], DOCS - MISSING.len());
    assert_eq!(run(json!({"r": "PENDING"}))["count"], 0);
    let verified = run(json!({"v": "SUCCEEDED"}));
    assert_eq!(verified["count"], DOCS - MISSING.len());
    assert_eq!(run(json!({"r": "FAILED", "v": "SUCCEEDED"}))["count"], 0);
    // Keyword: a model id, or part of the path.
    let one = run(json!({"k": "7"}));
    assert_eq!(one["count"], 1, "{one}");
    assert_eq!(one["nodes"][0]["docId"], "7");
    let by_path = run(json!({"k": "docs/01"}));
    let paths: Vec<&str> = by_path["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["blobPath"].as_str().unwrap())
        .collect();
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p.starts_with("docs/01")),
        "{paths:?}"
    );
    // ids: global ids of the registry rows.
    let rows = s.registry_rows();
    let ids: Vec<String> = rows[..3]
        .iter()
        .map(|r| format!("gid://geo/DocRegistry/{}", r.id))
        .collect();
    let picked = run(json!({"ids": ids}));
    assert_eq!(picked["count"], 3);
    let errors = s.errors(
        "{ geoNode { docRegistries(ids: [\"gid://geo/NoteRegistry/1\"]) { count } } }",
        json!({}),
    );
    assert!(
        errors.iter().any(|e| e.contains("DocRegistry")),
        "{errors:?}"
    );
    // A type without verification cannot be filtered by verification state: an error, not a
    // crash; it still lists by replication state.
    let errors = s.errors(
        "{ geoNode { noteRegistries(verificationState: FAILED) { count } } }",
        json!({}),
    );
    assert!(
        errors.iter().any(|e| e.contains("no verification")),
        "{errors:?}"
    );
    let notes = s.query(
        "{ geoNode { noteRegistries(replicationState: SYNCED) { count } } }",
        json!({}),
    );
    assert_eq!(notes["geoNode"]["noteRegistries"]["count"], 0);
}

#[test]
fn pagination_both_ways() {
    let s = Sites::new();
    let forward = "query($after: String) { geoNode { docRegistries(first: 7, after: $after) {
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { docId } } } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let c = s.query(forward, json!({"after": after}))["geoNode"]["docRegistries"].clone();
        let edges = c["edges"].as_array().unwrap();
        assert!(edges.len() <= 7);
        assert_eq!(c["pageInfo"]["hasPreviousPage"], pages > 0);
        assert_eq!(c["pageInfo"]["startCursor"], edges[0]["cursor"]);
        assert_eq!(c["pageInfo"]["endCursor"], edges[edges.len() - 1]["cursor"]);
        seen.extend(
            edges
                .iter()
                .map(|e| e["node"]["docId"].as_str().unwrap().parse::<i64>().unwrap()),
        );
        pages += 1;
        if c["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = c["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(pages, DOCS.div_ceil(7));
    let expected: Vec<i64> = s
        .registry_rows()
        .iter()
        .map(|r| r.model_record_id)
        .collect();
    assert_eq!(
        seen, expected,
        "forward pages cover every row once, in id order"
    );
    // Backwards from the end with last/before.
    let backward = "query($before: String) { geoNode { docRegistries(last: 7, before: $before) {
        pageInfo { hasNextPage hasPreviousPage startCursor } nodes { docId } } } }";
    let mut back = Vec::new();
    let mut before = Value::Null;
    loop {
        let c = s.query(backward, json!({"before": before}))["geoNode"]["docRegistries"].clone();
        let ids: Vec<i64> = c["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["docId"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "a page keeps display order: {ids:?}"
        );
        assert_eq!(c["pageInfo"]["hasNextPage"], !back.is_empty());
        back.splice(0..0, ids);
        if c["pageInfo"]["hasPreviousPage"] == false {
            break;
        }
        before = c["pageInfo"]["startCursor"].clone();
    }
    assert_eq!(back, expected);
    // Descending sort, the page cap, and bad arguments.
    let desc = s.query(
        "{ geoNode { docRegistries(sort: ID_DESC, first: 3) { nodes { docId } } } }",
        json!({}),
    );
    let top: Vec<i64> = desc["geoNode"]["docRegistries"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["docId"].as_str().unwrap().parse().unwrap())
        .collect();
    let mut rev = expected.clone();
    rev.reverse();
    assert_eq!(top, rev[..3]);
    let capped = s.query(
        "{ geoNode { docRegistries(first: 5000) { nodes { docId } } } }",
        json!({}),
    );
    assert!(
        capped["geoNode"]["docRegistries"]["nodes"]
            .as_array()
            .unwrap()
            .len()
            <= 100
    );
    assert!(
        !s.errors(
            "{ geoNode { docRegistries(after: \"garbage!\") { count nodes { id } } } }",
            json!({})
        )
        .is_empty()
    );
    assert!(
        !s.errors(
            "{ geoNode { docRegistries(first: -1) { nodes { id } } } }",
            json!({})
        )
        .is_empty()
    );
    assert!(
        !s.errors(
            "{ geoNode { docRegistries(first: 2, last: 2) { nodes { id } } } }",
            json!({})
        )
        .is_empty()
    );
}

const UPDATE: &str = "mutation($id: GeoBaseRegistryID!, $action: GeoRegistryAction!) {
    geoRegistriesUpdate(input: {registryId: $id, action: $action}) {
        errors registry { ... on DocRegistry { id state verificationState } } } }";

#[test]
fn resync_and_reverify_one_row() {
    let s = Sites::new();
    let failed = s
        .registry_rows()
        .into_iter()
        .find(|r| r.state == ReplicationState::Failed)
        .unwrap();
    // Put the file back on the primary, then resync: the row turns pending, then synced.
    let path = failed
        .blob_path
        .clone()
        .unwrap_or_else(|| format!("docs/{:03}.bin", failed.model_record_id - 1));
    s.primary
        .store
        .write(
            &BlobPath::new(&path).unwrap(),
            &mut &data(
                failed.model_record_id as u64 - 1,
                100 + failed.model_record_id as usize - 1,
            )[..],
            None,
        )
        .unwrap();
    let gid = format!("gid://geo/DocRegistry/{}", failed.id);
    let out = s.query(UPDATE, json!({"id": gid, "action": "RESYNC"}));
    let payload = &out["geoRegistriesUpdate"];
    assert_eq!(payload["errors"], json!([]));
    assert_eq!(payload["registry"]["id"], gid);
    assert_eq!(payload["registry"]["state"], "PENDING");
    assert_eq!(
        s.row_by_model_id(failed.model_record_id).state,
        ReplicationState::Pending
    );
    s.sec.run_until_idle(20).unwrap();
    assert_eq!(
        s.row_by_model_id(failed.model_record_id).state,
        ReplicationState::Synced
    );
    // Reverify a synced row: its verification turns pending, then succeeds again.
    let out = s.query(UPDATE, json!({"id": gid, "action": "REVERIFY"}));
    assert_eq!(out["geoRegistriesUpdate"]["errors"], json!([]));
    assert_eq!(
        out["geoRegistriesUpdate"]["registry"]["verificationState"],
        "PENDING"
    );
    s.sec.run_until_idle(20).unwrap();
    assert_eq!(
        s.row_by_model_id(failed.model_record_id).verification_state,
        VerificationState::Succeeded
    );
    // Reverify of a failed row does nothing and says why; an unknown row is an error in the
    // payload; a malformed id is a GraphQL error.
    let other = s
        .registry_rows()
        .into_iter()
        .find(|r| r.state == ReplicationState::Failed)
        .unwrap();
    let out = s.query(
        UPDATE,
        json!({"id": format!("gid://geo/DocRegistry/{}", other.id), "action": "REVERIFY"}),
    );
    let errors = out["geoRegistriesUpdate"]["errors"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(errors.len(), 1, "{out}");
    assert_eq!(
        s.row_by_model_id(other.model_record_id),
        other,
        "nothing changed"
    );
    let out = s.query(
        UPDATE,
        json!({"id": "gid://geo/DocRegistry/999999", "action": "RESYNC"}),
    );
    assert_eq!(out["geoRegistriesUpdate"]["registry"], Value::Null);
    assert!(
        out["geoRegistriesUpdate"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("999999")
    );
    assert!(
        !s.errors(UPDATE, json!({"id": "DocRegistry/1", "action": "RESYNC"}))
            .is_empty()
    );
}

const BULK: &str = "mutation($class: GeoRegistryClass!, $action: GeoRegistriesBulkAction!, $r: ReplicationStateEnum, $v: VerificationStateEnum) {
    geoRegistriesBulkUpdate(input: {registryClass: $class, action: $action, replicationState: $r, verificationState: $v}) { registryClass errors } }";

#[test]
fn bulk_resync_of_failed_rows_and_reverify_all() {
    let s = Sites::new();
    let before = s.registry_rows();
    let out = s.query(
        BULK,
        json!({"class": "DOC_REGISTRY", "action": "RESYNC_ALL", "r": "FAILED"}),
    );
    assert_eq!(
        out["geoRegistriesBulkUpdate"],
        json!({"registryClass": "DOC_REGISTRY", "errors": []})
    );
    // The bulk worker runs it in the background: the failed rows turn pending, the synced ones
    // are left alone.
    s.wait_for("failed rows pending", || {
        s.registry_rows()
            .iter()
            .all(|r| r.state != ReplicationState::Failed)
    });
    let after = s.registry_rows();
    for (b, a) in before.iter().zip(&after) {
        match b.state {
            ReplicationState::Failed => assert_eq!(a.state, ReplicationState::Pending),
            _ => assert_eq!(a.state, b.state),
        }
    }
    let out = s.query(
        BULK,
        json!({"class": "DOC_REGISTRY", "action": "REVERIFY_ALL"}),
    );
    assert_eq!(out["geoRegistriesBulkUpdate"]["errors"], json!([]));
    s.wait_for("synced rows verification pending", || {
        s.registry_rows()
            .iter()
            .filter(|r| r.state == ReplicationState::Synced)
            .all(|r| r.verification_state == VerificationState::Pending)
    });
    // A type without verification cannot be reverified: an error in the payload.
    let out = s.query(
        BULK,
        json!({"class": "NOTE_REGISTRY", "action": "REVERIFY_ALL"}),
    );
    assert_eq!(
        out["geoRegistriesBulkUpdate"]["errors"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{out}"
    );
}

#[test]
fn the_primary_lists_records_and_reverifies() {
    let s = Sites::new();
    let q = "query($v: VerificationStateEnum) { geoNode { primary docRecords(verificationState: $v, first: 100) {
        count nodes { id modelRecordId file verificationState verificationChecksum verifiedAt } } } }";
    let all = s.query_primary(q, json!({"v": null}));
    assert_eq!(all["geoNode"]["primary"], true);
    assert_eq!(all["geoNode"]["docRecords"]["count"], DOCS);
    let nodes = all["geoNode"]["docRecords"]["nodes"].as_array().unwrap();
    assert!(nodes.iter().all(|n| n["verificationState"] == "SUCCEEDED" && n["verificationChecksum"].is_string()));
    assert_eq!(
        nodes[0]["id"],
        format!("gid://geo/Doc/{}", nodes[0]["modelRecordId"])
    );
    // Reverify one record: pending, then the verifier fails it (its file is gone) or succeeds.
    let missing_id = (MISSING[0] + 1) as i64;
    let out = s.query_primary(
        "mutation($id: GeoBaseRegistryID!) { geoRegistriesUpdate(input: {registryId: $id, action: REVERIFY}) {
            errors registry { ... on DocRecord { id verificationState } } } }",
        json!({"id": format!("gid://geo/Doc/{missing_id}")}),
    );
    assert_eq!(out["geoRegistriesUpdate"]["errors"], json!([]));
    assert_eq!(
        out["geoRegistriesUpdate"]["registry"]["verificationState"],
        "PENDING"
    );
    s.primary.verify_all();
    let failed = s.query_primary(q, json!({"v": "FAILED"}));
    assert_eq!(failed["geoNode"]["docRecords"]["count"], 1);
    // "Reverify all failed" on the primary, in the background.
    s.primary
        .store
        .write(
            &BlobPath::new(&format!("docs/{:03}.bin", MISSING[0])).unwrap(),
            &mut &b"back"[..],
            None,
        )
        .unwrap();
    let out = s.query_primary(
        BULK,
        json!({"class": "DOC_REGISTRY", "action": "REVERIFY_ALL", "v": "FAILED"}),
    );
    assert_eq!(out["geoRegistriesBulkUpdate"]["errors"], json!([]));
    s.wait_for("failed record pending", || {
        s.query_primary(q, json!({"v": "FAILED"}))["geoNode"]["docRecords"]["count"] == 0
    });
    // Resync is for secondaries.
    let out = s.query_primary(
        BULK,
        json!({"class": "DOC_REGISTRY", "action": "RESYNC_ALL"}),
    );
    assert_eq!(
        out["geoRegistriesBulkUpdate"]["errors"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The secondary has no records, the primary no registries: a clear error.
    let errors = s.errors("{ geoNode { docRecords { count } } }", json!({}));
    assert!(
        errors.iter().any(|e| e.contains("not a primary")),
        "{errors:?}"
    );
}

#[test]
fn who_may_do_what() {
    let s = Sites::new();
    let addr = s.addr();
    let q = "{ geoNode { name docRegistries { count } } }";
    let m = "mutation { geoRegistriesBulkUpdate(input: {registryClass: DOC_REGISTRY, action: REVERIFY_ALL}) { errors } }";
    // No credential, a bad token, another scheme, an ended session: 401, one body for all
    // (no oracle). A site key: 403.
    let refused: Vec<(u16, Value)> = [
        vec![],
        vec![("Authorization", "Bearer geoadm_nope")],
        vec![("Authorization", "Basic Zm9vOmJhcg==")],
        vec![("Cookie", "geo_session=0123456789abcdef")],
    ]
    .iter()
    .map(|headers| post(&addr, headers, q, json!({})))
    .collect();
    assert_eq!(refused[0].0, 401, "{:?}", refused[0]);
    assert!(
        refused.iter().all(|r| r == &refused[0]),
        "the 401s differ: {refused:#?}"
    );
    let site = s.site_creds.authorization(
        &geo_node::auth::RequestData::get("/api/graphql"),
        chrono::Utc::now().timestamp(),
    );
    assert_eq!(
        post(&addr, &[("Authorization", &site)], q, json!({})).0,
        403
    );
    // Read-only: queries yes, mutations 403, introspection no.
    let read = Sites::bearer(&s.read);
    let (status, body) = post(&addr, &[("Authorization", &read)], q, json!({}));
    assert_eq!(
        (status, body["data"]["geoNode"]["name"].clone()),
        (200, json!("test-secondary"))
    );
    assert_eq!(
        post(&addr, &[("Authorization", &read)], m, json!({})).0,
        403
    );
    let intro = "{ __schema { queryType { name } } }";
    let (status, body) = post(&addr, &[("Authorization", &read)], intro, json!({}));
    assert_eq!(status, 200);
    assert!(
        body.get("errors").is_some() || body["data"]["__schema"].is_null(),
        "{body}"
    );
    // Admin: mutations and introspection.
    let admin = Sites::bearer(&s.admin);
    let (status, body) = post(&addr, &[("Authorization", &admin)], m, json!({}));
    assert_eq!(
        (
            status,
            body["data"]["geoRegistriesBulkUpdate"]["errors"].clone()
        ),
        (200, json!([]))
    );
    let (_, body) = post(&addr, &[("Authorization", &admin)], intro, json!({}));
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    // A named mutation picked by operationName is a write too.
    let doc = format!(
        "query A {{ geoNode {{ name }} }} {}",
        m.replacen("mutation", "mutation B", 1)
    );
    let body = json!({"query": doc, "operationName": "B"}).to_string();
    assert_eq!(post_raw(&addr, &[("Authorization", &read)], &body).0, 403);
    let body = json!({"query": doc, "operationName": "A"}).to_string();
    assert_eq!(post_raw(&addr, &[("Authorization", &read)], &body).0, 200);
    // Malformed JSON: 400. Too deep: an error, not an answer.
    assert_eq!(
        post_raw(&addr, &[("Authorization", &admin)], "{nope").0,
        400
    );
    let nested = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(14),
        " }".repeat(14)
    );
    let (_, body) = post(&addr, &[("Authorization", &admin)], &nested, json!({}));
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("too deep"),
        "{body}"
    );
}

#[test]
fn a_bulk_resync_of_100_000_rows_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let _ = doc_name();
    let db =
        geo_node::cli::open_secondary_db(&tmp.path().join("t.sqlite3").display().to_string(), 4)
            .unwrap();
    let registry = Registry::of(doc_descriptor());
    const N: i64 = 100_000;
    {
        let mut conn = db.get().unwrap();
        let ids: Vec<i64> = (1..=N).collect();
        for chunk in ids.chunks(10_000) {
            registry.insert_missing(&mut conn, chunk).unwrap();
        }
        // Every third row failed, the rest synced.
        use diesel::connection::SimpleConnection;
        sqlite(&mut conn)
            .batch_execute(
                "UPDATE doc_registry SET state = CASE WHEN doc_id % 3 = 0 THEN 3 ELSE 2 END",
            )
            .unwrap();
    }
    let admin_token = AdminToken::generate();
    let mut ring = KeyRing::new();
    ring.insert_admin(&admin_token, Scope::Admin, "ops");
    // A secondary whose primary is unreachable: only its tracking database matters here.
    let store = Arc::new(LocalBlobStore::new(tmp.path().join("files")).unwrap());
    let source = Arc::new(HttpSource::new(HttpConfig::new(
        "http://127.0.0.1:9",
        Credentials::generate(),
    )));
    let sec = Arc::new(Secondary::new(
        db.clone(),
        source.clone(),
        store,
        Env::system(),
        geo_diesel::secondary::SecondaryConfig::default(),
    ));
    let state = NodeState::new("big", ring).with_secondary(SecondaryService::new(sec, source));
    let server = ServerHandle::start("127.0.0.1:0", Arc::new(state), 2).unwrap();
    let _bulk = BulkWorker::spawn(db.clone(), Role::Secondary, Duration::from_millis(10)).unwrap();
    let data = Sites::ok(
        &server.addr().to_string(),
        admin_token.expose(),
        BULK,
        json!({"class": "DOC_REGISTRY", "action": "RESYNC_ALL"}),
    );
    assert_eq!(data["geoRegistriesBulkUpdate"]["errors"], json!([]));
    let start = Instant::now();
    let job = loop {
        let mut conn = db.get().unwrap();
        let jobs = admin::jobs(&mut conn, false).unwrap();
        if let Some(j) = jobs.iter().find(|j| j.finished_at.is_some()) {
            break j.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "bulk resync did not finish: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(job.processed, N);
    assert_eq!(
        job.changed, N,
        "every row was synced or failed, none pending or started"
    );
    let mut conn = db.get().unwrap();
    let counts = registry.counts(&mut conn).unwrap();
    assert_eq!((counts.pending, counts.synced, counts.failed), (N, 0, 0));
}
