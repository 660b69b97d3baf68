//! `GET /openapi.json`: the document is OpenAPI 3.1, every route it lists is served, and
//! the settings that change the contract (the content limit, the token) show in it.
//! Schemathesis (`scripts/fuzz-api`, run by `scripts/test`) checks the answers against it.

use hotchan::config::Secret;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with};

/// The path with every `{param}` filled with a value of the right kind.
fn concrete(path: &str) -> String {
    path.replace("{cid}", "c0000000-0000-4000-8000-00000000000f")
        .replace("{uid}", "a0000000-0000-4000-8000-00000000000f")
        .replace("{id}", "987654321")
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_operation_in_it_is_served() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json").await.expect(200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let responses = operation["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path} documents no answer");
            if path == "/metrics" || path == "/admin" {
                continue; // Text and HTML, not JSON: their own tests read them.
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // No body: routes that take one answer 400, the others answer for the ids.
            let answer = app.request(method.clone(), &concrete(path), None).await;
            assert_ne!(
                answer.status.as_u16(),
                405,
                "{method} {path} is documented, not routed"
            );
            if answer.status.as_u16() == 404 {
                assert_ne!(
                    answer.body["message"], "no such route",
                    "{method} {path} is documented, not routed"
                );
            }
            assert!(
                responses.contains_key(answer.status.as_str()),
                "{method} {path} answered {}, which its document does not list",
                answer.status
            );
        }
    }
    // Every route of docs/api.md: 24 paths, 30 operations, /openapi.json and /admin
    // included.
    assert_eq!((paths.len(), operations), (24, 30));
    // Error answers point at the one error body.
    let create = &doc["paths"]["/v1/channels"]["post"]["responses"]["400"];
    assert_eq!(
        create["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
}

#[tokio::test]
async fn the_document_follows_the_content_limit_and_the_token() {
    let app = spawn_app_with(|s| {
        s.max_content_bytes = 1000;
        s.token = Some(Secret("doc-token".into()));
    })
    .await;
    // The document itself stays open, like /healthz.
    let doc = app.get("/openapi.json").await.expect(200);
    let content = &doc["components"]["schemas"]["PostMessage"]["properties"]["content"];
    assert_eq!(content["maxLength"], 1000);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let show = &doc["paths"]["/v1/channels/{cid}"]["get"];
    assert!(show["responses"]["401"].is_object(), "{show}");
    assert_eq!(show["security"][0]["bearer"], Value::Array(vec![]));
    // Open routes carry no token requirement.
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
}
