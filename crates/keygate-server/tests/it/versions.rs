//! The versioning policy's headers (README, "Versions"): once the operator announces /v1's
//! deprecation or sunset, every /v1 response says so, and nothing else does. Store-independent,
//! so only on SQLite.

use keygate_core::Timestamp;
use serde_json::Value;

use crate::harness::{Backend, TestServer, ok_json};

#[tokio::test]
async fn an_announced_sunset_labels_every_v1_response_and_nothing_else() {
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        let v1 = &mut config.api.v1;
        v1.deprecated_at = Some(Timestamp::parse("2027-01-01T00:00:00Z").unwrap());
        v1.sunset_at = Some(Timestamp::parse("2027-07-01T12:30:00Z").unwrap());
        v1.policy_url = Some("https://example.com/api/versions".into());
    })
    .await;
    let labelled = [
        server.whoami(&[("apikey", &server.token)]).await,
        server.whoami(&[]).await,
        server.get("/v1/no-such-route").send().await.unwrap(),
        server.get("/v1/forward-auth/x").send().await.unwrap(),
    ];
    for response in labelled {
        let headers = response.headers();
        assert_eq!(headers["deprecation"], "@1798761600", "{}", response.url());
        assert_eq!(headers["sunset"], "Thu, 01 Jul 2027 12:30:00 GMT");
        let links: Vec<&str> = headers
            .get_all("link")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            links,
            [
                r#"<https://example.com/api/versions>; rel="deprecation"; type="text/html""#,
                r#"<https://example.com/api/versions>; rel="sunset"; type="text/html""#,
            ]
        );
    }
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        let response = server.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        for name in ["deprecation", "sunset", "link"] {
            assert!(response.headers().get(name).is_none(), "{name} on {path}");
        }
    }
    // The document says so too, so generated clients warn.
    let doc: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    assert_eq!(doc["paths"]["/v1/whoami"]["get"]["deprecated"], true);
    assert!(doc["paths"]["/healthz"]["get"].get("deprecated").is_none());
}

#[tokio::test]
async fn without_an_announcement_v1_responses_carry_no_sunset() {
    let server = TestServer::start(Backend::Sqlite).await;
    let response = server.whoami(&[("apikey", &server.token)]).await;
    assert_eq!(response.status(), 200);
    for name in ["deprecation", "sunset", "link"] {
        assert!(response.headers().get(name).is_none(), "{name}");
    }
    let doc: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    assert!(
        doc["paths"]["/v1/whoami"]["get"]
            .get("deprecated")
            .is_none()
    );
}

#[tokio::test]
async fn only_a_sunset_is_announced_without_deprecation_or_links() {
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.api.v1.sunset_at = Some(Timestamp::parse("2030-02-03T04:05:06Z").unwrap());
    })
    .await;
    let response = server.whoami(&[("apikey", &server.token)]).await;
    assert_eq!(
        response.headers()["sunset"],
        "Sun, 03 Feb 2030 04:05:06 GMT"
    );
    assert!(response.headers().get("deprecation").is_none());
    assert!(response.headers().get("link").is_none());
}
