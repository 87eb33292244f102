//! What an S3 store says, read strictly: ListObjectsV2 pages (a small
//! reader of the few elements used, in place of an XML library),
//! `Content-Range` headers, URL-encoded keys and the code of an error
//! document. Everything here is the storage operator's to choose, so each
//! reader takes only the canonical form and is linear in its input.

/// Of a `Content-Range: bytes FIRST-LAST/SIZE` header, FIRST and LAST.
pub(crate) fn content_range(v: &str) -> Option<(u64, u64)> {
    let (range, _size) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// One page of a ListObjectsV2 answer: (key, size) of each object, and
/// the token of the next page if there is one.
pub(super) struct Page {
    pub objects: Vec<(String, u64)>,
    pub next: Option<String>,
}

/// The text of each `<name>…</name>` element in `xml`, in order (not
/// nested in one of its own kind; attributes of the opening tag, such as
/// a namespace, skipped).
fn elements<'a>(xml: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
    let (open, close) = (format!("<{name}"), format!("</{name}>"));
    let mut rest = xml;
    std::iter::from_fn(move || {
        loop {
            let at = rest.find(&open)? + open.len();
            let tail = &rest[at..];
            match tail.as_bytes().first()? {
                b'>' => {
                    let len = tail[1..].find(&close)?;
                    let text = &tail[1..1 + len];
                    rest = &tail[1 + len + close.len()..];
                    return Some(text);
                }
                b' ' | b'\t' | b'\r' | b'\n' => {
                    let gt = tail.find('>')?;
                    if tail[..gt].ends_with('/') {
                        // Empty: `<name/>`.
                        rest = &tail[gt + 1..];
                        return Some("");
                    }
                    let body = &tail[gt + 1..];
                    let len = body.find(&close)?;
                    rest = &body[len + close.len()..];
                    return Some(&body[..len]);
                }
                // Another element whose name starts with this one.
                _ => rest = tail,
            }
        }
    })
}

/// Text with XML's five named escapes decoded; None for markup or any
/// other reference.
fn xml_text(s: &str) -> Option<String> {
    if s.contains('<') {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';')?;
        out.push(match &rest[at..at + end + 1] {
            "&amp;" => '&',
            "&lt;" => '<',
            "&gt;" => '>',
            "&quot;" => '"',
            "&apos;" => '\'',
            _ => return None,
        });
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// A ListObjectsV2 answer, read strictly: every `<Contents>` must have
/// one readable key and size; a truncated page must name the next.
pub(super) fn parse_list(xml: &str) -> Option<Page> {
    let root = elements(xml, "ListBucketResult").next()?;
    let mut objects = Vec::new();
    for c in elements(root, "Contents") {
        let key = xml_text(elements(c, "Key").next()?)?;
        let size = elements(c, "Size").next()?.trim().parse().ok()?;
        objects.push((key, size));
    }
    let truncated = match elements(root, "IsTruncated").next().map(str::trim) {
        Some("true") => true,
        Some("false") | None => false,
        Some(_) => return None,
    };
    let next = if truncated {
        let t = xml_text(elements(root, "NextContinuationToken").next()?)?;
        if t.is_empty() {
            return None;
        }
        Some(t)
    } else {
        None
    };
    Some(Page { objects, next })
}

/// `%XX` escapes decoded (`+` is a plus in a key); None for a malformed
/// escape or bytes that are not UTF-8.
pub(super) fn percent_decoded(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `<Code>` of an S3 error document, as ` (Code)`.
pub(super) fn s3_error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    let code = &text[start..end];
    code.bytes()
        .all(|b| b.is_ascii_alphanumeric())
        .then(|| format!(" ({code})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_pages_are_read_strictly() {
        let page = "<?xml version=\"1.0\"?><ListBucketResult xmlns=\"http://s3\"><Name>b</Name>\
            <KeyCount>2</KeyCount><Prefix/>\
            <Contents><Key>p/snapshots/a</Key><Size>12</Size><ETag>&quot;x&quot;</ETag></Contents>\
            <Contents><Key>p/snapshots/b%26</Key><Size>0</Size></Contents>\
            <IsTruncated>true</IsTruncated><NextContinuationToken>t+/=&amp;</NextContinuationToken>\
            </ListBucketResult>";
        let p = parse_list(page).unwrap();
        assert_eq!(
            p.objects,
            [("p/snapshots/a".into(), 12), ("p/snapshots/b%26".into(), 0)]
        );
        assert_eq!(p.next.as_deref(), Some("t+/=&"));
        let last = "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
        assert!(parse_list(last).unwrap().next.is_none());
        for bad in [
            "<ListBucketResult><Contents><Key>a</Key></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>&#47;</Key><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
            "<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
            "<Error><Code>AccessDenied</Code></Error>",
        ] {
            assert!(parse_list(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn content_ranges_are_read_strictly() {
        assert_eq!(content_range("bytes 0-9/100"), Some((0, 9)));
        assert_eq!(content_range("bytes 5-5/*"), Some((5, 5)));
        for bad in [
            "bytes 9-0/100",
            "bytes */100",
            "items 0-9/100",
            "bytes 0-9",
            "bytes -1-9/100",
        ] {
            assert_eq!(content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn listed_keys_are_decoded_strictly() {
        assert_eq!(percent_decoded("a%2Fb%2fc").as_deref(), Some("a/b/c"));
        assert_eq!(percent_decoded("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decoded("bad%2"), None);
        assert_eq!(percent_decoded("bad%zz"), None);
        assert_eq!(percent_decoded("%ff"), None);
    }
}
