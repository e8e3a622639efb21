//! The URLs a job may name in `channels.webhook.url`.
//!
//! An entry matches a URL with the same scheme, host and port (the same origin) whose path
//! equals the entry's path or continues it after a `/`. The entry
//! `https://hooks.example.com/herald` admits `https://hooks.example.com/herald/a` but not
//! `https://hooks.example.com/heraldry` nor `https://hooks.example.com.evil.test/herald`.
//! Matching compares parsed URLs, so case, default ports and percent-encoding cannot be
//! used to slip past an entry.

use crate::config::{ConfigError, parse_allowlist_entry};

#[derive(Debug, Clone, Default)]
pub struct UrlAllowlist(Vec<reqwest::Url>);

impl UrlAllowlist {
    /// Parses the `url_allowlist` entries; `key` names the config key in errors.
    pub fn parse(key: &str, entries: &[String]) -> Result<UrlAllowlist, ConfigError> {
        entries
            .iter()
            .map(|entry| parse_allowlist_entry(key, entry))
            .collect::<Result<_, _>>()
            .map(UrlAllowlist)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns whether some entry admits `url`.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        self.0.iter().any(|entry| admits(entry, url))
    }
}

fn admits(entry: &reqwest::Url, url: &reqwest::Url) -> bool {
    if entry.origin() != url.origin() {
        return false;
    }
    let prefix = entry.path().trim_end_matches('/');
    let path = url.path();
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowlist(entries: &[&str]) -> UrlAllowlist {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        UrlAllowlist::parse("url_allowlist", &entries).unwrap()
    }

    fn allows(list: &UrlAllowlist, url: &str) -> bool {
        list.allows(&reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn origin_entry_admits_any_path() {
        let list = allowlist(&["https://hooks.example.com"]);
        assert!(allows(&list, "https://hooks.example.com/"));
        assert!(allows(&list, "https://hooks.example.com/a/b?x=1"));
        assert!(allows(&list, "https://HOOKS.example.com:443/a"));
        assert!(!allows(&list, "http://hooks.example.com/a"));
        assert!(!allows(&list, "https://hooks.example.com:8443/a"));
        assert!(!allows(&list, "https://hooks.example.com.evil.test/a"));
        assert!(!allows(&list, "https://evil.test/hooks.example.com"));
    }

    #[test]
    fn path_entry_admits_its_subtree() {
        let list = allowlist(&["https://hooks.example.com/herald/"]);
        assert!(allows(&list, "https://hooks.example.com/herald"));
        assert!(allows(&list, "https://hooks.example.com/herald/a"));
        assert!(!allows(&list, "https://hooks.example.com/heraldry"));
        assert!(!allows(&list, "https://hooks.example.com/"));
        assert!(!allows(&list, "https://hooks.example.com/x/../heraldry"));
    }

    #[test]
    fn empty_allowlist_admits_nothing() {
        let list = allowlist(&[]);
        assert!(list.is_empty());
        assert!(!allows(&list, "https://hooks.example.com/"));
    }

    #[test]
    fn entries_with_query_or_user_info_are_rejected() {
        for entry in [
            "https://h.example/?a=1",
            "https://u:p@h.example/",
            "ftp://h.example/",
        ] {
            let result = UrlAllowlist::parse("url_allowlist", &[entry.to_owned()]);
            assert!(result.is_err(), "accepted {entry}");
        }
    }
}
