//! Secret key files: loaded, or created with 32 random bytes (mode 0600)
//! when missing, so a fresh installation and the demo start without manual
//! key ceremonies. In production, provision them from your key management.

use std::path::Path;

use anyhow::Context;

/// Reads a secret of at least 32 bytes, creating it if the file is missing.
pub fn load_or_create(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.exists() {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading key {}", path.display()))?;
        anyhow::ensure!(
            bytes.len() >= 32,
            "key file {} holds {} bytes; at least 32 are needed",
            path.display(),
            bytes.len()
        );
        return Ok(bytes);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut bytes = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("system random generator failed"))?;
    crate::fsutil::write_private(path, &bytes)
        .with_context(|| format!("writing key {}", path.display()))?;
    Ok(bytes)
}
