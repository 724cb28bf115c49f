//! The OpenAPI document in the hands of software its users already run: Redocly's linter, with its
//! recommended rules, finds nothing in it; and a Python client generated from it by
//! openapi-python-client, without a warning, works against a real keygate as it is generated.
//!
//! `.ci/tools` installs both, pinned, into the target directory. Without them these tests say so
//! and pass, for a developer who has not installed them; under CI (`CI` set) they fail, so the
//! checks cannot quietly stop running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keygate_core::Timestamp;
use serde_json::Value;

use crate::harness::{Backend, TestServer, ok_json};

/// `<target>/tools/<relative>`, where `.ci/tools` installs; `None` when it is not there and this
/// is not CI.
pub(crate) fn tool(relative: &str) -> Option<PathBuf> {
    let binary = Path::new(env!("CARGO_BIN_EXE_keygate"));
    let target = binary.ancestors().nth(2).unwrap();
    let path = target.join("tools").join(relative);
    if path.exists() {
        return Some(path);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(!in_ci, "CI must run {}: run .ci/tools", path.display());
    eprintln!(
        "skipped: {} is not installed; .ci/tools installs it",
        path.display()
    );
    None
}

fn succeeded(what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    format!("{stdout}\n{stderr}")
}

/// The document as served by a server configured by `configure`, written to `dir`.
async fn served_document(
    dir: &Path,
    configure: impl FnOnce(&mut keygate_server::config::Config),
) -> (TestServer, PathBuf) {
    let server = TestServer::start_with(Backend::Sqlite, configure).await;
    let document: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    let path = dir.join("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    (server, path)
}

#[tokio::test]
async fn redoclys_recommended_rules_find_nothing_in_the_document() {
    let Some(redocly) = tool("redocly-cli/node_modules/.bin/redocly") else {
        return;
    };
    // As served, and with /v1 announced deprecated (its operations marked, more headers).
    let announced = |config: &mut keygate_server::config::Config| {
        let v1 = &mut config.api.v1;
        v1.deprecated_at = Some(Timestamp::parse("2027-01-01T00:00:00Z").unwrap());
        v1.sunset_at = Some(Timestamp::parse("2027-07-01T12:30:00Z").unwrap());
        v1.policy_url = Some("https://example.com/api/versions".into());
    };
    for (name, deprecated) in [("as served", false), ("with /v1 deprecated", true)] {
        let dir = tempfile::tempdir().unwrap();
        let (_server, document) = served_document(dir.path(), |config| {
            if deprecated {
                announced(config);
            }
        })
        .await;
        // No redocly.yaml in the directory: exactly the recommended rules.
        let output = Command::new(&redocly)
            .current_dir(dir.path())
            .env("REDOCLY_TELEMETRY", "off")
            .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
            .args(["lint", "--extends=recommended", "--format=json"])
            .arg(&document)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "redocly answered no report ({e}):\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let problems: Vec<String> = report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{} {}: {} at {}",
                    p["severity"], p["ruleId"], p["message"], p["location"][0]["pointer"]
                )
            })
            .collect();
        assert_eq!(
            (&report["totals"]["errors"], &report["totals"]["warnings"]),
            (&Value::from(0), &Value::from(0)),
            "Redocly {} ({name}):\n{}",
            report["version"],
            problems.join("\n")
        );
        assert!(output.status.success());
    }
}

/// What a user of openapi-python-client would configure: no formatter run after generating (ruff
/// is not needed to use the client), and the audit export's newline-delimited JSON taken as
/// bytes, which is what it is to a client that does not stream JSON lines.
const PYTHON_CLIENT_CONFIG: &str = "post_hooks: []
content_type_overrides:
  application/x-ndjson: application/octet-stream
";

#[tokio::test]
async fn a_generated_python_client_works_against_keygate() {
    let Some(venv) = tool("openapi-python-client") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, document) = served_document(dir.path(), |_| {}).await;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, PYTHON_CLIENT_CONFIG).unwrap();
    let generated = Command::new(venv.join("bin/openapi-python-client"))
        .current_dir(dir.path())
        .args([
            "generate",
            "--meta",
            "none",
            "--output-path",
            "keygate_client",
        ])
        .arg("--path")
        .arg(&document)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let said = succeeded("openapi-python-client generate", &generated);
    // Anything it warns about is something the document does not say well.
    assert!(
        !said.to_lowercase().contains("warning"),
        "openapi-python-client warned:\n{said}"
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/generated_client.py");
    let mut python = Command::new(venv.join("bin/python"));
    python
        .current_dir(dir.path())
        .env("PYTHONPATH", dir.path())
        .arg(&script)
        .arg(&server.base)
        .arg(&server.token);
    // On a thread of its own: the server answers on this test's runtime meanwhile.
    let ran = tokio::task::spawn_blocking(move || python.output())
        .await
        .unwrap()
        .unwrap();
    let said = succeeded("the generated client", &ran);
    assert!(said.starts_with("ok\n"), "{said}");
}
