//! A test certificate authority (rcgen): a CA, a server certificate for `127.0.0.1`,
//! `localhost` and `::1` signed by it, and their PEM files in a directory, for HTTPS tests
//! with our client and with clients that are not ours (`curl --cacert`).
//!
//! ```ignore
//! let ca = TestCa::new(dir.path());            // dir/ca.pem, dir/server.pem, dir/server.key
//! let tls = ca.server_tls();                    // for ServeOptions::tls
//! // or the CLI: --tls-cert dir/server.pem --tls-key dir/server.key, clients --ca-file dir/ca.pem
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The names every test server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// A CA whose files are in `dir`, and a server certificate it signed.
pub struct TestCa {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The CA's certificate (PEM): what clients trust (`--ca-file`, `curl --cacert`).
    pub ca_pem: PathBuf,
    /// The server's certificate chain (PEM): `--tls-cert`.
    pub cert_pem: PathBuf,
    /// The server's private key (PEM, PKCS#8): `--tls-key`.
    pub key_pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA and a server certificate for [`SERVER_NAMES`], written as `ca.pem`,
    /// `server.pem` and `server.key` in `dir` (created if needed).
    pub fn new(dir: &Path) -> TestCa {
        TestCa::named(dir, "server", &SERVER_NAMES)
    }

    /// A new CA and a server certificate for `names`, written as `ca.pem`, `<stem>.pem` and
    /// `<stem>.key` in `dir`.
    pub fn named(dir: &Path, stem: &str, names: &[&str]) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own, so a client trusting another test CA finds no issuer by name.
        let id = hex::encode(&ca_key.public_key_raw()[..6]);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Geo test CA {id}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let mut ca = TestCa {
            dir: dir.to_path_buf(),
            ca_pem,
            cert_pem: PathBuf::new(),
            key_pem: PathBuf::new(),
            issuer,
        };
        let (cert, key) = ca.issue(stem, names);
        ca.cert_pem = cert;
        ca.key_pem = key;
        ca
    }

    /// Another server certificate signed by this CA, for `names`: `<stem>.pem` and
    /// `<stem>.key` in the CA's directory.
    pub fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Geo test server");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_pem = self.dir.join(format!("{stem}.pem"));
        let key_pem = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_pem, cert.pem()).unwrap();
        write_private(&key_pem, &key.serialize_pem());
        (cert_pem, key_pem)
    }

    /// The server side of the certificate, for `ServeOptions::tls`.
    pub fn server_tls(&self) -> geo_node::tls::ServerTls {
        geo_node::tls::ServerTls::from_pem_files(&self.cert_pem, &self.key_pem).unwrap()
    }

    /// The CA certificate's PEM text.
    pub fn ca_pem_text(&self) -> String {
        std::fs::read_to_string(&self.ca_pem).unwrap()
    }
}

/// A private key that is not any certificate's, written to `path` (PEM, PKCS#8).
pub fn stray_key(path: &Path) -> PathBuf {
    write_private(path, &KeyPair::generate().unwrap().serialize_pem());
    path.to_path_buf()
}

/// Writes `text` readable by its owner only, as a key file should be.
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}
