//! The web config file: what it accepts, and one sentence for each thing
//! wrong in it, naming the key.
use std::path::Path;

use super::*;

/// A self-signed certificate and its key, made by the openssl CLI in a
/// directory of the test's own, removed on drop.
struct Pki(tempfile::TempDir);

/// `None` when openssl is not installed (the test says it skips).
fn pki(test: &str) -> Option<Pki> {
    let pki = Pki(tempfile::Builder::new()
        .prefix(&format!("tracer-web-{test}-"))
        .tempdir()
        .ok()?);
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=tracer"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(pki.0.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    made.then_some(pki)
}

fn error(text: &str, dir: &Path) -> String {
    match Gate::parse(text, dir) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => format!("{e:#}"),
    }
}

/// A bcrypt hash of "secret" at the lowest cost, to keep the tests quick.
fn hash() -> String {
    bcrypt::hash("secret", 4).unwrap()
}

#[test]
fn basic_auth_alone_is_accepted() {
    let g = Gate::parse(
        &format!("basic_auth_users:\n  alice: {}\n", hash()),
        Path::new("/"),
    )
    .unwrap();
    assert!(g.tls.is_none());
    assert!(g.users.is_some());
    assert_eq!(Gate::scheme(Some(&g)), "http");
}

#[test]
fn relative_paths_are_taken_from_the_files_directory() {
    let Some(pki) = pki("relative") else {
        eprintln!("skipped: no openssl");
        return;
    };
    let dir = pki.0.path();
    let g = Gate::parse(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\n",
        dir,
    )
    .unwrap();
    assert!(g.tls.is_some());
    assert_eq!(Gate::scheme(Some(&g)), "https");
    let err = error(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
        Path::new("/nonexistent"),
    );
    assert!(
        err.contains("key tls_server_config.cert_file") && err.contains("/nonexistent/cert.pem"),
        "{err}"
    );
}

#[test]
fn each_mistake_is_one_sentence_naming_the_key() {
    let pki = pki("mistakes");
    let d = pki.as_ref().map_or(Path::new("/"), |p| p.0.path());
    let mut table = vec![
        ("", "holds neither tls_server_config nor basic_auth_users"),
        (
            "tls_server_config:\n  cert_fil: x\n",
            "unknown field `cert_fil`",
        ),
        (
            "http_server_config:\n  http2: false\n",
            "unknown field `http_server_config`",
        ),
        (
            "basic_auth_users:\n  alice: notahash\n",
            "key basic_auth_users.alice: not a bcrypt hash",
        ),
        ("basic_auth_users:\n  alice: [1, 2]\n", "basic_auth_users"),
        ("basic_auth_users: {}\n", "holds no user"),
        ("basic_auth_users:\n  alice: \"x\n", "line"),
        (
            "tls_server_config:\n  key_file: k.pem\n",
            "key tls_server_config.cert_file is missing",
        ),
        (
            "tls_server_config:\n  cert_file: c.pem\n",
            "key tls_server_config.key_file is missing",
        ),
        (
            "tls_server_config:\n  cert_file: /nope/c.pem\n  key_file: /nope/k.pem\n",
            "key tls_server_config.cert_file: /nope/c.pem: cannot be read",
        ),
    ];
    if pki.is_some() {
        table.extend([
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: nope.pem\n",
                "key tls_server_config.key_file",
            ),
            (
                "tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n",
                "holds no PEM certificate",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: cert.pem\n",
                "holds no PEM private key",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS11\n",
                "key tls_server_config.min_version: TLS11 is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: RequestClientCert\n",
                "key tls_server_config.client_auth_type: \"RequestClientCert\" is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
                "key tls_server_config.client_ca_file is missing",
            ),
        ]);
    }
    for (text, says) in table {
        let err = error(text, d);
        assert!(err.contains(says), "{text:?}: {err}");
        assert!(!err.contains('\n'), "{text:?}: {err}");
    }
}

#[test]
fn client_certificates_can_be_required() {
    let Some(pki) = pki("client-ca") else {
        eprintln!("skipped: no openssl");
        return;
    };
    let dir = pki.0.path();
    let g = Gate::parse(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: cert.pem\n",
        dir,
    );
    assert!(g.is_ok(), "{:#}", g.err().unwrap());
}

#[test]
fn a_password_is_checked_once_then_remembered() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let users = Users::new([("alice".to_owned(), hash())].into()).unwrap();
    let basic = |s: &str| {
        use base64::Engine as _;
        hyper::header::HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        ))
        .unwrap()
    };
    rt.block_on(async {
        assert_eq!(users.check(None).await, Err(Refusal::Missing));
        assert_eq!(
            users.check(Some(&basic("alice:wrong"))).await,
            Err(Refusal::Wrong)
        );
        assert_eq!(
            users.check(Some(&basic("bob:secret"))).await,
            Err(Refusal::Wrong)
        );
        assert_eq!(users.check(Some(&basic("alice:secret"))).await, Ok(()));
        let digest = users.digest(b"alice", b"secret");
        assert!(users.remembers(&digest));
        assert!(!users.remembers(&users.digest(b"alic", b"esecret")));
        assert_eq!(users.check(Some(&basic("alice:secret"))).await, Ok(()));
    });
}
