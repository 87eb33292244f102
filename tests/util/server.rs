//! A real strongroom server on loopback for tests: a CA and a certificate
//! for 127.0.0.1 made with `strongroom ca`, accounts made with
//! `strongroom server account add`, and `strongroom -v server serve` on a
//! port the kernel picks, logging every request to a file. The server is
//! killed when the value drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use super::BIN;

/// The test CA and the server certificate, made once per test process.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca_dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn run(args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> std::process::Output {
    let o = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "strongroom {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pki-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let ca_dir = dir.path().join("ca");
        let certs = dir.path().join("certs");
        run(
            &[
                "ca".as_ref(),
                "init".as_ref(),
                "--out".as_ref(),
                ca_dir.as_os_str(),
            ],
            &[],
        );
        run(
            &[
                "ca".as_ref(),
                "issue".as_ref(),
                "--ca".as_ref(),
                ca_dir.as_os_str(),
                "--host".as_ref(),
                "127.0.0.1".as_ref(),
                "--out".as_ref(),
                certs.as_os_str(),
            ],
            &[],
        );
        Pki {
            ca: ca_dir.join("ca.pem"),
            cert: certs.join("127.0.0.1.pem"),
            key: certs.join("127.0.0.1.key"),
            ca_dir,
            _dir: dir,
        }
    })
}

/// The accounts every test server has, on repository `r` (and `other`'s
/// on `elsewhere`): name, password, role.
pub const ACCOUNTS: [(&str, &str, &str); 4] = [
    ("admin", "admin-password", "r=admin"),
    ("host", "host-password", "r=writer"),
    ("audit", "audit-password", "r=reader"),
    ("other", "other-password", "elsewhere=admin"),
];

pub fn password(account: &str) -> &'static str {
    ACCOUNTS
        .iter()
        .find(|a| a.0 == account)
        .map(|a| a.1)
        .unwrap_or("no-such-password")
}

/// Adds [`ACCOUNTS`] to a store (`--data DIR` or `--s3 URL` arguments).
pub fn add_accounts(store: &[String], envs: &[(&str, &str)]) {
    for (name, pw, role) in ACCOUNTS {
        let mut args: Vec<std::ffi::OsString> = vec![
            "-q".into(),
            "server".into(),
            "account".into(),
            "add".into(),
            name.into(),
            "--role".into(),
            role.into(),
        ];
        args.extend(store.iter().map(Into::into));
        let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
        let mut e = envs.to_vec();
        e.push(("STRONGROOM_PASSWORD", pw));
        run(&a, &e);
    }
}

/// `--s3` arguments of a fresh prefix of the test Garage bucket, with
/// [`ACCOUNTS`] added, and the environment a server on it needs.
pub fn s3_store(test: &str) -> (Vec<String>, Vec<(String, String)>) {
    let store = vec!["--s3".to_string(), super::garage::repo_url(test)];
    let envs: Vec<(String, String)> = super::garage::client_env()
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let e: Vec<(&str, &str)> = envs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    add_accounts(&store, &e);
    (store, envs)
}

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub store: Vec<String>,
    envs: Vec<(String, String)>,
    pub log: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Server {
    /// A server on a fresh `--data` directory `dir`, with [`ACCOUNTS`].
    pub fn on_data(dir: &Path) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let store = vec!["--data".to_string(), dir.to_str().unwrap().to_string()];
        add_accounts(&store, &[]);
        Server::start(store, Vec::new(), dir.with_extension("log"), 0)
    }

    /// A server on a fresh prefix of the test process's Garage bucket
    /// (`--s3`), with [`ACCOUNTS`]; `log` is where it logs.
    pub fn on_s3(test: &str, log: PathBuf) -> Server {
        let (store, envs) = s3_store(test);
        Server::start(store, envs, log, 0)
    }

    /// Starts `server serve` on `store` (accounts already there), on
    /// `port` (0: any).
    pub fn start(store: Vec<String>, envs: Vec<(String, String)>, log: PathBuf, port: u16) -> Server {
        let pki = pki();
        Server::start_with(store, envs, log, port, (&pki.cert, &pki.key))
    }

    /// As [`Server::start`], with another certificate and key.
    pub fn start_with(
        store: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
        port: u16,
        (cert, key): (&Path, &Path),
    ) -> Server {
        let mut s = Server {
            child: None,
            port,
            store,
            envs,
            log,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        s.restart();
        s
    }

    /// (Re)starts the process, on the same port if it had one.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(BIN)
            .env_clear()
            .envs(self.envs.iter().map(|(a, b)| (a.as_str(), b.as_str())))
            .args(["-v", "server", "serve", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .args(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("https://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("the server did not start: {line:?}\n{}", self.log_text())
            });
        self.port = port;
        self.child = Some(child);
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, account: &str, repo: &str) -> String {
        format!("https://{account}@127.0.0.1:{}/{repo}", self.port)
    }

    /// The environment a client of `account` needs.
    pub fn client_env(&self, account: &str) -> Vec<(String, String)> {
        vec![
            ("STRONGROOM_CA".into(), pki().ca.to_str().unwrap().into()),
            ("STRONGROOM_PASSWORD".into(), password(account).into()),
        ]
    }

    /// The server's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        kb * 1024
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Requests logged so far whose line contains `needle`.
    pub fn requests(&self, needle: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(needle)).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request over TLS written by hand, exactly as given (no URL
/// normalisation): (status, headers, body).
pub fn raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    use std::sync::Arc;
    let pem = std::fs::read(&pki().ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    let declared = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !declared && (!body.is_empty() || method == "PUT" || method == "POST") {
        req += &format!("Content-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    tls.write_all(req.as_bytes()).unwrap();
    let _ = tls.write_all(body);
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, head, out[split + 4..].to_vec())
}

/// Logs `account` in over raw HTTP and returns its session token.
pub fn login(port: u16, account: &str) -> String {
    let body = serde_json::json!({ "account": account, "password": password(account), "repository": "r" });
    let (status, _, body) = raw(port, "POST", "/_login", &[], body.to_string().as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// strongroom's own https:// backend for `account` on repository `r` of
/// `server`, trusting the test CA.
pub fn client(server: &Server, account: &str) -> strongroom::backend::https::Https {
    let trust = strongroom::backend::https::Trust {
        pem: std::fs::read(&pki().ca).unwrap(),
        source: "the test CA".into(),
    };
    let password = zeroize::Zeroizing::new(password(account).as_bytes().to_vec());
    strongroom::backend::https::Https::new(&server.url(account, "r"), trust, password).unwrap()
}
