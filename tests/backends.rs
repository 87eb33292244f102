//! The backend conformance suite (`strongroom::backend::suite`) on the
//! network backends, against real servers on loopback: S3 on Garage, and
//! the strongroom server (on a local directory and on Garage).

mod util;

use strongroom::backend::retry::Retry;
use strongroom::backend::s3::S3;
use strongroom::backend::{Backend, Kind, suite};
use util::garage;

fn s3(test: &str) -> Retry<S3> {
    let url = garage::repo_url(test);
    let creds = rusty_s3::Credentials::new(garage::KEY_ID, garage::SECRET);
    Retry::new(S3::with_credentials(url.strip_prefix("s3:").unwrap(), creds, garage::REGION).unwrap())
}

#[test]
fn s3_passes_the_suite() {
    suite::run(&s3("suite"));
}

#[test]
fn s3_prefixes_keep_repositories_apart() {
    let (a, b) = (s3("apart"), s3("apart"));
    a.create().unwrap();
    b.create().unwrap();
    a.write(Kind::Config, "config", b"a").unwrap();
    assert!(b.create().is_ok(), "b holds no repository yet");
    assert!(a.create().is_err(), "a holds one");
    assert!(b.list(Kind::Snapshots).unwrap().is_empty());
}

#[test]
fn s3_with_a_wrong_secret_is_refused_at_once() {
    let url = garage::repo_url("refused");
    let creds = rusty_s3::Credentials::new(garage::KEY_ID, "00".repeat(32));
    let b =
        Retry::new(S3::with_credentials(url.strip_prefix("s3:").unwrap(), creds, garage::REGION).unwrap());
    let e = b.read(Kind::Config, "config").unwrap_err();
    let text = format!("{e:#}");
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(!text.contains("gave up"), "a refusal is not retried: {text}");
}

fn https(server: &util::server::Server, account: &str) -> Retry<strongroom::backend::https::Https> {
    Retry::new(util::server::client(server, account))
}

#[test]
fn https_passes_the_suite() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let server = util::server::Server::on_data(&dir.path().join("data"));
    suite::run(&https(&server, "admin"));
}

/// Two server instances on one bucket: what one writes the other serves,
/// and a session from one is good at the other.
#[test]
fn two_servers_on_one_bucket_serve_the_same_repository() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (store, envs) = util::server::s3_store("two-servers");
    let one = util::server::Server::start(store.clone(), envs.clone(), dir.path().join("one.log"), 0);
    let two = util::server::Server::start(store, envs, dir.path().join("two.log"), 0);
    suite::basics(&https(&one, "admin"));
    let (a, b) = (https(&one, "admin"), https(&two, "admin"));
    let data = b"written through one";
    let name = suite::name_of(data);
    a.write(Kind::Snapshots, &name, data).unwrap();
    assert_eq!(b.read(Kind::Snapshots, &name).unwrap(), data);
    let token = util::server::login(one.port, "host");
    let auth = format!("Bearer {token}");
    let (status, _, body) = util::server::raw(
        two.port,
        "GET",
        "/r/config",
        &[("Authorization", auth.as_str())],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"two");
}
