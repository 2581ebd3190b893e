//! Which way a job's artifacts travel: straight to the bucket its `StepJob` names, or through
//! the controller's HTTP API (a local store, an older controller, or `--artifact-transfer
//! controller` on a host that cannot reach the bucket).

use super::TransferError;
use crate::config::ArtifactTransfer;
use drover_protocol::message::{ArtifactStoreRef, StepJob};
use drover_storage::{BlobError, BlobStore, ObjectBlobs, S3Location};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The way one job's artifacts go.
#[derive(Clone)]
pub enum Route {
    /// `{base}/api/v1/blobs/...` with the agent's client (it carries the token).
    Controller { http: reqwest::Client, base: String },
    /// The bucket itself, with this process's `AWS_*` credentials.
    Store(Arc<dyn BlobStore>),
}

impl Route {
    /// For logs: `controller <url>` or the bucket.
    pub fn describe(&self) -> String {
        match self {
            Route::Controller { base, .. } => format!("controller {base}"),
            Route::Store(store) => store.describe(),
        }
    }
}

/// Picks each job's route; keeps one client per bucket the jobs name.
pub struct Routes {
    mode: ArtifactTransfer,
    /// Replaces the endpoint jobs name (the bucket seen from this host).
    endpoint: Option<String>,
    /// `aws_*` settings on top of the environment's (tests pass credentials here).
    settings: Vec<(String, String)>,
    stores: Mutex<HashMap<ArtifactStoreRef, Arc<dyn BlobStore>>>,
}

impl Routes {
    pub fn new(
        mode: ArtifactTransfer,
        endpoint: Option<String>,
        settings: Vec<(String, String)>,
    ) -> Self {
        Self {
            mode,
            endpoint,
            settings,
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// The route for `job`; `base` is the controller URL it should use.
    pub fn for_job(
        &self,
        job: &StepJob,
        http: &reqwest::Client,
        base: &str,
    ) -> Result<Route, TransferError> {
        match (&job.artifact_store, self.mode) {
            (Some(store), ArtifactTransfer::Direct) => Ok(Route::Store(self.store(store)?)),
            _ => Ok(Route::Controller {
                http: http.clone(),
                base: base.to_string(),
            }),
        }
    }

    fn store(&self, named: &ArtifactStoreRef) -> Result<Arc<dyn BlobStore>, TransferError> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = stores.get(named) {
            return Ok(store.clone());
        }
        let config = |reason: String| BlobError::Config {
            store: named.url.clone(),
            reason,
        };
        let mut location = S3Location::from_ref(named).map_err(|e| config(e.to_string()))?;
        if self.endpoint.is_some() {
            location = location
                .with_endpoint(self.endpoint.clone())
                .map_err(|e| config(e.to_string()))?;
        }
        let settings: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let store: Arc<dyn BlobStore> = Arc::new(ObjectBlobs::connect_with(&location, &settings)?);
        tracing::info!("artifacts go straight to {}", store.describe());
        stores.insert(named.clone(), store.clone());
        Ok(store)
    }
}
