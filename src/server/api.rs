//! The server's HTTP interface, behind TLS:
//!
//! - `POST /_login` with `{"account","password","repository"}`: a session
//!   token and the account's role on that repository;
//! - `GET /`: the repositories the account holds a role on;
//! - `POST /REPO`: create a repository (admin, writer);
//! - `GET /REPO/KIND/`: list objects of a kind, as `[{"name","size"}]`;
//! - `GET` (with one `Range`), `HEAD`, `PUT`, `DELETE` of `/REPO/config`
//!   and `/REPO/KIND/NAME`.
//!
//! Every request but the login carries `Authorization: Bearer TOKEN`.
//! Names are checked on the raw path, before anything decodes it: a
//! repository name of [`valid_name`], a kind of the repository layout,
//! an object name of 64 lowercase hex digits that is the SHA-256 of what a
//! PUT sends. A writer adds objects and removes only locks it wrote; a
//! reader only reads.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};

use super::Shared;
use super::accounts::{Role, valid_name};
use crate::backend::{self, Backend, Kind, Listed};

pub(super) type Answer = Response<Held>;

/// A response body that holds its share of the memory budget until it
/// has been sent (or the connection dropped).
pub struct Held {
    body: Full<Bytes>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The HSTS policy sent with every answer: a year, subdomains too.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";
/// The longest a request body may take to arrive.
const BODY_DEADLINE: Duration = Duration::from_secs(10 * 60);

pub(super) fn answer(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Held {
        body: Full::new(body.into()),
        permit: None,
    });
    *r.status_mut() = status;
    r
}

/// The header that carries a refusal's sentence, for answers to `HEAD`,
/// which have no body.
pub const REASON: &str = "strongroom-error";

pub(super) fn refuse(status: StatusCode, sentence: impl Into<String>) -> Answer {
    let sentence = sentence.into();
    let printable: String = sentence
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect();
    let mut r = answer(status, sentence + "\n");
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("valid"),
    );
    if let Ok(v) = printable.parse() {
        h.insert(REASON, v);
    }
    r
}

pub(super) fn json(value: &serde_json::Value) -> Answer {
    let mut r = answer(StatusCode::OK, serde_json::to_vec(value).unwrap_or_default());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().expect("valid"));
    r
}

/// Runs storage work (blocking I/O) off the async workers.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a storage task panicked")
}

/// An error of the storage as an answer: missing is 404, anything else 503
/// (the client retries), named in the server's log but not to the client.
pub(super) fn storage_failed(shared: &Shared, what: &str, e: anyhow::Error) -> Answer {
    if backend::is_not_found(&e) {
        return refuse(StatusCode::NOT_FOUND, format!("{what} does not exist"));
    }
    eprintln!("strongroom server: {what}: {e:#}");
    shared.count_error();
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the server's storage failed on {what}"),
    )
}

pub async fn handle(shared: Arc<Shared>, peer: IpAddr, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let (who, mut resp) = route(&shared, peer, req).await;
    let h = resp.headers_mut();
    h.insert(header::STRICT_TRANSPORT_SECURITY, HSTS.parse().expect("valid"));
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("valid"));
    if crate::verbosity() > 0 {
        eprintln!(
            "strongroom server: {peer} {} {method} {path} {} {} ms",
            who.as_deref().unwrap_or("-"),
            resp.status().as_u16(),
            started.elapsed().as_millis()
        );
    }
    Ok(resp)
}

/// The answer, and the account that asked (for the log).
async fn route(shared: &Arc<Shared>, peer: IpAddr, req: Request<Incoming>) -> (Option<String>, Answer) {
    let path = req.uri().path().to_string();
    // Nothing is percent-decoded: a name with `%` (an encoded dot, slash or
    // NUL) is simply not a valid name.
    if req.uri().query().is_some() || path.contains(['%', '\\']) || path.contains("//") {
        return (None, refuse(StatusCode::BAD_REQUEST, "not a valid name"));
    }
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
    if req.method() == Method::POST && segments == ["_login"] {
        return (None, super::login::login(shared, peer, req).await);
    }
    let account = match super::login::authenticate(shared, &req).await {
        Ok(a) => a,
        Err(resp) => return (None, resp),
    };
    let who = Some(account.name.clone());
    if segments == [""] {
        if req.method() != Method::GET {
            return (
                who,
                refuse(StatusCode::METHOD_NOT_ALLOWED, "only GET lists repositories"),
            );
        }
        let repos: serde_json::Map<String, serde_json::Value> = account
            .roles
            .iter()
            .map(|(r, role)| (r.clone(), role.name().into()))
            .collect();
        return (who, json(&serde_json::json!({ "repositories": repos })));
    }
    let repo = segments[0];
    if !valid_name(repo) {
        return (
            who,
            refuse(StatusCode::BAD_REQUEST, "not a valid repository name"),
        );
    }
    let Some(role) = account.roles.get(repo).copied() else {
        let sentence = format!("account {} holds no role on repository {repo}", account.name);
        return (who, refuse(StatusCode::FORBIDDEN, sentence));
    };
    let backend = match shared.store.repo(repo) {
        Ok(b) => b,
        Err(e) => return (who, refuse(StatusCode::BAD_REQUEST, format!("{e:#}"))),
    };
    let at = Target {
        repo: repo.to_string(),
        account: account.name.clone(),
        role,
        backend,
    };
    let resp = match (req.method().clone(), &segments[1..]) {
        (Method::POST, [] | [""]) => at.create(shared).await,
        (m, ["config"]) => at.object(shared, m, Kind::Config, "config".into(), req).await,
        (Method::GET, [kind, ""]) => match kind_of(kind) {
            Some(kind) => at.list(shared, kind).await,
            None => refuse(StatusCode::NOT_FOUND, "no such kind of object"),
        },
        (m, [kind, name]) => match kind_of(kind) {
            Some(kind) if valid_object_name(name) => at.object(shared, m, kind, name.to_string(), req).await,
            _ => refuse(StatusCode::BAD_REQUEST, "not a valid object name"),
        },
        _ => refuse(StatusCode::NOT_FOUND, "no such resource"),
    };
    (who, resp)
}

fn kind_of(s: &str) -> Option<Kind> {
    match s {
        "keys" => Some(Kind::Keys),
        "snapshots" => Some(Kind::Snapshots),
        "index" => Some(Kind::Index),
        "packs" => Some(Kind::Packs),
        "locks" => Some(Kind::Locks),
        _ => None,
    }
}

/// Object names are SHA-256 content hashes: 64 lowercase hex digits.
pub fn valid_object_name(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads a body of at most `limit` bytes, within `deadline`.
pub(super) async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, Answer> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the {limit} bytes allowed here"),
        ));
    }
    let collected = tokio::time::timeout(deadline, Limited::new(req.into_body(), limit).collect()).await;
    match collected {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the {limit} bytes allowed here"),
        )),
        Ok(Err(_)) => Err(refuse(StatusCode::BAD_REQUEST, "the body did not arrive whole")),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "the body took too long to arrive",
        )),
    }
}

/// The largest body of each kind the server takes: what a client reads
/// whole ([`Kind::max_size`]).
fn body_limit(kind: Kind) -> usize {
    usize::try_from(kind.max_size()).unwrap_or(usize::MAX)
}

/// One request's repository, account and role.
struct Target {
    repo: String,
    account: String,
    role: Role,
    backend: Arc<dyn Backend>,
}

impl Target {
    fn denied(&self, what: &str) -> Answer {
        refuse(
            StatusCode::FORBIDDEN,
            format!(
                "account {} is a {} of repository {} and may not {what}",
                self.account,
                self.role.name(),
                self.repo
            ),
        )
    }

    async fn create(&self, shared: &Arc<Shared>) -> Answer {
        if self.role == Role::Reader {
            return self.denied("create it");
        }
        let b = self.backend.clone();
        match blocking(move || b.create()).await {
            Ok(()) => answer(StatusCode::CREATED, ""),
            Err(e) if format!("{e:#}").contains("already") => refuse(
                StatusCode::CONFLICT,
                format!("repository {} already exists", self.repo),
            ),
            Err(e) => storage_failed(shared, &format!("creating repository {}", self.repo), e),
        }
    }

    async fn list(&self, shared: &Arc<Shared>, kind: Kind) -> Answer {
        #[derive(serde::Serialize)]
        struct Entry {
            name: String,
            size: u64,
        }
        let b = self.backend.clone();
        let listed = match blocking(move || b.list(kind)).await {
            Ok(l) => l,
            Err(e) => return storage_failed(shared, &format!("listing {}/{}", self.repo, kind.dir()), e),
        };
        // The listing and its JSON (about 100 bytes a name) count against
        // the memory budget until sent.
        let Ok(memory) = shared.memory(listed.len() as u64 * 200).await else {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down");
        };
        let entries: Vec<Entry> = listed
            .into_iter()
            .filter(|l: &Listed| valid_object_name(&l.name))
            .map(|l| Entry {
                name: l.name,
                size: l.size,
            })
            .collect();
        let mut r = answer(StatusCode::OK, serde_json::to_vec(&entries).unwrap_or_default());
        r.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().expect("valid"));
        r.body_mut().permit = Some(memory);
        r
    }

    async fn object(
        &self,
        shared: &Arc<Shared>,
        m: Method,
        kind: Kind,
        name: String,
        req: Request<Incoming>,
    ) -> Answer {
        let what = format!("{}/{}", self.repo, kind.path(&name));
        match m {
            Method::GET | Method::HEAD => {
                self.read(shared, m == Method::HEAD, kind, name, &what, &req)
                    .await
            }
            Method::PUT => self.write(shared, kind, name, &what, req).await,
            Method::DELETE => self.delete(shared, kind, name, &what).await,
            _ => refuse(StatusCode::METHOD_NOT_ALLOWED, "not a method of objects"),
        }
    }

    async fn read(
        &self,
        shared: &Arc<Shared>,
        head: bool,
        kind: Kind,
        name: String,
        what: &str,
        req: &Request<Incoming>,
    ) -> Answer {
        let b = self.backend.clone();
        let n = name.clone();
        let size = match blocking(move || b.stat(kind, &n)).await {
            Ok(s) => s,
            Err(e) => return storage_failed(shared, what, e),
        };
        let range = match req.headers().get(header::RANGE) {
            None => None,
            Some(v) => match v.to_str().ok().and_then(parse_range) {
                Some(r) => Some(r),
                None => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "only one range of bytes=FIRST-LAST is served",
                    );
                }
            },
        };
        if head {
            let mut r = answer(StatusCode::OK, "");
            r.headers_mut().insert(header::CONTENT_LENGTH, size.into());
            return r;
        }
        let (offset, length, status) = match range {
            None => (0, size, StatusCode::OK),
            Some((first, _)) if first >= size => {
                let mut r = answer(StatusCode::RANGE_NOT_SATISFIABLE, "");
                let v = format!("bytes */{size}");
                r.headers_mut()
                    .insert(header::CONTENT_RANGE, v.parse().expect("ascii"));
                return r;
            }
            Some((first, last)) => (first, last.min(size - 1) - first + 1, StatusCode::PARTIAL_CONTENT),
        };
        let Ok(memory) = shared.memory(length).await else {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down");
        };
        let b = self.backend.clone();
        let got = blocking(move || {
            if status == StatusCode::OK {
                b.read(kind, &name)
            } else {
                b.read_range(kind, &name, offset, length)
            }
        })
        .await;
        let bytes = match got {
            Ok(bytes) => bytes,
            Err(e) => return storage_failed(shared, what, e),
        };
        if bytes.len() as u64 != length {
            // Changed under us (an admin replaced config): the client retries.
            return storage_failed(
                shared,
                what,
                anyhow::anyhow!("its size changed while it was read"),
            );
        }
        let mut r = answer(status, bytes);
        r.body_mut().permit = Some(memory);
        if status == StatusCode::PARTIAL_CONTENT {
            let v = format!("bytes {offset}-{}/{size}", offset + length - 1);
            r.headers_mut()
                .insert(header::CONTENT_RANGE, v.parse().expect("ascii"));
        }
        r
    }

    async fn write(
        &self,
        shared: &Arc<Shared>,
        kind: Kind,
        name: String,
        what: &str,
        req: Request<Incoming>,
    ) -> Answer {
        if self.role == Role::Reader {
            return self.denied("write");
        }
        let Some(length) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        else {
            return refuse(
                StatusCode::LENGTH_REQUIRED,
                "an object is sent with its Content-Length",
            );
        };
        if length > body_limit(kind) as u64 {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{what}: larger than any {} strongroom writes", kind.dir()),
            );
        }
        let Ok(_memory) = shared.memory(length).await else {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down");
        };
        // At least 64 KiB/s after the first 30 s: a body sent a trickle at
        // a time does not hold its share of memory for long.
        let deadline =
            (Duration::from_secs(30) + Duration::from_secs(length / (64 << 10))).min(BODY_DEADLINE);
        let body = match read_body(req, body_limit(kind), deadline).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        if kind != Kind::Config && hex::encode(crate::crypto::sha256(&body)) != name {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("{what}: the content does not match its name"),
            );
        }
        let (b, s, role) = (self.backend.clone(), shared.clone(), self.role);
        let (repo, account) = (self.repo.clone(), self.account.clone());
        let result = blocking(move || -> Result<Result<(), &'static str>> {
            if role == Role::Writer {
                match kind {
                    // Config is the one object replaced: only by an admin.
                    // Created only where there is none, never replaced.
                    Kind::Config => {
                        if b.write_new(kind, &name, &body)? || b.read(kind, &name)? == body.as_ref() {
                            return Ok(Ok(()));
                        }
                        return Ok(Err("replace the repository's config"));
                    }
                    Kind::Locks => match s.lock_owner(&repo, &name)? {
                        Some(owner) if owner != account => {
                            return Ok(Err("take over another account's lock"));
                        }
                        _ => s.set_lock_owner(&repo, &name, &account)?,
                    },
                    // Content-named: the same name is the same content,
                    // so writing it again changes nothing stored.
                    _ => {}
                }
            } else if kind == Kind::Locks {
                s.set_lock_owner(&repo, &name, &account)?;
            }
            b.write(kind, &name, &body)?;
            Ok(Ok(()))
        })
        .await;
        match result {
            Ok(Ok(())) => answer(StatusCode::CREATED, ""),
            Ok(Err(what)) => self.denied(what),
            Err(e) => storage_failed(shared, what, e),
        }
    }

    async fn delete(&self, shared: &Arc<Shared>, kind: Kind, name: String, what: &str) -> Answer {
        let writer_lock = self.role == Role::Writer && kind == Kind::Locks;
        if self.role == Role::Reader || (self.role == Role::Writer && !writer_lock) {
            return self.denied("delete");
        }
        let (b, s, role) = (self.backend.clone(), shared.clone(), self.role);
        let (repo, account) = (self.repo.clone(), self.account.clone());
        let result = blocking(move || -> Result<bool> {
            if kind == Kind::Locks {
                let owner = s.lock_owner(&repo, &name)?;
                if role == Role::Writer && owner.as_deref() != Some(account.as_str()) {
                    // Gone already, or another's: either way not this one's to remove.
                    return Ok(b.stat(kind, &name).is_err_and(|e| backend::is_not_found(&e)));
                }
                b.delete(kind, &name)?;
                s.clear_lock_owner(&repo, &name)?;
                return Ok(true);
            }
            b.delete(kind, &name)?;
            Ok(true)
        })
        .await;
        match result {
            Ok(true) => answer(StatusCode::NO_CONTENT, ""),
            Ok(false) => self.denied("remove another account's lock"),
            Err(e) => storage_failed(shared, what, e),
        }
    }
}

/// `bytes=FIRST-LAST` (one range, both ends given) as (first, last).
fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (first, last) = v.strip_prefix("bytes=")?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(last) {
        return None;
    }
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_one_closed_interval() {
        assert_eq!(parse_range("bytes=0-9"), Some((0, 9)));
        assert_eq!(parse_range("bytes=5-5"), Some((5, 5)));
        for bad in [
            "bytes=9-0",
            "bytes=-5",
            "bytes=5-",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn object_names_are_content_hashes() {
        assert!(valid_object_name(&"ab".repeat(32)));
        for bad in [
            "config",
            "..",
            &"AB".repeat(32),
            &"ab".repeat(31),
            &format!("{}/x", "ab".repeat(31)),
        ] {
            assert!(!valid_object_name(bad), "{bad}");
        }
    }
}
