//! Remote OPA: `POST <policy URL>` with `{"input": ...}`, reading `{"result": ...}` from OPA's
//! data API. One `reqwest::Client` for all requests (connections are reused); every failure
//! (connect, timeout, status, body) is `Unavailable`, so the caller is refused.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::config::RemoteConfig;
use super::source::{DecisionSource, SourceStatus};
use crate::PolicyError;

/// Largest response read from OPA.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// An OPA server reached over HTTP.
#[derive(Debug)]
pub struct RemoteOpa {
    client: reqwest::Client,
    /// Shown as the policy version: the allow URL (OPA does not tell its bundle revision here).
    version: String,
    last_error: parking_lot::RwLock<Option<String>>,
}

impl RemoteOpa {
    /// A client for `config`; `policy_uri` names the server in the policy version.
    pub fn new(config: &RemoteConfig, policy_uri: &str) -> Result<Self, PolicyError> {
        let unavailable = |e: String| PolicyError::Unavailable(format!("remote OPA client: {e}"));
        let tls = quiver_auth::tls::client_config(config.ca_file.as_deref()).map_err(unavailable)?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(RemoteOpa { client, version: format!("remote:{policy_uri}"), last_error: Default::default() })
    }

    async fn post(&self, url: &str, document: &Value) -> Result<Option<Value>, String> {
        let body = serde_json::to_vec(document).map_err(|e| e.to_string())?;
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
            return Err("response too large".into());
        }
        let bytes = response.bytes().await.map_err(|e| error_chain(&e))?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err("response too large".into());
        }
        let mut body: Value = serde_json::from_slice(&bytes).map_err(|e| format!("response is not JSON: {e}"))?;
        let object = body.as_object_mut().ok_or("response is not a JSON object")?;
        // OPA answers `{}` (no `result`) when the document is undefined.
        Ok(object.remove("result"))
    }
}

#[async_trait]
impl DecisionSource for RemoteOpa {
    async fn evaluate(&self, path: &str, document: &Value) -> Result<Option<Value>, PolicyError> {
        match self.post(path, document).await {
            Ok(v) => {
                if self.last_error.read().is_some() {
                    *self.last_error.write() = None;
                }
                Ok(v)
            }
            Err(e) => {
                let message = format!("remote OPA {path}: {e}");
                tracing::warn!(error = %message, "OPA decision failed; refusing");
                *self.last_error.write() = Some(message.clone());
                Err(PolicyError::Unavailable(message))
            }
        }
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    fn backend(&self) -> &'static str {
        "opa-remote"
    }

    fn status(&self) -> SourceStatus {
        SourceStatus { backend: self.backend(), version: self.version(), last_error: self.last_error.read().clone() }
    }
}

/// An error and its sources, one line: reqwest's own message rarely says why.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
