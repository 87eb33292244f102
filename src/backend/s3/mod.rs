//! An S3-compatible object store: `s3:http(s)://host:port/bucket/prefix`,
//! path-style, every request signed with `rusty-s3` (query-string
//! signatures good for a few minutes) and sent with `ureq`, which reuses
//! its connections. Credentials come from `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), the region from
//! `AWS_REGION` (else `us-east-1`).
//!
//! Objects are keyed `prefix/` + the repository path of [`Kind::path`].
//! Nothing here retries: [`super::retry`] wraps this backend and retries
//! what [`super::Transient`] marks.

use std::io::Read;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

pub(crate) mod answers;

use super::{Backend, Kind, Listed, NotFound, Refused, Transient};
use crate::error::Exit;
use answers::{content_range, parse_list, percent_decoded, s3_error_code};

/// How long a signed request stays valid: long enough for a slow upload
/// of a whole pack to start, short enough to be useless if logged.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
/// Keys asked for per listing page (the most S3 returns).
const PAGE: usize = 1000;
/// The largest listing page read: far above what 1,000 keys take.
const LIST_PAGE_BYTES: u64 = 8 << 20;
/// The most objects of one kind a listing takes (a store that never ends
/// its listing is refused there).
const MAX_LISTED: usize = 50_000_000;
/// The largest whole object taken in answer to a range request, from a
/// store that ignores ranges.
const WHOLE_FOR_RANGE: u64 = 64 << 20;

pub struct S3 {
    bucket: Bucket,
    credentials: Credentials,
    /// Empty, or ending in `/`.
    prefix: String,
    agent: ureq::Agent,
    location: String,
}

/// Timeouts of every request: none waits forever on a silent peer.
/// Shorter for the mount ([`super::set_interactive`]): no byte for 10
/// seconds fails the request.
pub fn agent_config() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    let silence = Duration::from_secs(if super::is_interactive() { 10 } else { 60 });
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_resolve(Some(Duration::from_secs(10)))
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_send_request(Some(silence.min(Duration::from_secs(30))))
        .timeout_recv_response(Some(silence))
        .timeout_per_read(Some(silence))
        .timeout_per_write(Some(silence))
        .timeout_global(Some(Duration::from_secs(10 * 60)))
        .max_idle_connections_per_host(32)
        .max_redirects(0)
        .user_agent(concat!("strongroom/", env!("CARGO_PKG_VERSION")))
}

impl S3 {
    /// The store `url` names (`s3:` already stripped:
    /// `http(s)://host:port/bucket/prefix`), with the credentials and
    /// region of the environment.
    pub fn new(url: &str) -> Result<S3> {
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
        let (Ok(key), Ok(secret)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) else {
            return Err(Exit::usage(format!(
                "repository s3:{url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )));
        };
        let credentials = match std::env::var("AWS_SESSION_TOKEN") {
            Ok(token) => Credentials::new_with_token(key, secret, token),
            Err(_) => Credentials::new(key, secret),
        };
        S3::with_credentials(url, credentials, &region)
    }

    pub fn with_credentials(url: &str, credentials: Credentials, region: &str) -> Result<S3> {
        let shown = format!("s3:{url}");
        // Checked before parsing, which would resolve `..` away.
        let raw_path = url.split_once("://").map_or(url, |(_, rest)| rest);
        if raw_path.split(['/', '?', '#']).any(|s| s == "." || s == "..") {
            return Err(Exit::usage(format!("repository {shown}: unsafe prefix")));
        }
        let parsed = url
            .parse::<url::Url>()
            .map_err(|e| Exit::usage(format!("repository {shown}: not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Exit::usage(format!(
                "repository {shown}: expected s3:http(s)://host:port/bucket/prefix"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() || parsed.query().is_some() {
            return Err(Exit::usage(format!(
                "repository {shown}: credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 not in the URL"
            )));
        }
        let mut segments = parsed.path().split('/').filter(|s| !s.is_empty());
        let Some(bucket) = segments.next() else {
            return Err(Exit::usage(format!("repository {shown}: no bucket in the URL")));
        };
        let prefix: Vec<&str> = segments.collect();
        if prefix.iter().any(|s| *s == "." || *s == ".." || s.contains('%')) {
            return Err(Exit::usage(format!("repository {shown}: unsafe prefix")));
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.join("/"))
        };
        let mut endpoint = parsed.clone();
        endpoint.set_path("/");
        let bucket = Bucket::new(endpoint, UrlStyle::Path, bucket.to_string(), region.to_string())
            .map_err(|e| Exit::usage(format!("repository {shown}: {e}")))?;
        Ok(S3 {
            bucket,
            credentials,
            prefix,
            agent: agent_config().build().new_agent(),
            location: shown,
        })
    }

    fn key(&self, kind: Kind, name: &str) -> String {
        format!("{}{}", self.prefix, kind.path(name))
    }

    fn failed(&self, what: &str, key: &str, e: ureq::Error) -> anyhow::Error {
        transport_error(&format!("{what} {} of {}", key, self.location), e)
    }

    /// A response's status as an error, if it is one: 404 is [`NotFound`],
    /// 401 and 403 [`Refused`], 5xx, 408 and 429 [`Transient`].
    fn status(&self, what: &str, key: &str, resp: &mut ureq::http::Response<ureq::Body>) -> Result<()> {
        let code = resp.status().as_u16();
        if (200..300).contains(&code) {
            return Ok(());
        }
        // The store's own words (an S3 error document), briefly.
        let mut body = Vec::new();
        let _ = resp.body_mut().as_reader().take(4096).read_to_end(&mut body);
        let said = s3_error_code(&body).unwrap_or_default();
        let message = format!("{what} {key} of {} failed: HTTP {code}{said}", self.location);
        Err(match code {
            404 => anyhow::Error::new(NotFound(key.to_string())),
            401 | 403 => anyhow::Error::new(Refused(message)),
            408 | 429 | 500..=599 => anyhow::Error::new(Transient(message)),
            _ => anyhow!(message),
        })
    }

    /// PUTs an object; with `only_new`, one that exists is left alone and
    /// `false` returned (where the store honours `If-None-Match`).
    fn put(&self, kind: Kind, name: &str, data: &[u8], only_new: bool) -> Result<bool> {
        let key = self.key(kind, name);
        let url = self
            .bucket
            .put_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let mut req = self
            .agent
            .put(url.as_str())
            .header("Content-Type", "application/octet-stream");
        if only_new {
            req = req.header("If-None-Match", "*");
        }
        let mut resp = req.send(data).map_err(|e| self.failed("writing", &key, e))?;
        // 412: it exists; 409: another conditional write of it is under way.
        if only_new && matches!(resp.status().as_u16(), 412 | 409) {
            return Ok(false);
        }
        self.status("writing", &key, &mut resp).map(|()| true)
    }

    fn get(&self, kind: Kind, name: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
        let key = self.key(kind, name);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let mut req = self.agent.get(url.as_str());
        let mut end = None;
        if let Some((offset, length)) = range {
            let last = offset
                .checked_add(length - 1)
                .ok_or_else(|| anyhow!("reading {key}: a range past any object"))?;
            end = Some(last + 1);
            req = req.header("Range", format!("bytes={offset}-{last}"));
        }
        let mut resp = req.call().map_err(|e| self.failed("reading", &key, e))?;
        let code = resp.status().as_u16();
        if range.is_some() && code == 416 {
            // The range starts at or past the end.
            return Ok(Vec::new());
        }
        self.status("reading", &key, &mut resp)?;
        let wrong = |what: &str| anyhow!("reading {key} of {}: {what}", self.location);
        let limit = match (range, code) {
            (None, 200) => kind.max_size(),
            (Some((offset, length)), 206) => {
                let header = resp.headers().get("content-range").and_then(|v| v.to_str().ok());
                match header.and_then(content_range) {
                    Some((first, last)) if first == offset && last < offset + length => last - first + 1,
                    _ => return Err(wrong("the answer is not the range asked for")),
                }
            }
            // A store that ignores ranges sends the whole object: taken
            // only if it is no longer than the range's end, and small.
            (Some(_), 200) if end.is_some_and(|e| e <= WHOLE_FOR_RANGE) => end.unwrap_or(0),
            _ => return Err(wrong(&format!("unexpected HTTP {code}"))),
        };
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| self.failed("reading", &key, e))?;
        match (range, code) {
            (Some(_), 206) if body.len() as u64 != limit => {
                Err(wrong("the answer is shorter than its range"))
            }
            (Some((offset, _)), 200) => Ok(body.get(offset as usize..).unwrap_or_default().to_vec()),
            _ => Ok(body),
        }
    }
}

/// A failure of the transport (no answer, a broken connection, a timeout)
/// as a [`Transient`] error; a refused certificate or an answer over its
/// size limit is not.
pub fn transport_error(what: &str, e: ureq::Error) -> anyhow::Error {
    let message = format!("{what} failed: {e}");
    if matches!(
        super::https::rustls_error(&e),
        Some(rustls::Error::InvalidCertificate(_))
    ) {
        // A certificate refused: asking again changes nothing.
        return anyhow!(message);
    }
    match e {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => {
            anyhow!(message)
        }
        ureq::Error::BodyExceedsLimit(_) | ureq::Error::BadUri(_) | ureq::Error::RequireHttpsOnly(_) => {
            anyhow!(message)
        }
        _ => anyhow::Error::new(Transient(message)),
    }
}

impl Backend for S3 {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create(&self) -> Result<()> {
        match self.stat(Kind::Config, "config") {
            Ok(_) => bail!("{} already holds a repository", self.location),
            Err(e) if super::is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        self.get(kind, name, None)
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        if length == 0 {
            return Ok(Vec::new());
        }
        self.get(kind, name, Some((offset, length)))
    }

    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.put(kind, name, data, false).map(|_| ())
    }

    /// Looks first, then writes with `If-None-Match: *`: exclusive on
    /// stores that honour it (AWS since 2024); Garage 2.5 ignores it, and
    /// there two writers at the same instant can both write.
    fn write_new(&self, kind: Kind, name: &str, data: &[u8]) -> Result<bool> {
        match self.stat(kind, name) {
            Ok(_) => Ok(false),
            Err(e) if super::is_not_found(&e) => self.put(kind, name, data, true),
            Err(e) => Err(e),
        }
    }

    fn list(&self, kind: Kind) -> Result<Vec<Listed>> {
        let dir = format!("{}{}/", self.prefix, kind.dir());
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut last_key: Option<String> = None;
        loop {
            // ListObjectsV2 is a GET of the bucket with these parameters.
            let mut action = self.bucket.get_object(Some(&self.credentials), "");
            let q = action.query_mut();
            q.insert("list-type", "2");
            q.insert("encoding-type", "url");
            q.insert("prefix", dir.as_str());
            q.insert("max-keys", PAGE.to_string());
            if let Some(t) = &token {
                q.insert("continuation-token", t.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let mut resp = self
                .agent
                .get(url.as_str())
                .call()
                .map_err(|e| self.failed("listing", &dir, e))?;
            self.status("listing", &dir, &mut resp)?;
            let body = resp
                .body_mut()
                .with_config()
                .limit(LIST_PAGE_BYTES)
                .read_to_string()
                .map_err(|e| self.failed("listing", &dir, e))?;
            let refused = |what: &str| anyhow!("listing {dir} of {}: {what}", self.location);
            let page = parse_list(&body).ok_or_else(|| refused("an unreadable answer"))?;
            if page.next.is_some() && page.objects.is_empty() {
                return Err(refused("a page with nothing on it that says more follow"));
            }
            if out.len() + page.objects.len() > MAX_LISTED {
                return Err(refused(&format!("more than {MAX_LISTED} objects")));
            }
            for (key, size) in page.objects {
                // Keys come URL-encoded (encoding-type=url), in order, each
                // once: a store that repeats a page or never ends its
                // listing is caught here.
                let key = percent_decoded(&key).ok_or_else(|| refused("an undecodable key"))?;
                if last_key
                    .as_ref()
                    .is_some_and(|last| key.as_str() <= last.as_str())
                {
                    return Err(refused("keys out of order or listed twice"));
                }
                last_key = Some(key.clone());
                let Some(rest) = key.strip_prefix(&dir) else {
                    continue;
                };
                let name = match kind {
                    Kind::Packs => match rest.split_once('/') {
                        Some((sub, name)) if Kind::Packs.path(name) == format!("packs/{sub}/{name}") => name,
                        _ => continue,
                    },
                    _ => rest,
                };
                if name.is_empty() || name.contains('/') {
                    continue;
                }
                out.push(Listed {
                    name: name.to_string(),
                    size,
                });
            }
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        let key = self.key(kind, name);
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let mut resp = self
            .agent
            .delete(url.as_str())
            .call()
            .map_err(|e| self.failed("deleting", &key, e))?;
        match self.status("deleting", &key, &mut resp) {
            Err(e) if super::is_not_found(&e) => Ok(()),
            r => r,
        }
    }

    fn stat(&self, kind: Kind, name: &str) -> Result<u64> {
        let key = self.key(kind, name);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let mut resp = self
            .agent
            .head(url.as_str())
            .call()
            .map_err(|e| self.failed("looking up", &key, e))?;
        self.status("looking up", &key, &mut resp)?;
        resp.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or_else(|| anyhow!("looking up {key} of {}: no size in the answer", self.location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_safe_prefix() {
        let c = || Credentials::new("k", "s");
        let s = S3::with_credentials("http://127.0.0.1:9000/bucket/a/b", c(), "r").unwrap();
        assert_eq!(s.key(Kind::Snapshots, "x"), "a/b/snapshots/x");
        let s = S3::with_credentials("https://h/bucket", c(), "r").unwrap();
        assert_eq!(s.key(Kind::Packs, "abcd"), "packs/ab/abcd");
        for bad in [
            "ftp://h/b",
            "http://h/",
            "http://u:p@h/b",
            "http://h/b/../x",
            "http://h/b/%2e%2e",
            "http://h/b?x=1",
        ] {
            assert!(S3::with_credentials(bad, c(), "r").is_err(), "{bad}");
        }
    }

    /// A hostile store on loopback: answers every request with what
    /// `answer` makes of its request line (status line, headers, body).
    fn hostile(answer: fn(&str) -> (String, Vec<u8>)) -> S3 {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut h = String::new();
                while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let (head, body) = answer(&line);
                let mut w = conn;
                let _ = write!(
                    w,
                    "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = w.write_all(&body);
            }
        });
        let url = format!("http://127.0.0.1:{port}/bucket/p");
        S3::with_credentials(&url, Credentials::new("k", "s"), "r").unwrap()
    }

    #[test]
    fn a_store_that_never_ends_its_listing_is_refused() {
        let s = hostile(|_| {
            let page = "<ListBucketResult><Contents><Key>p/index/aa</Key><Size>1</Size></Contents>\
                <IsTruncated>true</IsTruncated><NextContinuationToken>again</NextContinuationToken>\
                </ListBucketResult>";
            ("HTTP/1.1 200 OK\r\n".into(), page.as_bytes().to_vec())
        });
        let e = s.list(Kind::Index).unwrap_err();
        assert!(format!("{e:#}").contains("out of order or listed twice"), "{e:#}");
    }

    #[test]
    fn a_range_answered_with_other_bytes_is_refused() {
        let shifted = hostile(|_| {
            let head = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-19/100\r\n";
            (head.into(), vec![7; 10])
        });
        let e = shifted.read_range(Kind::Packs, "abcd", 0, 10).unwrap_err();
        assert!(format!("{e:#}").contains("not the range asked for"), "{e:#}");
        let short = hostile(|_| {
            let head = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n";
            (head.into(), vec![7; 4])
        });
        assert!(short.read_range(Kind::Packs, "abcd", 0, 10).is_err());
        // The whole object for a range: only what the range needs is read.
        let whole = hostile(|_| ("HTTP/1.1 200 OK\r\n".into(), vec![7; 1 << 20]));
        assert!(whole.read_range(Kind::Packs, "abcd", 0, 10).is_err());
        let e = whole.read_range(Kind::Packs, "abcd", 100 << 20, 10).unwrap_err();
        assert!(format!("{e:#}").contains("unexpected HTTP 200"), "{e:#}");
        // A whole read answered with a part is refused too.
        let part = hostile(|_| {
            let head = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n";
            (head.into(), vec![7; 10])
        });
        assert!(part.read(Kind::Packs, "abcd").is_err());
    }
}
