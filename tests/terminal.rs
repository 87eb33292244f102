//! What a writer stores cannot reach a reader's terminal as escape
//! sequences: names, link targets, tags and hosts are shown escaped.

mod util;

use util::Env;

#[test]
fn names_targets_and_tags_from_a_writer_are_escaped_in_ls_and_snapshots() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("evil\x1b]0;pwned\x07\x1b[2J"), "x").unwrap();
    std::os::unix::fs::symlink("\x1b[31mred\x1b[0m", src.join("link")).unwrap();
    env.writer(&["backup", "--tag", "t\x1b[5mblink", src.to_str().unwrap()])
        .ok();

    let ls = env.run(&["ls", "latest", src.to_str().unwrap()]).ok();
    let snaps = env.run(&["snapshots"]).ok();
    for r in [&ls, &snaps] {
        assert!(!r.out.stdout.contains(&0x1b), "{:?}", r.stdout());
        assert!(!r.out.stderr.contains(&0x1b), "{:?}", r.stderr());
    }
    assert!(
        ls.stdout().contains("evil\\x1b]0;pwned\\x07\\x1b[2J"),
        "{}",
        ls.stdout()
    );
    assert!(
        ls.stdout().contains("link -> \\x1b[31mred\\x1b[0m"),
        "{}",
        ls.stdout()
    );
    assert!(snaps.stdout().contains("t\\x1b[5mblink"), "{}", snaps.stdout());
    // JSON stays JSON: the real bytes, escaped by JSON itself.
    let json = env.run(&["--json", "snapshots"]).ok().json();
    assert_eq!(json[0]["tags"][0], "t\x1b[5mblink");
}
