//! Logging in (`POST /_login`) and the session token every other request
//! carries.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hyper::body::Incoming;
use hyper::{Request, StatusCode, header};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::Shared;
use super::accounts::{self, Account, valid_name};
use super::api::{Answer, blocking, json, read_body, refuse, storage_failed};

/// The largest login request.
const LOGIN_BYTES: usize = 4096;
/// The longest a login's body may take to arrive.
const LOGIN_DEADLINE: Duration = Duration::from_secs(10);
/// Logins waiting for their key derivation at once; more are turned away.
const KDF_QUEUE: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    account: String,
    password: Zeroizing<String>,
    repository: Option<String>,
}

fn too_many(wait: Duration) -> Answer {
    let mut r = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed logins for this account or address; try again later",
    );
    let secs = wait.as_secs().max(1).to_string();
    r.headers_mut()
        .insert(header::RETRY_AFTER, secs.parse().expect("digits"));
    r
}

pub async fn login(shared: &Arc<Shared>, peer: IpAddr, req: Request<Incoming>) -> Answer {
    let body = match read_body(req, LOGIN_BYTES, LOGIN_DEADLINE).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Ok(asked) = serde_json::from_slice::<LoginRequest>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a login needs account, password and repository",
        );
    };
    // Named in the log only if it is a name at all.
    let shown = if valid_name(&asked.account) {
        asked.account.clone()
    } else {
        "(not a valid name)".to_string()
    };
    let keys = super::Throttle::keys(&shown, peer);
    let _attempt = match shared.throttle.begin(&keys) {
        Ok(a) => a,
        Err(wait) => return too_many(wait),
    };
    // Key derivation is the costly part: a few at a time, a bounded queue.
    let Some(_queued) = shared.kdf_queue.try_enter(KDF_QUEUE) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins at once; try again shortly",
        );
    };
    let Ok(_permit) = shared.kdf.acquire().await else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down");
    };
    let s = shared.clone();
    let name = asked.account.clone();
    let found = blocking(move || -> Result<Option<Account>> {
        let a = s.store.accounts.get(&name)?;
        // An unknown account, or one waiting for a reset, costs the same.
        let stored = match &a {
            Some(a) if !a.password.is_empty() => a.password.as_str(),
            _ => accounts::decoy_hash(),
        };
        let ok = accounts::verify_password(stored, asked.password.as_bytes());
        Ok(a.filter(|a| ok && !a.password.is_empty()))
    })
    .await;
    let account = match found {
        Ok(Some(a)) => a,
        Ok(None) => {
            shared.throttle.failed(&keys);
            eprintln!("strongroom server: failed login of account {shown} from {peer}");
            return refuse(StatusCode::UNAUTHORIZED, "wrong account name or password");
        }
        Err(e) => return storage_failed(shared, &format!("account {shown}"), e),
    };
    shared.throttle.succeeded(&keys);
    let token = accounts::issue_token(&shared.session_key, &account);
    let role = asked
        .repository
        .as_ref()
        .and_then(|r| account.roles.get(r))
        .map(|r| r.name());
    json(&serde_json::json!({
        "token": token,
        "expires_in": accounts::SESSION_SECS,
        "role": role,
    }))
}

pub async fn authenticate(shared: &Arc<Shared>, req: &Request<Incoming>) -> Result<Account, Answer> {
    let unauthorized = |s: &str| refuse(StatusCode::UNAUTHORIZED, s);
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("log in first (POST /_login)"))?;
    let (name, generation) = accounts::check_token(&shared.session_key, token)
        .ok_or_else(|| unauthorized("the session is not valid or has expired; log in again"))?;
    let account = shared
        .account(&name)
        .await
        .map_err(|e| storage_failed(shared, &format!("account {name}"), e))?;
    match account {
        Some(a) if a.generation == generation => Ok(a),
        _ => Err(unauthorized("the session has ended; log in again")),
    }
}
