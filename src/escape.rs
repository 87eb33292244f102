//! Rendering names from a repository for a terminal: printable text as is,
//! everything a terminal could act on as a visible escape, so a writer
//! cannot send escape sequences to whoever lists its snapshots.

use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Printable UTF-8 as is; `\` as `\\`; `\n` and `\t` as such; other control
/// characters (C0, DEL, C1) and bytes that are not UTF-8 as `\xNN`, one per
/// byte.
pub fn bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let mut utf8 = [0u8; 4];
                    for byte in c.encode_utf8(&mut utf8).bytes() {
                        let _ = write!(out, "\\x{byte:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

pub fn text(s: &str) -> String {
    bytes(s.as_bytes())
}

pub fn path(p: &Path) -> String {
    bytes(p.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn terminal_controls_and_invalid_utf8_are_escaped() {
        assert_eq!(bytes(b"plain name.txt"), "plain name.txt");
        assert_eq!(bytes("caf\u{e9} \u{1F600}".as_bytes()), "caf\u{e9} \u{1F600}");
        assert_eq!(
            bytes(b"evil\x1b]0;pwned\x07\x1b[2J"),
            "evil\\x1b]0;pwned\\x07\\x1b[2J"
        );
        assert_eq!(bytes(b"a\\b\nc\td\x7f"), "a\\\\b\\nc\\td\\x7f");
        assert_eq!(bytes("csi\u{9b}2J".as_bytes()), "csi\\xc2\\x9b2J");
        assert_eq!(bytes(b"bad\xff\xc2"), "bad\\xff\\xc2");
    }
}
