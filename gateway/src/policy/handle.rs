//! Hot reload: the policy set in force, swapped atomically.
//!
//! A request takes one `Arc<PolicySet>` snapshot at its start
//! ([`PolicyHandle::current`]) and uses it throughout, so it sees the old or
//! the new set, never a mix. A reload that fails keeps the old set.
//!
//! `std::sync::RwLock<Arc<_>>` rather than a watch channel: readers only
//! clone an `Arc` under a read lock held for nanoseconds, nothing needs to be
//! woken on change, and it works outside a runtime (the CLI, tests).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::catalog::Datasets;
use super::set::{PolicyError, PolicySet, Warning};
use super::treatment::PseudonymKey;

/// The active policy set and what is needed to reload it.
#[derive(Debug)]
pub struct PolicyHandle {
    current: RwLock<Arc<PolicySet>>,
    dir: PathBuf,
    datasets: Datasets,
    key: PseudonymKey,
}

/// What a successful reload reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Reloaded {
    /// Version before.
    pub previous: String,
    /// Version now in force.
    pub version: String,
    /// Whether anything changed.
    pub changed: bool,
    /// Warnings of the new set.
    pub warnings: Vec<Warning>,
}

impl PolicyHandle {
    /// Loads `dir` and holds the result.
    pub fn load(
        dir: &Path,
        datasets: Datasets,
        key: PseudonymKey,
    ) -> Result<(Self, Vec<Warning>), Vec<PolicyError>> {
        let (set, warnings) = PolicySet::load_dir(dir, &datasets, &key)?;
        Ok((
            PolicyHandle {
                current: RwLock::new(Arc::new(set)),
                dir: dir.to_owned(),
                datasets,
                key,
            },
            warnings,
        ))
    }

    /// The set in force. Take it once per request.
    pub fn current(&self) -> Arc<PolicySet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            // A writer never panics while holding the lock (it only swaps an
            // Arc), but a poisoned lock still holds a whole set.
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The version in force (for `/readyz` and response headers).
    pub fn version(&self) -> Arc<str> {
        self.current().version_arc()
    }

    /// Re-reads the policy directory; on success swaps the new set in, on
    /// error keeps the old set and returns every error.
    pub fn reload(&self) -> Result<Reloaded, Vec<PolicyError>> {
        let (set, warnings) = PolicySet::load_dir(&self.dir, &self.datasets, &self.key)?;
        Ok(self.swap(set, warnings))
    }

    /// Activates an already compiled set (admin API). A set with the same
    /// version as the current one is not swapped, so plan caches survive.
    pub fn replace(&self, set: PolicySet, warnings: Vec<Warning>) -> Reloaded {
        self.swap(set, warnings)
    }

    fn swap(&self, set: PolicySet, warnings: Vec<Warning>) -> Reloaded {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let previous = guard.version().to_owned();
        let changed = previous != set.version();
        if changed {
            *guard = Arc::new(set);
        }
        Reloaded {
            previous,
            version: guard.version().to_owned(),
            changed,
            warnings,
        }
    }

    /// The datasets the set is checked against (to compile drafts).
    pub fn datasets(&self) -> &Datasets {
        &self.datasets
    }

    /// The pseudonym key (to compile drafts that behave like the real set).
    pub fn key(&self) -> &PseudonymKey {
        &self.key
    }

    /// The directory reloads read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Polls the directory every `every` and reloads when its content
    /// changed (same version → no swap). Errors keep the old set and are
    /// logged by count and location only.
    pub fn spawn_watcher(
        self: Arc<Self>,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let h = self.clone();
                let r = tokio::task::spawn_blocking(move || h.reload()).await;
                match r {
                    Ok(Ok(r)) if r.changed => {
                        tracing::info!(previous = %r.previous, version = %r.version, warnings = r.warnings.len(), "policy set reloaded")
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(errors)) => {
                        for e in &errors {
                            tracing::warn!(error = %e, "policy reload rejected; keeping the current set");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "policy reload task failed"),
                }
            }
        })
    }
}
