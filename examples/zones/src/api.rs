//! The HTTP API: routes, the tenant and id extractors, request checks.
//!
//! Every handler takes a [`Tenant`] and passes it to the store, so none can forget to scope a
//! query. The tenant comes from headers only keygate sets (see the crate's trust model); this
//! module must never accept an identity from anywhere else (a query parameter, the body).

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, FromRequestParts, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

use crate::problem::{FieldError, JsonBody, Problem};
use crate::store::{self, AddOutcome, NewSubnet};
use crate::subnet::canonical_subnet;

/// The tenant the request acts in: set by keygate when the caller used `as-tenant`.
const ACTING_TENANT_ID: HeaderName = HeaderName::from_static("x-keygate-acting-tenant-id");
/// The credential's own tenant.
const TENANT_ID: HeaderName = HeaderName::from_static("x-keygate-tenant-id");

const BODY_LIMIT: usize = 1024 * 1024;
const MAX_SUBNETS_PER_REQUEST: usize = 1000;
const MAX_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 200;

pub(crate) fn router(pool: SqlitePool) -> Router {
    Router::new()
        .route("/zones", get(list_zones).post(create_zone))
        .route("/zones/{zone_id}", get(get_zone))
        .route(
            "/zones/{zone_id}/subnets",
            get(list_subnets).post(add_subnets),
        )
        .route(
            "/zones/{zone_id}/subnets/{subnet_id}",
            delete(delete_subnet),
        )
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "the endpoint does not take this method; the Allow header lists those it takes",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(pool)
}

/// `{"data": [...]}`, the envelope of every list.
#[derive(Serialize)]
struct Data<T> {
    data: T,
}

/// The tenant a request belongs to. Holds the header itself: reading it allocates nothing.
struct Tenant(HeaderValue);

impl Tenant {
    fn id(&self) -> &str {
        // Checked to be text when extracted.
        self.0.to_str().unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        // The acting tenant first: a reseller acting for a sub-customer works in the
        // sub-customer's zones. keygate sends it always; the fallback serves older gateways.
        let (name, value) = match (
            parts.headers.get(ACTING_TENANT_ID),
            parts.headers.get(TENANT_ID),
        ) {
            (Some(acting), _) => (ACTING_TENANT_ID, acting),
            (None, Some(own)) => (TENANT_ID, own),
            (None, None) => {
                return Err(Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "no tenant: this API must be reached through keygate, which sets \
                     X-Keygate-Tenant-Id",
                ));
            }
        };
        if value.is_empty() || value.to_str().is_err() {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("{name} is not a tenant id"),
            ));
        }
        Ok(Self(value.clone()))
    }
}

/// The zone id of the path (and the subnet id, where there is one). An id that is not a number
/// names no zone: 404, as for any zone the tenant cannot see.
struct Ids {
    zone: i64,
    subnet: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for Ids {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))?;
        let mut ids = Self { zone: 0, subnet: 0 };
        for (key, value) in &params {
            let id = value
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| value.parse::<i64>().ok())
                .flatten();
            match (key, id) {
                ("zone_id", Some(id)) => ids.zone = id,
                ("subnet_id", Some(id)) => ids.subnet = id,
                ("zone_id", None) => return Err(no_zone(value)),
                _ => return Err(no_subnet(value)),
            }
        }
        Ok(ids)
    }
}

fn no_zone(id: impl std::fmt::Display) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, format!("no zone {id}"))
}

fn no_subnet(id: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no subnet {id} in this zone"),
    )
}

async fn list_zones(
    State(pool): State<SqlitePool>,
    tenant: Tenant,
) -> Result<Json<Data<Vec<store::Zone>>>, Problem> {
    let zones = store::list_zones(&pool, tenant.id()).await?;
    Ok(Json(Data { data: zones }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewZone {
    name: String,
}

async fn create_zone(
    State(pool): State<SqlitePool>,
    tenant: Tenant,
    JsonBody(zone): JsonBody<NewZone>,
) -> Result<Response, Problem> {
    let length = zone.name.chars().count();
    let complaint = if zone.name.trim().is_empty() {
        Some("a name is required".to_owned())
    } else if length > MAX_NAME_CHARS {
        Some(format!(
            "{length} characters; a name has at most {MAX_NAME_CHARS}"
        ))
    } else if zone.name.chars().any(char::is_control) {
        Some("a name has no control characters".to_owned())
    } else {
        None
    };
    if let Some(message) = complaint {
        return Err(Problem::fields(
            StatusCode::BAD_REQUEST,
            format!("name: {message}"),
            vec![FieldError {
                field: "name".to_owned(),
                message,
            }],
        ));
    }
    let zone = store::create_zone(&pool, tenant.id(), &zone.name).await?;
    let location = format!("/zones/{}", zone.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(zone),
    )
        .into_response())
}

async fn get_zone(
    State(pool): State<SqlitePool>,
    tenant: Tenant,
    ids: Ids,
) -> Result<Json<store::Zone>, Problem> {
    match store::zone(&pool, tenant.id(), ids.zone).await? {
        Some(zone) => Ok(Json(zone)),
        None => Err(no_zone(ids.zone)),
    }
}

async fn list_subnets(
    State(pool): State<SqlitePool>,
    tenant: Tenant,
    ids: Ids,
) -> Result<Json<Data<Vec<store::Subnet>>>, Problem> {
    match store::list_subnets(&pool, tenant.id(), ids.zone).await? {
        Some(subnets) => Ok(Json(Data { data: subnets })),
        None => Err(no_zone(ids.zone)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSubnets {
    data: Vec<SubnetIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubnetIn {
    subnet: String,
    description: Option<String>,
}

async fn add_subnets(
    State(pool): State<SqlitePool>,
    tenant: Tenant,
    ids: Ids,
    JsonBody(request): JsonBody<AddSubnets>,
) -> Result<Response, Problem> {
    let subnets = checked_subnets(request.data)?;
    match store::add_subnets(&pool, tenant.id(), ids.zone, &subnets).await? {
        AddOutcome::Added(added) => {
            Ok((StatusCode::CREATED, Json(Data { data: added })).into_response())
        }
        AddOutcome::NoZone => Err(no_zone(ids.zone)),
        AddOutcome::Clash { index, own_zone } => {
            let subnet = &subnets[index].subnet;
            // Another tenant's zone is not named: which customer protects what is theirs to know.
            let message = match own_zone {
                Some(zone) => format!("{subnet} is already in zone {zone}"),
                None => format!("{subnet} is already in use on the platform"),
            };
            Err(clash(index, message))
        }
    }
}

fn clash(index: usize, message: String) -> Problem {
    Problem::fields(
        StatusCode::CONFLICT,
        format!("{message}; nothing of this request was added"),
        vec![FieldError {
            field: format!("data[{index}].subnet"),
            message,
        }],
    )
}

/// The request's subnets in canonical form, or every field that is wrong; or a 409 if the request
/// names one subnet twice (the store could not tell that apart from a clash with a stored one).
fn checked_subnets(data: Vec<SubnetIn>) -> Result<Vec<NewSubnet>, Problem> {
    if data.is_empty() || data.len() > MAX_SUBNETS_PER_REQUEST {
        let message = format!(
            "{} subnets; a request adds from 1 to {MAX_SUBNETS_PER_REQUEST}",
            data.len()
        );
        return Err(Problem::fields(
            StatusCode::BAD_REQUEST,
            format!("data: {message}"),
            vec![FieldError {
                field: "data".to_owned(),
                message,
            }],
        ));
    }
    let mut errors = Vec::new();
    let mut subnets = Vec::with_capacity(data.len());
    for (index, entry) in data.into_iter().enumerate() {
        let description_chars = entry
            .description
            .as_deref()
            .map_or(0, |d| d.chars().count());
        match canonical_subnet(&entry.subnet) {
            Ok(network) => subnets.push(NewSubnet {
                subnet: network.to_string(),
                description: entry.description,
            }),
            Err(message) => errors.push(FieldError {
                field: format!("data[{index}].subnet"),
                message,
            }),
        }
        if description_chars > MAX_DESCRIPTION_CHARS {
            errors.push(FieldError {
                field: format!("data[{index}].description"),
                message: format!(
                    "{description_chars} characters; a description has at most \
                     {MAX_DESCRIPTION_CHARS}"
                ),
            });
        }
    }
    if let Some(first) = errors.first() {
        let detail = match errors.len() {
            1 => format!("{}: {}", first.field, first.message),
            n => format!(
                "{n} fields are invalid, the first {}: {}",
                first.field, first.message
            ),
        };
        return Err(Problem::fields(StatusCode::BAD_REQUEST, detail, errors));
    }
    let mut seen = HashMap::with_capacity(subnets.len());
    for (index, new) in subnets.iter().enumerate() {
        if let Some(first) = seen.insert(new.subnet.as_str(), index) {
            let message = format!(
                "{} is already in this request, as data[{first}].subnet",
                new.subnet
            );
            return Err(clash(index, message));
        }
    }
    Ok(subnets)
}

async fn delete_subnet(
    State(pool): State<SqlitePool>,
    tenant: Tenant,
    ids: Ids,
) -> Result<StatusCode, Problem> {
    if store::delete_subnet(&pool, tenant.id(), ids.zone, ids.subnet).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_subnet(ids.subnet))
    }
}
