//! Faults between the client and the strongroom server: the server killed
//! with SIGKILL in the middle of a backup and started again, the server
//! gone while a snapshot is mounted, and answers cut short or made up by
//! something that is not the server.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strongroom::backend::https::{Https, Trust};
use strongroom::backend::{Backend, Kind};
use util::fidelity::no_differences;
use util::fuse::mount;
use util::server::pki;
use util::{Env, random_file, under};

/// Waits until the server has logged `n` requests containing `needle`,
/// or `child` has ended; says which.
fn wait_for_requests(env: &Env, needle: &str, n: usize, child: &mut std::process::Child) -> bool {
    loop {
        if env.server().requests(needle) >= n {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_server_killed_mid_backup_and_started_again_leaves_a_repository_that_checks_clean() {
    let mut env = Env::https("host");
    env.run(&["init"]).ok();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..12 {
        random_file(&src.join(format!("f{i}")), 12 << 20, i + 1);
    }
    // The host's writer key and writer role, as a nightly backup runs.
    let mut backup = env
        .cmd()
        .arg("-r")
        .arg(env.repo_arg())
        .arg("-k")
        .arg(&env.keys.writer)
        .args(["backup", src.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_requests(&env, "PUT /r/packs/", 2, &mut backup),
        "the backup ended before two packs were stored"
    );
    let server = env.server.as_mut().unwrap();
    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    let out = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        // Or it gave up with one clear sentence.
        Some(1) => assert_eq!(stderr.trim().lines().count(), 1, "{stderr}"),
        other => panic!("backup ended with {other:?}: {stderr}"),
    }
    // Either way the next backup completes, and everything checks clean
    // and restores identically.
    env.writer(&["backup", src.to_str().unwrap()]).ok();
    env.as_account("admin");
    env.run(&["check", "--read-data"]).ok();
    let target = env.path("out");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    no_differences(&src, &under(&target, &src));
}

#[test]
fn reads_through_the_mount_fail_with_eio_while_the_server_is_gone_and_work_once_it_is_back() {
    let mut env = Env::https("admin");
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for (i, name) in ["a", "b"].iter().enumerate() {
        random_file(&src.join(name), 40 << 20, i as u64 + 7);
    }
    env.backup(&[&src]);
    let at = env.path("mnt");
    let mut m = mount(&env, &at, &["--snapshot", "latest", "--no-disk-cache"]);
    let inside = under(&at, &src);
    assert_eq!(
        std::fs::read(inside.join("a")).unwrap(),
        std::fs::read(src.join("a")).unwrap()
    );
    env.server.as_mut().unwrap().kill();
    let started = Instant::now();
    let err = std::fs::read(inside.join("b")).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    eprintln!("a read with the server gone failed with EIO after {took:?}");
    assert!(took < Duration::from_secs(60), "the read took {took:?}");
    env.server.as_mut().unwrap().restart();
    assert_eq!(
        std::fs::read(inside.join("b")).unwrap(),
        std::fs::read(src.join("b")).unwrap()
    );
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
}

/// A TLS server with the test certificate that answers every request with
/// `answer(request line)`: not the strongroom server, but what a broken
/// proxy or a hostile machine at its address could send.
fn impostor(answer: fn(&str) -> Vec<u8>) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let p = pki();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&p.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&p.key).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut r = BufReader::new(&mut tls);
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let mut length = 0usize;
                let mut h = String::new();
                while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    h.clear();
                }
                let mut body = vec![0u8; length];
                let _ = r.read_exact(&mut body);
                let _ = tls.write_all(&answer(&line));
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

fn client(port: u16) -> Https {
    let trust = Trust {
        pem: std::fs::read(&pki().ca).unwrap(),
        source: "the test CA".into(),
    };
    let password = zeroize::Zeroizing::new(b"pw".to_vec());
    Https::new(&format!("https://admin@127.0.0.1:{port}/r"), trust, password).unwrap()
}

fn login_or(line: &str, answer: &str) -> Vec<u8> {
    if line.starts_with("POST /_login") {
        let body = r#"{"token":"t","expires_in":60,"role":"admin"}"#;
        return format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
    }
    answer.as_bytes().to_vec()
}

#[test]
fn answers_cut_short_or_made_up_are_detected_never_served_as_data() {
    let name = "ab".repeat(32);
    // A body shorter than its Content-Length.
    let short = client(impostor(|l| {
        login_or(
            l,
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\nonly this much",
        )
    }));
    assert!(short.read(Kind::Packs, &name).is_err());
    // A range answered with other bytes than asked for.
    let shifted = client(impostor(|l| {
        login_or(
            l,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-19/100\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
        )
    }));
    let e = shifted.read_range(Kind::Packs, &name, 0, 10).unwrap_err();
    assert!(format!("{e:#}").contains("not the range asked for"), "{e:#}");
    // A whole object where a range was asked for.
    let whole = client(impostor(|l| {
        login_or(
            l,
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
        )
    }));
    assert!(whole.read_range(Kind::Packs, &name, 0, 5).is_err());
    // A listing with a name that is not a content hash, or one twice.
    let listing = client(impostor(|l| {
        let body = r#"[{"name":"../../etc/passwd","size":1}]"#;
        login_or(
            l,
            &format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .into_iter()
        .collect()
    }));
    let e = listing.list(Kind::Snapshots).unwrap_err();
    assert!(format!("{e:#}").contains("invalid or repeated name"), "{e:#}");
    // A pack whose bytes are not what its name says: the repository layer
    // refuses it (shown end to end on a real server: the damage tests).
    let env = Env::https("admin");
    env.init();
    let src = util::sample(&env);
    env.backup(&[&src]);
    let data = env.path("server-data/r/packs");
    let pack = util::files_under(&data)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    util::flip_byte(&pack, 1000);
    let r = env.run(&["check", "--read-data"]).fails(1);
    let pack_name = pack.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        r.stdout().contains(&pack_name[..8]) || r.stderr().contains(&pack_name[..8]),
        "{}{}",
        r.stdout(),
        r.stderr()
    );
}
