//! The strongroom server as an attacker meets it: certificates that must
//! not be trusted, plain HTTP, wrong passwords, a writer that tries to
//! destroy history, an account reaching for another's repositories,
//! hostile names and bodies sent as raw HTTP (no client library to
//! normalise them), and a look at what the server stores.

mod util;

use std::path::Path;

use strongroom::backend::https::Https;
use strongroom::backend::{Backend, Kind};
use util::server::{Server, login, pki, raw};
use util::{Env, sample};

/// A certificate for `names`, signed by the test CA, valid from
/// `from_days` to `to_days` from now; written to DIR/NAME.pem and .key.
fn certificate(
    dir: &Path,
    file: &str,
    ip: Option<&str>,
    dns: Option<&str>,
    from_days: i64,
    to_days: i64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let p = pki();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(p.ca_dir.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(&p.ca).unwrap(), ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    if let Some(ip) = ip {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(ip.parse().unwrap()));
    }
    if let Some(dns) = dns {
        params
            .subject_alt_names
            .push(rcgen::SanType::DnsName(dns.try_into().unwrap()));
    }
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (c, k) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn certificates_from_another_ca_expired_or_for_another_host_are_refused() {
    let env = Env::https("admin");
    env.init();
    // Another CA's certificate, trusted by nobody here.
    let other = env.path("other-ca");
    env.cmd()
        .args(["ca", "init", "--out"])
        .arg(&other)
        .output()
        .unwrap();
    let r = env
        .cmd()
        .arg("--ca")
        .arg(other.join("ca.pem"))
        .arg("-r")
        .arg(env.repo_arg())
        .arg("-k")
        .arg(&env.keys.full)
        .arg("snapshots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the server's certificate is not signed by the strongroom CA trusted here"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("gave up after"),
        "a refused certificate is not retried: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Servers with bad certificates of the right CA, on the same data.
    let data = env.server().store.clone();
    for (name, ip, dns, from, to, says) in [
        ("expired", Some("127.0.0.1"), None, -30, -1, "has expired"),
        ("future", Some("127.0.0.1"), None, 10, 30, "not valid yet"),
        (
            "elsewhere",
            None,
            Some("backup.example.org"),
            -1,
            30,
            "is not for https://127.0.0.1",
        ),
    ] {
        let (c, k) = certificate(&env.path("certs"), name, ip, dns, from, to);
        let bad = Server::start_with(
            data.clone(),
            Vec::new(),
            env.path(&format!("{name}.log")),
            0,
            (&c, &k),
        );
        let url = bad.url("admin", "r");
        let r = env
            .cmd()
            .arg("-r")
            .arg(&url)
            .arg("-k")
            .arg(&env.keys.full)
            .arg("snapshots")
            .envs(bad.client_env("admin"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
}

#[test]
fn plain_http_is_refused_by_client_and_server() {
    let env = Env::https("admin");
    let url = env.server().url("admin", "r").replace("https://", "http://");
    let r = env
        .cmd()
        .arg("-r")
        .arg(&url)
        .arg("-k")
        .arg(&env.keys.full)
        .arg("snapshots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("plain http:// is refused"), "{stderr}");
    // The server answers plain HTTP with nothing HTTP.
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", env.server().port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("HTTP/1."), "{got:?}");
}

#[test]
fn a_wrong_password_gets_one_sentence_and_exit_1() {
    let mut env = Env::https("admin");
    env.init();
    let (url, mut vars) = env.remote.clone().unwrap();
    vars.retain(|(k, _)| k != "STRONGROOM_PASSWORD");
    vars.push(("STRONGROOM_PASSWORD".into(), "not-the-password".into()));
    env.remote = Some((url, vars));
    let r = env.run(&["snapshots"]).fails(1);
    let stderr = r.stderr();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refused the password of account admin"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("gave up"),
        "a refused password is not retried: {stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");
}

fn https_as(server: &Server, account: &str) -> Https {
    util::server::client(server, account)
}

#[test]
fn a_writer_can_neither_delete_nor_overwrite() {
    let env = Env::https("admin");
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let server = env.server();
    let admin = https_as(server, "admin");
    let snapshot = admin.list(Kind::Snapshots).unwrap()[0].name.clone();
    let pack = admin.list(Kind::Packs).unwrap()[0].name.clone();
    let config = admin.read(Kind::Config, "config").unwrap();
    // Through the client's own backend.
    let host = https_as(server, "host");
    assert!(host.append_only());
    for (kind, name) in [(Kind::Snapshots, &snapshot), (Kind::Packs, &pack)] {
        let e = host.delete(kind, name).unwrap_err();
        assert!(
            format!("{e:#}").contains("is a writer of repository r and may not delete"),
            "{e:#}"
        );
    }
    let e = host.write(Kind::Config, "config", b"replaced").unwrap_err();
    assert!(
        format!("{e:#}").contains("may not replace the repository's config"),
        "{e:#}"
    );
    // A new object under a name that is not its content's hash.
    assert!(host.write(Kind::Snapshots, &snapshot, b"other bytes").is_err());
    // Directly over HTTP.
    let token = login(server.port, "host");
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    for path in [
        format!("/r/snapshots/{snapshot}"),
        format!("/r/packs/{pack}"),
        "/r/config".into(),
    ] {
        let (status, _, body) = raw(server.port, "DELETE", &path, &h, b"");
        assert_eq!(status, 403, "DELETE {path}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _, _) = raw(server.port, "PUT", "/r/config", &h, b"replaced");
    assert_eq!(status, 403);
    let (status, _, body) = raw(
        server.port,
        "PUT",
        &format!("/r/snapshots/{snapshot}"),
        &h,
        b"other bytes",
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    // The writer may add, and take and remove its own lock, not another's.
    let lock = b"a lock's sealed bytes";
    let lock_name = strongroom::backend::suite::name_of(lock);
    let (status, _, _) = raw(server.port, "PUT", &format!("/r/locks/{lock_name}"), &h, lock);
    assert_eq!(status, 201);
    let (status, _, _) = raw(server.port, "DELETE", &format!("/r/locks/{lock_name}"), &h, b"");
    assert_eq!(status, 204);
    admin.write(Kind::Locks, &lock_name, lock).unwrap();
    let (status, _, _) = raw(server.port, "DELETE", &format!("/r/locks/{lock_name}"), &h, b"");
    assert_eq!(status, 403);
    // Everything is still there, unchanged: the repository checks clean.
    assert_eq!(admin.read(Kind::Config, "config").unwrap(), config);
    admin.stat(Kind::Snapshots, &snapshot).unwrap();
    admin.stat(Kind::Packs, &pack).unwrap();
    admin.delete(Kind::Locks, &lock_name).unwrap();
    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn an_account_sees_only_the_repositories_it_holds_a_role_on() {
    let env = Env::https("admin");
    env.init();
    let port = env.server().port;
    let token = login(port, "other");
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    let (status, _, body) = raw(port, "GET", "/", &h, b"");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!({ "elsewhere": "admin" }));
    for path in ["/r/config", "/r/snapshots/", "/r/keys/"] {
        let (status, _, body) = raw(port, "GET", path, &h, b"");
        assert_eq!(status, 403, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let other = https_as(env.server(), "other");
    let e = other.read(Kind::Config, "config").unwrap_err();
    assert!(
        format!("{e:#}").contains("account other holds no role on repository r"),
        "{e:#}"
    );
    // Without a session, nothing at all.
    let (status, _, _) = raw(port, "GET", "/r/config", &[], b"");
    assert_eq!(status, 401);
    let forged = format!("Bearer admin:{}", &token[token.find(':').unwrap() + 1..]);
    let (status, _, _) = raw(
        port,
        "GET",
        "/r/config",
        &[("Authorization", forged.as_str())],
        b"",
    );
    assert_eq!(status, 401);
}

#[test]
fn hostile_names_and_bodies_are_rejected() {
    let env = Env::https("admin");
    env.init();
    let port = env.server().port;
    let token = login(port, "admin");
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    let hex = "ab".repeat(32);
    for path in [
        "/r/packs/..".to_string(),
        "/r/packs/%2e%2e".into(),
        "/r/%2e%2e/config".into(),
        "/%2e%2e/r/config".into(),
        "/../_server/config".into(),
        "/_server/config".into(),
        "/_server/keys/".into(),
        "/r/../_server/config".into(),
        format!("/r/packs/{}/{}", &hex[..2], hex),
        format!("/r/packs/{}%2f{}", &hex[..2], &hex[2..]),
        "/r/packs/%00".into(),
        format!("/r/packs/{}", hex.to_uppercase()),
        "/r/config/..".into(),
        "/r//config".into(),
        "/r/tmp/x".into(),
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let (status, _, body) = raw(port, method, &path, &h, b"x");
            assert!(
                matches!(status, 400 | 403 | 404 | 405),
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    // A NUL in the request line itself.
    let (status, _, _) = raw(port, "GET", "/r/packs/a\0b", &h, b"");
    assert_eq!(status, 400);
    // A body over what its kind may hold (a lock: 1 MiB).
    // Refused on its declared length, before any of it is read.
    let big = vec![0u8; (1 << 20) + 1];
    let name = strongroom::backend::suite::name_of(&big);
    let length = big.len().to_string();
    let declared = [h[0], ("Content-Length", length.as_str())];
    let (status, _, _) = raw(port, "PUT", &format!("/r/locks/{name}"), &declared, b"");
    assert_eq!(status, 413);
    // The store holds nothing outside its repositories and accounts.
    let data = env.path("server-data");
    let mut top: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["_server", "r"]);
}

#[test]
fn the_server_stores_no_plaintext() {
    let env = Env::https("admin");
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let marker = "strongroom-plaintext-marker-7f3a9c";
    let text: String = (0..2000).map(|i| format!("{marker} line {i}\n")).collect();
    std::fs::write(src.join(format!("{marker}.txt")), &text).unwrap();
    env.backup(&[&src]);
    let mut seen = 0;
    for f in util::files_under(&env.path("server-data")) {
        let bytes = std::fs::read(&f).unwrap();
        seen += bytes.len();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds plaintext",
            f.display()
        );
        assert!(!f.to_string_lossy().contains(marker));
    }
    assert!(seen > 0);
}

#[test]
fn a_password_change_ends_sessions_a_reset_token_works_once_and_failures_slow_logins() {
    let env = Env::https("admin");
    env.init();
    let server = env.server();
    let port = server.port;
    let token = login(port, "host");
    let auth = format!("Bearer {token}");
    let (status, _, _) = raw(port, "GET", "/r/config", &[("Authorization", auth.as_str())], b"");
    assert_eq!(status, 200);
    let account = |args: &[&str], password: Option<&str>| {
        let mut c = env.cmd();
        c.args(["server", "account"]).args(args).args(&server.store);
        if let Some(p) = password {
            c.env("STRONGROOM_PASSWORD", p);
        }
        c.output().unwrap()
    };
    let reset = account(&["reset", "host"], None);
    assert!(reset.status.success());
    let reset_token = String::from_utf8(reset.stdout).unwrap().trim().to_string();
    assert_eq!(reset_token.len(), 48);
    // The reset ended the session (once the server's few-second account
    // cache has passed), and the old password no longer works.
    let mut ended = false;
    for _ in 0..100 {
        let (status, _, _) = raw(port, "GET", "/r/config", &[("Authorization", auth.as_str())], b"");
        if status == 401 {
            ended = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(ended, "the session outlived the reset");
    // A wrong token, then the right one, then the right one again.
    let bad = account(&["passwd", "host", "--token", "00"], Some("new-host-password"));
    assert!(!bad.status.success());
    let good = account(
        &["passwd", "host", "--token", &reset_token],
        Some("new-host-password"),
    );
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let again = account(
        &["passwd", "host", "--token", &reset_token],
        Some("third-password"),
    );
    assert!(!again.status.success());
    let body = serde_json::json!({ "account": "host", "password": "new-host-password", "repository": "r" });
    let (status, _, _) = raw(port, "POST", "/_login", &[], body.to_string().as_bytes());
    assert_eq!(status, 200);
    // Failed logins slow the next ones for that account.
    let wrong = serde_json::json!({ "account": "audit", "password": "wrong", "repository": "r" });
    let (status, _, _) = raw(port, "POST", "/_login", &[], wrong.to_string().as_bytes());
    assert_eq!(status, 401);
    let (status, head, _) = raw(port, "POST", "/_login", &[], wrong.to_string().as_bytes());
    assert_eq!(status, 429, "{head}");
    assert!(head.to_lowercase().contains("retry-after"), "{head}");
    // The stored hash is a PHC string of 600,000 rounds.
    let stored = std::fs::read_to_string(env.path("server-data/_server/keys/host")).unwrap();
    assert!(stored.contains("$pbkdf2-sha256$i=600000,l=32$"), "{stored}");
}

#[test]
fn every_answer_carries_hsts() {
    let env = Env::https("admin");
    let port = env.server().port;
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/r/config"),
        ("POST", "/_login"),
        ("GET", "/%2e%2e"),
    ] {
        let (_, head, _) = raw(port, method, path, &[], b"");
        assert!(
            head.to_lowercase()
                .contains("strict-transport-security: max-age=31536000; includesubdomains"),
            "{method} {path}: {head}"
        );
    }
}
