//! The tenant's account keys and its IP restriction.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use keygate_core::access::{Caller, perm};
use serde::Deserialize;

use super::filters;
use super::frame::{
    ConfirmForm, Frame, OnceForm, Posted, SecretPage, SignedIn, day, origin, problem_text, render,
    sent_first,
};
use super::{html, refusal};
use crate::request::{ClientIp, Meta};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    frame: Frame,
    /// (id, hint, created, last used) of each key.
    keys: Vec<(String, String, String, String)>,
    may_write: bool,
    message: Option<String>,
}

async fn keys_page(
    state: &AppState,
    caller: &Caller,
    session: &str,
    message: Option<String>,
) -> Response {
    let keys = match crate::routes::account::keys_view(state, caller).await {
        Ok(keys) => keys.data,
        Err(error) => {
            return refusal(
                error.code.status(),
                "Your role does not let you see account keys (it needs keys:read).",
            );
        }
    };
    html(render(&KeysPage {
        frame: Frame::new(caller, session, "/console/account/keys", "account"),
        keys: keys
            .into_iter()
            .map(|key| {
                (
                    key.id,
                    format!("…{}", key.hint),
                    day(key.created_at),
                    match (key.revoked_at, key.revoked_reason.as_deref()) {
                        // Said where the person looks for whether a key is in use.
                        (Some(at), Some("leaked")) => format!(
                            "revoked {}: reported as leaked; delete it once replaced",
                            day(at)
                        ),
                        (Some(at), _) => format!("revoked {}", day(at)),
                        _ => key.last_used_at.map_or_else(|| "never".to_owned(), day),
                    },
                )
            })
            .collect(),
        may_write: caller.require_all(&["keys:write"]).is_ok(),
        message,
    }))
}

pub(super) async fn keys(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
) -> Response {
    keys_page(&state, &caller, &session, None).await
}

pub(super) async fn create_key(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    SignedIn { caller, session }: SignedIn,
    Posted(form): Posted<OnceForm>,
) -> Response {
    if let Err(page) = sent_first(
        &state,
        &caller,
        &form.once,
        ("/console/account/keys".to_owned(), "See your account keys"),
    )
    .await
    {
        return page;
    }
    match crate::routes::account::create_key(&state, &caller, &meta).await {
        Ok(created) => html(render(&SecretPage {
            frame: Frame::new(&caller, &session, "/console/account/keys", "account"),
            heading: "Account key created".to_owned(),
            what: "key",
            back: "/console/account/keys",
            back_label: "Back to account keys",
            secret: created.key,
            origin: origin(&headers),
            previous_until: None,
            warnings: Vec::new(),
        })),
        Err(error) => keys_page(&state, &caller, &session, Some(problem_text(&error))).await,
    }
}

#[derive(Template)]
#[template(path = "console/key_delete.html")]
struct KeyDeletePage {
    frame: Frame,
    id: String,
    hint: String,
}

pub(super) async fn delete_key(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    axum::extract::Path(id): axum::extract::Path<String>,
    Posted(form): Posted<ConfirmForm>,
) -> Response {
    if form.confirm != "yes" {
        let hint = crate::routes::account::keys_view(&state, &caller)
            .await
            .ok()
            .and_then(|keys| keys.data.into_iter().find(|key| key.id == id))
            .map(|key| format!("…{}", key.hint));
        let Some(hint) = hint else {
            return refusal(axum::http::StatusCode::NOT_FOUND, "There is no such key.");
        };
        return html(render(&KeyDeletePage {
            frame: Frame::new(&caller, &session, "/console/account/keys", "account"),
            id,
            hint,
        }));
    }
    let Some(key) = keygate_core::id::CredentialId::parse_any(&id) else {
        return refusal(axum::http::StatusCode::NOT_FOUND, "There is no such key.");
    };
    match crate::routes::account::remove(&state, &caller, &meta, &key, &id).await {
        Ok(_) => Redirect::to("/console/account/keys").into_response(),
        Err(error) => refusal(
            error.code.status(),
            &format!(
                "The key was not deleted: {}.",
                error
                    .detail
                    .as_deref()
                    .unwrap_or("keygate could not delete it just now")
            ),
        ),
    }
}

#[derive(Template)]
#[template(path = "console/ip_restriction.html")]
struct IpRestrictionPage {
    frame: Frame,
    enabled: bool,
    allowlist: String,
    address: String,
    may_write: bool,
    saved: Option<String>,
    message: Option<String>,
    warnings: Vec<String>,
}

pub(super) async fn ip_restriction(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    client: Option<axum::Extension<ClientIp>>,
) -> Response {
    let client = client.map(|e| e.0);
    let Ok(grant) = caller.require::<perm::IpRestrictionRead>() else {
        return refusal(
            axum::http::StatusCode::FORBIDDEN,
            "Your role does not let you see the IP restriction (it needs ip_restriction:read).",
        );
    };
    let restriction = match state.store().get_ip_restriction(&grant.reads()).await {
        Ok(restriction) => restriction,
        Err(error) => {
            tracing::error!(error = %error, "the console could not read the IP restriction");
            return refusal(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "keygate could not read the IP restriction just now; reload in a moment.",
            );
        }
    };
    html(render(&IpRestrictionPage {
        frame: Frame::new(
            &caller,
            &session,
            "/console/account/ip-restriction",
            "account",
        ),
        enabled: restriction.enabled,
        allowlist: restriction.allowlist.to_strings().join("\n"),
        address: client.map_or_else(|| "unknown".to_owned(), |ClientIp(ip)| ip.to_string()),
        may_write: caller.require_all(&["ip_restriction:write"]).is_ok(),
        saved: None,
        message: None,
        warnings: Vec::new(),
    }))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct IpRestrictionForm {
    #[serde(default)]
    enabled: String,
    #[serde(default)]
    allowlist: String,
}

pub(super) async fn set_ip_restriction(
    State(state): State<AppState>,
    Meta(meta): Meta,
    client: Option<axum::Extension<ClientIp>>,
    SignedIn { caller, session }: SignedIn,
    Posted(form): Posted<IpRestrictionForm>,
) -> Response {
    let client = client.map(|e| e.0);
    let Some(ClientIp(ip)) = client else {
        return refusal(
            axum::http::StatusCode::BAD_REQUEST,
            "keygate cannot tell your address, so it cannot check that you keep access.",
        );
    };
    let entries: Vec<String> = form
        .allowlist
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    let enabled = form.enabled == "on";
    let applied =
        crate::routes::account::apply_ip_restriction(&state, &caller, &meta, ip, enabled, &entries)
            .await;
    let mut page = IpRestrictionPage {
        frame: Frame::new(
            &caller,
            &session,
            "/console/account/ip-restriction",
            "account",
        ),
        enabled,
        allowlist: form.allowlist.clone(),
        address: ip.to_string(),
        may_write: caller.require_all(&["ip_restriction:write"]).is_ok(),
        saved: None,
        message: None,
        warnings: Vec::new(),
    };
    match applied {
        Ok(view) => {
            page.enabled = view.enabled;
            page.allowlist = view.allowlist.join("\n");
            page.saved = Some(if view.enabled {
                "Saved: only these networks may use this organization's credentials now.".to_owned()
            } else {
                "Saved: the restriction is off; credentials work from anywhere.".to_owned()
            });
            page.warnings = view
                .warnings
                .iter()
                .map(|w| format!("Note: {}", w.detail))
                .collect();
        }
        Err(error) => {
            let field_message = error.errors.first().map(|e| {
                let line = e
                    .field
                    .strip_prefix("allowlist[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .and_then(|i| i.parse::<usize>().ok())
                    .map(|i| format!("Line {}: ", i + 1))
                    .unwrap_or_default();
                format!("{line}{}", e.message)
            });
            page.message = Some(field_message.unwrap_or_else(|| problem_text(&error)));
        }
    }
    html(render(&page))
}
