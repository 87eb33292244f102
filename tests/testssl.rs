//! `testssl.sh` (the Debian package) against the strongroom server on
//! loopback: no protocol below TLS 1.2, every cipher suite offered
//! forward secret (ECDHE or TLS 1.3), and HSTS on the answers.

mod util;

use std::process::Command;

use util::Env;

#[test]
fn testssl_finds_no_old_protocol_no_suite_without_forward_secrecy_and_hsts() {
    let env = Env::https("admin");
    let json = env.path("testssl.json");
    let out = Command::new("testssl")
        .args(["--quiet", "--warnings", "off", "--color", "0", "--jsonfile"])
        .arg(&json)
        .args(["-p", "-e", "-f", "-h"])
        .arg(format!("127.0.0.1:{}", env.server().port))
        .output()
        .expect("running testssl (Debian package testssl.sh)");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "testssl wrote no report: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let finding = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or_else(|| panic!("testssl reported no {id}:\n{text}"))
            .to_string()
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert_eq!(finding(old), "not offered", "{old}");
    }
    assert!(finding("TLS1_3").starts_with("offered"), "{text}");
    let ciphers: Vec<String> = findings
        .iter()
        .filter(|f| f["id"].as_str().is_some_and(|id| id.starts_with("cipher_x")))
        .map(|f| f["finding"].as_str().unwrap().to_string())
        .collect();
    assert!(!ciphers.is_empty(), "{text}");
    for c in &ciphers {
        // Key exchange column: ECDH (ECDHE in TLS 1.2, every TLS 1.3 suite).
        let kx = c.split_whitespace().nth(2).unwrap_or_default();
        assert_eq!(kx, "ECDH", "a suite without forward secrecy: {c}");
    }
    assert!(finding("PFS").contains("offered"), "{text}");
    assert!(finding("HSTS_time").contains("31536000"), "{text}");
}
