//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!`
//! embeds the `migrations/` directories at compile time, and cargo does not
//! otherwise notice a new file there (the build script sqlx's documentation
//! prescribes, `sqlx migrate build-script`).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
