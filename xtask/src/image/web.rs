//! The agent's HTTP side as the DaemonSet sets it up: the Secret its
//! `--web-config` reads (a CA, a certificate for the name `tracer` signed
//! by it, its key, and a web config with one basic-auth user), made with
//! the openssl commands docs/kubernetes.md gives, with the Secret's mode
//! and the pod's fsGroup; and the client the checks use (curl), which
//! checks the certificate against that CA and that name, and sends the
//! credentials. Without `--web-config` in the manifest, plain HTTP.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The web config's one user.
const USER: &str = "smoke";
/// Its password: a throwaway, for an agent on 127.0.0.1 that lives for the
/// seconds of the smoke test.
const PASSWORD: &str = "tracer-image-smoke";
/// bcrypt of [`PASSWORD`] at cost 4 (the lowest the agent accepts: every
/// request pays for it), made once with glibc's crypt(3) (Python's
/// `crypt.crypt(PASSWORD, "$2b$04$" + salt)`), as `htpasswd -nbBC 4` would.
const HASH: &str = "$2b$04$f4wFborrQDx9J66Ladyubed8RR/XQPkwpf2uHOMwq48MDohs4MWiu";
/// The name the certificate is for (docs/kubernetes.md: one certificate
/// for every node, checked by name).
const NAME: &str = "tracer";

/// How the checks reach the agent.
pub struct Client {
    /// `http://127.0.0.1:PORT` or `https://tracer:PORT`.
    base: String,
    /// curl's flags for TLS: the CA and the name's address.
    tls: Vec<String>,
    /// curl's flags for the credentials.
    auth: Vec<String>,
}

impl Client {
    /// Plain HTTP, no credentials.
    pub fn plain(port: u16) -> Client {
        Client {
            base: format!("http://127.0.0.1:{port}"),
            tls: Vec::new(),
            auth: Vec::new(),
        }
    }

    /// TLS to `tracer` (resolved to 127.0.0.1) checked against `ca`, with
    /// basic auth.
    pub fn tls(port: u16, ca: &Path) -> Client {
        Client {
            base: format!("https://{NAME}:{port}"),
            tls: vec![
                "--cacert".to_owned(),
                ca.display().to_string(),
                "--resolve".to_owned(),
                format!("{NAME}:{port}:127.0.0.1"),
            ],
            auth: vec!["--user".to_owned(), format!("{USER}:{PASSWORD}")],
        }
    }

    /// True when the agent is reached over TLS with basic auth.
    pub fn is_tls(&self) -> bool {
        self.base.starts_with("https:")
    }

    /// GET `path`: the body of a 200, an error naming anything else.
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--max-time", "5"])
            .args(&self.tls)
            .args(&self.auth)
            .arg(&url)
            .output()
            .context("curl is needed for the smoke test (apt-get install curl)")?;
        if !out.status.success() {
            bail!("GET {url}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The status of GET `path` with the right CA but no credentials.
    pub fn status_without_credentials(&self, path: &str) -> anyhow::Result<u16> {
        let url = format!("{}{path}", self.base);
        let out = Command::new("curl")
            .args(["--silent", "--max-time", "5", "--output", "/dev/null"])
            .args(["--write-out", "%{http_code}"])
            .args(&self.tls)
            .arg(&url)
            .output()
            .context("starting curl")?;
        let code = String::from_utf8_lossy(&out.stdout);
        code.trim()
            .parse()
            .with_context(|| format!("GET {url}: curl printed {code:?}"))
    }
}

/// Write the Secret's files into `dir`: `web` (the web config's name, as
/// the agent's `--web-config` names it), `tls.crt`, `tls.key`, with mode
/// `mode` and group `group` (the pod's fsGroup); the CA beside `dir`.
/// Returns the CA's certificate, for the client.
pub fn make_secret(
    dir: &Path,
    web: &str,
    mode: u32,
    group: Option<u32>,
) -> anyhow::Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_dir = dir.with_extension("ca");
    let _ = std::fs::remove_dir_all(&ca_dir);
    std::fs::create_dir_all(&ca_dir)?;
    let (ca_key, ca) = (ca_dir.join("ca.key"), ca_dir.join("ca.crt"));
    let (csr, ext) = (ca_dir.join("tls.csr"), ca_dir.join("tls.ext"));
    let (key, crt) = (dir.join("tls.key"), dir.join("tls.crt"));
    let p = |p: &Path| p.display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=tracer CA",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={NAME}"),
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
    ])?;
    std::fs::write(
        &ext,
        format!("subjectAltName = DNS:{NAME}\nextendedKeyUsage = serverAuth\n"),
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&crt),
    ])?;
    std::fs::write(
        dir.join(web),
        format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  {USER}: {HASH}\n"
        ),
    )?;
    for f in [web, "tls.crt", "tls.key"] {
        let f = dir.join(f);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", f.display()))?;
        std::os::unix::fs::chown(&f, Some(0), group)
            .with_context(|| format!("chown {}", f.display()))?;
    }
    Ok(ca)
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("openssl is needed for the agent's certificate (apt-get install openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
