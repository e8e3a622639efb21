//! A DNS resolver for the webhook client that returns only addresses the policy allows.
//! The client connects only to what its resolver returns, so the addresses checked are the
//! addresses used: a DNS answer that changes between a check and the connection (DNS
//! rebinding) cannot slip a blocked address through.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::providers::address::{AddressClass, AddressPolicy};

/// A connection blocked because of the address it would reach. The webhook adapter finds
/// it in a failed request's cause chain and fails the channel permanently.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{address} is a {} address, which this provider may not connect to", class.as_str())]
pub struct AddressBlocked {
    pub address: IpAddr,
    pub class: AddressClass,
}

/// Resolves names through the system resolver and drops every blocked address.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub policy: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, blocked) = filter(policy, resolved);
            if allowed.is_empty()
                && let Some(blocked) = blocked
            {
                return Err(Box::new(blocked) as Box<dyn std::error::Error + Send + Sync>);
            }
            if blocked.is_some() {
                tracing::debug!(
                    allowed = allowed.len(),
                    "dropped blocked addresses from a webhook host's DNS answer"
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Splits resolved addresses into those allowed and the first blocked one, if any.
fn filter(
    policy: AddressPolicy,
    resolved: Vec<SocketAddr>,
) -> (Vec<SocketAddr>, Option<AddressBlocked>) {
    let mut allowed = Vec::new();
    let mut blocked = None;
    for address in resolved {
        match policy.blocked_class(address.ip()) {
            None => allowed.push(address),
            Some(class) => {
                blocked.get_or_insert(AddressBlocked {
                    address: address.ip(),
                    class,
                });
            }
        }
    }
    (allowed, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(texts: &[&str]) -> Vec<SocketAddr> {
        texts
            .iter()
            .map(|text| SocketAddr::new(text.parse().unwrap(), 0))
            .collect()
    }

    #[test]
    fn filter_keeps_only_allowed_addresses() {
        let policy = AddressPolicy::default();
        let (allowed, blocked) = filter(policy, addresses(&["10.0.0.1", "93.184.215.14"]));
        assert_eq!(allowed, addresses(&["93.184.215.14"]));
        assert_eq!(blocked.unwrap().class, AddressClass::Private);
    }

    #[tokio::test]
    async fn localhost_is_blocked_without_allow_loopback() {
        let resolver = GuardedResolver {
            policy: AddressPolicy::default(),
        };
        let error = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        let blocked = error
            .downcast_ref::<AddressBlocked>()
            .expect("an AddressBlocked");
        assert_eq!(blocked.class, AddressClass::Loopback);
    }

    #[tokio::test]
    async fn localhost_resolves_with_allow_loopback() {
        let resolver = GuardedResolver {
            policy: AddressPolicy {
                allow_loopback: true,
                allow_private_networks: false,
            },
        };
        let resolved: Vec<SocketAddr> = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!resolved.is_empty());
        assert!(resolved.iter().all(|address| address.ip().is_loopback()));
    }
}
