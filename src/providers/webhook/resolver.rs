//! A DNS resolver for the webhook client that returns only addresses the policy allows.
//! The client connects only to what its resolver returns, so the addresses checked are the
//! addresses used: a DNS answer that changes between a check and the connection (DNS
//! rebinding) cannot slip a refused address through.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::address::{AddressClass, AddressPolicy};

/// A connection refused because of the address it would reach. The webhook adapter finds
/// it in a failed request's cause chain and fails the channel permanently.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{address} is a {} address, which this provider may not connect to", class.as_str())]
pub struct AddressRefused {
    pub address: IpAddr,
    pub class: AddressClass,
}

/// Resolves names through the system resolver and drops every refused address.
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
            let (allowed, refused) = filter(policy, resolved);
            if allowed.is_empty()
                && let Some(refused) = refused
            {
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            if refused.is_some() {
                tracing::debug!(
                    allowed = allowed.len(),
                    "dropped refused addresses from a webhook host's DNS answer"
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Splits resolved addresses into those allowed and the first refusal, if any.
fn filter(
    policy: AddressPolicy,
    resolved: Vec<SocketAddr>,
) -> (Vec<SocketAddr>, Option<AddressRefused>) {
    let mut allowed = Vec::new();
    let mut refused = None;
    for address in resolved {
        match policy.refusal(address.ip()) {
            None => allowed.push(address),
            Some(class) => {
                refused.get_or_insert(AddressRefused {
                    address: address.ip(),
                    class,
                });
            }
        }
    }
    (allowed, refused)
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
        let (allowed, refused) = filter(policy, addresses(&["10.0.0.1", "93.184.215.14"]));
        assert_eq!(allowed, addresses(&["93.184.215.14"]));
        assert_eq!(refused.unwrap().class, AddressClass::Private);
    }

    #[tokio::test]
    async fn localhost_is_refused_without_allow_loopback() {
        let resolver = GuardedResolver {
            policy: AddressPolicy::default(),
        };
        let error = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        let refused = error
            .downcast_ref::<AddressRefused>()
            .expect("an AddressRefused");
        assert_eq!(refused.class, AddressClass::Loopback);
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
