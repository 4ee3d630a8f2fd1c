//! HTTPS on the server side, checked with a client that is not ours (`curl`): a CA made in the
//! test, a signed request over HTTPS, plain HTTP to the TLS port refused, a client trusting
//! another CA refused, and startup errors that name the bad file.

mod common;

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use common::tls::{TestCa, stray_key};
use common::*;
use geo_node::auth::RequestData;
use geo_node::tls::{ServerTls, TlsError};

/// `curl` with `args`: (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed (the TLS tests use a client that is not ours)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_gets_a_signed_answer_over_https_and_nothing_else_gets_through() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Primary::direct(tmp.path());
    create_doc(&p.db, p.store.as_ref(), "t/a", b"over tls");
    p.verify_all();
    let ca = TestCa::new(&tmp.path().join("pki"));
    let server = p.https(ca.server_tls());
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // A signed status request through curl, trusting the test CA.
    let path = "/api/geo/status";
    let auth = p
        .creds
        .authorization(&RequestData::get(path), Utc::now().timestamp());
    let ca_file = ca.ca_pem.display().to_string();
    let (code, body, err) = curl(&[
        "--cacert",
        &ca_file,
        "--http1.1",
        "-H",
        &format!("Authorization: {auth}"),
        "--write-out",
        "\n%{http_code} %{http_version}",
        &format!("{url}{path}"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (json, status) = body.rsplit_once('\n').unwrap();
    assert_eq!(status, "200 1.1", "{body}");
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["name"], "tls-primary");
    assert_eq!(v["primary"]["docs_count"], 1, "{v}");

    // A blob, byte for byte; and by the name `localhost`, which the certificate also holds.
    let localhost = url.replace("127.0.0.1", "localhost");
    let blob = p.paths()[0].0;
    let auth = p
        .creds
        .authorization(&RequestData::blob("doc", blob), Utc::now().timestamp());
    let (code, body, err) = curl(&[
        "--cacert",
        &ca_file,
        "-H",
        &format!("Authorization: {auth}"),
        &format!("{localhost}/api/geo/retrieve/doc/{blob}"),
    ]);
    assert_eq!((code, body.as_str()), (0, "over tls"), "{err}");

    // Without a token: the usual 401, over TLS.
    let (code, body, _) = curl(&["--cacert", &ca_file, &format!("{url}{path}")]);
    assert_eq!(code, 0);
    assert!(body.contains("UNAUTHORIZED"), "{body}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = url.replace("https://", "http://");
    let (code, body, _) = curl(&["--write-out", "%{http_code}", &format!("{plain}{path}")]);
    assert_ne!(code, 0, "plain HTTP answered: {body}");
    assert!(
        !body.contains("UNAUTHORIZED") && !body.contains("200"),
        "{body}"
    );
    let (status, _) = raw_get_result(&server.addr().to_string(), path);
    assert_eq!(status, None, "a plain HTTP request got an HTTP status");

    // A client that trusts another CA refuses the server.
    let other = TestCa::new(&tmp.path().join("other-pki"));
    let (code, _, err) = curl(&[
        "--cacert",
        &other.ca_pem.display().to_string(),
        &format!("{url}{path}"),
    ]);
    assert_eq!(
        code, 60,
        "curl's 'peer certificate cannot be authenticated': {err}"
    );
    // And one that trusts nothing but the system roots, too.
    let (code, _, err) = curl(&["--capath", "/nonexistent", &format!("{url}{path}")]);
    assert_ne!(code, 0, "{err}");

    // The server still serves after the failed handshakes.
    let (code, _, err) = curl(&["--cacert", &ca_file, &format!("{url}{path}")]);
    assert_eq!(code, 0, "{err}");
    server.stop();
}

/// A raw plain-HTTP request: the status line's code, if an HTTP answer came at all.
fn raw_get_result(addr: &str, path: &str) -> (Option<u16>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    // The server may close before the request is all written.
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .strip_prefix("HTTP/1.")
        .and_then(|t| t.get(2..5))
        .and_then(|c| c.parse().ok());
    (code, buf)
}

#[test]
fn bad_pem_files_are_startup_errors_that_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let err = |cert: &Path, key: &Path| ServerTls::from_pem_files(cert, key).unwrap_err();

    let missing = tmp.path().join("missing.pem");
    let e = err(&missing, &ca.key_pem);
    assert!(matches!(e, TlsError::Certificate { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.pem"), "{e}");

    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let e = err(&garbage, &ca.key_pem);
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
    assert!(e.to_string().contains("garbage.pem"), "{e}");

    let broken = tmp.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = err(&broken, &ca.key_pem);
    assert!(e.to_string().contains("broken.pem"), "{e}");

    // A certificate where the key should be: no key in it.
    let e = err(&ca.cert_pem, &ca.cert_pem);
    assert!(matches!(e, TlsError::Key { .. }), "{e:?}");
    assert!(e.to_string().contains("server.pem"), "{e}");

    // Somebody else's key.
    let stray = stray_key(&tmp.path().join("stray.key"));
    let e = err(&ca.cert_pem, &stray);
    assert!(matches!(e, TlsError::Mismatch { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("stray.key") && text.contains("server.pem"),
        "{text}"
    );

    // The right pair.
    assert!(ServerTls::from_pem_files(&ca.cert_pem, &ca.key_pem).is_ok());
}
