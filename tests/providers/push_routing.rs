//! One `push` channel served by an FCM, an APNs and a Web Push provider. Each push goes to
//! the provider of its target's platform in any list order, and a platform without a
//! provider in the list gets none.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald::job::{ChannelKind, Notification};
use herald::metrics::Metrics;
use herald::routes::{Routes, Selection};
use tokio::time::Instant;

use crate::{apns, helpers, webpush};

const DEVICE: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// Builds the routes of a push channel that lists `providers`, with every push kind set up.
fn push_routes(providers: &str, metrics: &Arc<Metrics>) -> Routes {
    let apns_key = apns::private_key_pem();
    let vapid_key = URL_SAFE_NO_PAD.encode(webpush::vapid_key().to_bytes());
    let settings = helpers::settings(&[
        ("CHANNELS__PUSH", providers),
        ("PROVIDERS__APNS__TEAM_ID", "TEAM123456"),
        ("PROVIDERS__APNS__KEY_ID", "KEY1234567"),
        ("PROVIDERS__APNS__TOPIC", "com.example.herald"),
        ("PROVIDERS__APNS__PRIVATE_KEY", apns_key.as_str()),
        ("PROVIDERS__WEBPUSH__SUBJECT", "mailto:push-ops@example.com"),
        ("PROVIDERS__WEBPUSH__VAPID_PRIVATE_KEY", vapid_key.as_str()),
    ]);
    let client = herald::providers::http::build_client(&settings.http).unwrap();
    Routes::build(&settings, &client, metrics).expect("the push routes build")
}

/// Returns the name of the provider that takes `notification`, or `None` when none can.
fn chosen(routes: &Routes, notification: &Notification, metrics: &Metrics) -> Option<String> {
    let channel = routes.get(ChannelKind::Push).expect("push is routed");
    match channel.select(notification, Instant::now(), metrics) {
        Selection::Send { route, skipped } => {
            assert!(
                skipped.is_none(),
                "no breaker is open, so nothing fails over"
            );
            Some(route.provider_name.to_string())
        }
        Selection::Unsupported => None,
        Selection::AllOpen { .. } => panic!("no breaker is open"),
    }
}

#[tokio::test]
async fn each_push_goes_to_its_platform_provider() {
    let metrics = Arc::new(Metrics::new());
    let fcm = helpers::push("fcm-registration-token", Some("Hi"), None, &[]);
    let apns = apns::apns_push(DEVICE);
    let web = webpush::web_push("https://push.example.net/wpush/v2/subscription");

    for order in ["fcm,apns,webpush", "webpush,apns,fcm"] {
        let routes = push_routes(order, &metrics);
        assert_eq!(
            chosen(&routes, &fcm, &metrics).as_deref(),
            Some("fcm"),
            "{order}"
        );
        assert_eq!(
            chosen(&routes, &apns, &metrics).as_deref(),
            Some("apns"),
            "{order}"
        );
        assert_eq!(
            chosen(&routes, &web, &metrics).as_deref(),
            Some("webpush"),
            "{order}"
        );
    }

    let routes = push_routes("fcm,apns", &metrics);
    assert_eq!(
        chosen(&routes, &web, &metrics),
        None,
        "no Web Push provider is listed"
    );
}
