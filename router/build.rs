//! Rebuilds the crate when a migration is added or changed: they are embedded at
//! compile time (`refinery::embed_migrations!`), which cargo cannot see on its own.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
