//! The API explorer at `/docs`, in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver). It must load from keygate alone (the machine has no other network,
//! and no page may reach a CDN), offer Authorize for all four credential places, and "Try it
//! out" must reach the very server that served it.
//!
//! Without Chromium the test says so and passes, for a developer who has not installed it; under
//! CI (`CI` set) a missing browser fails it, so the check cannot quietly stop running.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{Value, json};

use crate::browser::{Browser, PATIENCE};
use crate::harness::{Backend, TestServer};

impl Browser {
    /// Signs the explorer out of every scheme, then into `scheme` with `fields` typed into its
    /// inputs in order.
    async fn authorize_only(&self, scheme: &str, fields: &[&str]) {
        self.click(".auth-wrapper .authorize").await;
        self.find(".modal-ux .auth-container").await;
        // Logging out of a scheme turns its button back into Authorize.
        for logout in self
            .client
            .find_all(Locator::XPath(
                "//div[contains(@class,'modal-ux')]//button[normalize-space(.)='Logout']",
            ))
            .await
            .unwrap()
        {
            logout.click().await.unwrap();
        }
        let container = format!(
            "//div[contains(@class,'auth-container')][.//h4[starts-with(normalize-space(.),'{scheme}')]]"
        );
        let inputs = self
            .client
            .find_all(Locator::XPath(&format!("{container}//input")))
            .await
            .unwrap();
        assert_eq!(inputs.len(), fields.len(), "{scheme}'s inputs");
        for (input, value) in inputs.iter().zip(fields) {
            input.send_keys(value).await.unwrap();
        }
        self.client
            .find(Locator::XPath(&format!(
                "{container}//button[contains(@class,'authorize')]"
            )))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.click(".modal-ux .close-modal").await;
    }

    /// Executes the open "Try it out" of GET /v1/whoami; its status and body, as the page shows.
    async fn try_out_whoami(&self) -> (String, String) {
        self.click("#operations-identity-whoami .execute").await;
        let answer = self
            .until(
                "whoami's answer",
                "const cell = document.querySelector(
                     '#operations-identity-whoami .live-responses-table .response .response-col_status');
                 const body = document.querySelector(
                     '#operations-identity-whoami .live-responses-table .response-col_description pre');
                 return cell && body && [cell.textContent.trim(), body.textContent];",
            )
            .await;
        let text = |i: usize| answer[i].as_str().unwrap_or_default().to_owned();
        // Clear, so the next try's answer cannot be mistaken for this one.
        self.click("#operations-identity-whoami .btn-clear").await;
        self.until(
            "the answer cleared",
            "return !document.querySelector('#operations-identity-whoami .live-responses-table');",
        )
        .await;
        (text(0), text(1))
    }

    /// Waits until `script` (a function body returning a value) returns something truthy.
    async fn until(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.client.execute(script, vec![]).await.unwrap();
            if !matches!(value, Value::Null | Value::Bool(false)) && value != json!("") {
                return value;
            }
            assert!(started.elapsed() < PATIENCE, "waited in vain for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn the_explorer_authorizes_and_tries_out_whoami_in_a_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    // Not 127.0.0.1 nor localhost, for which Swagger UI skips some of what it fetches.
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.listen = "127.0.0.2:0".parse().unwrap()
    })
    .await;
    browser
        .client
        .goto(&format!("{}/docs/", server.base))
        .await
        .unwrap();

    // Authorize offers every credential place of API.md §2.
    browser.click(".auth-wrapper .authorize").await;
    let schemes = browser
        .until(
            "the Authorize dialog",
            "return Array.from(document.querySelectorAll('.modal-ux .auth-container h4'))
                 .map(h => h.textContent.trim().split(/\\s/)[0]).sort();",
        )
        .await;
    assert_eq!(schemes, json!(["apikey", "basic", "bearer", "cookie"]));

    browser.click(".modal-ux .close-modal").await;

    // Each credential place, typed and authorized as a person would, then GET /v1/whoami tried
    // out from the page against the same server.
    browser
        .click("#operations-identity-whoami .opblock-summary")
        .await;
    browser
        .click("#operations-identity-whoami .try-out__btn")
        .await;
    for (scheme, fields) in [
        ("bearer", vec![server.token.as_str()]),
        ("apikey", vec![server.token.as_str()]),
        ("basic", vec!["root", server.token.as_str()]),
        ("cookie", vec![server.token.as_str()]),
    ] {
        browser.authorize_only(scheme, &fields).await;
        let (status, body) = browser.try_out_whoami().await;
        assert_eq!(status, "200", "{scheme}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["organization"]["slug"], "root", "{scheme}");
        assert_eq!(body["principal"]["type"], "service_token", "{scheme}");
    }

    // Everything the page loaded came from keygate itself.
    let loaded = browser
        .client
        .execute(
            "return [location.href].concat(
                 performance.getEntriesByType('resource').map(e => e.name));",
            vec![],
        )
        .await
        .unwrap();
    let loaded: Vec<String> = serde_json::from_value(loaded).unwrap();
    assert!(loaded.len() > 3, "{loaded:?}");
    for url in &loaded {
        assert!(
            url.starts_with(&server.base),
            "fetched from elsewhere: {url}"
        );
    }
}
