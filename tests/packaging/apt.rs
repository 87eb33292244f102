//! The signed APT repository: built by `packaging/apt-repo.sh` with a
//! throw-away 4096-bit RSA key, served over HTTPS on loopback with a
//! certificate from a test CA, installed from with apt's checks on; then
//! a tampered `Packages`, a tampered `InRelease`, a repository re-signed by
//! another key and a tampered `.deb` are each refused.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{Installed, deb, ok, packaging_script, system};

/// A static HTTPS file server (Python's http.server wrapped in TLS) on a
/// port the kernel picks; killed when dropped.
struct Https {
    child: Child,
    port: u16,
}

const SERVE: &str = r#"
import functools, http.server, ssl, sys
root, cert, key = sys.argv[1:4]
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl Https {
    fn serve(root: &Path) -> Https {
        let pki = crate::util::server::pki();
        let mut child = Command::new("python3")
            .args(["-c", SERVE])
            .arg(root)
            .arg(&pki.cert)
            .arg(&pki.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no port from the server: {line:?}"));
        Https { child, port }
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GnuPG home of its own, with one new RSA key; returns its fingerprint.
fn new_key(home: &Path, name: &str, bits: u32) -> String {
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--batch"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let uid = format!("{name} <{name}@strongroom.example.org>");
    gpg(&[
        "--passphrase",
        "",
        "--quick-gen-key",
        &uid,
        &format!("rsa{bits}"),
        "sign",
        "never",
    ]);
    let listing = gpg(&["--with-colons", "--list-secret-keys"]);
    let sec = listing.lines().find(|l| l.starts_with("sec:")).unwrap();
    assert_eq!(sec.split(':').nth(2), Some(bits.to_string().as_str()), "{sec}");
    let fpr = listing.lines().find(|l| l.starts_with("fpr:")).unwrap();
    fpr.split(':').nth(9).unwrap().to_string()
}

fn build_repo(gnupg: &Path, key: &str, out: &Path, debs: &[&Path]) {
    let mut args = vec!["--key", key, "--out", out.to_str().unwrap(), "--valid-days", "7"];
    args.extend(debs.iter().map(|d| d.to_str().unwrap()));
    packaging_script("apt-repo.sh", &args, &[("GNUPGHOME", gnupg)]);
}

/// apt, pointed at one repository only: its own sources, lists and
/// archives, the test CA, and the repository's key by `signed-by=`.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(dir: &Path, port: u16, keyring: &Path) -> Apt {
        for d in ["lists/partial", "cache/archives/partial", "parts"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let line = format!(
            "deb [signed-by={}] https://127.0.0.1:{port}/ stable main\n",
            keyring.display()
        );
        std::fs::write(dir.join("sources.list"), line).unwrap();
        let conf = format!(
            "Dir::Etc::SourceList \"{d}/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/parts\";\n\
             Dir::State::Lists \"{d}/lists\";\n\
             Dir::Cache \"{d}/cache\";\n\
             Acquire::https::CaInfo \"{ca}\";\n\
             Acquire::Languages \"none\";\n\
             APT::Sandbox::User \"root\";\n",
            d = dir.display(),
            ca = crate::util::server::pki().ca.display()
        );
        std::fs::write(dir.join("apt.conf"), conf).unwrap();
        Apt {
            dir: dir.to_path_buf(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("apt-get")
            .args(args)
            .env("APT_CONFIG", self.dir.join("apt.conf"))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `apt-get update` from nothing: what it said, and whether it worked.
    fn update(&self) -> (bool, String) {
        let lists = self.dir.join("lists");
        std::fs::remove_dir_all(&lists).unwrap();
        std::fs::create_dir_all(lists.join("partial")).unwrap();
        let out = self.run(&["update"]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    }

    /// Whether apt has a version of strongroom to install, and which.
    fn candidate(&self) -> Option<String> {
        let out = Command::new("apt-cache")
            .args(["policy", "strongroom"])
            .env("APT_CONFIG", self.dir.join("apt.conf"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.trim_start().starts_with("Candidate:"))?;
        let v = line.split(':').nth(1).unwrap().trim();
        (v != "(none)").then(|| v.to_string())
    }

    fn refuses(&self, what: &str, because: &[&str]) {
        let (worked, said) = self.update();
        eprintln!("apt-get update with {what}:\n{said}");
        assert!(!worked, "apt-get update accepted {what}:\n{said}");
        assert!(because.iter().any(|b| said.contains(b)), "{what}: {said}");
        assert_eq!(self.candidate(), None, "apt offers strongroom after {what}");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    ok("cp", &["-a", from.to_str().unwrap(), to.to_str().unwrap()]);
}

#[test]
fn the_signed_apt_repository_installs_over_https_and_apt_refuses_every_tampering() {
    let _one = system();
    super::assert_not_installed();
    let deb = deb();
    let tmp = tempfile::Builder::new()
        .prefix("apt-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let t = tmp.path();
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));

    // A throw-away 4096-bit archive key; a 2048-bit one is refused.
    let gnupg = t.join("gnupg");
    let fpr = new_key(&gnupg, "archive", 4096);
    let weak_home = t.join("weak");
    let weak = new_key(&weak_home, "weak", 2048);
    let refused = Command::new(Path::new(super::ROOT).join("packaging/apt-repo.sh"))
        .env("GNUPGHOME", &weak_home)
        .args(["--key", &weak, "--out"])
        .arg(t.join("weak-repo"))
        .arg(deb)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not an RSA key of 4096 bits or more"));

    let good = t.join("good");
    build_repo(&gnupg, &fpr, &good, &[deb]);
    let release = std::fs::read_to_string(good.join("dists/stable/Release")).unwrap();
    for field in [
        "Valid-Until: ",
        "SHA256:",
        "SHA512:",
        "Origin: strongroom",
        "Suite: stable",
    ] {
        assert!(release.contains(field), "{field} missing:\n{release}");
    }
    let pool = good.join(format!("pool/main/s/strongroom/strongroom_{version}_amd64.deb"));
    let keyring = good.join("strongroom-archive-keyring.gpg");

    // The .deb's detached signature verifies; a tampered copy does not.
    let verify = |deb: &Path| {
        let home = t.join("verify");
        if !home.exists() {
            std::fs::create_dir_all(&home).unwrap();
            std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
            let imported = Command::new("gpg")
                .env("GNUPGHOME", &home)
                .args(["--batch", "--import"])
                .arg(good.join("strongroom-archive-keyring.asc"))
                .output()
                .unwrap();
            assert!(imported.status.success());
        }
        Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--verify"])
            .arg(pool.with_extension("deb.asc"))
            .arg(deb)
            .output()
            .unwrap()
    };
    let checked = verify(&pool);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stderr).contains("Good signature"));

    // Served over HTTPS: apt installs strongroom with its checks on.
    let served = t.join("served");
    copy_tree(&good, &served);
    let server = Https::serve(&served);
    let apt = Apt::new(&t.join("apt"), server.port, &keyring);
    let (worked, said) = apt.update();
    assert!(worked, "{said}");
    assert_eq!(apt.candidate().as_deref(), Some(version.as_str()));
    {
        let installed = Installed;
        let out = apt.run(&["install", "-y", "-q", "strongroom"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            ok("/usr/bin/strongroom", &["--version"]),
            format!("strongroom {}\n", env!("CARGO_PKG_VERSION"))
        );
        drop(installed);
    }
    assert!(!Path::new("/usr/bin/strongroom").exists());

    // 1. Packages changed (a version bumped: what a mirror pushing a
    //    package of its own would do), with its compressed forms.
    let index = served.join("dists/stable/main/binary-amd64");
    let packages = std::fs::read_to_string(index.join("Packages")).unwrap();
    let forged = packages.replace(&format!("Version: {version}"), "Version: 99.0.0-1");
    assert_ne!(forged, packages);
    std::fs::write(index.join("Packages"), &forged).unwrap();
    ok(
        "sh",
        &[
            "-c",
            &format!(
                "cd {} && gzip -9n <Packages >Packages.gz && xz -9 <Packages >Packages.xz",
                index.display()
            ),
        ],
    );
    apt.refuses(
        "a tampered Packages",
        &["Hash Sum mismatch", "File has unexpected size"],
    );

    // 2. InRelease (and Release) changed: the signature no longer holds.
    copy_tree(&good, &served);
    for name in ["InRelease", "Release"] {
        let p = served.join("dists/stable").join(name);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("Label: strongroom", "Label: strongroom-mirror")).unwrap();
    }
    apt.refuses("a tampered InRelease", &["BADSIG", "is not signed"]);

    // 3. The whole repository signed again by a key of the attacker's.
    let evil_home = t.join("evil");
    let evil = new_key(&evil_home, "mirror", 4096);
    let evil_repo = t.join("evil-repo");
    build_repo(&evil_home, &evil, &evil_repo, &[deb]);
    copy_tree(&evil_repo, &served);
    apt.refuses(
        "a repository signed by another key",
        &["NO_PUBKEY", "is not signed"],
    );

    // 4. The .deb changed in the pool: gpg --verify refuses it, and so does
    //    apt at download, though its indices are intact.
    copy_tree(&good, &served);
    let served_deb = served.join(format!("pool/main/s/strongroom/strongroom_{version}_amd64.deb"));
    let len = std::fs::metadata(&served_deb).unwrap().len();
    crate::util::flip_byte(&served_deb, len / 2);
    let checked = verify(&served_deb);
    assert!(!checked.status.success());
    assert!(String::from_utf8_lossy(&checked.stderr).contains("BAD signature"));
    let (worked, said) = apt.update();
    assert!(worked, "{said}");
    // (the good package downloaded earlier would otherwise be used again)
    assert!(apt.run(&["clean"]).status.success());
    let installed = Installed;
    let out = apt.run(&["install", "-y", "-q", "strongroom"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("apt-get install of a tampered .deb:\n{said}");
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("Hash Sum mismatch"), "{said}");
    assert!(!Path::new("/usr/bin/strongroom").exists());
    drop(installed);
}
