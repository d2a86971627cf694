//! Signed checkpoints: (log, tree size, root, time) signed with the
//! gateway's Ed25519 key.
//!
//! The signed message is text, one item per line, so a witness can check it
//! with any Ed25519 tool:
//!
//! ```text
//! gateway-audit-checkpoint/v1
//! <log_id>
//! <tree_size>
//! <root, lower-case hex>
//! <time, unix ms>
//! ```
//! (each line ends with `\n`; log ids cannot contain newlines, see
//! [`valid_log_id`]).

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::merkle::{Hash, hex32};

/// Whether `s` is a usable log (instance) id: 1-64 ASCII letters, digits,
/// `.`, `_` or `-`.
pub fn valid_log_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An unsigned checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The log.
    pub log_id: String,
    /// Number of events covered (seq 0 .. tree_size-1).
    pub tree_size: u64,
    /// RFC 6962 root over their leaf hashes.
    #[serde(with = "hex32")]
    pub root: Hash,
    /// When it was made, unix ms.
    pub time_ms: i64,
}

impl Checkpoint {
    /// The exact bytes that are signed.
    pub fn signed_message(&self) -> Vec<u8> {
        format!(
            "gateway-audit-checkpoint/v1\n{}\n{}\n{}\n{}\n",
            self.log_id,
            self.tree_size,
            hex::encode(self.root),
            self.time_ms
        )
        .into_bytes()
    }
}

/// A checkpoint with its Ed25519 signature and the public key that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The log.
    pub log_id: String,
    /// Number of events covered.
    pub tree_size: u64,
    /// Merkle root, hex.
    #[serde(with = "hex32")]
    pub root: Hash,
    /// Unix ms.
    pub time_ms: i64,
    /// Ed25519 public key, hex (32 bytes).
    pub public_key: String,
    /// Ed25519 signature over [`Checkpoint::signed_message`], hex (64 bytes).
    pub signature: String,
}

impl SignedCheckpoint {
    /// The unsigned part.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            log_id: self.log_id.clone(),
            tree_size: self.tree_size,
            root: self.root,
            time_ms: self.time_ms,
        }
    }

    /// Whether the signature is valid for the embedded public key.
    pub fn signature_valid(&self) -> bool {
        let (Ok(pk), Ok(sig)) = (hex::decode(&self.public_key), hex::decode(&self.signature))
        else {
            return false;
        };
        valid_log_id(&self.log_id)
            && UnparsedPublicKey::new(&ED25519, pk)
                .verify(&self.checkpoint().signed_message(), &sig)
                .is_ok()
    }
}

/// Checkpoints as handed to outside witnesses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointExport {
    /// `gateway-audit-checkpoints/v1`.
    pub format: String,
    /// When exported, RFC 3339.
    pub exported_at: String,
    /// Every public key that signed one of the checkpoints, hex.
    pub public_keys: Vec<String>,
    /// The checkpoints, by log then size.
    pub checkpoints: Vec<SignedCheckpoint>,
}

/// The format tag of [`CheckpointExport`].
pub const EXPORT_FORMAT: &str = "gateway-audit-checkpoints/v1";

/// Errors loading or creating the signing key. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write the audit signing key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit signing key file {0} is not a PKCS#8 Ed25519 key in PEM")]
    Invalid(String),
    #[error("could not generate an Ed25519 key")]
    Generate,
}

/// The gateway's Ed25519 checkpoint-signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public_hex: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_hex)
            .finish_non_exhaustive()
    }
}

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

impl SigningKey {
    /// A fresh key (tests).
    pub fn generate() -> Result<Self, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref()).ok_or(KeyError::Generate)
    }

    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(der).ok()?;
        let public_hex = hex::encode(pair.public_key().as_ref());
        Some(SigningKey { pair, public_hex })
    }

    /// Loads the PKCS#8 PEM key at `path`, generating it (mode 0600) if the
    /// file does not exist.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let io = |source| KeyError::Io {
            path: shown.clone(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let b64: String = text
                    .lines()
                    .skip_while(|l| l.trim() != PEM_BEGIN)
                    .skip(1)
                    .take_while(|l| l.trim() != PEM_END)
                    .map(str::trim)
                    .collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| KeyError::Invalid(shown.clone()))?;
                Self::from_pkcs8(&der).ok_or_else(|| KeyError::Invalid(shown.clone()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| KeyError::Generate)?;
                let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
                let mut pem = String::from(PEM_BEGIN);
                pem.push('\n');
                for chunk in b64.as_bytes().chunks(64) {
                    pem.push_str(&String::from_utf8_lossy(chunk));
                    pem.push('\n');
                }
                pem.push_str(PEM_END);
                pem.push('\n');
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                write_private(path, pem.as_bytes()).map_err(io)?;
                Self::from_pkcs8(doc.as_ref()).ok_or(KeyError::Generate)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The public key, hex.
    pub fn public_key_hex(&self) -> &str {
        &self.public_hex
    }

    /// Signs a checkpoint.
    pub fn sign(&self, cp: &Checkpoint) -> SignedCheckpoint {
        let sig = self.pair.sign(&cp.signed_message());
        SignedCheckpoint {
            log_id: cp.log_id.clone(),
            tree_size: cp.tree_size,
            root: cp.root,
            time_ms: cp.time_ms,
            public_key: self.public_hex.clone(),
            signature: hex::encode(sig.as_ref()),
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/audit.pem");
        let k1 = SigningKey::load_or_generate(&path).expect("generated");
        let k2 = SigningKey::load_or_generate(&path).expect("loaded");
        assert_eq!(k1.public_key_hex(), k2.public_key_hex());
        let cp = Checkpoint {
            log_id: "gw-1".into(),
            tree_size: 3,
            root: [7; 32],
            time_ms: 1,
        };
        let s = k1.sign(&cp);
        assert!(s.signature_valid());
        let mut bad = s.clone();
        bad.tree_size = 4;
        assert!(!bad.signature_valid());
        let mut other = s.clone();
        other.public_key = SigningKey::generate()
            .expect("key")
            .public_key_hex()
            .to_owned();
        assert!(!other.signature_valid());
        let json = serde_json::to_string(&s).expect("json");
        let back: SignedCheckpoint = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, s);
        std::fs::write(dir.path().join("bad.pem"), "nonsense").expect("write");
        assert!(SigningKey::load_or_generate(&dir.path().join("bad.pem")).is_err());
        assert!(!valid_log_id("a\nb"));
    }
}
