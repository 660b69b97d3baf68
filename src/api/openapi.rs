//! The OpenAPI 3.1 document, served at `GET /openapi.json`. The routes and their
//! parameters, bodies and answers come from the handlers' `#[utoipa::path]` attributes and
//! the wire types' `ToSchema` derives (the routers in this module's siblings are built
//! from the same handlers, so a route cannot be served without being documented). This
//! module adds what every route shares (the error answers, the bearer token) and the
//! settings that change the contract (the content limit).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr, Required};

use super::error::ErrorBody;

/// The document's fixed parts: title, description, tags, the error schema.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hotchan",
        description = "A Redis-fronted hot-channel cache for chat backends: messages, members, \
                       read markers, reconnection sync and activity feeds, with Postgres as the \
                       source of truth. The contract in words is docs/api.md.",
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "channels", description = "Channels and members"),
        (name = "messages", description = "Messages and pages of history"),
        (name = "reads", description = "Read markers, unread counts, reconnection sync"),
        (name = "feeds", description = "Activity feeds"),
        (name = "operations", description = "Health, readiness, metrics, cache administration"),
    )
)]
struct Fixed;

/// The settings that change the document.
pub struct Settings {
    /// `--max-content-bytes`: the longest message content, in UTF-8 bytes.
    pub max_content_bytes: usize,
    /// Whether `/v1` routes need the bearer token.
    pub token: bool,
}

/// The served document, encoded once.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    pub fn new(document: &OpenApi) -> Document {
        Document(Bytes::from(
            document
                .to_json()
                .expect("the OpenAPI document always serializes"),
        ))
    }
}

/// Completes the document that the routers collected.
pub fn complete(routes: OpenApi, settings: &Settings) -> OpenApi {
    let mut doc = <Fixed as utoipa::OpenApi>::openapi().merge_from(routes);
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if settings.token {
        let components = doc.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            "bearer".to_owned(),
            RefOr::T(SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build(),
            )),
        );
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        // An optional body (`Option<T>` in the handler) may be left out; it is never `null`.
        for operation in [&mut item.put, &mut item.post].into_iter().flatten() {
            optional_body_is_absent_not_null(operation);
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            if path.starts_with("/v1/") {
                add_shared_answers(operation, settings.token);
            }
        }
    }
    for body in ["PostMessage", "EditMessage"] {
        if let Some(content) = property(&mut doc, body, "content") {
            content.max_length = Some(settings.max_content_bytes);
            content.description = Some(format!(
                "At most {} bytes of UTF-8 (`--max-content-bytes`); maxLength counts \
                 characters, so a text with multi-byte characters meets the byte limit first",
                settings.max_content_bytes
            ));
        }
    }
    if let Some(channels) = property(&mut doc, "SyncBody", "channels") {
        channels.max_properties = Some(crate::domain::MAX_SYNC_CHANNELS);
    }
    doc
}

/// A property of a component schema, to set what the derive cannot say.
fn property<'a>(
    doc: &'a mut OpenApi,
    schema: &str,
    name: &str,
) -> Option<&'a mut utoipa::openapi::schema::Object> {
    let components = doc.components.as_mut()?;
    let RefOr::T(Schema::Object(object)) = components.schemas.get_mut(schema)? else {
        return None;
    };
    match object.properties.get_mut(name)? {
        RefOr::T(Schema::Object(property)) => Some(property),
        _ => None,
    }
}

/// Turns an optional body's `oneOf: [T, null]` into `T`, not required.
fn optional_body_is_absent_not_null(operation: &mut Operation) {
    let Some(RefOr::T(body)) = operation.request_body.as_mut() else {
        return;
    };
    for content in body.content.values_mut() {
        let RefOr::T(content) = content else {
            continue;
        };
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let mut not_null = one_of.items.iter().filter(|s| {
            !matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
        });
        if let (Some(only), None) = (not_null.next(), not_null.next()) {
            let only = only.clone();
            content.schema = Some(only);
            body.required = Some(Required::False);
        }
    }
}

/// The answers every `/v1` route can give besides its own.
fn add_shared_answers(operation: &mut Operation, token: bool) {
    let mut shared = vec![
        (
            "500",
            "An internal error (logged; the message says no more)",
        ),
        ("503", "Postgres does not answer"),
    ];
    if operation.request_body.is_some() {
        shared.push((
            "400",
            "The body is not a JSON object, has an unknown field, or breaks a rule",
        ));
        shared.push((
            "413",
            "The body is larger than the limit (`--max-body-bytes`)",
        ));
    }
    if token {
        shared.push(("401", "The bearer token is missing or wrong"));
        operation.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
    for (status, description) in shared {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error_response(description)));
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this server", body = Object)))]
pub(super) async fn serve(State(state): State<super::AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.0.document.0.clone(),
    )
}
