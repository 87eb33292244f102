//! An in-memory backend, for tests and for the shared suite.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Result, bail};

use super::{Backend, Kind, Listed, NotFound};

type Objects = HashMap<(Kind, String), Vec<u8>>;

#[derive(Default)]
pub struct Mem {
    /// `None` until `create`.
    objects: Mutex<Option<Objects>>,
}

impl Mem {
    fn with<T>(&self, f: impl FnOnce(&mut Objects) -> Result<T>) -> Result<T> {
        let mut g = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(m) => f(m),
            None => bail!("the in-memory repository has not been created"),
        }
    }
}

impl Backend for Mem {
    fn location(&self) -> String {
        "memory".into()
    }

    fn is_local(&self) -> bool {
        true
    }

    fn create(&self) -> Result<()> {
        let mut g = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_some() {
            bail!("a repository already exists in memory");
        }
        *g = Some(HashMap::new());
        Ok(())
    }

    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        self.with(|m| {
            m.get(&(kind, name.to_string()))
                .cloned()
                .ok_or_else(|| NotFound(kind.path(name)).into())
        })
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let all = self.read(kind, name)?;
        let start = (offset as usize).min(all.len());
        let end = (offset.saturating_add(length) as usize).min(all.len());
        Ok(all[start..end].to_vec())
    }

    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.with(|m| {
            m.insert((kind, name.to_string()), data.to_vec());
            Ok(())
        })
    }

    fn write_new(&self, kind: Kind, name: &str, data: &[u8]) -> Result<bool> {
        self.with(|m| match m.entry((kind, name.to_string())) {
            std::collections::hash_map::Entry::Occupied(_) => Ok(false),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(data.to_vec());
                Ok(true)
            }
        })
    }

    fn list(&self, kind: Kind) -> Result<Vec<Listed>> {
        self.with(|m| {
            Ok(m.iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, n), v)| Listed {
                    name: n.clone(),
                    size: v.len() as u64,
                })
                .collect())
        })
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        self.with(|m| {
            m.remove(&(kind, name.to_string()));
            Ok(())
        })
    }

    fn stat(&self, kind: Kind, name: &str) -> Result<u64> {
        Ok(self.read(kind, name)?.len() as u64)
    }
}
