//! The web console (API.md §11) under `/console/`: server-rendered pages for the people of each
//! tenant, working without JavaScript, from templates compiled into the binary (askama: checked
//! at build time, nothing to read at run time).
//!
//! A console action is the same core operation as its API call, with the same checks and the
//! same audit event (under the session's credential). What is particular to a browser lives here:
//! the session cookie instead of a header, a CSRF token bound to the session on every form, a
//! refusal of cross-site form posts (`Origin`, `Sec-Fetch-Site`), and the headers every page
//! sends (a CSP without inline script, no framing, no sniffing, no caching).

mod account;
mod chart;
mod clients;
mod filters;
mod frame;
mod log;
mod quotas;
mod roles;
mod signin;
mod tenants;
mod tokens;
mod usage;
mod users;
mod webhooks;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::SESSION_COOKIE;
use crate::problem::OwnErrorBody;
use crate::request::ClientIp;
use crate::state::AppState;

const STYLE: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// No inline script or style, nothing from another origin, no framing, forms only to keygate.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's pages and assets, and `/` sending a visitor to it.
pub fn router(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(signin::home))
        .route(
            "/console/sign-in",
            get(signin::sign_in_form).post(signin::sign_in),
        )
        .route("/console/sign-out", axum::routing::post(signin::sign_out))
        .route("/console/tokens", get(tokens::tokens))
        .route(
            "/console/tokens/new",
            get(tokens::new_token).post(tokens::create_token),
        )
        .route(
            "/console/tokens/delete",
            axum::routing::post(tokens::delete_tokens),
        )
        .route("/console/tokens/{id}", get(tokens::token))
        .route(
            "/console/tokens/{id}/quota",
            axum::routing::post(tokens::set_quota),
        )
        .route(
            "/console/account/keys",
            get(account::keys).post(account::create_key),
        )
        .route(
            "/console/account/keys/{id}/delete",
            axum::routing::post(account::delete_key),
        )
        .route(
            "/console/account/ip-restriction",
            get(account::ip_restriction).post(account::set_ip_restriction),
        )
        .route(
            "/console/tokens/{id}/roll",
            axum::routing::post(tokens::roll_token),
        )
        .route("/console/tenants", get(tenants::tenants))
        .route(
            "/console/tenants/new",
            get(tenants::new_tenant).post(tenants::create_tenant),
        )
        .route("/console/tenants/{id}", get(tenants::tenant))
        .route(
            "/console/tenants/{id}/change",
            axum::routing::post(tenants::change_tenant),
        )
        .route(
            "/console/tenants/{id}/quota",
            axum::routing::post(tenants::set_quota),
        )
        .route(
            "/console/tenants/{id}/delete",
            axum::routing::post(tenants::delete_tenant),
        )
        .route(
            "/console/tenants/{id}/act",
            axum::routing::post(tenants::act),
        )
        .route(
            "/console/act/stop",
            axum::routing::post(tenants::stop_acting),
        )
        .route("/console/users", get(users::users))
        .route(
            "/console/users/new",
            get(users::new_user).post(users::create_user),
        )
        .route(
            "/console/users/{id}",
            get(users::user).post(users::change_user),
        )
        .route(
            "/console/users/{id}/delete",
            axum::routing::post(users::delete_user),
        )
        .route("/console/roles", get(roles::roles))
        .route(
            "/console/roles/new",
            get(roles::new_role).post(roles::create_role),
        )
        .route(
            "/console/roles/{id}",
            get(roles::role).post(roles::replace_role),
        )
        .route(
            "/console/roles/{id}/delete",
            axum::routing::post(roles::delete_role),
        )
        .route("/console/log", get(log::log))
        .route("/console/usage", get(usage::usage))
        .route("/console/oauth/clients", get(clients::clients))
        .route(
            "/console/oauth/clients/new",
            get(clients::new_client).post(clients::create),
        )
        .route("/console/oauth/clients/{id}", get(clients::client))
        .route(
            "/console/oauth/clients/{id}/roll",
            axum::routing::post(clients::roll),
        )
        .route(
            "/console/oauth/clients/{id}/quota",
            axum::routing::post(clients::set_quota),
        )
        .route(
            "/console/oauth/clients/{id}/delete",
            axum::routing::post(clients::delete),
        )
        .route("/console/webhooks", get(webhooks::webhooks))
        .route(
            "/console/webhooks/new",
            get(webhooks::new_webhook).post(webhooks::create),
        )
        .route(
            "/console/webhooks/{id}",
            get(webhooks::webhook).post(webhooks::change),
        )
        .route(
            "/console/webhooks/{id}/delete",
            axum::routing::post(webhooks::delete),
        )
        .route(
            "/console/webhooks/{id}/deliveries/{delivery}/retry",
            axum::routing::post(webhooks::retry),
        )
        .route_layer(middleware::from_fn_with_state(state, guard));
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console/assets/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/console/assets/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .merge(pages)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Refuses a state-changing request sent from another site, then adds the headers every page
/// sends. A form post from another origin is what CSRF is made of; browsers say where a request
/// comes from in `Sec-Fetch-Site` (all current ones) and `Origin` (on every POST).
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let asked = (
        request.headers().clone(),
        request.extensions().get::<ClientIp>().copied(),
    );
    let response = if request.method() != Method::GET
        && request.method() != Method::HEAD
        && is_cross_site(request.headers())
    {
        refusal(
            StatusCode::FORBIDDEN,
            "This form was sent from another site, so keygate did not act on it. Open the \
             console yourself and send it from there.",
        )
    } else {
        next.run(request).await
    };
    as_page(framed(&state, asked, response).await)
}

/// What every console answer carries: it is a page of its own (a refusal too, not a problem
/// document), with the headers of [`guard`].
fn as_page(mut response: Response) -> Response {
    response.extensions_mut().insert(OwnErrorBody);
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Pages show secrets once, and who is signed in: none may be kept by a cache.
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether the browser says the request comes from another site.
fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or_default();
            let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
            origin == "null" || !origin_host.eq_ignore_ascii_case(host.to_str().unwrap_or(""))
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A page that says why a request was refused.
fn refusal(status: StatusCode, message: &str) -> Response {
    let page = frame::Refused {
        title: if status == StatusCode::NOT_FOUND {
            "Not found"
        } else {
            "Not done"
        },
        message: message.to_owned(),
        back: None,
    };
    refused(status, page)
}

/// The page of a refusal, keeping what it says for `guard` to show it in the console's frame.
fn refused(status: StatusCode, page: frame::Refused) -> Response {
    let mut response = (status, Html(frame::render(&page))).into_response();
    response.extensions_mut().insert(page);
    response
}

/// A refusal to a signed-in person, shown in the console's frame (their navigation, who is
/// signed in) rather than on a bare page; as it was for anyone else, and when the answer changes
/// a cookie (it ends acting for a sub-customer, so the frame would name the wrong one).
async fn framed(
    state: &AppState,
    request: (HeaderMap, Option<ClientIp>),
    response: Response,
) -> Response {
    let (headers, client) = request;
    if response.headers().contains_key(header::SET_COOKIE)
        || session_secret(&headers).is_none()
        || response.extensions().get::<frame::Refused>().is_none()
    {
        return response;
    }
    let Ok((caller, session)) = frame::signed_in(state, &headers, client).await else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    let Some(refused) = parts.extensions.remove::<frame::Refused>() else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let page = frame::RefusedFramed {
        frame: frame::Frame::new(&caller, &session, "", ""),
        refused,
    };
    Response::from_parts(parts, axum::body::Body::from(frame::render(&page)))
}

/// The answer to a console address that is no page: a page, as the rest of the console's
/// answers are (the API's problem document is for programs).
pub(crate) fn no_such_page() -> Response {
    as_page(refusal(
        StatusCode::NOT_FOUND,
        "There is no such page in the console: it may have moved, or the address was mistyped.",
    ))
}

/// The console's own cookie: the sub-customer the person acts for (a tenant id), sent back as
/// `as-tenant` with each of their requests, so every check of §2 applies to it on every page.
const ACTING_COOKIE: &str = "keygate_console_as";

/// The value of a cookie the request carries, if any and not empty.
fn cookie<'a>(headers: &'a HeaderMap, wanted: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == wanted && !value.is_empty())
        .map(|(_, value)| value)
}

/// The session secret the request carries, if any.
fn session_secret(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// The `Set-Cookie` that makes the console act for `tenant`, or (with `None`) stop.
fn acting_cookie(tenant: Option<&str>) -> HeaderValue {
    let cookie = match tenant {
        Some(id) => format!("{ACTING_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/console"),
        None => format!("{ACTING_COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"),
    };
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The CSRF token of a session: derived from its secret, which only the session's browser holds,
/// so it is bound to the session, ends with it, and needs nothing stored.
fn csrf_token(session: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"keygate console csrf\0")
        .chain_update(session.as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `presented` is the CSRF token of the request's session.
fn csrf_matches(headers: &HeaderMap, presented: &str) -> bool {
    session_secret(headers).is_some_and(|session| {
        csrf_token(session)
            .as_bytes()
            .ct_eq(presented.as_bytes())
            .into()
    })
}

/// An HTML page.
fn html(body: String) -> Response {
    Html(body).into_response()
}
