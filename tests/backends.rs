//! The backend conformance suite (`strongroom::backend::suite`) on the
//! network backends, against real servers on loopback: S3 on Garage.

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
