//! The admin page in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against real sites over loopback HTTP (a primary, and a secondary replicating from it with
//! some rows failed because their files were gone on the primary).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them when missing). Without them every test fails with
//! a message saying so; none is skipped. Each test saves a screenshot to
//! `target/browser-screenshots/<test>.png`.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use fantoccini::{Client, ClientBuilder, Locator};
use geo_diesel::admin::{BulkWorker, BulkWorkerHandle};
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore};
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::source::PrimarySource;
use geo_diesel::geo_core::state::ReplicationState;
use geo_diesel::geo_core::{Replicable, Role};
use geo_diesel::secondary::Secondary;
use geo_node::auth::{AdminToken, KeyRing, Scope};
use geo_node::client::{HttpConfig, HttpSource};
use geo_node::server::{NodeState, PrimaryService, SecondaryService, ServerHandle};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(20);

// ---- the browser ------------------------------------------------------------------------

/// A chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: the admin page's browser tests need Debian's `chromium` and \
                 `chromium-driver` (`apt-get install chromium chromium-driver`; .ci/run installs them)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver { child, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "chromedriver did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium window of `width`×`height`, and its driver.
struct Browser {
    client: Client,
    _driver: Driver,
    name: &'static str,
}

impl Browser {
    async fn open(name: &'static str, width: u32, height: u32) -> Browser {
        let driver = Driver::start();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let caps = caps.as_object().unwrap().clone();
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url())
            .await
            .expect("a Chromium session through chromedriver");
        client.set_window_size(width, height).await.unwrap();
        Browser {
            client,
            _driver: driver,
            name,
        }
    }

    /// Saves `target/browser-screenshots/<name>[-suffix].png`.
    async fn screenshot(&self, suffix: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = target_dir().join("browser-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let file = if suffix.is_empty() {
            format!("{}.png", self.name)
        } else {
            format!("{}-{suffix}.png", self.name)
        };
        let path = dir.join(file);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Evaluates `script` (a function body) in the page.
    async fn js(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` returns `true`; on a timeout saves a screenshot and fails with
    /// `what`.
    async fn until(&self, what: &str, script: &str) {
        let started = Instant::now();
        loop {
            if self.client.execute(script, vec![]).await.ok() == Some(json!(true)) {
                return;
            }
            if started.elapsed() > WAIT {
                let shot = self.screenshot("timeout").await;
                let flash = self
                    .js("return document.getElementById('flash').textContent")
                    .await;
                panic!(
                    "timed out waiting for {what} (page message: {flash}; screenshot {})",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens `site`'s admin page and signs in with its token.
    async fn sign_in(&self, site_url: &str, token: &str) {
        self.client
            .goto(&format!("{site_url}/admin/geo"))
            .await
            .unwrap();
        self.until(
            "the sign-in form",
            "return !document.getElementById('login').hidden",
        )
        .await;
        self.client
            .find(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        self.client
            .find(Locator::Id("login-submit"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.until(
            "the signed-in page",
            "return document.body.dataset.ready === 'true'",
        )
        .await;
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn select(&self, id: &str, value: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap();
    }

    /// The registry ids of the listed rows.
    async fn listed_ids(&self) -> Vec<i64> {
        let v = self
            .js("return [...document.querySelectorAll('#list-body tr[data-row-id]')].map(r => Number(r.dataset.rowId))")
            .await;
        let mut ids: Vec<i64> = serde_json::from_value(v).unwrap();
        ids.sort();
        ids
    }

    /// Waits for the list to show exactly `ids`.
    async fn until_listed(&self, what: &str, ids: &[i64]) {
        let want = serde_json::to_string(ids).unwrap();
        self.until(
            what,
            &format!(
                "const ids = [...document.querySelectorAll('#list-body tr[data-row-id]')] \
                 .map(r => Number(r.dataset.rowId)).sort((a, b) => a - b); \
                 return JSON.stringify(ids) === '{want}'"
            ),
        )
        .await;
    }

    async fn close(self) {
        self.client.close().await.unwrap();
    }
}

/// The workspace's target directory (`CARGO_TARGET_DIR`, or the one this test binary is in).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/browser-<hash>
    std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf()
}

// ---- the sites --------------------------------------------------------------------------

/// A primary with `ok + missing` docs, and a secondary that synced them over HTTP: the `missing`
/// ones had their file deleted on the primary first, so their rows are failed (missing on
/// primary). The secondary's server serves the admin page to `token`.
struct Sites {
    _tmp: tempfile::TempDir,
    primary: Primary,
    sec: Arc<Secondary>,
    server: ServerHandle,
    token: AdminToken,
    /// A read-only token of the secondary.
    read_token: AdminToken,
    /// Runs the bulk updates the page asks for (as `geo-node secondary` does).
    _bulk: BulkWorkerHandle,
    /// (model id, path, content) of the docs whose files were deleted.
    missing: Vec<(i64, String, Vec<u8>)>,
}

impl Sites {
    fn new(ok: usize, missing: usize) -> Sites {
        let tmp = tempfile::tempdir().unwrap();
        let primary = Primary::direct(tmp.path());
        let mut gone = Vec::new();
        for i in 0..ok + missing {
            let path = format!("docs/{i:03}.bin");
            let content = data(i as u64, 500 + i);
            let doc = create_doc(&primary.db, primary.store.as_ref(), &path, &content);
            if i >= ok {
                std::fs::remove_file(tmp.path().join("primary-files").join(&path)).unwrap();
                gone.push((doc.id, path, content));
            }
        }
        primary.verify_all();
        let (sec, _store) = secondary(tmp.path(), &primary.url(), &primary.creds, Env::system());
        sec.run_until_idle(20).unwrap();
        let token = AdminToken::generate();
        let mut keys = KeyRing::new();
        keys.insert_admin(&token, Scope::Admin, "browser-test");
        let read_token = AdminToken::generate();
        keys.insert_admin(&read_token, Scope::Read, "browser-test-read");
        let source = Arc::new(HttpSource::new(HttpConfig::new(
            primary.url(),
            primary.creds.clone(),
        )));
        let state = NodeState::new("test-secondary", keys)
            .with_secondary(SecondaryService::new(sec.clone(), source));
        let server = ServerHandle::start("127.0.0.1:0", Arc::new(state), 2).unwrap();
        let bulk = BulkWorker::spawn(
            sec.tracking().clone(),
            Role::Secondary,
            Duration::from_millis(50),
        )
        .unwrap();
        let sites = Sites {
            _bulk: bulk,
            _tmp: tmp,
            primary,
            sec,
            server,
            token,
            read_token,
            missing: gone,
        };
        assert_eq!(
            sites.registry_ids(Some(ReplicationState::Failed)).len(),
            missing,
            "the docs without a file failed to sync"
        );
        sites
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// Puts the deleted files back on the primary.
    fn restore_files(&self) {
        for (_, path, content) in &self.missing {
            self.primary
                .store
                .write(&BlobPath::new(path).unwrap(), &mut &content[..], None)
                .unwrap();
        }
    }

    /// Registry ids on the secondary, in `state` (all when `None`), straight from its database.
    fn registry_ids(&self, state: Option<ReplicationState>) -> Vec<i64> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        let table = <Doc as Replicable>::DESCRIPTOR.tables.registry;
        let filter = state.map_or(String::new(), |s| format!(" WHERE state = {}", s.as_i16()));
        let mut conn = self.sec.tracking().get().unwrap();
        let mut ids: Vec<i64> =
            diesel::sql_query(format!("SELECT id FROM \"{table}\"{filter} ORDER BY id"))
                .load::<Row>(sqlite(&mut conn))
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
        ids.sort();
        ids
    }

    /// The registry id of the row of doc `model_id`.
    fn registry_id_of(&self, model_id: i64) -> i64 {
        let d = <Doc as Replicable>::DESCRIPTOR;
        let rows = self.count(&format!("\"{}\" = {model_id}", d.tables.registry_model_id));
        assert_eq!(rows, 1, "one registry row per doc");
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        let mut conn = self.sec.tracking().get().unwrap();
        diesel::sql_query(format!(
            "SELECT id FROM \"{}\" WHERE \"{}\" = {model_id}",
            d.tables.registry, d.tables.registry_model_id
        ))
        .get_result::<Row>(sqlite(&mut conn))
        .unwrap()
        .id
    }

    /// The model id of the doc at `path` on the primary.
    fn model_id_of(&self, path: &str) -> i64 {
        self.primary
            .paths()
            .into_iter()
            .find(|(_, p)| p == path)
            .unwrap_or_else(|| panic!("no doc at {path}"))
            .0
    }

    /// `COUNT(*)` of the registry rows matching `condition`.
    fn count(&self, condition: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let table = <Doc as Replicable>::DESCRIPTOR.tables.registry;
        let mut conn = self.sec.tracking().get().unwrap();
        diesel::sql_query(format!(
            "SELECT COUNT(*) AS n FROM \"{table}\" WHERE {condition}"
        ))
        .get_result::<Row>(sqlite(&mut conn))
        .unwrap()
        .n
    }

    /// Runs the secondary's passes until it is idle (off the async runtime).
    async fn replicate(&self) {
        let sec = self.sec.clone();
        tokio::task::spawn_blocking(move || sec.run_until_idle(20).unwrap())
            .await
            .unwrap();
    }
}

fn doc_plural() -> &'static str {
    <Doc as Replicable>::DESCRIPTOR.plural
}

// ---- the tests --------------------------------------------------------------------------

/// Runs the browser half of a test on its own runtime. The sites are built and dropped outside
/// it: their HTTP link to the primary blocks on a runtime of its own.
fn in_browser(f: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn sign_in_form_then_an_httponly_strict_session_cookie() {
    let sites = Sites::new(2, 0);
    in_browser(async { sign_in_form_then_an_httponly_strict_session_cookie_in(&sites).await });
}

async fn sign_in_form_then_an_httponly_strict_session_cookie_in(sites: &Sites) {
    let b = Browser::open("sign_in", 1280, 900).await;
    b.client
        .goto(&format!("{}/admin/geo", sites.url()))
        .await
        .unwrap();
    b.until(
        "the sign-in form",
        "return !document.getElementById('login').hidden",
    )
    .await;
    b.client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(AdminToken::generate().expose())
        .await
        .unwrap();
    b.click("#login-submit").await;
    b.until(
        "the refusal",
        "return document.getElementById('login-error').textContent.includes('not valid')",
    )
    .await;
    assert!(
        b.client.get_named_cookie("geo_session").await.is_err(),
        "no session for a wrong token"
    );
    b.screenshot("wrong-token").await;

    b.sign_in(&sites.url(), sites.token.expose()).await;
    let cookie = b.client.get_named_cookie("geo_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    assert_eq!(
        format!("{:?}", cookie.same_site()),
        "Some(Strict)",
        "{cookie:?}"
    );
    assert_eq!(
        b.js("return document.cookie").await,
        json!(""),
        "the script cannot read the session"
    );
    assert_eq!(
        b.js("return document.getElementById('node-name').textContent")
            .await,
        json!("test-secondary")
    );
    b.screenshot("").await;

    // Sign out ends the session on the server.
    b.click("#sign-out").await;
    b.until(
        "the sign-in form again",
        "return !document.getElementById('login').hidden",
    )
    .await;
    let (status, _, _) = http(
        &sites.server.addr().to_string(),
        "GET",
        "/admin/geo/api/session",
        &[("Cookie", &format!("geo_session={}", cookie.value()))],
        "",
    );
    assert_eq!(status, 401, "the session ended with sign-out");

    // A read-only token reads everything and is offered no action.
    b.sign_in(&sites.url(), sites.read_token.expose()).await;
    assert_eq!(
        b.js("return document.body.dataset.scope").await,
        json!("read")
    );
    b.client
        .goto(&format!("{}/admin/geo#/type/{}", sites.url(), doc_name()))
        .await
        .unwrap();
    b.until_listed("every row", &sites.registry_ids(None)).await;
    assert_eq!(
        b.js("return document.querySelectorAll('#list-body button, #bulk button').length + (document.getElementById('bulk').hidden ? 0 : 1)")
            .await,
        json!(0),
        "no Resync, Reverify or bulk action for a read-only token"
    );
    b.screenshot("read-only").await;
    b.close().await;
}

#[test]
fn a_write_without_the_csrf_header_is_refused() {
    let sites = Sites::new(1, 1);
    in_browser(async { a_write_without_the_csrf_header_is_refused_in(&sites).await });
}

async fn a_write_without_the_csrf_header_is_refused_in(sites: &Sites) {
    let addr = sites.server.addr().to_string();
    let b = Browser::open("csrf", 1280, 900).await;
    b.sign_in(&sites.url(), sites.token.expose()).await;
    let cookie = b.client.get_named_cookie("geo_session").await.unwrap();
    let cookie = format!("geo_session={}", cookie.value());
    let failed = sites.registry_ids(Some(ReplicationState::Failed));
    let mutation = json!({
        "query": format!(
            "mutation {{ geoRegistriesUpdate(input: {{ registryId: \"gid://geo/DocRegistry/{}\", action: RESYNC }}) {{ errors }} }}",
            failed[0]
        )
    })
    .to_string();

    // The browser's cookie without the CSRF header: refused, nothing changed.
    let (status, _, body) = http(
        &addr,
        "POST",
        "/api/graphql",
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        &mutation,
    );
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = http(
        &addr,
        "POST",
        "/admin/geo/session/delete",
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(status, 403, "sign-out is a write too");
    // A script in the page that forgets the header is refused the same way.
    let from_page = b
        .js(&format!(
            "return fetch('/api/graphql', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: {}}}).then(r => r.status)",
            serde_json::to_string(&mutation).unwrap()
        ))
        .await;
    assert_eq!(from_page, json!(403));
    assert_eq!(
        sites.registry_ids(Some(ReplicationState::Failed)),
        failed,
        "nothing was resynced"
    );

    // With the session's CSRF token the same write goes through.
    let (status, _, session) = http(
        &addr,
        "GET",
        "/admin/geo/api/session",
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(status, 200, "{session}");
    let session: serde_json::Value = serde_json::from_str(&session).unwrap();
    let csrf = session["csrf"].as_str().unwrap();
    let (status, _, body) = http(
        &addr,
        "POST",
        "/api/graphql",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/json"),
            ("X-CSRF-Token", csrf),
        ],
        &mutation,
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("\"errors\":[{"), "{body}");

    // A sign-in form posted from another site is refused, whatever the token.
    let form = format!("token={}", sites.token.expose());
    let (status, head, _) = http(
        &addr,
        "POST",
        "/admin/geo/session",
        &[
            ("Origin", "https://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form,
    );
    assert_eq!(status, 403);
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    b.screenshot("").await;
    b.close().await;
}

#[test]
fn overview_numbers_equal_the_database() {
    let sites = Sites::new(5, 2);
    in_browser(async { overview_numbers_equal_the_database_in(&sites).await });
}

async fn overview_numbers_equal_the_database_in(sites: &Sites) {
    let b = Browser::open("overview", 1280, 900).await;
    b.sign_in(&sites.url(), sites.token.expose()).await;
    let name = doc_name();
    let count = |key: &str| {
        format!(
            "document.querySelector('[data-overview-type=\"{name}\"] [data-count=\"{key}\"]')?.textContent"
        )
    };
    let synced = sites.count(&format!("state = {}", ReplicationState::Synced.as_i16()));
    let failed = sites.count(&format!("state = {}", ReplicationState::Failed.as_i16()));
    let queued = sites.count("1 = 1") - synced - failed;
    assert_eq!((synced, failed), (5, 2));
    b.until(
        "the overview's numbers",
        &format!(
            "return {} === '{synced}' && {} === '{failed}' && {} === '{queued}'",
            count("synced"),
            count("failed"),
            count("queued")
        ),
    )
    .await;
    let status = sites.sec.status().unwrap();
    let (_, st) = status.iter().find(|(d, _)| d.name == name).unwrap();
    if let Some(verified) = st.verified_count {
        let page = b.js(&format!("return {}", count("verified"))).await;
        assert_eq!(page, json!(verified.to_string()), "verified");
        let page = b
            .js(&format!("return {}", count("verification_failed")))
            .await;
        assert_eq!(
            page,
            json!(st.verification_failed_count.unwrap().to_string())
        );
    }
    // Events behind: the primary's last event minus the cursor's position (nothing is behind).
    let last = sites.primary.source.max_event_id().unwrap().unwrap();
    let cursor = geo_diesel::cursor::load_state(&mut sites.sec.tracking().get().unwrap())
        .unwrap()
        .safe_position();
    b.until(
        "events behind",
        &format!(
            "return document.getElementById('events-behind')?.textContent === '{}'",
            last - cursor
        ),
    )
    .await;
    assert_eq!(
        b.js("return document.getElementById('health').textContent")
            .await,
        json!("Healthy")
    );
    let seconds = b
        .js("return document.getElementById('seconds-behind').textContent")
        .await;
    assert_eq!(seconds, json!("0"), "caught up: no event waits");
    assert!(
        doc_plural().ends_with('s'),
        "the bars are read from `<plural>_synced_count`"
    );
    b.screenshot("").await;
    b.close().await;
}

#[test]
fn replication_filter_narrows_the_list_to_the_failed_rows() {
    let sites = Sites::new(4, 3);
    in_browser(async { replication_filter_narrows_the_list_to_the_failed_rows_in(&sites).await });
}

async fn replication_filter_narrows_the_list_to_the_failed_rows_in(sites: &Sites) {
    let b = Browser::open("filter", 1280, 900).await;
    b.sign_in(&sites.url(), sites.token.expose()).await;
    b.client
        .goto(&format!("{}/admin/geo#/type/{}", sites.url(), doc_name()))
        .await
        .unwrap();
    let all = sites.registry_ids(None);
    b.until_listed("every row", &all).await;
    b.select("filter-replication", "FAILED").await;
    let failed = sites.registry_ids(Some(ReplicationState::Failed));
    assert_eq!(failed.len(), 3);
    b.until_listed("the failed rows", &failed).await;
    assert_eq!(
        b.js("return document.getElementById('list-count').dataset.count")
            .await,
        json!("3")
    );
    // The details of a failed row: every field, in its section.
    let first = failed[0];
    b.click(&format!(
        "#list-body tr[data-row-id=\"{first}\"] a[data-action=\"details\"]"
    ))
    .await;
    b.until(
        "the details",
        "return document.querySelector('#details-body [data-field=\"missingOnPrimary\"]')?.textContent === 'yes'",
    )
    .await;
    let fields = b
        .js("return [...document.querySelectorAll('#details-body [data-field]')].map(e => e.dataset.field)")
        .await;
    for f in [
        "id",
        "docId",
        "state",
        "retryCount",
        "lastSyncFailure",
        "verificationState",
        "verificationChecksum",
        "blobPath",
    ] {
        assert!(
            fields.as_array().unwrap().contains(&json!(f)),
            "{f} in {fields}"
        );
    }
    assert_ne!(
        b.js("return document.querySelector('#details-body [data-field=\"lastSyncFailure\"]').textContent").await,
        json!("—")
    );
    b.screenshot("details").await;
    b.client.back().await.unwrap();
    b.until_listed("the failed rows again", &failed).await;

    // The keyword narrows further: a number is a model id.
    let (model_id, _, _) = &sites.missing[0];
    let keyword = b.client.find(Locator::Id("filter-keyword")).await.unwrap();
    keyword.send_keys(&model_id.to_string()).await.unwrap();
    let row = sites.registry_id_of(*model_id);
    b.until_listed("the failed row of that doc", &[row]).await;
    // Text is a part of the blob path (known once a row has synced).
    b.select("filter-replication", "").await;
    keyword.clear().await.unwrap();
    keyword.send_keys("docs/001").await.unwrap();
    let synced_row = sites.registry_id_of(sites.model_id_of("docs/001.bin"));
    b.until_listed("the row whose path matches", &[synced_row])
        .await;
    b.screenshot("").await;
    b.close().await;
}

#[test]
fn resync_turns_a_failed_row_pending_then_synced() {
    let sites = Sites::new(2, 1);
    in_browser(async { resync_turns_a_failed_row_pending_then_synced_in(&sites).await });
}

async fn resync_turns_a_failed_row_pending_then_synced_in(sites: &Sites) {
    let b = Browser::open("resync", 1280, 900).await;
    b.sign_in(&sites.url(), sites.token.expose()).await;
    b.client
        .goto(&format!("{}/admin/geo#/type/{}", sites.url(), doc_name()))
        .await
        .unwrap();
    let failed = sites.registry_ids(Some(ReplicationState::Failed));
    let id = failed[0];
    let row = format!("#list-body tr[data-row-id=\"{id}\"]");
    b.until(
        "the failed row",
        &format!("return document.querySelector('{row}')?.dataset.state === 'FAILED'"),
    )
    .await;
    sites.restore_files();
    b.click(&format!("{row} button[data-action=\"resync\"]"))
        .await;
    b.until(
        "the row pending",
        &format!("return document.querySelector('{row}')?.dataset.state === 'PENDING'"),
    )
    .await;
    assert_eq!(
        sites.registry_ids(Some(ReplicationState::Pending)),
        vec![id],
        "the database has it pending"
    );
    b.screenshot("pending").await;
    sites.replicate().await;
    assert_eq!(
        sites.registry_ids(Some(ReplicationState::Failed)),
        Vec::<i64>::new()
    );
    b.until(
        "the row synced (refreshed without a reload)",
        &format!("return document.querySelector('{row}')?.dataset.state === 'SYNCED'"),
    )
    .await;
    b.screenshot("").await;
    b.close().await;
}

#[test]
fn resync_all_failed_empties_the_failed_list() {
    let sites = Sites::new(3, 3);
    in_browser(async { resync_all_failed_empties_the_failed_list_in(&sites).await });
}

async fn resync_all_failed_empties_the_failed_list_in(sites: &Sites) {
    let b = Browser::open("resync_all_failed", 1280, 900).await;
    b.sign_in(&sites.url(), sites.token.expose()).await;
    b.client
        .goto(&format!("{}/admin/geo#/type/{}", sites.url(), doc_name()))
        .await
        .unwrap();
    b.select("filter-replication", "FAILED").await;
    let failed = sites.registry_ids(Some(ReplicationState::Failed));
    b.until_listed("the failed rows", &failed).await;
    b.click("button[data-bulk=\"resync_all_failed\"]").await;
    b.until(
        "the confirmation",
        "return document.getElementById('confirm').open",
    )
    .await;
    b.screenshot("confirm").await;
    b.click("#confirm-ok").await;
    b.until_listed("an empty failed list", &[]).await;
    assert_eq!(
        sites.registry_ids(Some(ReplicationState::Failed)),
        Vec::<i64>::new()
    );
    assert_eq!(
        sites.registry_ids(Some(ReplicationState::Synced)).len(),
        3,
        "the synced rows were left alone"
    );
    b.screenshot("").await;
    b.close().await;
}

#[test]
fn narrow_screen_390px() {
    let sites = Sites::new(3, 2);
    in_browser(async { narrow_screen_390px_in(&sites).await });
}

async fn narrow_screen_390px_in(sites: &Sites) {
    let b = Browser::open("narrow_390", 390, 844).await;
    b.sign_in(&sites.url(), sites.token.expose()).await;
    b.until(
        "the overview",
        "return !!document.querySelector('[data-overview-type] [data-count=\"synced\"]')",
    )
    .await;
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth";
    assert_eq!(
        b.js(fits).await,
        json!(true),
        "no sideways scrolling on the overview"
    );
    b.screenshot("overview").await;
    b.client
        .goto(&format!("{}/admin/geo#/type/{}", sites.url(), doc_name()))
        .await
        .unwrap();
    b.until_listed("every row", &sites.registry_ids(None)).await;
    assert_eq!(
        b.js(fits).await,
        json!(true),
        "no sideways scrolling on the list"
    );
    b.screenshot("").await;
    b.close().await;
}

#[test]
fn primary_lists_records_with_their_checksum_state() {
    let sites = Sites::new(3, 1);
    in_browser(async { primary_lists_records_with_their_checksum_state_in(&sites).await });
}

async fn primary_lists_records_with_their_checksum_state_in(sites: &Sites) {
    // The primary's own admin page, on the same data the secondary replicated from.
    let token = AdminToken::generate();
    let mut keys = KeyRing::new();
    keys.insert_admin(&token, Scope::Admin, "browser-test");
    let p = &sites.primary;
    let state = NodeState::new("test-primary", keys).with_primary(PrimaryService::direct(
        p.db.clone(),
        p.store.clone(),
        Some(p.verifier.clone()),
    ));
    let server = ServerHandle::start("127.0.0.1:0", Arc::new(state), 2).unwrap();
    let b = Browser::open("primary", 1280, 900).await;
    b.sign_in(&server.url(), token.expose()).await;
    assert_eq!(
        b.js("return document.body.dataset.role").await,
        json!("primary")
    );
    b.until(
        "the record count",
        &format!(
            "return document.querySelector('[data-overview-type=\"{}\"] [data-count=\"records\"]')?.textContent === '4'",
            doc_name()
        ),
    )
    .await;
    b.screenshot("overview").await;
    b.client
        .goto(&format!("{}/admin/geo#/type/{}", server.url(), doc_name()))
        .await
        .unwrap();
    let ids: Vec<i64> = p.paths().into_iter().map(|(id, _)| id).collect();
    b.until_listed("every record", &ids).await;
    assert!(
        b.js("return document.getElementById('filter-replication').closest('label').hidden")
            .await
            == json!(true),
        "no replication filter on the primary"
    );
    let (missing_id, _, _) = sites.missing[0];
    let state_is = |id: i64, state: &str| {
        format!(
            "return document.querySelector('#list-body tr[data-row-id=\"{id}\"]')?.dataset.verification === '{state}'"
        )
    };
    b.until(
        "the record whose file is gone, failed",
        &state_is(missing_id, "FAILED"),
    )
    .await;
    assert!(b.listed_ids().await.contains(&missing_id));
    b.screenshot("").await;

    // No registry here: no Resync, and of the bulk actions only "Reverify all failed".
    let buttons = b
        .js("return [...document.querySelectorAll('#bulk button')].map(b => b.dataset.bulk)")
        .await;
    assert_eq!(buttons, json!(["reverify_all_failed"]));
    assert_eq!(
        b.js(
            "return document.querySelectorAll('#list-body button[data-action=\"resync\"]').length"
        )
        .await,
        json!(0)
    );

    // Reverify one: the record goes back to pending, then the verifier checksums it.
    let ok_id = ids[0];
    b.click(&format!(
        "#list-body tr[data-row-id=\"{ok_id}\"] button[data-action=\"reverify\"]"
    ))
    .await;
    b.until("the reverified record pending", &state_is(ok_id, "PENDING"))
        .await;

    // "Reverify all failed", once the file is back: the failed record is checksummed again.
    sites.restore_files();
    let _bulk = BulkWorker::spawn(p.db.clone(), Role::Primary, Duration::from_millis(50)).unwrap();
    b.click("button[data-bulk=\"reverify_all_failed\"]").await;
    b.until(
        "the confirmation",
        "return document.getElementById('confirm').open",
    )
    .await;
    b.click("#confirm-ok").await;
    b.until(
        "the failed record pending",
        &state_is(missing_id, "PENDING"),
    )
    .await;
    let verifier = p.verifier.clone();
    tokio::task::spawn_blocking(move || verifier.run_until_idle(50).unwrap())
        .await
        .unwrap();
    b.until(
        "both records verified",
        &format!(
            "{} && {}",
            state_is(missing_id, "SUCCEEDED").replace("return ", "return ("),
            state_is(ok_id, "SUCCEEDED").replace("return ", "") + ")"
        ),
    )
    .await;
    b.screenshot("reverified").await;
    b.close().await;
}

#[test]
fn pages_of_twenty() {
    let sites = Sites::new(23, 0);
    in_browser(async { pages_of_twenty_in(&sites).await });
}

async fn pages_of_twenty_in(sites: &Sites) {
    let b = Browser::open("pages", 1280, 900).await;
    b.sign_in(&sites.url(), sites.token.expose()).await;
    b.client
        .goto(&format!("{}/admin/geo#/type/{}", sites.url(), doc_name()))
        .await
        .unwrap();
    let all = sites.registry_ids(None);
    assert_eq!(all.len(), 23);
    b.until_listed("the first page", &all[..20]).await;
    let disabled = |id: &str| format!("return document.getElementById('{id}').disabled");
    assert_eq!(b.js(&disabled("page-prev")).await, json!(true));
    assert_eq!(
        b.js("return document.getElementById('list-count').dataset.count")
            .await,
        json!("23")
    );
    b.click("#page-next").await;
    b.until_listed("the second page", &all[20..]).await;
    assert_eq!(b.js(&disabled("page-next")).await, json!(true));
    b.screenshot("").await;
    b.click("#page-prev").await;
    b.until_listed("the first page again", &all[..20]).await;
    b.close().await;
}
