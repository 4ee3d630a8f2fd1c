//! The secondary's client over HTTPS: `HttpSource` against a TLS `ServerHandle` with a CA made in
//! the test (`--ca-file`), converging synced and verified; and every way the primary's
//! certificate can be wrong (unknown to the system roots, signed by another CA, for another
//! name) refused with an error that says so.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::tls::TestCa;
use common::*;
use geo_diesel::geo_core::blob_store::LocalBlobStore;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::source::{PrimarySource, SourceError};
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_node::client::{HttpConfig, HttpSource, NodeClient};
use geo_node::tls::ServerTls;

/// A secondary replicating through `source`.
fn secondary_over(dir: &Path, source: Arc<HttpSource>) -> (Arc<Secondary>, Arc<LocalBlobStore>) {
    let tracking =
        geo_node::cli::open_secondary_db(&dir.join("tracking.sqlite3").display().to_string(), 8)
            .unwrap();
    let store = Arc::new(LocalBlobStore::new(dir.join("secondary-files")).unwrap());
    let config = SecondaryConfig::default().idle_sleep(Duration::from_millis(20));
    (
        Arc::new(Secondary::new(
            tracking,
            source,
            store.clone(),
            Env::system(),
            config,
        )),
        store,
    )
}

fn config(url: &str, p: &Primary) -> HttpConfig {
    let mut c = HttpConfig::new(url, p.creds.clone());
    c.read_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    c
}

#[test]
fn a_secondary_replicates_over_https_with_the_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    for i in 0..30u64 {
        // Small ones come in retrieve_batch answers, the 1 MiB ones through retrieve.
        let len = if i % 10 == 0 {
            1 << 20
        } else {
            3000 + i as usize
        };
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("s/{i}.bin"),
            &data(i, len),
        );
    }
    primary.verify_all();
    let ca = TestCa::new(&tmp.path().join("pki"));
    let server = primary.https(ca.server_tls());
    assert!(server.url().starts_with("https://127.0.0.1:"));

    let source = Arc::new(
        HttpSource::try_new(config(&server.url(), &primary).with_ca_file(&ca.ca_pem)).unwrap(),
    );
    let (sec, store) = secondary_over(tmp.path(), source.clone());
    sec.run_until_idle(20).unwrap();
    assert_eq!(differing(&primary, &store), Vec::<String>::new());
    let s = &sec.status().unwrap()[0].1;
    assert_eq!(
        (s.synced_count, s.verified_count, s.failed_count),
        (Some(30), Some(30), Some(0))
    );
    assert_eq!(source.stats().snapshot().errors, 0);

    // The status client over the same HTTPS, by its `localhost` name too.
    let st = NodeClient::try_new(config(&server.url(), &primary).with_ca_file(&ca.ca_pem))
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(st.name, "tls-primary");
    let by_name = server.url().replace("127.0.0.1", "localhost");
    let st = NodeClient::try_new(config(&by_name, &primary).with_ca_file(&ca.ca_pem))
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(st.name, "tls-primary");
}

/// The error of the first request `source` makes, after checking it reports a certificate.
fn certificate_refused(source: &HttpSource) -> String {
    let e = source.max_event_id().unwrap_err();
    assert!(matches!(e, SourceError::Transient { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("--ca-file"), "{text}");
    // The link's status says so too.
    assert!(
        source.stats().last_error().contains("certificate"),
        "{}",
        source.stats().last_error()
    );
    text
}

#[test]
fn a_certificate_the_secondary_cannot_verify_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    create_doc(&primary.db, primary.store.as_ref(), "x/1.bin", b"secret");
    primary.verify_all();
    let ca = TestCa::new(&tmp.path().join("pki"));
    let server = primary.https(ca.server_tls());
    let url = server.url();

    // The system roots do not know the test CA.
    let text = certificate_refused(&HttpSource::try_new(config(&url, &primary)).unwrap());
    assert!(text.to_ascii_lowercase().contains("issuer"), "{text}");

    // Another CA's file.
    let other = TestCa::new(&tmp.path().join("other-pki"));
    certificate_refused(
        &HttpSource::try_new(config(&url, &primary).with_ca_file(&other.ca_pem)).unwrap(),
    );

    // The right CA, but a certificate for another name.
    let (cert, key) = ca.issue("elsewhere", &["primary.example"]);
    let misnamed = primary.https(ServerTls::from_pem_files(&cert, &key).unwrap());
    let text = certificate_refused(
        &HttpSource::try_new(config(&misnamed.url(), &primary).with_ca_file(&ca.ca_pem)).unwrap(),
    );
    assert!(
        text.contains("NotValidForName") || text.contains("name"),
        "{text}"
    );

    // A secondary given no CA syncs nothing and says why.
    let source = Arc::new(HttpSource::try_new(config(&url, &primary)).unwrap());
    let (sec, store) = secondary_over(tmp.path(), source);
    let e = sec.cursor_pass().unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    assert_eq!(files_under(store.root()), Vec::<String>::new());
}

#[test]
fn plain_http_to_an_https_port_fails_and_a_ca_file_of_junk_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let ca = TestCa::new(&tmp.path().join("pki"));
    let server = primary.https(ca.server_tls());
    let plain = server.url().replace("https://", "http://");
    let e = HttpSource::try_new(config(&plain, &primary))
        .unwrap()
        .max_event_id()
        .unwrap_err();
    assert!(matches!(e, SourceError::Transient { .. }), "{e:?}");

    // A key file where the CA should be: refused before any request, naming the file.
    let e =
        HttpSource::try_new(config(&server.url(), &primary).with_ca_file(&ca.key_pem)).unwrap_err();
    assert!(
        e.to_string().contains(&ca.key_pem.display().to_string()),
        "{e}"
    );
}
