//! A run's keys belong to the run's signer: envelopes forged with a real
//! writer key, for another signer's run or for its own, are refused, named
//! by `check`, and never unwrapped twice.

mod util;

use std::path::PathBuf;

use strongroom::format::envelope::{self, Envelope, Signer, Wrapped};
use strongroom::format::{Id, Signed, decode, encode};
use strongroom::keys::{Key, WriterKey};
use util::{Env, sample};

fn writer_key(env: &Env) -> WriterKey {
    match strongroom::keys::load(&env.keys.writer, &Default::default()).unwrap() {
        Key::Writer(w) => w,
        Key::Full(_) => unreachable!(),
    }
}

/// Every envelope in the repository, with its path.
fn envelopes(env: &Env) -> Vec<(PathBuf, Envelope)> {
    env.repo_objects("keys")
        .into_iter()
        .map(|p| {
            let signed: Signed = decode(&std::fs::read(&p).unwrap(), "envelope").unwrap();
            (p, decode(&signed.body, "envelope").unwrap())
        })
        .collect()
}

/// Signs `e` with the writer key and stores it under its content name.
fn publish(env: &Env, w: &WriterKey, e: &Envelope) -> String {
    let body = encode(e);
    let signature = w.signing.sign(envelope::SIGNED_TYPE, &body).unwrap();
    let bytes = encode(&Signed { body, signature });
    let name = Id::of_bytes(&bytes).to_hex();
    std::fs::write(env.repo().join("keys").join(&name), bytes).unwrap();
    name
}

fn garbage(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn a_writer_cannot_replace_the_keys_of_another_signers_run() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let w = writer_key(&env);
    let (_, root_env) = envelopes(&env)
        .into_iter()
        .find(|(_, e)| matches!(e.signer, Signer::Root))
        .unwrap();
    // The full key's run id, the writer's signature, random keys wrapped
    // for the real recipient.
    let mut forged = root_env.clone();
    forged.signer = Signer::Writer(w.certificate.clone());
    forged.wrapped = vec![Wrapped {
        recipient: root_env.wrapped[0].recipient,
        ciphertext: garbage(root_env.wrapped[0].ciphertext.len()),
    }];
    let name = publish(&env, &w, &forged);
    // Listed before or after the real one, it is never used.
    env.restore_matches("latest", &src);
    let r = env.run(&["check", "--read-data"]).fails(1);
    assert!(
        r.stderr().contains(&name) && r.stderr().contains("another signer"),
        "{}",
        r.stderr()
    );
    // With the cache gone too.
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    env.restore_matches("latest", &src);
}

#[test]
fn two_envelopes_for_one_run_are_both_refused_and_named() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.writer(&["backup", src.to_str().unwrap()]).ok();
    let w = writer_key(&env);
    let (_, real) = envelopes(&env).pop().unwrap();
    let mut second = real.clone();
    second.created += 1;
    let name = publish(&env, &w, &second);
    let r = env.run(&["restore", "latest", "--target", "out"]).fails(1);
    assert!(r.stderr().contains("2 key envelopes"), "{}", r.stderr());
    let r = env.run(&["check"]).fails(1);
    assert!(
        r.stderr().contains(&name) && r.stderr().contains("2 key envelopes"),
        "{}",
        r.stderr()
    );
}

#[test]
fn a_failed_unwrap_is_remembered_not_retried() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.writer(&["backup", src.to_str().unwrap()]).ok();
    let w = writer_key(&env);
    // The writer replaces its own run's envelope with one whose wrapped
    // keys are garbage: an RSA-decryption oracle, if it were retried.
    let (path, mut e) = envelopes(&env).pop().unwrap();
    std::fs::remove_file(path).unwrap();
    let len = e.wrapped[0].ciphertext.len();
    e.wrapped[0].ciphertext = garbage(len);
    publish(&env, &w, &e);
    let r = env.run(&["restore", "latest", "--target", "out"]).fails(1);
    assert!(r.stderr().contains("could not be unwrapped"), "{}", r.stderr());
    assert!(!r.stderr().contains("remembered"), "{}", r.stderr());
    let r = env.run(&["restore", "latest", "--target", "out2"]).fails(1);
    assert!(
        r.stderr().contains("remembered from an earlier attempt"),
        "{}",
        r.stderr()
    );
}
