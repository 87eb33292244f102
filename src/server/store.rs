//! Where the server keeps repositories and accounts: a local directory
//! (`--data DIR`) or an S3 bucket and prefix (`--s3 URL`). Each
//! repository is a backend of its own under `REPO/`; accounts and the
//! server's settings are under `_server/`, which no repository name can
//! reach (names start with a letter or digit).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::accounts::{Accounts, valid_name};
use crate::backend::{Backend, local::Local, retry::Retry, s3::S3};
use crate::error::Exit;

#[derive(Clone, Debug)]
pub enum Where {
    Data(PathBuf),
    S3(String),
}

pub struct Store {
    place: Where,
    repos: Mutex<HashMap<String, Arc<dyn Backend>>>,
    pub accounts: Accounts,
}

impl Store {
    pub fn open(place: Where) -> Result<Store> {
        let meta: Arc<dyn Backend> = match &place {
            Where::Data(dir) => {
                if !dir.is_dir() {
                    return Err(Exit::usage(format!("--data {}: not a directory", dir.display())));
                }
                Arc::new(Local::new(dir.join("_server")))
            }
            Where::S3(url) => Arc::new(Retry::new(S3::new(&s3_url(url, "_server")?)?)),
        };
        Ok(Store {
            place,
            repos: Mutex::new(HashMap::new()),
            accounts: Accounts::new(meta),
        })
    }

    pub fn describe(&self) -> String {
        match &self.place {
            Where::Data(d) => d.display().to_string(),
            Where::S3(u) => u.clone(),
        }
    }

    /// The backend of repository `name` (already validated by the caller;
    /// checked again here).
    pub fn repo(&self, name: &str) -> Result<Arc<dyn Backend>> {
        if !valid_name(name) {
            return Err(Exit::usage(format!("{name:?} is not a valid repository name")));
        }
        let mut repos = self.repos.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = repos.get(name) {
            return Ok(b.clone());
        }
        let b: Arc<dyn Backend> = match &self.place {
            Where::Data(dir) => Arc::new(Local::new(dir.join(name))),
            // Not retried here: the client retries the whole request.
            Where::S3(url) => Arc::new(S3::new(&s3_url(url, name)?)?),
        };
        repos.insert(name.to_string(), b.clone());
        Ok(b)
    }
}

/// `s3:http(s)://host/bucket[/prefix]` extended by one path segment.
fn s3_url(url: &str, segment: &str) -> Result<String> {
    let rest = url.strip_prefix("s3:").ok_or_else(|| {
        Exit::usage(format!(
            "--s3 {url}: expected s3:http(s)://host:port/bucket/prefix"
        ))
    })?;
    Ok(format!("{}/{segment}", rest.trim_end_matches('/')))
}
