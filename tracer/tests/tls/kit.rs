//! The TLS tests' kit: a CA and certificates made with openssl, an agent
//! started with a web config, and curl.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crate::common::{free_addr, require_root, wait_until};

pub const USER: &str = "prometheus";
pub const PASSWORD: &str = "correct horse battery staple";

/// A directory of its own with a CA, a server certificate for 127.0.0.1
/// signed by it, and a web config; removed on drop.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let pki = Pki {
            dir: crate::common::scratch("tracer-tls-"),
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        pki.openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "1", "-subj", "/CN=tracer test CA"],
                &["-keyout", "ca-key.pem", "-out", "ca.pem"],
            ]
            .concat(),
        );
        pki.openssl(
            &[
                &["req"][..],
                &ec,
                &["-subj", "/CN=tracer"],
                &["-keyout", "key.pem", "-out", "server.csr"],
            ]
            .concat(),
        );
        std::fs::write(
            pki.path("server.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n\
             keyUsage = digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .expect("ext file");
        pki.sign("server.csr", "server.ext", "cert.pem");
        pki
    }

    /// Sign the request `csr` with the test CA, extensions from `ext`, into
    /// `out` (a day's validity).
    pub fn sign(&self, csr: &str, ext: &str, out: &str) {
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            ext,
            "-out",
            out,
        ]);
    }

    pub fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl (Debian package `openssl`; cargo xtask test installs it)");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `text` to `name` in the directory; its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// A web config with TLS (paths relative to the file, as node_exporter
    /// takes them) and one basic auth user.
    pub fn web_config(&self) -> PathBuf {
        let hash = bcrypt::hash(PASSWORD, 10).expect("bcrypt");
        self.write(
            "web.yml",
            &format!(
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n\
                 basic_auth_users:\n  {USER}: {hash}\n"
            ),
        )
    }
}

/// `tracer run --web-config` on a free loopback port; killed on drop.
pub struct TlsAgent {
    pub child: Child,
    pub addr: SocketAddr,
    pub ca: PathBuf,
}

impl TlsAgent {
    /// Start it, and wait until /healthz answers 200 over TLS with the
    /// right credentials.
    pub fn start(pki: &Pki, web_config: &Path) -> TlsAgent {
        let mut agent = TlsAgent::spawn(pki, web_config);
        let addr = agent.addr;
        let up = wait_until(crate::common::STARTUP, || {
            matches!(agent.child.try_wait(), Ok(None))
                && agent.curl("/healthz", Some((USER, PASSWORD))).code == Some(200)
        });
        assert!(
            up,
            "tracer run --web-config did not become healthy on {addr}"
        );
        agent
    }

    /// Start it without waiting: for a test whose clients need more than
    /// [`TlsAgent::curl`] sends.
    pub fn spawn(pki: &Pki, web_config: &Path) -> TlsAgent {
        require_root();
        let addr = free_addr();
        let child = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(["run", "--netns", "host", "--listen", &addr.to_string()])
            .arg("--web-config")
            .arg(web_config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tracer run");
        TlsAgent {
            child,
            addr,
            ca: pki.path("ca.pem"),
        }
    }

    /// curl https://ADDR/PATH, trusting the test CA.
    pub fn curl(&self, path: &str, creds: Option<(&str, &str)>) -> Curl {
        let mut args = vec![
            "--cacert".to_owned(),
            self.ca.display().to_string(),
            format!("https://{}{path}", self.addr),
        ];
        if let Some((u, p)) = creds {
            args.extend(["-u".to_owned(), format!("{u}:{p}")]);
        }
        curl(&args)
    }
}

impl Drop for TlsAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl got: the status (None when no HTTP answer came), headers
/// and body, and its stderr.
pub struct Curl {
    pub code: Option<u16>,
    pub head: String,
    pub body: String,
    pub err: String,
}

/// Run curl with `args` (at most 10 s), headers included.
pub fn curl(args: &[String]) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "-o", "-"])
        .args(args)
        .output()
        .expect("curl (Debian package `curl`; cargo xtask test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map_or((text.clone(), String::new()), |(h, b)| {
            (h.to_owned(), b.to_owned())
        });
    let code = out
        .status
        .success()
        .then(|| head.split_whitespace().nth(1)?.parse().ok())
        .flatten();
    Curl {
        code,
        head,
        body,
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
