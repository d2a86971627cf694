//! The client registry: which certificate subject is which client system,
//! department, role and region.
//!
//! It is a TOML file the operator controls (`deploy/clients.example.toml`),
//! reloaded with the TLS material. A certificate that chains to the CA but
//! whose subject CN is not registered (or is disabled) gets 403.
//!
//! ```toml
//! [[client]]
//! id = "civil-affairs"          # the certificate's subject CN
//! department = "civil-affairs"
//! role = "system"               # system | admin | auditor
//! region = "441700"             # GB/T 2260 scope
//! # fingerprint = "ab12…"      # optional SHA-256 pin
//! # enabled = false
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use adapters::domain::RegionCode;
use serde::{Deserialize, Serialize};

use crate::identity::{Caller, DepartmentId, PeerCertificate, Role};

/// One registered client.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub id: String,
    pub department: DepartmentId,
    pub role: Role,
    pub region: RegionCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    #[serde(default)]
    client: Vec<ClientEntry>,
}

/// Errors reading the registry file; they name the file and the entry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read client registry {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("client registry {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// An immutable snapshot of the registry.
#[derive(Debug, Default)]
pub struct Registry {
    by_id: HashMap<String, ClientEntry>,
}

impl Registry {
    /// Reads and checks a registry file (duplicate ids are errors).
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.to_owned(),
            source,
        })?;
        let file: ClientsFile = toml::from_str(&text).map_err(|e| RegistryError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut by_id = HashMap::new();
        for c in file.client {
            if let Some(prev) = by_id.insert(c.id.clone(), c) {
                return Err(RegistryError::Invalid {
                    path: path.to_owned(),
                    message: format!("client {:?} is registered twice", prev.id),
                });
            }
        }
        Ok(Registry { by_id })
    }

    /// Resolves the caller for a verified certificate, or `None` when the
    /// subject is unknown, disabled, or fails its fingerprint pin.
    pub fn resolve(&self, cert: &PeerCertificate) -> Option<Caller> {
        let entry = self.by_id.get(&cert.common_name)?;
        if !entry.enabled {
            return None;
        }
        if let Some(pin) = &entry.fingerprint
            && !pin.eq_ignore_ascii_case(&cert.fingerprint)
        {
            return None;
        }
        Some(Caller {
            client_id: entry.id.clone(),
            department: entry.department.clone(),
            role: entry.role,
            region: entry.region,
            certificate: cert.clone(),
        })
    }

    /// Every entry, sorted by id.
    pub fn entries(&self) -> Vec<&ClientEntry> {
        let mut v: Vec<_> = self.by_id.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

/// Adds or replaces an entry in a registry file (used by `gateway pki issue`).
pub fn upsert_entry(path: &Path, entry: ClientEntry) -> Result<(), RegistryError> {
    let mut file: ClientsFile = if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| RegistryError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?
    } else {
        ClientsFile::default()
    };
    file.client.retain(|c| c.id != entry.id);
    file.client.push(entry);
    file.client.sort_by(|a, b| a.id.cmp(&b.id));
    let text = format!(
        "# Client registry: certificate subject CN -> department, role, region.\n\
         # Managed by `gateway pki issue`; edit by hand or with your config management.\n\n{}",
        toml::to_string(&file).map_err(|e| RegistryError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?
    );
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|source| RegistryError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The registry in force, swapped atomically on reload.
#[derive(Debug)]
pub struct RegistryHandle {
    path: PathBuf,
    current: RwLock<Arc<Registry>>,
}

impl RegistryHandle {
    /// Loads the file once.
    pub fn load(path: PathBuf) -> Result<Self, RegistryError> {
        let reg = Registry::load(&path)?;
        Ok(RegistryHandle {
            path,
            current: RwLock::new(Arc::new(reg)),
        })
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rereads the file; on error the previous registry stays in force.
    pub fn reload(&self) -> Result<(), RegistryError> {
        let reg = Registry::load(&self.path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(reg);
        Ok(())
    }

    /// The file it reads.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> PeerCertificate {
        PeerCertificate {
            fingerprint: "aa".into(),
            serial: "01".into(),
            common_name: cn.into(),
        }
    }

    #[test]
    fn resolves_registered_enabled_clients_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.toml");
        for (id, enabled, pin) in [
            ("a", true, None),
            ("b", false, None),
            ("c", true, Some("bb")),
        ] {
            upsert_entry(
                &path,
                ClientEntry {
                    id: id.into(),
                    department: DepartmentId::parse("education").unwrap(),
                    role: Role::System,
                    region: RegionCode::parse("441700").unwrap(),
                    fingerprint: pin.map(str::to_owned),
                    enabled,
                },
            )
            .unwrap();
        }
        let reg = Registry::load(&path).unwrap();
        assert_eq!(
            reg.resolve(&cert("a")).unwrap().department.as_str(),
            "education"
        );
        assert!(reg.resolve(&cert("b")).is_none());
        assert!(reg.resolve(&cert("c")).is_none());
        assert!(reg.resolve(&cert("zz")).is_none());
    }

    #[test]
    fn bad_entries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.toml");
        std::fs::write(
            &path,
            "[[client]]\nid='a'\ndepartment='education'\nrole='root'\nregion='441700'\n",
        )
        .unwrap();
        let e = Registry::load(&path).unwrap_err().to_string();
        assert!(e.contains("role"), "{e}");
    }
}
