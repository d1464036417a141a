//! Posts, tasks and files: the items users own, each on its owner's shard, each change
//! written together with its change-feed entry.

pub mod cursor;
pub mod files;
pub mod ids;
pub mod posts;
pub mod tasks;
pub mod write;
