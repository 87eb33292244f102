//! A repository on a strongroom server: `https://NAME@host:port/REPO`.
//!
//! TLS through rustls (ring), trusting only the strongroom CA, never the
//! public WebPKI; rustls offers TLS 1.3 first and only forward-secret
//! suites. The account logs in once (`POST /_login`), then every request
//! carries the session token; an expired session logs in again. Nothing
//! here retries: [`super::retry`] wraps this backend.

use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow, bail};
use zeroize::Zeroizing;

use super::s3::{agent_config, answers::content_range};
use super::{Backend, Kind, Listed, NotFound, Refused, Transient};
use crate::error::Exit;

/// The largest listing taken (about 12 million names).
const LIST_BYTES: u64 = 1 << 30;

/// Where the trusted CA came from, for messages.
pub struct Trust {
    pub pem: Vec<u8>,
    pub source: String,
}

pub struct Https {
    /// `https://host:port`, no account.
    origin: String,
    repo: String,
    account: String,
    password: Zeroizing<Vec<u8>>,
    session: Mutex<Option<Session>>,
    /// Held while logging in: threads that need a session together wait
    /// for one login instead of each making their own.
    logging_in: Mutex<()>,
    agent: ureq::Agent,
    location: String,
    trust_source: String,
}

#[derive(Clone)]
struct Session {
    token: Arc<Zeroizing<String>>,
    role: Option<String>,
}

/// The TLS failure inside a transport error, wherever ureq put it.
pub fn rustls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// Splits `https://NAME@host:port/REPO` into (origin, account, repo).
pub fn parse_url(url: &str) -> Result<(String, String, String)> {
    // Messages never show a password put in the URL by mistake.
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rsplit_once('@') {
                Some((user, host)) if user.contains(':') => {
                    let name = user.split(':').next().unwrap_or_default();
                    format!("{scheme}://{name}:…@{host}{}", &rest[end..])
                }
                _ => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    if url.starts_with("http://") {
        return Err(Exit::usage(format!(
            "repository {shown}: plain http:// is refused; a strongroom server speaks only https://"
        )));
    }
    let usage = |why: &str| {
        Exit::usage(format!(
            "repository {shown}: {why}; expected https://NAME@host:port/REPO"
        ))
    };
    let parsed = url::Url::parse(url).map_err(|e| usage(&e.to_string()))?;
    if parsed.scheme() != "https" || parsed.host_str().is_none() {
        return Err(usage("not an https:// URL"));
    }
    if parsed.password().is_some() {
        return Err(usage(
            "the password goes in STRONGROOM_PASSWORD or --password-file, never in the URL",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(usage("a query or fragment"));
    }
    let account = parsed.username().to_string();
    if !crate::server::accounts::valid_name(&account) {
        return Err(usage("no account name"));
    }
    let raw_path = url.splitn(4, '/').nth(3).unwrap_or("");
    let repo = raw_path.trim_end_matches('/');
    if !crate::server::accounts::valid_name(repo) {
        return Err(usage("no valid repository name (letters, digits, '.', '_', '-')"));
    }
    let mut origin = format!("https://{}", parsed.host_str().unwrap_or_default());
    if let Some(port) = parsed.port() {
        origin += &format!(":{port}");
    }
    Ok((origin, account, repo.to_string()))
}

impl Https {
    pub fn new(url: &str, trust: Trust, password: Zeroizing<Vec<u8>>) -> Result<Https> {
        let (origin, account, repo) = parse_url(url)?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&trust.pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("the CA certificate from {} is not valid PEM: {e}", trust.source))?;
        if certs.is_empty() {
            bail!("{} holds no CA certificate", trust.source);
        }
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        let agent = agent_config()
            .tls_config(tls)
            .https_only(true)
            .build()
            .new_agent();
        Ok(Https {
            location: format!("{origin}/{repo} (account {account})"),
            origin,
            repo,
            account,
            password,
            session: Mutex::new(None),
            logging_in: Mutex::new(()),
            agent,
            trust_source: trust.source,
        })
    }

    fn url(&self, kind: Kind, name: &str) -> String {
        match kind {
            Kind::Config => format!("{}/{}/config", self.origin, self.repo),
            _ => format!("{}/{}/{}/{name}", self.origin, self.repo, kind.dir()),
        }
    }

    /// A failure of the transport, with a refused certificate said plainly.
    fn failed(&self, what: &str, e: ureq::Error) -> anyhow::Error {
        use rustls::CertificateError as C;
        let cert = match rustls_error(&e) {
            Some(rustls::Error::InvalidCertificate(c)) => Some(match c {
                C::UnknownIssuer | C::BadSignature => format!(
                    "the server's certificate is not signed by the strongroom CA trusted here ({})",
                    self.trust_source
                ),
                C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet".into()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    format!("the server's certificate is not for {}", self.origin)
                }
                other => format!("the server's certificate is not acceptable ({other:?})"),
            }),
            _ => None,
        };
        match cert {
            Some(why) => anyhow!("{what} {}: {why}; refused", self.location),
            None => super::s3::transport_error(&format!("{what} {}", self.location), e),
        }
    }

    /// A response's status as an error, if it is one, with the server's
    /// one-sentence reason.
    fn status(&self, what: &str, resp: &mut ureq::http::Response<ureq::Body>) -> Result<()> {
        let code = resp.status().as_u16();
        if (200..300).contains(&code) {
            return Ok(());
        }
        let reason = resp
            .headers()
            .get(crate::server::REASON)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let said = resp
            .body_mut()
            .with_config()
            .limit(1024)
            .read_to_string()
            .unwrap_or_default();
        let said = reason.unwrap_or(said);
        let said: String = said
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect();
        let message = format!("{what} of {} failed: HTTP {code}: {said}", self.location);
        Err(match code {
            404 => anyhow::Error::new(NotFound(what.to_string())),
            401 | 403 => anyhow::Error::new(Refused(message)),
            408 | 429 | 500..=599 => anyhow::Error::new(Transient(message)),
            _ => anyhow!(message),
        })
    }

    fn login(&self) -> Result<Session> {
        #[derive(serde::Serialize)]
        struct Login<'a> {
            account: &'a str,
            password: &'a str,
            repository: &'a str,
        }
        let password = std::str::from_utf8(&self.password).map_err(|_| {
            Exit::usage(format!(
                "the password of account {} is not UTF-8 text; a strongroom server takes only text",
                self.account
            ))
        })?;
        let mut body = Zeroizing::new(Vec::with_capacity(password.len() + 256));
        serde_json::to_writer(
            &mut *body,
            &Login {
                account: &self.account,
                password,
                repository: &self.repo,
            },
        )
        .map_err(|e| anyhow!("logging in: {e}"))?;
        let mut resp = self
            .agent
            .post(format!("{}/_login", self.origin))
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|e| self.failed("logging in to", e))?;
        if resp.status().as_u16() == 401 {
            return Err(anyhow::Error::new(Refused(format!(
                "the server at {} refused the password of account {}",
                self.origin, self.account
            ))));
        }
        self.status("logging in", &mut resp)?;
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Zeroizing<String>,
            role: Option<String>,
        }
        let text = Zeroizing::new(
            resp.body_mut()
                .with_config()
                .limit(64 << 10)
                .read_to_string()
                .map_err(|e| self.failed("logging in to", e))?,
        );
        let a: Answer = serde_json::from_str(&text)
            .map_err(|_| anyhow!("logging in to {}: an unreadable answer", self.location))?;
        let session = Session {
            token: Arc::new(a.token),
            role: a.role,
        };
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
        Ok(session)
    }

    fn session(&self) -> Result<Session> {
        let current = self.session.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(s) = current {
            return Ok(s);
        }
        let _one = self.logging_in.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.session.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match current {
            Some(s) => Ok(s),
            None => self.login(),
        }
    }

    /// A new session in place of `ended`, unless another thread already
    /// made one.
    fn renew(&self, ended: &Session) -> Result<Session> {
        let _one = self.logging_in.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.session.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match current {
            Some(s) if !Arc::ptr_eq(&s.token, &ended.token) => Ok(s),
            _ => self.login(),
        }
    }

    /// Sends a request with the session token; logs in again once if the
    /// session ended.
    fn send(
        &self,
        what: &str,
        make: &dyn Fn(&str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let s = self.session()?;
        let resp = make(&format!("Bearer {}", s.token.as_str())).map_err(|e| self.failed(what, e))?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let s = self.renew(&s)?;
        make(&format!("Bearer {}", s.token.as_str())).map_err(|e| self.failed(what, e))
    }

    fn get(&self, kind: Kind, name: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
        let url = self.url(kind, name);
        let what = format!("reading {}", kind.path(name));
        let mut header = None;
        if let Some((offset, length)) = range {
            let last = offset
                .checked_add(length - 1)
                .ok_or_else(|| anyhow!("{what}: a range past any object"))?;
            header = Some(format!("bytes={offset}-{last}"));
        }
        let mut resp = self.send(&what, &|auth| {
            let mut r = self.agent.get(&url).header("Authorization", auth);
            if let Some(h) = &header {
                r = r.header("Range", h);
            }
            r.call()
        })?;
        let code = resp.status().as_u16();
        if range.is_some() && code == 416 {
            return Ok(Vec::new());
        }
        self.status(&what, &mut resp)?;
        let wrong = |why: &str| anyhow!("{what} of {}: {why}", self.location);
        let limit = match (range, code) {
            (None, 200) => kind.max_size(),
            (Some((offset, length)), 206) => {
                let h = resp.headers().get("content-range").and_then(|v| v.to_str().ok());
                match h.and_then(content_range) {
                    Some((first, last)) if first == offset && last < offset + length => last - first + 1,
                    _ => return Err(wrong("the answer is not the range asked for")),
                }
            }
            _ => return Err(wrong(&format!("unexpected HTTP {code}"))),
        };
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| self.failed(&what, e))?;
        if range.is_some() && body.len() as u64 != limit {
            return Err(wrong("the answer is shorter than its range"));
        }
        Ok(body)
    }
}

impl Backend for Https {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn append_only(&self) -> bool {
        self.session().is_ok_and(|s| s.role.as_deref() != Some("admin"))
    }

    fn create(&self) -> Result<()> {
        let url = format!("{}/{}", self.origin, self.repo);
        let what = format!("creating repository {}", self.repo);
        let mut resp = self.send(&what, &|auth| {
            self.agent.post(&url).header("Authorization", auth).send_empty()
        })?;
        if resp.status().as_u16() == 409 {
            bail!("{} already holds a repository", self.location);
        }
        self.status(&what, &mut resp)
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
        let url = self.url(kind, name);
        let what = format!("writing {}", kind.path(name));
        let mut resp = self.send(&what, &|auth| {
            self.agent
                .put(&url)
                .header("Authorization", auth)
                .header("Content-Type", "application/octet-stream")
                .send(data)
        })?;
        self.status(&what, &mut resp)
    }

    fn list(&self, kind: Kind) -> Result<Vec<Listed>> {
        let url = format!("{}/{}/{}/", self.origin, self.repo, kind.dir());
        let what = format!("listing {}", kind.dir());
        if kind == Kind::Config {
            return match self.stat(Kind::Config, "config") {
                Ok(size) => Ok(vec![Listed {
                    name: "config".into(),
                    size,
                }]),
                Err(e) if super::is_not_found(&e) => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let mut resp = self.send(&what, &|auth| {
            self.agent.get(&url).header("Authorization", auth).call()
        })?;
        self.status(&what, &mut resp)?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(LIST_BYTES)
            .read_to_vec()
            .map_err(|e| self.failed(&what, e))?;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            name: String,
            size: u64,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&body)
            .map_err(|_| anyhow!("{what} of {}: an unreadable answer", self.location))?;
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if !crate::server::valid_object_name(&e.name) || !seen.insert(e.name.clone()) {
                bail!(
                    "{what} of {}: the server listed an invalid or repeated name",
                    self.location
                );
            }
            out.push(Listed {
                name: e.name,
                size: e.size,
            });
        }
        Ok(out)
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        let url = self.url(kind, name);
        let what = format!("deleting {}", kind.path(name));
        let mut resp = self.send(&what, &|auth| {
            self.agent.delete(&url).header("Authorization", auth).call()
        })?;
        match self.status(&what, &mut resp) {
            Err(e) if super::is_not_found(&e) => Ok(()),
            r => r,
        }
    }

    fn stat(&self, kind: Kind, name: &str) -> Result<u64> {
        let url = self.url(kind, name);
        let what = format!("looking up {}", kind.path(name));
        let mut resp = self.send(&what, &|auth| {
            self.agent.head(&url).header("Authorization", auth).call()
        })?;
        self.status(&what, &mut resp)?;
        resp.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or_else(|| anyhow!("{what} of {}: no size in the answer", self.location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_an_account_a_host_and_a_repository() {
        let (o, a, r) = parse_url("https://host-1@example.org:8443/etc-backups").unwrap();
        assert_eq!(
            (o.as_str(), a.as_str(), r.as_str()),
            ("https://example.org:8443", "host-1", "etc-backups")
        );
        let (o, _, _) = parse_url("https://a@127.0.0.1:9/r/").unwrap();
        assert_eq!(o, "https://127.0.0.1:9");
        for bad in [
            "http://a@h:1/r",
            "https://h:1/r",
            "https://a:pw@h:1/r",
            "https://a@h:1/",
            "https://a@h:1/r/x",
            "https://a@h:1/..",
            "https://a@h:1/%2e%2e",
            "https://a@h:1/r?x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let e = parse_url("https://a:hunter2@h:1/r").unwrap_err();
        assert!(!format!("{e:#}").contains("hunter2"), "{e:#}");
    }
}
