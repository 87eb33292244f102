//! Repository locks: an exclusive lock keeps others out, a stale one does
//! not, and a finished command leaves none behind.

mod util;

use std::sync::Arc;

use strongroom::format::lock::Lock;
use strongroom::format::{FORMAT_VERSION, Timestamp};
use strongroom::repository::{Repository, lock};
use util::{Env, sample};

fn plant(env: &Env, exclusive: bool, age_secs: i64) -> String {
    let key = strongroom::keys::load(&env.keys.full, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let repo = Repository::open(backend, key.shared()).unwrap();
    let then = Timestamp {
        sec: Timestamp::now().sec - age_secs,
        nsec: 0,
    };
    let l = Lock {
        format: FORMAT_VERSION,
        host: "other-host".into(),
        pid: 4242,
        exclusive,
        purpose: "prune".into(),
        created: then,
        refreshed: then,
    };
    lock::write(&repo, &key.shared().subkeys.index, &l).unwrap()
}

#[test]
fn an_exclusive_lock_keeps_backups_out_until_it_goes_stale() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    assert!(
        env.repo_objects("locks").is_empty(),
        "a finished backup leaves no lock"
    );

    let held = plant(&env, true, 10);
    let envelopes = env.repo_objects("keys").len();
    let r = env.run(&["backup", src.to_str().unwrap()]).fails(1);
    assert!(
        r.stderr()
            .contains("the repository is in use: an exclusive lock of host other-host (pid 4242, prune)"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        env.repo_objects("keys").len(),
        envelopes,
        "a refused backup writes nothing"
    );
    env.run(&["check"]).fails(1);
    std::fs::remove_file(env.repo().join("locks").join(&held)).unwrap();

    // A shared lock (another backup running) is no obstacle.
    plant(&env, false, 10);
    env.backup(&[&src]);
    // Nor is an exclusive lock nobody has refreshed for an hour.
    plant(&env, true, 3600);
    env.backup(&[&src]);
    env.restore_matches("latest", &src);
    assert_eq!(
        env.repo_objects("locks").len(),
        2,
        "only the planted locks remain"
    );
}
