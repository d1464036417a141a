//! Full-text search: an embedded Tantivy index per node, fed from every shard's change
//! feed; Postgres stays the source of truth.

pub mod highlight;
pub mod index;
pub mod query;
pub mod tailer;
pub mod terms;
