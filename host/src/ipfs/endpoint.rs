//! The daemon's endpoint: a multiaddr (`/ip4/127.0.0.1/tcp/5001/http`) turned into the base
//! URL of its Kubo HTTP RPC API.

use super::IpfsError;

/// The endpoint when neither `--ipfs` nor `WW_IPFS` gives one.
pub const DEFAULT_ENDPOINT: &str = "/dns4/localhost/tcp/5001/http";

/// A parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As given, for messages.
    pub multiaddr: String,
    /// `http://host:port`.
    pub base_url: String,
}

impl Endpoint {
    /// The endpoint to use: `WW_IPFS` when set (it overrides the flag, as in the seeds), else
    /// `flag`, else [`DEFAULT_ENDPOINT`].
    pub fn choose(flag: Option<&str>, env: Option<&str>) -> Result<Endpoint, IpfsError> {
        let value = env
            .filter(|v| !v.is_empty())
            .or(flag)
            .unwrap_or(DEFAULT_ENDPOINT);
        Endpoint::parse(value)
    }

    /// Parses a multiaddr `/{ip4,ip6,dns,dns4,dns6}/HOST/tcp/PORT[/http]`, or an
    /// `http://HOST:PORT` URL.
    pub fn parse(value: &str) -> Result<Endpoint, IpfsError> {
        let bad = |why: &str| IpfsError::BadEndpoint {
            value: value.to_owned(),
            why: why.to_owned(),
        };
        if let Some(rest) = value.strip_prefix("http://") {
            let hostport = rest.trim_end_matches('/');
            if hostport.is_empty() || hostport.contains('/') {
                return Err(bad("expected http://HOST:PORT"));
            }
            return Ok(Endpoint {
                multiaddr: value.to_owned(),
                base_url: format!("http://{hostport}"),
            });
        }
        let parts: Vec<&str> = value.split('/').collect();
        let (proto, host, port, tail) = match parts.as_slice() {
            ["", proto, host, "tcp", port, tail @ ..] => (*proto, *host, *port, tail),
            _ => {
                return Err(bad(
                    "expected /ip4/HOST/tcp/PORT/http (or ip6, dns, dns4, dns6)",
                ));
            }
        };
        match tail {
            [] | ["http"] | ["http", ""] => {}
            ["https", ..] | ["tls", ..] => {
                return Err(bad(
                    "ww speaks plain HTTP to a local daemon; TLS is not supported",
                ));
            }
            _ => return Err(bad("only /http may follow /tcp/PORT")),
        }
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = match proto {
            "ip4" => host
                .parse::<std::net::Ipv4Addr>()
                .map_err(|_| bad("not an IPv4 address"))?
                .to_string(),
            "ip6" => format!(
                "[{}]",
                host.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| bad("not an IPv6 address"))?
            ),
            "dns" | "dns4" | "dns6" if !host.is_empty() => host.to_owned(),
            _ => return Err(bad("expected ip4, ip6, dns, dns4 or dns6 and a host")),
        };
        Ok(Endpoint {
            multiaddr: value.to_owned(),
            base_url: format!("http://{host}:{port}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multiaddrs() {
        let url = |s| Endpoint::parse(s).unwrap().base_url;
        assert_eq!(url("/ip4/127.0.0.1/tcp/5001/http"), "http://127.0.0.1:5001");
        assert_eq!(url("/ip4/127.0.0.1/tcp/5001"), "http://127.0.0.1:5001");
        assert_eq!(url("/ip6/::1/tcp/5001/http"), "http://[::1]:5001");
        assert_eq!(url(DEFAULT_ENDPOINT), "http://localhost:5001");
        assert_eq!(url("http://127.0.0.1:5001/"), "http://127.0.0.1:5001");
        for bad in [
            "",
            "localhost:5001",
            "/ip4/localhost/tcp/5001/http",
            "/ip4/127.0.0.1/tcp/x/http",
            "/ip4/127.0.0.1/tcp/5001/https",
            "/ip4/127.0.0.1/udp/5001/quic",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ww_ipfs_overrides_the_flag() {
        let chosen = Endpoint::choose(
            Some("/ip4/1.2.3.4/tcp/1/http"),
            Some("/ip4/127.0.0.1/tcp/2/http"),
        );
        assert_eq!(chosen.unwrap().base_url, "http://127.0.0.1:2");
        let chosen = Endpoint::choose(Some("/ip4/1.2.3.4/tcp/1/http"), Some(""));
        assert_eq!(chosen.unwrap().base_url, "http://1.2.3.4:1");
        assert_eq!(
            Endpoint::choose(None, None).unwrap().base_url,
            "http://localhost:5001"
        );
    }
}
