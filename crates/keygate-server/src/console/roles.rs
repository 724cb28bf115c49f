//! Roles: the built-ins read-only, the tenant's own made and edited as a permission matrix, and
//! deleted with a confirmation.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_core::access::{Caller, Scope, perm};
use keygate_core::id::RoleId;
use keygate_core::model::Role;
use keygate_core::permission::BuiltinRole;
use keygate_core::store::Page;
use serde::Deserialize;

use super::filters;
use super::frame::{ConfirmForm, Frame, Posted, SignedIn, capitalised, day, render};
use super::{html, refusal};
use crate::problem::{ApiError, ProblemCode};
use crate::request::Meta;
use crate::routes::roles::RoleRequest;
use crate::state::AppState;

/// Every custom role of the tenant, read page by page through `scope`, by name.
pub(super) async fn custom_roles(state: &AppState, scope: &Scope<perm::RolesRead>) -> Vec<Role> {
    let mut found = Vec::new();
    let mut page = Page::first(Page::MAX_LIMIT);
    loop {
        match state.store().list_roles(scope, &page).await {
            Ok(listed) => {
                found.extend(listed.items.into_iter().filter(|r| r.tenant_id.is_some()));
                match listed.next_cursor {
                    Some(next) => page.cursor = Some(next),
                    None => break,
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "the console could not list roles");
                break;
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// What a role grants, as the table shows it: a custom role's patterns as defined, a built-in
/// role's permissions as the catalog expands them.
fn grants(state: &AppState, role: &Role) -> Vec<String> {
    crate::routes::roles::RoleView::new(role.clone(), state.catalog()).permissions
}

struct RoleRow {
    id: String,
    name: String,
    permissions: Vec<String>,
    created: String,
}

#[derive(Template)]
#[template(path = "console/roles.html")]
struct RolesPage {
    frame: Frame,
    builtin: Vec<RoleRow>,
    custom: Vec<RoleRow>,
    may_write: bool,
    message: Option<String>,
}

pub(super) async fn roles(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
) -> Response {
    let Ok(grant) = caller.require::<perm::RolesRead>() else {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you see roles (it needs roles:read).",
        );
    };
    let builtin = BuiltinRole::ALL
        .iter()
        .map(|role| {
            let record = keygate_core::roles::builtin(*role);
            RoleRow {
                id: record.id.to_string(),
                name: record.name.clone(),
                permissions: grants(&state, &record),
                created: String::new(),
            }
        })
        .collect();
    let custom = custom_roles(&state, &grant.reads())
        .await
        .into_iter()
        .map(|role| RoleRow {
            id: role.id.to_string(),
            name: role.name.clone(),
            permissions: grants(&state, &role),
            created: day(role.created_at),
        })
        .collect();
    html(render(&RolesPage {
        frame: Frame::new(&caller, &session, "/console/roles", "roles"),
        builtin,
        custom,
        may_write: caller.require::<perm::RolesWrite>().is_ok(),
        message: None,
    }))
}

/// One cell of the matrix: the permission it stands for, and whether the person may grant it.
struct Cell {
    permission: String,
    offered: bool,
}

/// One row of the matrix: a resource, a cell per action column (none where the catalog has no
/// such permission), and its wildcard.
struct MatrixRow {
    resource: String,
    cells: Vec<Option<Cell>>,
    wildcard: Cell,
}

/// The matrix of the catalog: resources as rows, actions as columns (`read` and `write` first,
/// then the others in the catalog's order), each box offered only if the person holds it.
fn matrix(state: &AppState, caller: &Caller) -> (Vec<String>, Vec<MatrixRow>, Cell) {
    let held = &caller.verified().permissions;
    let holds = |pattern: &str| held.lacks_patterns(&[pattern]).is_empty();
    let mut resources: Vec<String> = Vec::new();
    let mut actions: Vec<String> = vec!["read".to_owned(), "write".to_owned()];
    let names: Vec<String> = state
        .catalog()
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    for name in &names {
        let (resource, action) = name.split_once(':').unwrap_or((name, ""));
        if !resources.iter().any(|r| r == resource) {
            resources.push(resource.to_owned());
        }
        if !actions.iter().any(|a| a == action) {
            actions.push(action.to_owned());
        }
    }
    let rows = resources
        .into_iter()
        .map(|resource| {
            let cells = actions
                .iter()
                .map(|action| {
                    let permission = format!("{resource}:{action}");
                    names.contains(&permission).then(|| Cell {
                        offered: holds(&permission),
                        permission,
                    })
                })
                .collect();
            let wildcard = format!("{resource}:*");
            MatrixRow {
                wildcard: Cell {
                    offered: holds(&wildcard),
                    permission: wildcard,
                },
                resource,
                cells,
            }
        })
        .collect();
    let all = Cell {
        offered: holds("*"),
        permission: "*".to_owned(),
    };
    (actions, rows, all)
}

/// The role form as sent, and as it is shown again with its messages.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RoleForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    permission: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/role_edit.html")]
struct RoleEditPage {
    frame: Frame,
    /// The role edited, none when making a new one.
    id: Option<String>,
    form: RoleForm,
    actions: Vec<String>,
    rows: Vec<MatrixRow>,
    all: Cell,
    /// Whether the person may change it; otherwise the page shows it read-only.
    may_write: bool,
    errors: Vec<(String, String)>,
    message: Option<String>,
    notice: Option<String>,
}

impl RoleEditPage {
    fn new(
        state: &AppState,
        caller: &Caller,
        session: &str,
        id: Option<String>,
        form: RoleForm,
    ) -> Self {
        let (actions, rows, all) = matrix(state, caller);
        Self {
            frame: Frame::new(caller, session, "/console/roles", "roles"),
            id,
            form,
            actions,
            rows,
            all,
            may_write: caller.require::<perm::RolesWrite>().is_ok(),
            errors: Vec::new(),
            message: None,
            notice: None,
        }
    }

    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(name, _)| name == field || name.starts_with(&format!("{field}[")))
            .map(|(_, message)| message.as_str())
    }

    fn checked(&self, permission: &str) -> bool {
        self.form.permission.iter().any(|p| p == permission)
    }

    /// The problem's field errors beside their fields, anything else as the page's message.
    fn show(&mut self, error: &ApiError, failed: &str) {
        self.errors = error
            .errors
            .iter()
            .map(|e| (e.field.clone(), e.message.clone()))
            .collect();
        if self.errors.is_empty() {
            self.message = Some(match (error.code, &error.detail) {
                (ProblemCode::PrivilegeEscalation, _) => format!(
                    "You cannot grant what you do not hold yourself: {}.",
                    error.missing_permissions.join(", ")
                ),
                (ProblemCode::AlreadyExists, _) => {
                    "Another role of this organization already has that name.".to_owned()
                }
                (_, Some(detail)) => format!("{}.", capitalised(detail.trim_end_matches('.'))),
                (_, None) => format!("keygate could not {failed} the role just now; try again."),
            });
        }
    }
}

pub(super) async fn new_role(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
) -> Response {
    if caller.require::<perm::RolesWrite>().is_err() {
        return no_write();
    }
    html(render(&RoleEditPage::new(
        &state,
        &caller,
        &session,
        None,
        RoleForm::default(),
    )))
}

fn no_write() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "Your role does not let you make or change roles (it needs roles:write). Nothing was \
         changed.",
    )
}

fn request_of(form: &RoleForm) -> RoleRequest {
    RoleRequest {
        name: form.name.trim().to_owned(),
        permissions: form
            .permission
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect(),
    }
}

pub(super) async fn create_role(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Posted(form): Posted<RoleForm>,
) -> Response {
    if caller.require::<perm::RolesWrite>().is_err() {
        return no_write();
    }
    let request = request_of(&form);
    match crate::routes::roles::create_role(&state, &caller, &meta, request).await {
        Ok(role) => {
            let form = RoleForm {
                name: role.name.clone(),
                permission: role.permissions.clone(),
            };
            let mut page =
                RoleEditPage::new(&state, &caller, &session, Some(role.id.to_string()), form);
            page.notice = Some(format!(
                "Role “{}” created. Give it to a user on their page, or to a service token.",
                role.name
            ));
            html(render(&page))
        }
        Err(error) => {
            let mut page = RoleEditPage::new(&state, &caller, &session, None, form);
            page.show(&error, "create");
            (error.code.status(), html(render(&page))).into_response()
        }
    }
}

/// The custom role with this id in the person's tenant, or the 404 page.
async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Role, Response> {
    let not_found = || {
        refusal(
            StatusCode::NOT_FOUND,
            "There is no such custom role in this organization.",
        )
    };
    let grant = caller
        .require::<perm::RolesRead>()
        .map_err(|_| not_found())?;
    let id = RoleId::parse(id).ok_or_else(not_found)?;
    state
        .store()
        .get_role(&grant.reads(), &id)
        .await
        .ok()
        .flatten()
        .filter(|role| role.tenant_id.is_some())
        .ok_or_else(not_found)
}

pub(super) async fn role(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let role = match find(&state, &caller, &id).await {
        Ok(role) => role,
        Err(page) => return page,
    };
    let form = RoleForm {
        name: role.name.clone(),
        permission: role.permissions.clone(),
    };
    html(render(&RoleEditPage::new(
        &state,
        &caller,
        &session,
        Some(role.id.to_string()),
        form,
    )))
}

pub(super) async fn replace_role(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<RoleForm>,
) -> Response {
    if caller.require::<perm::RolesWrite>().is_err() {
        return no_write();
    }
    let role = match find(&state, &caller, &id).await {
        Ok(role) => role,
        Err(page) => return page,
    };
    let request = request_of(&form);
    let id = role.id.to_string();
    match crate::routes::roles::replace_role(&state, &caller, &meta, &id, request).await {
        Ok(role) => {
            let form = RoleForm {
                name: role.name.clone(),
                permission: role.permissions.clone(),
            };
            let mut page = RoleEditPage::new(&state, &caller, &session, Some(id), form);
            page.notice = Some(format!(
                "Role “{}” saved. Everyone holding it has these permissions from their next \
                 request.",
                role.name
            ));
            html(render(&page))
        }
        Err(error) => {
            let mut page = RoleEditPage::new(&state, &caller, &session, Some(id), form);
            page.show(&error, "save");
            (error.code.status(), html(render(&page))).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/role_delete.html")]
struct DeleteRolePage {
    frame: Frame,
    id: String,
    name: String,
    /// Answering: the role is gone.
    done: bool,
    /// Why it was not deleted.
    message: Option<String>,
}

pub(super) async fn delete_role(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<ConfirmForm>,
) -> Response {
    if caller.require::<perm::RolesWrite>().is_err() {
        return no_write();
    }
    let role = match find(&state, &caller, &id).await {
        Ok(role) => role,
        Err(page) => return page,
    };
    let mut page = DeleteRolePage {
        frame: Frame::new(&caller, &session, "/console/roles", "roles"),
        id: role.id.to_string(),
        name: role.name.clone(),
        done: false,
        message: None,
    };
    if form.confirm != "yes" {
        return html(render(&page));
    }
    match crate::routes::roles::delete_role(&state, &caller, &meta, &page.id).await {
        Ok(()) => {
            page.done = true;
            html(render(&page))
        }
        Err(error) => {
            page.message = Some(match error.code {
                ProblemCode::RoleInUse => format!(
                    "“{}” was not deleted: it is still in use. Users who have this role, or \
                     tokens and OAuth clients that act with it and still work, would be left \
                     without one. Give those users another role on their pages and delete or \
                     replace those tokens and clients, then delete the role.",
                    role.name
                ),
                ProblemCode::PrivilegeEscalation => format!(
                    "“{}” was not deleted: it grants permissions you do not hold ({}).",
                    role.name,
                    error.missing_permissions.join(", ")
                ),
                _ => format!(
                    "“{}” was not deleted: {}.",
                    role.name,
                    error
                        .detail
                        .as_deref()
                        .unwrap_or("keygate could not delete it just now")
                ),
            });
            (error.code.status(), html(render(&page))).into_response()
        }
    }
}
