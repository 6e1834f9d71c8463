//! A small client of the Kubo HTTP RPC API (`POST /api/v0/…`): the few calls ww needs.
//!
//! Blocking (ureq, no TLS): ww fetches before its async runtime starts. Nothing the daemon
//! returns is trusted: blocks are verified by the caller, and bodies are bounded.

use std::io::Read;
use std::time::Duration;

use super::endpoint::Endpoint;

/// The largest block ww accepts (IPFS blocks are at most 1 MiB in practice, 2 MiB over
/// bitswap).
pub const MAX_BLOCK: u64 = 4 << 20;

/// How long to wait for one answer when `WW_IPFS_TIMEOUT` does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No connection to the daemon.
    Unreachable(String),
    /// The daemon did not answer in time.
    Timeout(Duration),
    /// The daemon answered with an error status; its message.
    Refused(String),
    /// The answer could not be read or was too large.
    Body(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(e) => write!(f, "{e}"),
            CallError::Timeout(t) => write!(f, "no answer within {}s", t.as_secs_f64()),
            CallError::Refused(e) => write!(f, "the daemon answered: {e}"),
            CallError::Body(e) => write!(f, "bad answer: {e}"),
        }
    }
}

/// A client of one daemon.
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    agent: ureq::Agent,
    /// For uploads, which may take long: no answer timeout.
    upload: ureq::Agent,
}

impl Client {
    /// A client of `endpoint`, waiting at most `timeout` for each answer.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        let connect = Some(timeout.min(Duration::from_secs(10)));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(connect)
            .timeout_global(Some(timeout))
            .build()
            .into();
        let upload = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(connect)
            .build()
            .into();
        Client {
            endpoint,
            timeout,
            agent,
            upload,
        }
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `block/get`: the raw bytes of a block (to be verified by the caller).
    pub fn block_get(&self, cid: &str) -> Result<Vec<u8>, CallError> {
        let secs = self.timeout.as_secs().max(1);
        let url = format!("{}/api/v0/block/get", self.endpoint.base_url);
        let response = self
            .agent
            .post(&url)
            .query("arg", cid)
            // The daemon gives up too, rather than searching on after ww has.
            .query("timeout", format!("{secs}s"))
            .send_empty();
        self.body(response, MAX_BLOCK)
    }

    /// `name/resolve`: the `/ipfs/…` path an IPNS name points to.
    pub fn name_resolve(&self, name: &str) -> Result<String, CallError> {
        let url = format!("{}/api/v0/name/resolve", self.endpoint.base_url);
        let response = self
            .agent
            .post(&url)
            .query("arg", format!("/ipns/{name}"))
            .query("recursive", "true")
            .send_empty();
        let body = self.body(response, 64 << 10)?;
        #[derive(serde::Deserialize)]
        struct Resolved {
            #[serde(rename = "Path")]
            path: String,
        }
        serde_json::from_slice::<Resolved>(&body)
            .map(|r| r.path)
            .map_err(|e| CallError::Body(e.to_string()))
    }

    /// `add` with a multipart body (`boundary` its boundary), returning the answer's lines.
    pub fn add(
        &self,
        query: &[(&str, &str)],
        boundary: &str,
        body: &mut dyn Read,
    ) -> Result<Vec<u8>, CallError> {
        let url = format!("{}/api/v0/add", self.endpoint.base_url);
        let mut request = self.upload.post(&url).header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        );
        for (k, v) in query {
            request = request.query(*k, *v);
        }
        let response = request.send(ureq::SendBody::from_reader(body));
        self.body(response, 64 << 20)
    }

    fn body(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> Result<Vec<u8>, CallError> {
        let mut response = response.map_err(|e| self.transport(e))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => CallError::Timeout(self.timeout),
                e => CallError::Body(e.to_string()),
            })?;
        if status.is_success() {
            return Ok(body);
        }
        // Kubo and js-ipfs answer errors as {"Message": "...", "Code": 0, "Type": "error"}.
        #[derive(serde::Deserialize)]
        struct Failure {
            #[serde(rename = "Message")]
            message: String,
        }
        let message = serde_json::from_slice::<Failure>(&body)
            .map(|f| f.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(CallError::Refused(format!("{status}: {message}")))
    }

    fn transport(&self, e: ureq::Error) -> CallError {
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                CallError::Unreachable(format!("connecting timed out: {e}"))
            }
            ureq::Error::Timeout(_) => CallError::Timeout(self.timeout),
            e
            @ (ureq::Error::Io(_) | ureq::Error::HostNotFound | ureq::Error::ConnectionFailed) => {
                CallError::Unreachable(e.to_string())
            }
            e => CallError::Body(e.to_string()),
        }
    }
}
