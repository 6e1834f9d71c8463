//! A small client of the Kubo HTTP RPC API (`POST /api/v0/…`): the few calls ww needs.
//!
//! Blocking (ureq, no TLS): ww fetches before its async runtime starts. Nothing the daemon
//! returns is trusted: blocks are verified by the caller, bodies are bounded, and every call
//! has a deadline (`WW_IPFS_TIMEOUT`, [`DEFAULT_TIMEOUT`]; an `add` gets more time for its
//! upload, [`ADD_MIN_RATE`]), so a daemon that takes a request and never answers fails the
//! call instead of holding ww.

use std::io::Read;
use std::time::Duration;

use super::endpoint::Endpoint;

/// The largest block ww accepts (IPFS blocks are at most 1 MiB in practice, 2 MiB over
/// bitswap).
pub const MAX_BLOCK: u64 = 4 << 20;

/// How long to wait for one answer when `WW_IPFS_TIMEOUT` does not say: the whole of a
/// `block/get` or `name/resolve` (connecting, asking, and reading the answer), and an
/// `add`'s answer once its upload is sent. It is also the search timeout `block/get` asks
/// the daemon for, and finding content on the network can take a while.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest wait for a connection, whatever the timeout: a local daemon accepts at once.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The slowest upload an `add` is given time for, in bytes per second: its whole call may
/// take the timeout plus one second per MiB started of the body, so a large export is not
/// cut short, and a daemon that stops reading (or never answers) still ends it.
pub const ADD_MIN_RATE: u64 = 1 << 20;

/// How a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection to the daemon.
    #[error("{0}")]
    Unreachable(String),
    /// The daemon did not answer within this deadline.
    #[error("no answer within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The daemon answered with an error status; its message.
    #[error("the daemon answered: {0}")]
    Refused(String),
    /// The answer could not be read or was too large.
    #[error("bad answer: {0}")]
    Body(String),
}

/// A client of one daemon.
///
/// Every call has an overall deadline covering the connection, the request and the whole
/// answer, so a daemon that accepts a request and never answers cannot hold ww.
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    agent: ureq::Agent,
}

impl Client {
    /// A client of `endpoint`, waiting at most `timeout` for each answer.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout.min(CONNECT_TIMEOUT)))
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            endpoint,
            timeout,
            agent,
        }
    }

    /// The deadline of a whole `add` whose body is `length` bytes: the timeout, plus a
    /// second per MiB started (the upload at [`ADD_MIN_RATE`]).
    pub fn add_deadline(&self, length: u64) -> Duration {
        self.timeout
            .saturating_add(Duration::from_secs(length.div_ceil(ADD_MIN_RATE)))
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
        self.body(response, MAX_BLOCK, self.timeout)
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
        let body = self.body(response, 64 << 10, self.timeout)?;
        #[derive(serde::Deserialize)]
        struct Resolved {
            #[serde(rename = "Path")]
            path: String,
        }
        serde_json::from_slice::<Resolved>(&body)
            .map(|r| r.path)
            .map_err(|e| CallError::Body(e.to_string()))
    }

    /// `add` with a multipart body of `length` bytes (`boundary` its boundary), returning
    /// the answer's lines. The whole call ends by [`Client::add_deadline`], and the answer
    /// must start within the timeout once the body is sent.
    pub fn add(
        &self,
        query: &[(&str, &str)],
        boundary: &str,
        body: &mut dyn Read,
        length: u64,
    ) -> Result<Vec<u8>, CallError> {
        let url = format!("{}/api/v0/add", self.endpoint.base_url);
        let deadline = self.add_deadline(length);
        let mut request = self
            .agent
            .post(&url)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .config()
            .timeout_global(Some(deadline))
            .timeout_recv_response(Some(self.timeout))
            .build();
        for (k, v) in query {
            request = request.query(*k, *v);
        }
        tracing::debug!(
            endpoint = %self.endpoint.multiaddr,
            bytes = length,
            deadline_s = deadline.as_secs_f64(),
            "adding to IPFS"
        );
        let response = request.send(ureq::SendBody::from_reader(body));
        self.body(response, 64 << 20, deadline)
    }

    /// The answer's body (at most `limit` bytes) when its status is a success; the call
    /// had `deadline` in all.
    fn body(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
        deadline: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let mut response = response.map_err(|e| self.transport(e, deadline))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::Timeout(which) => self.timed_out(which, deadline),
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

    fn transport(&self, e: ureq::Error, deadline: Duration) -> CallError {
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                CallError::Unreachable(format!("connecting timed out: {e}"))
            }
            ureq::Error::Timeout(which) => self.timed_out(which, deadline),
            e
            @ (ureq::Error::Io(_) | ureq::Error::HostNotFound | ureq::Error::ConnectionFailed) => {
                CallError::Unreachable(e.to_string())
            }
            e => CallError::Body(e.to_string()),
        }
    }

    /// The timeout error for `which` deadline passing: the answer's own (the timeout), or
    /// the whole call's.
    fn timed_out(&self, which: ureq::Timeout, deadline: Duration) -> CallError {
        let waited = match which {
            ureq::Timeout::RecvResponse => self.timeout,
            _ => deadline,
        };
        tracing::debug!(
            endpoint = %self.endpoint.multiaddr,
            which = ?which,
            waited_s = waited.as_secs_f64(),
            "IPFS call timed out"
        );
        CallError::Timeout(waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_gets_a_second_per_mib_over_the_timeout() {
        let endpoint = Endpoint::parse("/ip4/127.0.0.1/tcp/5001/http").unwrap();
        let client = Client::new(endpoint, Duration::from_secs(60));
        assert_eq!(client.add_deadline(0), Duration::from_secs(60));
        assert_eq!(client.add_deadline(1), Duration::from_secs(61));
        assert_eq!(client.add_deadline(1 << 20), Duration::from_secs(61));
        assert_eq!(
            client.add_deadline((1 << 30) + 1),
            Duration::from_secs(60 + 1025)
        );
        assert_eq!(
            CallError::Timeout(Duration::from_secs(2)).to_string(),
            "no answer within 2s"
        );
    }
}
