//! The manual pages in `man/` are what the command line's definitions
//! generate (`STRONGROOM_WRITE_MAN=1 cargo test --test manpages` writes
//! them again), render without a warning from groff, and `man -l` shows
//! them; the completion scripts load in their shells.

mod util;

use std::path::Path;
use std::process::Command;

fn man_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

#[test]
fn the_pages_in_man_are_those_the_cli_generates() {
    let pages = strongroom::manpages::pages();
    let dir = man_dir();
    if std::env::var_os("STRONGROOM_WRITE_MAN").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &pages {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("man/ exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut wanted: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
    wanted.sort();
    assert_eq!(
        on_disk, wanted,
        "man/ does not hold one page per command: run `STRONGROOM_WRITE_MAN=1 cargo test --test manpages`"
    );
    for (name, text) in &pages {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).unwrap(),
            *text,
            "man/{name} is out of date with the command line: run `STRONGROOM_WRITE_MAN=1 cargo test --test manpages`"
        );
    }
    for want in [
        "strongroom.1",
        "strongroom-backup.1",
        "strongroom-key-add-recipient.1",
        "strongroom-key-recover.1",
        "strongroom-prune.1",
        "strongroom-copy.1",
        "strongroom-server-account-add.1",
    ] {
        assert!(wanted.contains(&want.to_string()), "no {want}: {wanted:?}");
    }
}

#[test]
fn every_page_renders_without_a_warning_and_man_shows_it() {
    for e in std::fs::read_dir(man_dir()).unwrap() {
        let p = e.unwrap().path();
        let out = Command::new("groff")
            .args(["-ww", "-z", "-man"])
            .arg(&p)
            .output()
            .expect("groff (Debian groff-base) runs");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("man")
        .arg("-l")
        .arg(man_dir().join("strongroom.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("man (Debian man-db) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for section in [
        "ENVIRONMENT",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "STRONGROOM_REPO",
        "keep-within-daily 90d",
    ] {
        assert!(text.contains(section), "no {section} in:\n{text}");
    }
}

#[test]
fn completion_scripts_load_in_bash_zsh_and_fish() {
    let script = |shell: &str| {
        let out = Command::new(util::BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = script("bash");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strongroom.bash");
    std::fs::write(&file, &bash).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p strongroom", file.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("strongroom"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for sub in ["backup", "prune", "copy", "add-recipient"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    assert!(script("zsh").starts_with("#compdef strongroom"));
    assert!(script("fish").contains("complete -c strongroom"));
    let r = Command::new(util::BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
}
