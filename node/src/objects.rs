//! The object store holding file bytes, built from `[files]`: a local directory or an
//! S3-compatible bucket, behind one `object_store` interface.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;

use crate::config::{FileStoreKind, FilesConfig};

/// Why the object store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("cannot open the file store: {0}")]
    Open(String),
}

/// Opens the configured store (creating the local directory if needed).
pub fn open(config: &FilesConfig) -> Result<Arc<dyn ObjectStore>, ObjectsError> {
    match config.store {
        FileStoreKind::Local => {
            std::fs::create_dir_all(&config.local_dir)
                .map_err(|e| ObjectsError::Open(format!("{}: {e}", config.local_dir.display())))?;
            let store = LocalFileSystem::new_with_prefix(&config.local_dir)
                .map_err(|e| ObjectsError::Open(e.to_string()))?
                .with_automatic_cleanup(true);
            Ok(Arc::new(store))
        }
        FileStoreKind::S3 => {
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(&config.s3_bucket)
                .with_region(&config.s3_region);
            if !config.s3_endpoint.is_empty() {
                builder = builder
                    .with_endpoint(&config.s3_endpoint)
                    .with_allow_http(config.s3_endpoint.starts_with("http://"));
            }
            Ok(Arc::new(
                builder
                    .build()
                    .map_err(|e| ObjectsError::Open(e.to_string()))?,
            ))
        }
    }
}
