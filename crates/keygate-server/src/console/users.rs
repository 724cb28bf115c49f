//! Users: the table, Add user (with a generated password shown once), a user's page with their
//! role and status, and deletion with a confirmation.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_core::access::{Caller, perm};
use keygate_core::id::UserId;
use keygate_core::model::{Role, User, UserStatus};
use keygate_core::permission::BuiltinRole;
use serde::Deserialize;

use super::filters;
use super::frame::{
    ConfirmForm, Frame, Posted, SignedIn, capitalised, day, origin, render, sent_first, table_page,
};
use super::{html, refusal};
use crate::problem::{ApiError, ProblemCode};
use crate::request::Meta;
use crate::routes::users::{CreateUser, UpdateUser};
use crate::state::AppState;

/// The tenant's custom roles, through whichever grant lets the person look roles up:
/// `users:write` (it assigns them) or `roles:read`. Without either, none.
async fn known_roles(state: &AppState, caller: &Caller) -> Vec<Role> {
    let scope = match caller.require::<perm::UsersWrite>() {
        Ok(grant) => grant.reads::<perm::RolesRead>(),
        Err(_) => match caller.require::<perm::RolesRead>() {
            Ok(grant) => grant.reads(),
            Err(_) => return Vec::new(),
        },
    };
    super::roles::custom_roles(state, &scope).await
}

/// A role's name as a person reads it: a built-in's, a known custom role's, or (for someone who
/// may not read roles) that it is a custom one.
fn role_name(role_id: &keygate_core::id::RoleId, custom: &[Role]) -> String {
    if let Some(builtin) = BuiltinRole::from_id(role_id) {
        return builtin.name().to_owned();
    }
    custom
        .iter()
        .find(|role| role.id == *role_id)
        .map_or_else(|| format!("custom ({role_id})"), |role| role.name.clone())
}

/// The roles the person may give a user, as (value for the API's `role`, label): those whose
/// every permission they hold, built-in ones by rank first, then the tenant's own by name.
fn assignable(state: &AppState, caller: &Caller, custom: &[Role]) -> Vec<(String, String)> {
    let mut roles: Vec<(String, String)> = BuiltinRole::ALL
        .iter()
        .filter(|role| {
            caller
                .check_no_escalation(&state.catalog().builtin_role(**role))
                .is_ok()
        })
        .map(|role| (role.name().to_owned(), role.name().to_owned()))
        .collect();
    roles.extend(
        custom
            .iter()
            .filter(|role| {
                caller
                    .check_no_escalation(&keygate_core::verified::role_permissions(
                        role,
                        state.catalog(),
                    ))
                    .is_ok()
            })
            .map(|role| (role.id.to_string(), format!("{} (custom)", role.name))),
    );
    roles
}

/// The value of the role select for a user's current role.
fn role_value(role_id: &keygate_core::id::RoleId) -> String {
    BuiltinRole::from_id(role_id).map_or_else(|| role_id.to_string(), |b| b.name().to_owned())
}

struct UserRow {
    id: String,
    email: String,
    name: String,
    role: String,
    status: &'static str,
    created: String,
    last_sign_in: String,
}

impl UserRow {
    fn new(user: &User, custom: &[Role]) -> Self {
        Self {
            id: user.id.to_string(),
            email: user.email.clone(),
            name: user.name.clone(),
            role: role_name(&user.role_id, custom),
            status: match user.status {
                UserStatus::Active => "Active",
                UserStatus::Disabled => "Disabled",
            },
            created: day(user.created_at),
            last_sign_in: user.last_sign_in_at.map_or_else(|| "never".to_owned(), day),
        }
    }
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    frame: Frame,
    rows: Vec<UserRow>,
    next: Option<String>,
    message: Option<String>,
    may_create: bool,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct UsersQuery {
    cursor: Option<String>,
}

fn no_read() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "Your role does not let you see users (it needs users:read).",
    )
}

fn no_write() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "Your role does not let you add or change users (it needs users:write). Nothing was \
         changed.",
    )
}

pub(super) async fn users(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    uri: axum::http::Uri,
) -> Response {
    let query: UsersQuery =
        serde_html_form::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let Ok(grant) = caller.require::<perm::UsersRead>() else {
        return no_read();
    };
    let page = table_page(query.cursor);
    let (rows, next, message) = match state.store().list_users(&grant.reads(), &page).await {
        Ok(listed) => {
            let custom = known_roles(&state, &caller).await;
            let rows = listed
                .items
                .iter()
                .map(|user| UserRow::new(user, &custom))
                .collect();
            (rows, listed.next_cursor, None)
        }
        Err(error) => {
            tracing::error!(error = %error, "the console could not list users");
            (
                Vec::new(),
                None,
                Some("keygate could not read the users just now; reload in a moment.".to_owned()),
            )
        }
    };
    html(render(&UsersPage {
        frame: Frame::new(&caller, &session, "/console/users", "users"),
        rows,
        next,
        message,
        may_create: caller.require::<perm::UsersWrite>().is_ok(),
    }))
}

/// The "Add user" form as sent, and as it is shown again with its messages.
#[derive(Debug, Default, Deserialize)]
pub(super) struct UserForm {
    /// The page's one-time value (`frame::sent_first`).
    #[serde(default)]
    once: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

#[derive(Template)]
#[template(path = "console/user_new.html")]
struct NewUserPage {
    frame: Frame,
    form: UserForm,
    roles: Vec<(String, String)>,
    errors: Vec<(String, String)>,
    message: Option<String>,
}

impl NewUserPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, message)| message.as_str())
    }
}

async fn new_user_page(
    state: &AppState,
    caller: &Caller,
    session: &str,
    form: UserForm,
) -> NewUserPage {
    let custom = known_roles(state, caller).await;
    NewUserPage {
        frame: Frame::new(caller, session, "/console/users", "users"),
        form,
        roles: assignable(state, caller, &custom),
        errors: Vec::new(),
        message: None,
    }
}

pub(super) async fn new_user(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
) -> Response {
    if caller.require::<perm::UsersWrite>().is_err() {
        return no_write();
    }
    let form = UserForm {
        role: "member".into(),
        ..UserForm::default()
    };
    html(render(
        &new_user_page(&state, &caller, &session, form).await,
    ))
}

/// A problem as a sentence for the page.
fn sentence(error: &ApiError, failed: &str) -> String {
    match (error.code, &error.detail) {
        (ProblemCode::PrivilegeEscalation, _) => format!(
            "You cannot do that: it would give or touch permissions you do not hold yourself ({}).",
            error.missing_permissions.join(", ")
        ),
        (ProblemCode::AlreadyExists, _) => {
            "A user with that email already exists in this organization.".to_owned()
        }
        (_, Some(detail)) => format!("{}.", capitalised(detail.trim_end_matches('.'))),
        (_, None) => format!("keygate could not {failed} just now; try again in a moment."),
    }
}

#[derive(Template)]
#[template(path = "console/user_created.html")]
struct CreatedPage {
    frame: Frame,
    /// A new password for an existing user, rather than a new user.
    reset: bool,
    id: String,
    email: String,
    name: String,
    /// The generated password, shown this once.
    secret: Option<String>,
    origin: String,
}

pub(super) async fn create_user(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    SignedIn { caller, session }: SignedIn,
    Posted(form): Posted<UserForm>,
) -> Response {
    if caller.require::<perm::UsersWrite>().is_err() {
        return no_write();
    }
    let request = CreateUser {
        email: form.email.trim().to_owned(),
        name: form.name.trim().to_owned(),
        role: form.role.clone(),
        // Nothing typed: keygate generates one, as the API does, and it shows once.
        password: (!form.password.is_empty()).then(|| form.password.clone()),
    };
    if let Err(page) = sent_first(
        &state,
        &caller,
        &form.once,
        ("/console/users".to_owned(), "See your users"),
    )
    .await
    {
        return page;
    }
    match crate::routes::users::create_user(&state, &caller, &meta, request).await {
        Ok(created) => html(render(&CreatedPage {
            frame: Frame::new(&caller, &session, "/console/users", "users"),
            reset: false,
            id: created.user.id,
            email: created.user.email,
            name: created.user.name,
            secret: created.initial_password,
            origin: origin(&headers),
        })),
        Err(error) => {
            // The typed password is never sent back into the page.
            let form = UserForm {
                password: String::new(),
                ..form
            };
            let mut page = new_user_page(&state, &caller, &session, form).await;
            page.errors = error
                .errors
                .iter()
                .map(|e| (e.field.clone(), e.message.clone()))
                .collect();
            if page.errors.is_empty() {
                match error.code {
                    ProblemCode::NotFound => page
                        .errors
                        .push(("role".into(), "pick one of the roles offered".into())),
                    ProblemCode::AlreadyExists => {
                        page.errors.push(("email".into(), sentence(&error, "")));
                    }
                    _ => page.message = Some(sentence(&error, "add the user")),
                }
            }
            (error.code.status(), html(render(&page))).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/user.html")]
struct UserPage {
    frame: Frame,
    row: UserRow,
    role: String,
    roles: Vec<(String, String)>,
    /// Whether the person may change this user (users:write and every permission of their role).
    may_change: bool,
    /// Whether this is the person signed in.
    is_self: bool,
    notice: Option<String>,
    message: Option<String>,
}

/// The user with this id in the person's tenant, or the 404 page.
async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<User, Response> {
    let not_found = || {
        refusal(
            StatusCode::NOT_FOUND,
            "There is no such user in this organization.",
        )
    };
    let Ok(grant) = caller.require::<perm::UsersRead>() else {
        return Err(no_read());
    };
    let id = UserId::parse(id).ok_or_else(not_found)?;
    state
        .store()
        .get_user(&grant.reads(), &id)
        .await
        .ok()
        .flatten()
        .ok_or_else(not_found)
}

async fn user_page(state: &AppState, caller: &Caller, session: &str, user: &User) -> UserPage {
    let custom = known_roles(state, caller).await;
    let may_change = caller.require::<perm::UsersWrite>().is_ok()
        && match BuiltinRole::from_id(&user.role_id) {
            Some(builtin) => caller
                .check_no_escalation(&state.catalog().builtin_role(builtin))
                .is_ok(),
            None => custom
                .iter()
                .find(|r| r.id == user.role_id)
                .is_some_and(|r| {
                    caller
                        .check_no_escalation(&keygate_core::verified::role_permissions(
                            r,
                            state.catalog(),
                        ))
                        .is_ok()
                }),
        };
    let verified = caller.verified();
    UserPage {
        frame: Frame::new(caller, session, "/console/users", "users"),
        row: UserRow::new(user, &custom),
        role: role_value(&user.role_id),
        roles: assignable(state, caller, &custom),
        may_change,
        is_self: caller.acting_as().is_none() && verified.principal().id == user.id.as_str(),
        notice: None,
        message: None,
    }
}

pub(super) async fn user(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    match find(&state, &caller, &id).await {
        Ok(user) => html(render(&user_page(&state, &caller, &session, &user).await)),
        Err(page) => page,
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ChangeForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    status: String,
    /// `new`: make a new password, shown once.
    #[serde(default)]
    password: String,
    /// The page's one-time value (`frame::sent_first`).
    #[serde(default)]
    once: String,
}

/// Changes a user's role (`role` set) or status (`status` set), or makes them a new password
/// (`password=new`), then shows their page with what happened (or the password, once).
pub(super) async fn change_user(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<ChangeForm>,
) -> Response {
    if caller.require::<perm::UsersWrite>().is_err() {
        return no_write();
    }
    let user = match find(&state, &caller, &id).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    if form.password == "new"
        && let Err(page) = sent_first(
            &state,
            &caller,
            &form.once,
            (format!("/console/users/{id}"), "See the user"),
        )
        .await
    {
        return page;
    }
    let new_password = match form.password.as_str() {
        "new" => match keygate_core::password::generate() {
            Ok(password) => Some(password),
            Err(_) => {
                return refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "keygate could not make a password just now; try again in a moment.",
                );
            }
        },
        _ => None,
    };
    let request = UpdateUser {
        name: None,
        role: (!form.role.is_empty()).then(|| form.role.clone()),
        status: (!form.status.is_empty()).then(|| form.status.clone()),
        password: new_password.clone(),
    };
    let id = user.id.to_string();
    match crate::routes::users::update_user(&state, &caller, &meta, &id, request).await {
        Ok(_) if new_password.is_some() => html(render(&CreatedPage {
            frame: Frame::new(&caller, &session, "/console/users", "users"),
            reset: true,
            id: user.id.to_string(),
            email: user.email.clone(),
            name: user.name.clone(),
            secret: new_password,
            origin: origin(&headers),
        })),
        Ok(_) => {
            let user = find(&state, &caller, &id).await.unwrap_or(user);
            let mut page = user_page(&state, &caller, &session, &user).await;
            page.notice = Some(match form.status.as_str() {
                "disabled" => format!(
                    "{} is disabled: they cannot sign in, and their personal tokens stopped \
                     working.",
                    user.name
                ),
                "active" => format!("{} is active again and can sign in.", user.name),
                _ => format!(
                    "{}'s role is now {}, from their next request.",
                    user.name, page.row.role
                ),
            });
            html(render(&page))
        }
        Err(error) => {
            let mut page = user_page(&state, &caller, &session, &user).await;
            page.message = Some(match error.errors.first() {
                Some(field) => format!("Nothing was changed: {} {}.", field.field, field.message),
                None if error.code == ProblemCode::NotFound => {
                    "Nothing was changed: pick one of the roles offered.".to_owned()
                }
                None => format!(
                    "Nothing was changed. {}",
                    sentence(&error, "change the user")
                ),
            });
            (error.code.status(), html(render(&page))).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/user_delete.html")]
struct DeleteUserPage {
    frame: Frame,
    row: UserRow,
    done: bool,
    message: Option<String>,
}

pub(super) async fn delete_user(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<ConfirmForm>,
) -> Response {
    if caller.require::<perm::UsersWrite>().is_err() {
        return no_write();
    }
    let user = match find(&state, &caller, &id).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let custom = known_roles(&state, &caller).await;
    let mut page = DeleteUserPage {
        frame: Frame::new(&caller, &session, "/console/users", "users"),
        row: UserRow::new(&user, &custom),
        done: false,
        message: None,
    };
    if form.confirm != "yes" {
        return html(render(&page));
    }
    match crate::routes::users::delete_user(&state, &caller, &meta, &page.row.id).await {
        Ok(()) => {
            page.done = true;
            html(render(&page))
        }
        Err(error) => {
            page.message = Some(format!(
                "{} was not deleted. {}",
                user.name,
                sentence(&error, "delete the user")
            ));
            (error.code.status(), html(render(&page))).into_response()
        }
    }
}
