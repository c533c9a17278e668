//! `tls_server_config` as a rustls server config (ring provider): the
//! certificate chain and key, the protocol versions, and client
//! certificates when `client_auth_type` asks for them.
use std::{path::Path, sync::Arc};

use anyhow::Context as _;
use rustls::{
    RootCertStore, ServerConfig, SupportedProtocolVersion,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio_rustls::TlsAcceptor;

use super::{TlsFile, resolve};

/// node_exporter's `client_auth_type` values that rustls can do.
const CLIENT_AUTH_TYPES: &str =
    "NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert";

/// Build the acceptor `t` describes; paths relative to `dir`.
pub(super) fn acceptor(t: &TlsFile, dir: &Path) -> anyhow::Result<TlsAcceptor> {
    let key_of = |k: &str| format!("key tls_server_config.{k}");
    let (Some(cert_file), Some(key_file)) = (&t.cert_file, &t.key_file) else {
        let missing = if t.cert_file.is_none() {
            "cert_file"
        } else {
            "key_file"
        };
        anyhow::bail!(
            "{} is missing: TLS needs both cert_file and key_file",
            key_of(missing)
        );
    };
    let cert_path = resolve(dir, cert_file);
    let certs = certificates(&cert_path).with_context(|| key_of("cert_file"))?;
    let key_path = resolve(dir, key_file);
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| anyhow::anyhow!("{}: {}", key_path.display(), pem_error(&e, "private key")))
        .with_context(|| key_of("key_file"))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = versions(t)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .context("choosing TLS versions")?;
    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth_type {
        "NoClientCert" | "" => {
            if t.client_ca_file.is_some() {
                anyhow::bail!(
                    "{} is given but client_auth_type is NoClientCert: set client_auth_type to \
                     RequireAndVerifyClientCert (or VerifyClientCertIfGiven), or remove it",
                    key_of("client_ca_file")
                );
            }
            builder.with_no_client_auth()
        }
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let Some(ca_file) = &t.client_ca_file else {
                anyhow::bail!(
                    "{} is missing: client_auth_type {auth_type} verifies client certificates \
                     against it",
                    key_of("client_ca_file")
                );
            };
            let ca_path = resolve(dir, ca_file);
            let mut roots = RootCertStore::empty();
            for c in certificates(&ca_path).with_context(|| key_of("client_ca_file"))? {
                roots.add(c).map_err(|e| {
                    anyhow::anyhow!("{}: {}: {e}", key_of("client_ca_file"), ca_path.display())
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if auth_type == "VerifyClientCertIfGiven" {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| anyhow::anyhow!("{}: {e}", key_of("client_ca_file")))?;
            builder.with_client_cert_verifier(verifier)
        }
        other => anyhow::bail!(
            "{}: {other:?} is not supported: give {CLIENT_AUTH_TYPES}",
            key_of("client_auth_type")
        ),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        anyhow::anyhow!(
            "{} and key_file do not make a usable pair ({} and {}): {e}",
            key_of("cert_file"),
            cert_path.display(),
            key_path.display()
        )
    })?;
    // Prometheus's client offers h2 and http/1.1; the server speaks the latter.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The most of a PEM file read for certificates: a system's CA bundle is
/// about 220 KiB.
const MAX_PEM_BYTES: u64 = 16 << 20;

/// Every PEM certificate in the first [`MAX_PEM_BYTES`] of `path`, at
/// least one: the agent's own and its clients' CA here, and the CA a
/// command trusts an agent by (`tracer leaks --agent-ca`).
pub(crate) fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use std::io::Read as _;
    let certs = std::fs::File::open(path)
        .map_err(rustls::pki_types::pem::Error::Io)
        .and_then(|f| {
            CertificateDer::pem_reader_iter(f.take(MAX_PEM_BYTES)).collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), pem_error(&e, "certificate")))?;
    if certs.is_empty() {
        anyhow::bail!("{}: holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// A PEM reading error in words.
fn pem_error(e: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot be read: {io}"),
        Error::NoItemsFound => format!("holds no PEM {what}"),
        other => format!("is not a PEM {what}: {other:?}"),
    }
}

/// `min_version` and `max_version`: TLS12 (node_exporter's default
/// minimum) and TLS13, the versions rustls speaks.
fn versions(t: &TlsFile) -> anyhow::Result<Vec<&'static SupportedProtocolVersion>> {
    let rank = |key: &str, v: &Option<String>, default: u8| -> anyhow::Result<u8> {
        match v.as_deref() {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(v @ ("TLS10" | "TLS11")) => anyhow::bail!(
                "key tls_server_config.{key}: {v} is not supported: rustls speaks TLS12 and TLS13"
            ),
            Some(v) => anyhow::bail!("key tls_server_config.{key}: {v:?} is not TLS12 or TLS13"),
        }
    };
    let min = rank("min_version", &t.min_version, 12)?;
    let max = rank("max_version", &t.max_version, 13)?;
    if min > max {
        anyhow::bail!("key tls_server_config.min_version: TLS{min} is above max_version TLS{max}");
    }
    Ok(
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect(),
    )
}
