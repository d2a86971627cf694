//! Synthetic population loading (`gateway seed`, and the demo's data).
//!
//! Every record comes from [`adapters::synth`] (fictitious names,
//! illustrative amounts, valid ID numbers), is validated like a published
//! record, and is written with the record store's bulk path, attributed to a
//! `seed:<department>` publisher.

use std::collections::HashMap;

use adapters::catalogue::Catalogue;
use anyhow::Context;

use crate::identity::DepartmentId;
use crate::records::{NewRecord, Publisher, RecordStore};

/// Records buffered per dataset before one bulk transaction.
const BATCH: usize = 20_000;

/// What a seeding run wrote.
#[derive(Debug, Default)]
pub struct SeedSummary {
    /// Persons generated.
    pub persons: u64,
    /// Records written per dataset.
    pub records: HashMap<String, u64>,
    /// ID numbers of persons on the civil-affairs roster (up to the asked number).
    pub sample_ids: Vec<String>,
}

/// Generates `persons` synthetic persons (deterministic for `seed`) and
/// writes their records. `progress` is called with the persons done so far.
pub async fn seed(
    store: &RecordStore,
    catalogue: &Catalogue,
    persons: u64,
    seed: u64,
    samples: usize,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<SeedSummary> {
    let mut summary = SeedSummary::default();
    let mut buffers: HashMap<&'static str, Vec<NewRecord>> = HashMap::new();
    let population = adapters::synth::population(adapters::synth::SynthConfig::new(seed, persons));
    let mut done = 0u64;
    for household in population {
        done += household.members.len() as u64;
        if household.on_roster && summary.sample_ids.len() < samples {
            for m in &household.members {
                if summary.sample_ids.len() < samples {
                    summary.sample_ids.push(m.id.as_str().to_owned());
                }
            }
        }
        for r in household.records {
            let dataset = catalogue
                .dataset(r.dataset)
                .with_context(|| format!("no schema for dataset {}", r.dataset))?;
            let v = dataset.validate(r.record).map_err(|errs| {
                let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
                anyhow::anyhow!(
                    "synthetic {} record failed validation: {}",
                    r.dataset,
                    list.join("; ")
                )
            })?;
            let buf = buffers.entry(r.dataset).or_default();
            buf.push(NewRecord {
                natural_key: v.natural_key,
                region: v.region,
                subjects: v.subjects,
                payload: v.record,
            });
            if buf.len() >= BATCH {
                let batch = std::mem::take(buf);
                flush(store, catalogue, r.dataset, batch, &mut summary).await?;
            }
        }
        progress(done);
    }
    for (dataset, batch) in buffers {
        if !batch.is_empty() {
            flush(store, catalogue, dataset, batch, &mut summary).await?;
        }
    }
    store.optimize().await?;
    summary.persons = done;
    Ok(summary)
}

async fn flush(
    store: &RecordStore,
    catalogue: &Catalogue,
    dataset: &str,
    batch: Vec<NewRecord>,
    summary: &mut SeedSummary,
) -> anyhow::Result<()> {
    let owner = catalogue
        .dataset(dataset)
        .map(|d| d.owner().to_owned())
        .unwrap_or_default();
    let publisher = Publisher {
        client_id: format!("seed:{owner}"),
        department: DepartmentId::parse(&owner)?,
    };
    let n = store
        .bulk_seed(dataset, &publisher, batch)
        .await
        .with_context(|| format!("writing synthetic {dataset} records"))?;
    *summary.records.entry(dataset.to_owned()).or_default() += n;
    Ok(())
}
