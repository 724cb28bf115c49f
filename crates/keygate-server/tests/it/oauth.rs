//! OAuth 2.0 client credentials (API.md §7), driven by a real OAuth client library (`oauth2`), and
//! the access tokens checked with the published keys by code that is not keygate's verifier
//! (`ring`'s, for each algorithm). `oauth_interop` checks them with Python and JavaScript libraries.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keygate_core::Clock;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, ok_json, problem};

on_every_backend!(
    a_real_oauth_client_gets_refreshes_and_uses_tokens,
    access_tokens_are_jwts_anyone_can_check_with_the_published_keys,
    resource_picks_the_audience_among_the_configured_ones,
    a_token_for_another_deployments_audience_is_refused,
    a_spent_refresh_token_revokes_every_token_of_its_grant,
    deleting_a_client_stops_its_unexpired_tokens_at_once,
    every_bad_token_request_gets_its_rfc_6749_error,
    the_realm_header_must_name_the_clients_tenant,
    clients_follow_least_privilege_and_stay_in_their_tenant,
    tokens_expire_by_the_clock,
    a_rotated_key_stays_published_until_its_tokens_have_expired,
    switching_algorithms_keeps_the_old_keys_tokens_valid_until_they_expire,
    keys_are_rotated_by_age_on_their_own,
    sealed_keys_need_their_secret_to_start,
    revocation_and_introspection,
    the_openapi_document_covers_oauth,
    creating_deleting_and_refused_grants_are_audited,
    a_client_and_its_tokens_share_one_rate_limit,
    another_clients_refresh_token_is_answered_as_an_unknown_one,
    rolling_a_secret_overlaps_the_old_one_then_ends_it,
    a_secret_roll_is_checked_like_a_delete,
);

/// A client of the bootstrap tenant, made by its owner: (client_id, client_secret).
pub async fn create_client(
    server: &TestServer,
    role: &str,
    permissions: Option<&[&str]>,
) -> (String, String) {
    let mut body = json!({"name": "billing sync", "role": role});
    if let Some(permissions) = permissions {
        body["permissions"] = json!(permissions);
    }
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/oauth/clients",
            &server.token,
            Some(body),
        )
        .await;
    (
        created["client_id"].as_str().unwrap().to_owned(),
        created["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// The token endpoint, asked with form `params` and the client in the body.
pub async fn grant(server: &TestServer, params: &[(&str, &str)]) -> reqwest::Response {
    server
        .post("/v1/oauth/token")
        .form(params)
        .send()
        .await
        .unwrap()
}

/// A client credentials grant that must succeed; returns the token response.
pub async fn tokens(server: &TestServer, id: &str, secret: &str, scope: Option<&str>) -> Value {
    let mut params = vec![
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
    ];
    if let Some(scope) = scope {
        params.push(("scope", scope));
    }
    ok_json(grant(server, &params).await).await
}

/// Exchanges a refresh token, the client in the body.
pub async fn exchange(
    server: &TestServer,
    id: &str,
    secret: &str,
    token: &str,
) -> reqwest::Response {
    grant(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", id),
            ("client_secret", secret),
        ],
    )
    .await
}

/// Reads an RFC 6749 error response: status, code, and that nothing was issued or cached.
async fn oauth_error(response: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status of `{error}`");
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    if status == 401 {
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic realm=")
        );
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string());
    assert!(body.get("access_token").is_none(), "no token with an error");
    body
}

fn bearer(server: &TestServer, token: &str) -> reqwest::RequestBuilder {
    server.get("/v1/whoami").bearer_auth(token)
}

async fn whoami_status(server: &TestServer, token: &str) -> u16 {
    bearer(server, token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn a_real_oauth_client_gets_refreshes_and_uses_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    assert!(id.starts_with("cli_"));
    assert!(secret.starts_with("kg_secret_live_"));
    let http = http();
    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let client = BasicClient::new(ClientId::new(id.clone()))
            .set_client_secret(ClientSecret::new(secret.clone()))
            .set_token_uri(TokenUrl::new(format!("{}/v1/oauth/token", server.base)).unwrap())
            .set_auth_type(auth.clone());
        let token = client
            .exchange_client_credentials()
            .add_scope(Scope::new("tokens:read".into()))
            .add_scope(Scope::new("users:read".into()))
            .request_async(&http)
            .await
            .unwrap_or_else(|e| panic!("{auth:?}: {e:?}"));
        assert!(token.token_type().as_ref().eq_ignore_ascii_case("bearer"));
        assert_eq!(token.expires_in(), Some(Duration::from_secs(900)));
        let scopes: Vec<&str> = token.scopes().unwrap().iter().map(|s| s.as_str()).collect();
        assert_eq!(scopes, ["tokens:read", "users:read"]);

        // The access token is a credential like any other.
        let jwt = token.access_token().secret().clone();
        let me = ok_json(bearer(&server, &jwt).send().await.unwrap()).await;
        assert_eq!(me["principal"]["type"], "oauth_client");
        assert_eq!(me["principal"]["id"], id.as_str());
        assert_eq!(me["credential"]["kind"], "access_token");
        assert!(me["credential"]["id"].as_str().unwrap().starts_with("atk_"));
        assert_eq!(me["permissions"], json!(["tokens:read", "users:read"]));
        assert_eq!(me["organization"]["slug"], "root");
        // In every place a credential may travel.
        for (name, value) in [
            ("apikey", jwt.clone()),
            ("cookie", format!("api_access_token={jwt}")),
            (
                "authorization",
                format!("Basic {}", STANDARD.encode(format!("root:{jwt}"))),
            ),
        ] {
            ok_json(server.whoami(&[(name, &value)]).await).await;
        }

        // Refresh: a new pair, the old refresh token spent.
        let refresh = token.refresh_token().unwrap().clone();
        let renewed = client
            .exchange_refresh_token(&refresh)
            .add_scope(Scope::new("tokens:read".into()))
            .request_async(&http)
            .await
            .unwrap();
        let renewed_scopes: Vec<&str> = renewed
            .scopes()
            .unwrap()
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(renewed_scopes, ["tokens:read"]);
        assert_ne!(renewed.access_token().secret(), &jwt);
        let next = renewed.refresh_token().unwrap().clone();
        assert_ne!(next.secret(), refresh.secret());
        // The narrower access token does not narrow the grant: the next refresh may ask for all.
        let again = client
            .exchange_refresh_token(&next)
            .request_async(&http)
            .await
            .unwrap();
        let all: Vec<&str> = again.scopes().unwrap().iter().map(|s| s.as_str()).collect();
        assert_eq!(all, ["tokens:read", "users:read"]);
    }
}

/// The JWT's three parts, decoded by hand.
fn parts(jwt: &str) -> (Value, Value, Vec<u8>, String) {
    let pieces: Vec<&str> = jwt.split('.').collect();
    assert_eq!(pieces.len(), 3);
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(pieces[0]).unwrap()).unwrap();
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(pieces[1]).unwrap()).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(pieces[2]).unwrap();
    (
        header,
        claims,
        signature,
        format!("{}.{}", pieces[0], pieces[1]),
    )
}

/// Checks `jwt`'s signature against the published key its `kid` names, with `ring` (not the code
/// keygate verifies with), whatever the key's algorithm; returns the header and claims.
pub async fn verify_independently(server: &TestServer, jwt: &str) -> (Value, Value) {
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
        UnparsedPublicKey,
    };
    let (header, claims, signature, signed) = parts(jwt);
    let jwks = ok_json(server.get("/.well-known/jwks.json").send().await.unwrap()).await;
    let kid = header["kid"].as_str().unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("{kid} is not published: {jwks}"));
    assert_eq!(
        key["alg"], header["alg"],
        "the token uses its key's algorithm"
    );
    assert_eq!(key["use"], "sig");
    let member = |name: &str| URL_SAFE_NO_PAD.decode(key[name].as_str().unwrap()).unwrap();
    let check = |message: &[u8]| match key["alg"].as_str().unwrap() {
        "EdDSA" => {
            assert_eq!(
                (key["kty"].as_str(), key["crv"].as_str()),
                (Some("OKP"), Some("Ed25519"))
            );
            UnparsedPublicKey::new(&ED25519, member("x")).verify(message, &signature)
        }
        "ES256" => {
            assert_eq!(
                (key["kty"].as_str(), key["crv"].as_str()),
                (Some("EC"), Some("P-256"))
            );
            let point = [&[4u8][..], &member("x"), &member("y")].concat();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(message, &signature)
        }
        "RS256" => {
            assert_eq!(key["kty"], "RSA");
            RsaPublicKeyComponents {
                n: member("n"),
                e: member("e"),
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, &signature)
        }
        other => panic!("unexpected algorithm {other}"),
    };
    check(signed.as_bytes()).expect("the signature verifies with the published key");
    let mut tampered = signed.into_bytes();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(check(&tampered).is_err());
    (header, claims)
}

async fn access_tokens_are_jwts_anyone_can_check_with_the_published_keys(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.oauth.issuer = Some("https://auth.example.com/".into());
        c.permissions = vec!["zones:read".into(), "zones:write".into()];
    })
    .await;
    let (id, secret) = create_client(&server, "viewer", Some(&["tokens:read", "zones:read"])).await;
    let issued = tokens(&server, &id, &secret, None).await;
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 900);
    assert_eq!(issued["refresh_token_expires_in"], 30 * 86_400);
    assert_eq!(
        issued["scope"], "tokens:read zones:read",
        "the role narrowed by the client's list"
    );
    assert!(
        issued["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("kg_refresh_live_")
    );
    let jwt = issued["access_token"].as_str().unwrap();
    let (header, claims) = verify_independently(&server, jwt).await;
    assert_eq!(header["alg"], "ES256", "the default");
    assert_eq!(header["typ"], "at+jwt");
    let me = ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    assert_eq!(claims["iss"], "https://auth.example.com");
    assert_eq!(
        claims["aud"], "https://auth.example.com",
        "the issuer, by default"
    );
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["tenant"], me["organization"]["id"]);
    assert_eq!(claims["scope"], "tokens:read zones:read");
    let start = crate::harness::START.unix();
    assert_eq!(claims["iat"], start);
    assert_eq!(claims["exp"], start + 900);
    assert!(claims["jti"].as_str().unwrap().starts_with("atk_"));

    let metadata = ok_json(
        server
            .get("/.well-known/oauth-authorization-server")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(metadata["issuer"], "https://auth.example.com");
    assert_eq!(
        metadata["token_endpoint"],
        "https://auth.example.com/v1/oauth/token"
    );
    assert_eq!(
        metadata["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(
        metadata["revocation_endpoint"],
        "https://auth.example.com/v1/oauth/revoke"
    );
    assert_eq!(
        metadata["introspection_endpoint"],
        "https://auth.example.com/v1/oauth/introspect"
    );
    assert_eq!(
        metadata["grant_types_supported"],
        json!(["client_credentials", "refresh_token"])
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(metadata["response_types_supported"], json!(["none"]));
    assert!(
        metadata.get("authorization_endpoint").is_none(),
        "no flow through a browser"
    );
    let scopes = metadata["scopes_supported"].as_array().unwrap();
    assert!(scopes.contains(&json!("oauth_clients:write")));
}

async fn resource_picks_the_audience_among_the_configured_ones(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.oauth.audience = vec![
            "https://api.example.com".into(),
            "urn:example:billing".into(),
        ];
    })
    .await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let aud = |issued: &Value| parts(issued["access_token"].as_str().unwrap()).1["aud"].clone();
    let request = |resources: &[&'static str]| {
        let mut params = vec![
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
        ];
        params.extend(resources.iter().map(|r| ("resource", *r)));
        params
    };
    let default = tokens(&server, &id, &secret, None).await;
    assert_eq!(
        aud(&default),
        "https://api.example.com",
        "the first configured"
    );
    let one = ok_json(grant(&server, &request(&["urn:example:billing"])).await).await;
    assert_eq!(aud(&one), "urn:example:billing");
    let both = ok_json(
        grant(
            &server,
            &request(&["urn:example:billing", "https://api.example.com"]),
        )
        .await,
    )
    .await;
    assert_eq!(
        aud(&both),
        json!(["urn:example:billing", "https://api.example.com"])
    );
    for issued in [&default, &one, &both] {
        let jwt = issued["access_token"].as_str().unwrap();
        assert_eq!(
            whoami_status(&server, jwt).await,
            200,
            "keygate accepts each"
        );
    }

    let refused = oauth_error(
        grant(&server, &request(&["https://elsewhere.example"])).await,
        400,
        "invalid_target",
    )
    .await;
    assert!(
        refused["error_description"]
            .as_str()
            .unwrap()
            .contains("https://elsewhere.example"),
        "{refused}"
    );

    // A refresh asks again; without `resource`, the default.
    let refresh = one["refresh_token"].as_str().unwrap();
    let refreshed = ok_json(
        grant(
            &server,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", &id),
                ("client_secret", &secret),
                ("resource", "urn:example:billing"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(aud(&refreshed), "urn:example:billing");
    let refresh = refreshed["refresh_token"].as_str().unwrap();
    let again = ok_json(exchange(&server, &id, &secret, refresh).await).await;
    assert_eq!(aud(&again), "https://api.example.com");

    // The introspection of an access token says whom it is for.
    let introspected = ok_json(
        server
            .post("/v1/oauth/introspect")
            .basic_auth(&id, Some(&secret))
            .form(&[("token", both["access_token"].as_str().unwrap())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        introspected["aud"],
        json!(["urn:example:billing", "https://api.example.com"])
    );
}

async fn a_token_for_another_deployments_audience_is_refused(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.oauth.audience = vec!["https://api.example.com".into()];
    })
    .await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let jwt = tokens(&server, &id, &secret, None).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same database and keys, but another audience: its tokens are not this node's.
    let other = server
        .join_with(|c| c.oauth.audience = vec!["https://other.example.com".into()])
        .await;
    assert_eq!(whoami_status(&server, &jwt).await, 200);
    let body = problem(
        bearer(&other, &jwt).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("audience"),
        "{body}"
    );
}

/// API.md §7: presenting a spent refresh token revokes every token descended from it, access
/// tokens included (they were left to live out their lives, so a thief holding one kept working
/// while the error said everything was revoked); and RFC 7009 §2.1: revoking a refresh token
/// also ends the access tokens of its grant. Another grant of the same client is untouched.
async fn a_spent_refresh_token_revokes_every_token_of_its_grant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let first = tokens(&server, &id, &secret, Some("tokens:read")).await;
    let first_access = first["access_token"].as_str().unwrap().to_owned();
    let spent = first["refresh_token"].as_str().unwrap().to_owned();
    let second = ok_json(exchange(&server, &id, &secret, &spent).await).await;
    let live = second["refresh_token"].as_str().unwrap().to_owned();
    let live_access = second["access_token"].as_str().unwrap().to_owned();
    let other = tokens(&server, &id, &secret, None).await;
    let other_access = other["access_token"].as_str().unwrap().to_owned();
    // Cached on this node before the family burns: the burning must reach the cache.
    for access in [&first_access, &live_access, &other_access] {
        assert_eq!(whoami_status(&server, access).await, 200);
    }

    // The spent token again: refused, and the family burns with it.
    let body = oauth_error(
        exchange(&server, &id, &secret, &spent).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    oauth_error(
        exchange(&server, &id, &secret, &live).await,
        400,
        "invalid_grant",
    )
    .await;
    oauth_error(
        exchange(&server, &id, &secret, &spent).await,
        400,
        "invalid_grant",
    )
    .await;
    // The access tokens of the grant, the first and the one issued by the refresh, are over too:
    // on this node, on another, in a verdict and in an introspection.
    let node = server.join().await;
    for access in [&first_access, &live_access] {
        assert_eq!(whoami_status(&server, access).await, 401);
        assert_eq!(whoami_status(&node, access).await, 401);
        let verdict = server
            .expect(
                200,
                Method::POST,
                "/v1/verify",
                &server.token,
                Some(json!({"credential": access})),
            )
            .await;
        assert_eq!(verdict["code"], "REVOKED", "{verdict}");
        let seen = server
            .post("/v1/oauth/introspect")
            .basic_auth(&id, Some(&secret))
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(ok_json(seen).await, json!({"active": false}));
    }
    // Another grant of the same client is untouched.
    assert_eq!(whoami_status(&server, &other_access).await, 200);
    let renewed = ok_json(
        exchange(
            &server,
            &id,
            &secret,
            other["refresh_token"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    // Revoking that grant's refresh token ends its access tokens as well (RFC 7009 §2.1).
    let revoked = server
        .post("/v1/oauth/revoke")
        .basic_auth(&id, Some(&secret))
        .form(&[("token", renewed["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    for access in [&other_access, renewed["access_token"].as_str().unwrap()] {
        assert_eq!(whoami_status(&server, access).await, 401);
    }
}

async fn deleting_a_client_stops_its_unexpired_tokens_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let issued = tokens(&server, &id, &secret, None).await;
    let jwt = issued["access_token"].as_str().unwrap();
    assert_eq!(whoami_status(&server, jwt).await, 200);
    let verify = |credential: &str| {
        server
            .post("/v1/verify")
            .bearer_auth(&server.token)
            .json(&json!({"credential": credential, "permissions": ["tokens:read"]}))
            .send()
    };
    let verdict = ok_json(verify(jwt).await.unwrap()).await;
    assert_eq!(verdict["code"], "VALID");
    assert_eq!(verdict["principal"]["type"], "oauth_client");
    assert_eq!(verdict["principal"]["id"], id.as_str());

    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/oauth/clients/{id}"),
            &server.token,
            None,
        )
        .await;
    problem(
        bearer(&server, jwt).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    let verdict = ok_json(verify(jwt).await.unwrap()).await;
    assert_eq!(
        (verdict["valid"].clone(), verdict["code"].clone()),
        (json!(false), json!("NOT_FOUND"))
    );
    oauth_error(
        exchange(
            &server,
            &id,
            &secret,
            issued["refresh_token"].as_str().unwrap(),
        )
        .await,
        401,
        "invalid_client",
    )
    .await;
    server
        .expect(
            404,
            Method::GET,
            &format!("/v1/oauth/clients/{id}"),
            &server.token,
            None,
        )
        .await;
}

async fn every_bad_token_request_gets_its_rfc_6749_error(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let cc = "client_credentials";
    let unknown = keygate_core::credential::CredentialFormat::new(
        "kg",
        keygate_core::credential::Environment::Live,
    )
    .unwrap()
    .generate(keygate_core::credential::CredentialKind::OauthSecret)
    .unwrap();
    let mut wrong = secret.clone();
    wrong.replace_range(20..21, if &secret[20..21] == "A" { "B" } else { "A" });
    let (id, secret, wrong, owner) = (
        id.as_str(),
        secret.as_str(),
        wrong.as_str(),
        server.token.as_str(),
    );
    for (params, status, error) in [
        (
            vec![
                ("grant_type", cc),
                ("client_id", id),
                ("client_secret", wrong),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", cc),
                ("client_id", id),
                ("client_secret", unknown.expose()),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", cc),
                ("client_id", "cli_nobody"),
                ("client_secret", secret),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", cc),
                ("client_id", id),
                ("client_secret", owner),
            ],
            401,
            "invalid_client",
        ),
        (vec![("grant_type", cc)], 401, "invalid_client"),
        (
            vec![("grant_type", cc), ("client_secret", secret)],
            401,
            "invalid_client",
        ),
        (
            vec![("client_id", id), ("client_secret", secret)],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", cc),
                ("scope", "users:write"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            400,
            "invalid_scope",
        ),
        (
            vec![
                ("grant_type", cc),
                ("scope", "nonsense"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            400,
            "invalid_scope",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "kg_refresh_live_x"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", cc),
                ("grant_type", cc),
                ("client_id", id),
                ("client_secret", secret),
            ],
            400,
            "invalid_request",
        ),
    ] {
        let body = oauth_error(grant(&server, &params).await, status, error).await;
        println!("{params:?}: {body}");
    }

    // The client in HTTP Basic and in the body at once.
    let both = server
        .post("/v1/oauth/token")
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", cc),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    oauth_error(both, 400, "invalid_request").await;
    // JSON instead of a form.
    let json = server
        .post("/v1/oauth/token")
        .basic_auth(id, Some(secret))
        .json(&json!({"grant_type": cc}))
        .send()
        .await
        .unwrap();
    oauth_error(json, 400, "invalid_request").await;
    // A keygate token is not a client.
    let bearer = server
        .post("/v1/oauth/token")
        .bearer_auth(&server.token)
        .form(&[("grant_type", cc)])
        .send()
        .await
        .unwrap();
    oauth_error(bearer, 401, "invalid_client").await;
    // And a client secret is not a keygate credential.
    let body = problem(
        server.whoami(&[("apikey", secret)]).await,
        401,
        "unauthenticated",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("token endpoint"));
    // Basic alone works.
    let ok = server
        .post("/v1/oauth/token")
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", cc)])
        .send()
        .await
        .unwrap();
    let ok = ok_json(ok).await;
    assert!(ok["access_token"].is_string());
}

async fn the_realm_header_must_name_the_clients_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let with_realm = |realm: &'static str| {
        server
            .post("/v1/oauth/token")
            .header("realm", realm)
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    ok_json(with_realm("root").await.unwrap()).await;
    let body = oauth_error(with_realm("acme").await.unwrap(), 401, "invalid_client").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Realm")
    );
}

async fn clients_follow_least_privilege_and_stay_in_their_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    // A member has no oauth_clients:write.
    let member = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "member", "role": "member"})),
        )
        .await;
    let member = member["secret"].as_str().unwrap();
    let response = server
        .call(
            Method::POST,
            "/v1/oauth/clients",
            member,
            Some(json!({"name": "x", "role": "viewer"})),
        )
        .await;
    let body = problem(response, 403, "forbidden").await;
    assert_eq!(body["missing_permissions"], json!(["oauth_clients:write"]));
    server
        .expect(200, Method::GET, "/v1/oauth/clients", member, None)
        .await;

    // A token narrowed to managing clients cannot make a client wider than itself.
    let narrow = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "narrow", "role": "admin",
                "permissions": ["oauth_clients:*", "tokens:read"]})),
        )
        .await;
    let narrow = narrow["secret"].as_str().unwrap();
    let response = server
        .call(
            Method::POST,
            "/v1/oauth/clients",
            narrow,
            Some(json!({"name": "wide", "role": "admin"})),
        )
        .await;
    let body = problem(response, 403, "privilege-escalation").await;
    assert!(
        body["missing_permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("users:write"))
    );
    let small = server
        .expect(
            201,
            Method::POST,
            "/v1/oauth/clients",
            narrow,
            Some(json!({"name": "small", "role": "admin", "permissions": ["tokens:read"]})),
        )
        .await;
    assert!(small.get("client_secret").is_some());
    // Nor delete one that grants more than it holds.
    let (wide, _) = create_client(&server, "admin", None).await;
    let response = server
        .call(
            Method::DELETE,
            &format!("/v1/oauth/clients/{wide}"),
            narrow,
            None,
        )
        .await;
    problem(response, 403, "privilege-escalation").await;
    let response = server
        .call(
            Method::POST,
            "/v1/oauth/clients",
            &server.token,
            Some(
                json!({"name": "typo", "role": "viewer", "permissions": ["zone:read"], "extra": 1}),
            ),
        )
        .await;
    problem(response, 400, "invalid-request").await;

    // Lists show no secrets.
    let listed = server
        .expect(200, Method::GET, "/v1/oauth/clients", &server.token, None)
        .await;
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|c| c.get("client_secret").is_none() && c["hint"].is_string())
    );
    assert_eq!(listed[0]["client_id"], wide.as_str(), "newest first");
    assert_eq!(listed[0]["role"], "rol_admin");

    // A child tenant, its own owner token, and the parent acting for it.
    let child = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Acme", "slug": "acme"})),
        )
        .await;
    let child_id = child["tenant"]["id"].as_str().unwrap().to_owned();
    let acting = server
        .request(Method::POST, "/v1/oauth/clients")
        .bearer_auth(&server.token)
        .header("as-tenant", "acme")
        .json(&json!({"name": "acme's", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(acting.status(), 201);
    let acme_client: Value = acting.json().await.unwrap();
    let acme_id = acme_client["client_id"].as_str().unwrap();
    let acme_token = server
        .request(Method::POST, "/v1/tokens")
        .bearer_auth(&server.token)
        .header("as-tenant", &child_id)
        .json(&json!({"kind": "service", "name": "acme owner", "role": "owner"}))
        .send()
        .await
        .unwrap();
    let acme_token: Value = acme_token.json().await.unwrap();
    let acme_token = acme_token["secret"].as_str().unwrap();
    let theirs = server
        .expect(200, Method::GET, "/v1/oauth/clients", acme_token, None)
        .await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
    assert_eq!(theirs["data"][0]["client_id"], acme_id);
    // The child sees nothing of its parent's, and cannot delete it: 404, not 403.
    server
        .expect(
            404,
            Method::GET,
            &format!("/v1/oauth/clients/{wide}"),
            acme_token,
            None,
        )
        .await;
    server
        .expect(
            404,
            Method::DELETE,
            &format!("/v1/oauth/clients/{wide}"),
            acme_token,
            None,
        )
        .await;
    server
        .expect(
            200,
            Method::GET,
            &format!("/v1/oauth/clients/{wide}"),
            &server.token,
            None,
        )
        .await;
    // The acme client's tokens are acme's: its Realm is acme.
    let acme_secret = acme_client["client_secret"].as_str().unwrap();
    let issued = server
        .post("/v1/oauth/token")
        .header("realm", "acme")
        .basic_auth(acme_id, Some(acme_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let issued = ok_json(issued).await;
    let me = ok_json(
        server
            .whoami(&[(
                "authorization",
                &format!("Bearer {}", issued["access_token"].as_str().unwrap()),
            )])
            .await,
    )
    .await;
    assert_eq!(me["organization"]["slug"], "acme");
}

async fn tokens_expire_by_the_clock(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.oauth.access_token_ttl_seconds = 600;
        c.oauth.refresh_token_ttl_days = 1;
    })
    .await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let issued = tokens(&server, &id, &secret, None).await;
    assert_eq!(issued["expires_in"], 600);
    let jwt = issued["access_token"].as_str().unwrap();
    server.clock.advance(Duration::from_secs(599));
    assert_eq!(whoami_status(&server, jwt).await, 200);
    server.clock.advance(Duration::from_secs(1));
    let body = problem(
        bearer(&server, jwt).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("expired"));
    // A token never seen before is refused the same, without its client being read.
    let unseen = tokens(&server, &id, &secret, None).await;
    server.clock.advance(Duration::from_secs(600));
    problem(
        bearer(&server, unseen["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
        401,
        "unauthenticated",
    )
    .await;

    server.clock.advance(Duration::from_secs(86_400));
    let refused = || async {
        let refresh = issued["refresh_token"].as_str().unwrap();
        let body = oauth_error(
            exchange(&server, &id, &secret, refresh).await,
            400,
            "invalid_grant",
        )
        .await;
        body["error_description"].as_str().unwrap().to_owned()
    };
    assert!(refused().await.contains("expired"));
    // The hourly housekeeping deletes it; it stays refused.
    server.state.delete_expired().await;
    assert!(refused().await.contains("not known"));
}

fn kid(jwt: &str) -> String {
    parts(jwt).0["kid"].as_str().unwrap().to_owned()
}

async fn published_kids(server: &TestServer) -> Vec<String> {
    let jwks = ok_json(server.get("/.well-known/jwks.json").send().await.unwrap()).await;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_rotated_key_stays_published_until_its_tokens_have_expired(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let old = tokens(&server, &id, &secret, None).await;
    let old = old["access_token"].as_str().unwrap().to_owned();
    let old_kid = kid(&old);
    assert_eq!(
        published_kids(&server).await,
        std::slice::from_ref(&old_kid)
    );

    server.clock.advance(Duration::from_secs(300));
    let new_kid = server
        .state
        .keys()
        .rotate(&**server.state.store(), server.clock.now())
        .await
        .unwrap();
    assert_ne!(new_kid, old_kid);
    let new = tokens(&server, &id, &secret, None).await;
    let new = new["access_token"].as_str().unwrap().to_owned();
    assert_eq!(kid(&new), new_kid);
    assert_eq!(
        published_kids(&server).await,
        [new_kid.clone(), old_kid.clone()]
    );
    verify_independently(&server, &old).await;
    verify_independently(&server, &new).await;
    assert_eq!(
        whoami_status(&server, &old).await,
        200,
        "old tokens stay good"
    );

    // A replaced key stays published for a token's lifetime after its replacement, and the
    // minute another node may go on signing with it; then it goes.
    server.clock.advance(Duration::from_secs(600));
    assert_eq!(whoami_status(&server, &old).await, 401);
    server.clock.advance(Duration::from_secs(360));
    assert_eq!(published_kids(&server).await, [new_kid]);
    assert_eq!(
        whoami_status(&server, &new).await,
        401,
        "expired by now as well"
    );
}

async fn switching_algorithms_keeps_the_old_keys_tokens_valid_until_they_expire(backend: Backend) {
    use keygate_core::jwt::SigningAlgorithm;
    let server = TestServer::start_with(backend, |c| {
        c.oauth.signing_algorithm = SigningAlgorithm::EdDsa
    })
    .await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let old = tokens(&server, &id, &secret, None).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(parts(&old).0["alg"], "EdDSA");

    for algorithm in [SigningAlgorithm::Es256, SigningAlgorithm::Rs256] {
        let config = {
            let mut config = server.state.config().clone();
            config.oauth.signing_algorithm = algorithm;
            config
        };
        // Started again with the other algorithm (a node of its own on the same database).
        let node = server.join_with(|c| *c = config).await;
        let new = tokens(&node, &id, &secret, None).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(parts(&new).0["alg"], algorithm.as_str());
        let published: Vec<String> =
            ok_json(node.get("/.well-known/jwks.json").send().await.unwrap()).await["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["alg"].as_str().unwrap().to_owned())
                .collect();
        assert_eq!(
            published.first().map(String::as_str),
            Some(algorithm.as_str())
        );
        assert!(published.iter().any(|a| a == "EdDSA"), "{published:?}");
        verify_independently(&node, &old).await;
        verify_independently(&node, &new).await;
        assert_eq!(
            whoami_status(&node, &old).await,
            200,
            "the EdDSA token still works"
        );
        assert_eq!(whoami_status(&node, &new).await, 200);
    }
    // Until it expires, when its key leaves the key set.
    server.clock.advance(Duration::from_secs(900 + 60));
    let late = server.join().await;
    assert_eq!(whoami_status(&late, &old).await, 401);
}

async fn keys_are_rotated_by_age_on_their_own(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.oauth.signing_key_rotation_days = 1).await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let first = kid(tokens(&server, &id, &secret, None).await["access_token"]
        .as_str()
        .unwrap());
    server.clock.advance(Duration::from_secs(86_400));
    let second = kid(tokens(&server, &id, &secret, None).await["access_token"]
        .as_str()
        .unwrap());
    assert_ne!(first, second);
    assert_eq!(published_kids(&server).await, [second, first]);
}

async fn sealed_keys_need_their_secret_to_start(backend: Backend) {
    let secret = "the key-encryption secret of this deployment";
    let server = TestServer::start_with(backend, |c| {
        c.oauth.key_encryption_secret = Some(keygate_server::config::SecretText(secret.into()));
    })
    .await;
    let (id, client_secret) = create_client(&server, "viewer", None).await;
    let issued = tokens(&server, &id, &client_secret, None).await;
    verify_independently(&server, issued["access_token"].as_str().unwrap()).await;

    let clock = std::sync::Arc::new(keygate_core::ManualClock::new(crate::harness::START));
    let mut other = server.state.config().clone();
    other.oauth.key_encryption_secret = Some(keygate_server::config::SecretText(
        "another secret, just as long".into(),
    ));
    let error = keygate_server::AppState::open(other.clone(), clock.clone())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("cannot be opened"), "{error}");
    other.oauth.key_encryption_secret = None;
    let error = keygate_server::AppState::open(other, clock)
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("is sealed"), "{error}");
}

async fn revocation_and_introspection(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let (other_id, other_secret) = create_client(&server, "viewer", None).await;
    let issued = tokens(&server, &id, &secret, Some("tokens:read")).await;
    let jwt = issued["access_token"].as_str().unwrap();
    let refresh = issued["refresh_token"].as_str().unwrap();
    let as_client = |path: &'static str, token: String, who: (&str, &str)| {
        server
            .post(path)
            .basic_auth(who.0, Some(who.1))
            .form(&[("token", token)])
            .send()
    };
    let me = (id.as_str(), secret.as_str());
    let stranger = (other_id.as_str(), other_secret.as_str());

    let seen = ok_json(
        as_client("/v1/oauth/introspect", jwt.into(), me)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["client_id"], id.as_str());
    assert_eq!(seen["scope"], "tokens:read");
    assert_eq!(seen["token_type"], "Bearer");
    assert_eq!(seen["exp"], crate::harness::START.unix() + 900);
    let seen = ok_json(
        as_client("/v1/oauth/introspect", refresh.into(), me)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (seen["active"].clone(), seen["token_type"].clone()),
        (json!(true), json!("refresh_token"))
    );
    // Another client learns nothing of them.
    for token in [jwt, refresh] {
        let unseen = ok_json(
            as_client("/v1/oauth/introspect", token.into(), stranger)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(unseen, json!({"active": false}));
    }
    // A keygate credential with credentials:verify sees its tenant's tokens; without, 403.
    let by_owner = server
        .post("/v1/oauth/introspect")
        .bearer_auth(&server.token)
        .form(&[("token", jwt)])
        .send()
        .await
        .unwrap();
    assert_eq!(ok_json(by_owner).await["active"], true);
    let viewer = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "v", "role": "viewer"})),
        )
        .await;
    let forbidden = server
        .post("/v1/oauth/introspect")
        .bearer_auth(viewer["secret"].as_str().unwrap())
        .form(&[("token", jwt)])
        .send()
        .await
        .unwrap();
    problem(forbidden, 403, "forbidden").await;
    let anonymous = server
        .post("/v1/oauth/introspect")
        .form(&[("token", jwt)])
        .send()
        .await
        .unwrap();
    problem(anonymous, 401, "unauthenticated").await;
    for garbage in ["nonsense", "kg_refresh_live_nope", "eyJ.eyJ.x"] {
        let answer = ok_json(
            as_client("/v1/oauth/introspect", garbage.into(), me)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer, json!({"active": false}));
    }

    // Revoking: another client's token and unknown tokens are 200 and change nothing.
    for token in [jwt, "nonsense", "kg_refresh_live_nope"] {
        let response = as_client("/v1/oauth/revoke", token.into(), stranger)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    assert_eq!(whoami_status(&server, jwt).await, 200);
    // The client's own access token: refused from the next request on.
    assert_eq!(
        as_client("/v1/oauth/revoke", jwt.into(), me)
            .await
            .unwrap()
            .status(),
        200
    );
    let body = problem(
        bearer(&server, jwt).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("revoked"));
    let seen = ok_json(
        as_client("/v1/oauth/introspect", jwt.into(), me)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen, json!({"active": false}));
    // Its refresh token: the grant is over.
    assert_eq!(
        as_client("/v1/oauth/revoke", refresh.into(), me)
            .await
            .unwrap()
            .status(),
        200
    );
    let seen = ok_json(
        as_client("/v1/oauth/introspect", refresh.into(), me)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen, json!({"active": false}));
    oauth_error(
        exchange(&server, &id, &secret, refresh).await,
        400,
        "invalid_grant",
    )
    .await;
    let missing = server
        .post("/v1/oauth/revoke")
        .basic_auth(&id, Some(&secret))
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    oauth_error(missing, 400, "invalid_request").await;
    let unauthenticated = server
        .post("/v1/oauth/revoke")
        .form(&[("token", jwt)])
        .send()
        .await
        .unwrap();
    oauth_error(unauthenticated, 401, "invalid_client").await;
}

async fn the_openapi_document_covers_oauth(backend: Backend) {
    let server = TestServer::start(backend).await;
    let doc = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    for (path, method) in [
        ("/v1/oauth/clients", "get"),
        ("/v1/oauth/clients", "post"),
        ("/v1/oauth/clients/{id}", "get"),
        ("/v1/oauth/clients/{id}", "delete"),
        ("/v1/oauth/clients/{id}/secret/roll", "post"),
        ("/v1/oauth/token", "post"),
        ("/v1/oauth/revoke", "post"),
        ("/v1/oauth/introspect", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/oauth-authorization-server", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(operation["operationId"].is_string(), "{method} {path}");
        assert!(
            operation["responses"]["200"].is_object()
                || operation["responses"]["201"].is_object()
                || operation["responses"]["204"].is_object(),
            "{method} {path}"
        );
    }
    let token = &doc["paths"]["/v1/oauth/token"]["post"];
    assert!(token["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    assert!(token["responses"]["400"]["content"]["application/json"].is_object());
    for schema in [
        "TokenResponse",
        "OauthErrorBody",
        "ClientView",
        "CreatedClient",
        "Introspection",
        "JwkSet",
        "ServerMetadata",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

/// The audit log as stored: (action, outcome, target_id), oldest first.
async fn audit(server: &TestServer) -> Vec<(String, String, Option<String>, u64)> {
    // Refusals are counted in memory and written every few seconds: write them now.
    server.state.flush_refusals().await;
    let page = server
        .expect(
            200,
            Method::GET,
            "/v1/audit-events?limit=500",
            &server.token,
            None,
        )
        .await;
    let mut events: Vec<_> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["target"]["id"].as_str().map(str::to_owned),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    events.reverse();
    events
}

async fn creating_deleting_and_refused_grants_are_audited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    tokens(&server, &id, &secret, None).await;
    let client = |params: &[(&'static str, &'static str)]| {
        let mut params: Vec<(&str, &str)> = params.to_vec();
        params.extend([
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
        ]);
        params
    };
    oauth_error(
        grant(
            &server,
            &client(&[
                ("grant_type", "client_credentials"),
                ("scope", "users:write"),
            ]),
        )
        .await,
        400,
        "invalid_scope",
    )
    .await;
    oauth_error(
        grant(&server, &client(&[("grant_type", "implicit")])).await,
        400,
        "unsupported_grant_type",
    )
    .await;
    // Refused before the client is known: nobody to attribute it to, nothing recorded.
    oauth_error(
        grant(
            &server,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", "kg_secret_live_x"),
            ],
        )
        .await,
        401,
        "invalid_client",
    )
    .await;
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/oauth/clients/{id}"),
            &server.token,
            None,
        )
        .await;
    let events: Vec<(String, String, Option<String>, u64)> = audit(&server)
        .await
        .into_iter()
        .filter(|(action, _, _, _)| action.starts_with("oauth"))
        .collect();
    let target = Some(id.clone());
    assert_eq!(
        events,
        [
            (
                "oauth_client.create".into(),
                "success".into(),
                target.clone(),
                1
            ),
            // The grant, and two refused grants of one client counted into one event.
            ("oauth.token".into(), "success".into(), target.clone(), 1),
            ("oauth.token".into(), "denied".into(), target.clone(), 2),
            ("oauth_client.delete".into(), "success".into(), target, 1),
        ]
    );
}

async fn a_client_and_its_tokens_share_one_rate_limit(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.rate_limit.requests = Some(3);
        c.rate_limit.per_seconds = Some(60);
    })
    .await;
    let (id, secret) = create_client(&server, "viewer", None).await;
    let issued = tokens(&server, &id, &secret, None).await;
    let jwt = issued["access_token"].as_str().unwrap();
    assert_eq!(whoami_status(&server, jwt).await, 200);
    let second = tokens(&server, &id, &secret, None).await;
    let other_jwt = second["access_token"].as_str().unwrap();
    // A fresh token does not come with a fresh allowance.
    let limited = bearer(&server, other_jwt).send().await.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    problem(limited, 429, "rate-limited").await;
    let limited = grant(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    problem(limited, 429, "rate-limited").await;
}

async fn another_clients_refresh_token_is_answered_as_an_unknown_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, alice_secret) = create_client(&server, "viewer", None).await;
    let (mallory, mallory_secret) = create_client(&server, "viewer", None).await;
    let issued = tokens(&server, &alice, &alice_secret, None).await;
    let refresh = issued["refresh_token"].as_str().unwrap();

    let stolen = oauth_error(
        exchange(&server, &mallory, &mallory_secret, refresh).await,
        400,
        "invalid_grant",
    )
    .await;
    let made_up = keygate_core::credential::CredentialFormat::new(
        "kg",
        keygate_core::credential::Environment::Live,
    )
    .unwrap()
    .generate(keygate_core::credential::CredentialKind::Refresh)
    .unwrap();
    let unknown = oauth_error(
        exchange(&server, &mallory, &mallory_secret, made_up.expose()).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_eq!(stolen, unknown, "nothing tells the two apart");
    // Nor did the attempt spend or burn it: its own client still exchanges it.
    ok_json(exchange(&server, &alice, &alice_secret, refresh).await).await;
}

/// Rolls client `id`'s secret as `token` with `body`; answers the response.
async fn roll_secret(
    server: &TestServer,
    token: &str,
    id: &str,
    body: Option<Value>,
) -> reqwest::Response {
    server
        .call(
            Method::POST,
            &format!("/v1/oauth/clients/{id}/secret/roll"),
            token,
            body,
        )
        .await
}

/// Rolls client `id`'s secret as the owner; the 201's body.
async fn roll_ok(server: &TestServer, id: &str, body: Option<Value>) -> Value {
    let response = roll_secret(server, &server.token, id, body).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// The token endpoint's status for a client credentials grant with this secret.
async fn grant_status(server: &TestServer, id: &str, secret: &str) -> u16 {
    grant(
        server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ],
    )
    .await
    .status()
    .as_u16()
}

async fn rolling_a_secret_overlaps_the_old_one_then_ends_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, old) = create_client(&server, "viewer", None).await;
    // Cached by a grant first: the roll must reach the cache too.
    assert_eq!(grant_status(&server, &id, &old).await, 200);
    let now = server.clock.now();
    let rolled = roll_ok(&server, &id, Some(json!({"expire_previous_in": 600}))).await;
    assert_eq!(rolled["client_id"], id.as_str(), "the client keeps its id");
    assert_eq!(rolled["role"], "rol_viewer");
    let new = rolled["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(new.starts_with("kg_secret_live_"));
    assert_eq!(rolled["hint"], &new[new.len() - 4..]);
    let until = now.saturating_add(Duration::from_secs(600));
    assert_eq!(rolled["previous_secret_expires_at"], until.to_string());
    let shown = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/oauth/clients/{id}"),
            &server.token,
            None,
        )
        .await;
    assert!(shown.get("client_secret").is_none());
    assert_eq!(shown["previous_secret_expires_at"], until.to_string());

    // Both work during the overlap, and their access tokens are the client's.
    for secret in [&old, &new] {
        let issued = tokens(&server, &id, secret, None).await;
        let access = issued["access_token"].as_str().unwrap();
        assert_eq!(whoami_status(&server, access).await, 200);
    }
    server.clock.advance(Duration::from_secs(599));
    assert_eq!(grant_status(&server, &id, &old).await, 200);
    server.clock.advance(Duration::from_secs(1));
    let refused = grant(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &old),
        ],
    )
    .await;
    oauth_error(refused, 401, "invalid_client").await;
    assert_eq!(grant_status(&server, &id, &new).await, 200);

    // A second roll ends the first secret's successor's overlap and leaves only the newest; with
    // no body the overlap is an hour; with 0, none.
    let second = roll_ok(&server, &id, None).await;
    let newest = second["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(
        second["previous_secret_expires_at"],
        server
            .clock
            .now()
            .saturating_add(Duration::from_secs(3600))
            .to_string()
    );
    assert_eq!(grant_status(&server, &id, &old).await, 401);
    assert_eq!(grant_status(&server, &id, &new).await, 200);
    let third = roll_ok(&server, &id, Some(json!({"expire_previous_in": 0}))).await;
    let last = third["client_secret"].as_str().unwrap();
    assert_eq!(
        grant_status(&server, &id, &new).await,
        401,
        "rolled away twice"
    );
    assert_eq!(grant_status(&server, &id, &newest).await, 401, "no overlap");
    assert_eq!(grant_status(&server, &id, last).await, 200);

    let rolls = audit(&server)
        .await
        .into_iter()
        .filter(|(action, ..)| action == "oauth_client.secret_roll")
        .collect::<Vec<_>>();
    assert_eq!(rolls.len(), 3);
    assert!(
        rolls
            .iter()
            .all(|(_, outcome, target, _)| outcome == "success" && target.as_deref() == Some(&id))
    );
}

async fn a_secret_roll_is_checked_like_a_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = create_client(&server, "admin", None).await;
    let before = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/oauth/clients/{id}"),
            &server.token,
            None,
        )
        .await;

    // A bad overlap is a problem naming the field, and changes nothing.
    for bad in [
        json!({"expire_previous_in": 604_801}),
        json!({"expire_previous_in": -1}),
        json!({"expire_previous_in": "soon"}),
        json!({"overlap": 5}),
    ] {
        let response = roll_secret(&server, &server.token, &id, Some(bad.clone())).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
    }
    let response = roll_secret(
        &server,
        &server.token,
        &id,
        Some(json!({"expire_previous_in": 604_801})),
    )
    .await;
    let body = problem(response, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["field"], "expire_previous_in", "{body}");
    let after = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/oauth/clients/{id}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(after, before, "nothing changed");
    assert_eq!(grant_status(&server, &id, &secret).await, 200);

    // A member lacks oauth_clients:write; a narrowed manager cannot roll what it could not delete.
    let member = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "member", "role": "member"})),
        )
        .await;
    let response = roll_secret(&server, member["secret"].as_str().unwrap(), &id, None).await;
    let body = problem(response, 403, "forbidden").await;
    assert_eq!(body["missing_permissions"], json!(["oauth_clients:write"]));
    let narrow = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "narrow", "role": "admin",
                "permissions": ["oauth_clients:*", "tokens:read"]})),
        )
        .await;
    let response = roll_secret(&server, narrow["secret"].as_str().unwrap(), &id, None).await;
    problem(response, 403, "privilege-escalation").await;

    // Another tenant's client is not found, as an unknown one is.
    let child = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Acme", "slug": "acme"})),
        )
        .await;
    let acme_owner = server
        .request(Method::POST, "/v1/tokens")
        .bearer_auth(&server.token)
        .header("as-tenant", child["tenant"]["id"].as_str().unwrap())
        .json(&json!({"kind": "service", "name": "acme owner", "role": "owner"}))
        .send()
        .await
        .unwrap();
    let acme_owner: Value = acme_owner.json().await.unwrap();
    let acme_owner = acme_owner["secret"].as_str().unwrap();
    let theirs = problem(
        roll_secret(&server, acme_owner, &id, None).await,
        404,
        "not-found",
    )
    .await;
    let unknown = problem(
        roll_secret(&server, acme_owner, "cli_0MqX1z8a9bCdEfGhIjKlMn", None).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        theirs["detail"].as_str().unwrap().replace(&id, "X"),
        unknown["detail"]
            .as_str()
            .unwrap()
            .replace("cli_0MqX1z8a9bCdEfGhIjKlMn", "X")
    );

    // None of the refusals rolled anything.
    let after = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/oauth/clients/{id}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(after, before);
    assert_eq!(grant_status(&server, &id, &secret).await, 200);
}

/// A node that must write its first key while another process holds SQLite's write lock for longer
/// than the busy timeout (5 s) waits for the database instead of failing to start (CI once saw a
/// joining node fail with "database is locked" here).
#[tokio::test]
async fn a_node_starting_while_the_database_is_locked_waits_for_it() {
    use keygate_core::jwt::SigningAlgorithm;
    use sqlx::Connection;
    let server = TestServer::start(Backend::Sqlite).await;
    let url = server.state.config().database_url.clone();
    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(6)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    });
    // Another algorithm than the first node's: starting means writing a key.
    let node = server
        .join_with(|c| c.oauth.signing_algorithm = SigningAlgorithm::EdDsa)
        .await;
    release.await.unwrap();
    let (id, secret) = create_client(&node, "viewer", None).await;
    let token = tokens(&node, &id, &secret, None).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(parts(&token).0["alg"], "EdDSA");
}
