//! The sharded tables: every table whose rows belong to a slot and move with it, the
//! column that identifies a row, and the change-feed entity that names its changes.

/// One sharded table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardedTable {
    /// The table's name.
    pub name: &'static str,
    /// Its primary-key column (text).
    pub key: &'static str,
    /// The `change_feed.entity` of changes to its rows.
    pub entity: &'static str,
}

/// Every sharded table. `change_feed` moves with its slot too, but is copied (not
/// compared or cleaned): its rows are history, renumbered on the target.
pub const SHARDED_TABLES: &[ShardedTable] = &[
    ShardedTable {
        name: "users",
        key: "id",
        entity: "user",
    },
    ShardedTable {
        name: "login_names",
        key: "name",
        entity: "login_name",
    },
    ShardedTable {
        name: "signup_outcomes",
        key: "user_id",
        entity: "signup_outcome",
    },
    ShardedTable {
        name: "posts",
        key: "id",
        entity: "post",
    },
    ShardedTable {
        name: "tasks",
        key: "id",
        entity: "task",
    },
    ShardedTable {
        name: "files",
        key: "id",
        entity: "file",
    },
];

/// The table whose changes a feed entity names.
pub fn table_of_entity(entity: &str) -> Option<&'static ShardedTable> {
    SHARDED_TABLES.iter().find(|t| t.entity == entity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_names_one_table() {
        for table in SHARDED_TABLES {
            assert_eq!(table_of_entity(table.entity), Some(table));
        }
        assert_eq!(table_of_entity("nothing"), None);
    }
}
