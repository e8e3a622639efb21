//! Which push endpoints Herald may connect to. The endpoint comes from the job, so without
//! these checks a job could make Herald send requests to internal services or a cloud
//! metadata address.
//!
//! An endpoint must be `https` and every address it resolves to must be public. Literal IP
//! hosts are checked before sending. Host names are checked by a DNS resolver that drops
//! non-public addresses, so the check applies to the address actually connected to.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::providers::address::AddressPolicy;

/// The failure to find an address Herald may connect to for an endpoint.
#[derive(Debug)]
pub(super) struct EndpointRejected {
    reason: String,
}

impl fmt::Display for EndpointRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl StdError for EndpointRejected {}

impl EndpointRejected {
    pub(super) fn reason(&self) -> &str {
        &self.reason
    }
}

/// Checks an endpoint before sending: its scheme, and its host when that is an IP address.
/// `allow_private` accepts `http` and non-public addresses.
pub(super) fn check_endpoint(
    url: &reqwest::Url,
    allow_private: bool,
) -> Result<(), EndpointRejected> {
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        scheme => {
            return Err(EndpointRejected {
                reason: format!("the endpoint uses `{scheme}`; only https endpoints are accepted"),
            });
        }
    }
    let Some(host) = url.host_str() else {
        return Err(EndpointRejected {
            reason: "the endpoint has no host".to_owned(),
        });
    };
    // A URL keeps IPv6 literals in brackets.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = literal.parse::<IpAddr>() else {
        return Ok(());
    };
    if allow_private || is_public(ip) {
        return Ok(());
    }
    Err(rejected_address(ip))
}

fn rejected_address(ip: IpAddr) -> EndpointRejected {
    EndpointRejected {
        reason: format!(
            "the endpoint's address {ip} is not public (loopback, private, link-local or reserved)"
        ),
    }
}

/// A DNS resolver that returns only public addresses, and fails when a name has none.
pub(super) struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|address| is_public(address.ip()))
                .collect();
            if public.is_empty() {
                let error: Box<dyn StdError + Send + Sync> = match found.first() {
                    Some(address) => Box::new(rejected_address(address.ip())),
                    None => format!("no address found for {host}").into(),
                };
                return Err(error);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Returns the [`EndpointRejected`] in an error's source chain, if any.
pub(super) fn rejection_in<'a>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a EndpointRejected> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(rejected) = error.downcast_ref::<EndpointRejected>() {
            return Some(rejected);
        }
        current = error.source();
    }
    None
}

/// Returns whether `ip` is a public address, by the classes webhooks use too.
fn is_public(ip: IpAddr) -> bool {
    AddressPolicy::default().blocked_class(ip).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap()
    }

    #[test]
    fn non_public_addresses_are_rejected() {
        let rejected = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::",
        ];
        for address in rejected {
            let ip: IpAddr = address.parse().unwrap();
            assert!(!is_public(ip), "{address} was taken as public");
        }
        for address in [
            "8.8.8.8",
            "142.250.74.10",
            "2607:f8b0:4004:800::200e",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = address.parse().unwrap();
            assert!(is_public(ip), "{address} was taken as non-public");
        }
    }

    #[test]
    fn endpoint_needs_https_and_a_public_literal() {
        assert!(check_endpoint(&url("https://push.example.net/x"), false).is_ok());
        assert!(check_endpoint(&url("http://push.example.net/x"), false).is_err());
        assert!(check_endpoint(&url("https://127.0.0.1/x"), false).is_err());
        assert!(check_endpoint(&url("https://[::1]/x"), false).is_err());
        assert!(check_endpoint(&url("https://169.254.169.254/x"), false).is_err());
    }

    #[test]
    fn allow_private_accepts_loopback_over_http() {
        assert!(check_endpoint(&url("http://127.0.0.1:8080/x"), true).is_ok());
        assert!(check_endpoint(&url("ftp://127.0.0.1/x"), true).is_err());
    }

    #[tokio::test]
    async fn resolver_drops_loopback_names() {
        let name: Name = "localhost".parse().unwrap();
        let Err(error) = PublicOnlyResolver.resolve(name).await else {
            panic!("localhost resolved to an accepted address");
        };
        assert!(rejection_in(error.as_ref()).is_some(), "{error}");
    }
}
