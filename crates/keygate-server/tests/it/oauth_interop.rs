//! keygate's access tokens and metadata as the software users already run reads them, for each
//! signing algorithm: Authlib's RFC 9068 resource-server validator and its RFC 8414 metadata
//! validator, PyJWT with `PyJWKClient`, and the npm package jose (`jwtVerify` with
//! `createRemoteJWKSet`). The scripts in `tests/interop/` fetch the keys from the running server,
//! check a token issued through the token endpoint, and show that a forgery is refused.
//!
//! The libraries are pinned and installed by `.ci/interop-tools` into `<target>/interop` (or the
//! folder `INTEROP_TOOLS_DIR` names). Without them the test says so and passes, for a developer
//! who has not installed them; under CI (`CI` set) it fails, so the check cannot quietly stop.

use std::path::{Path, PathBuf};
use std::process::Command;

use keygate_core::Clock;
use keygate_core::jwt::SigningAlgorithm;

use crate::harness::{Backend, TestServer, ok_json};
use crate::oauth::{create_client, grant, verify_independently};

const ISSUER: &str = "https://auth.example.com";
const API: &str = "https://api.example.com";

/// Where the pinned Python venv and jose are.
struct Tools {
    python: PathBuf,
    node_modules: PathBuf,
}

impl Tools {
    /// `None` when they are not installed and this is not CI.
    fn find() -> Option<Self> {
        let dir = std::env::var_os("INTEROP_TOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // <target>/debug/deps/it-…: the default place is <target>/interop.
                let exe = std::env::current_exe().unwrap();
                exe.ancestors().nth(3).unwrap().join("interop")
            });
        let tools = Tools {
            python: dir.join("venv/bin/python"),
            node_modules: dir.join("node"),
        };
        let node = Command::new("node").arg("--version").output();
        let installed = tools.python.exists()
            && tools
                .node_modules
                .join("node_modules/jose/package.json")
                .exists()
            && node.is_ok_and(|o| o.status.success());
        if !installed {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(
                !in_ci,
                "CI must check tokens with Authlib, PyJWT and jose: run .ci/interop-tools \
                 (and install node) first; looked in {}",
                dir.display()
            );
            eprintln!(
                "skipped: the interoperability check needs .ci/interop-tools run first (looked in {})",
                dir.display()
            );
            return None;
        }
        Some(tools)
    }

    /// Runs a script of `tests/interop` off the runtime's thread (the server answers it on this
    /// one), and asserts that it succeeded; returns what it printed.
    async fn run(&self, program: &Path, script: &str, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop")
            .join(script);
        let mut command = Command::new(program);
        command
            .arg(&script)
            .args(args)
            .env("KEYGATE_JOSE_DIR", &self.node_modules)
            .env_remove("PYTHONPATH");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{} {args:?} failed:\n{stdout}\n{stderr}",
            script.display()
        );
        stdout
    }
}

/// A server signing with `algorithm`, whose clock is the real one: the libraries judge `iat` and
/// `exp` by the system's time.
async fn server(algorithm: SigningAlgorithm) -> TestServer {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.oauth.signing_algorithm = algorithm;
        c.oauth.issuer = Some(ISSUER.into());
        c.oauth.audience = vec![ISSUER.into(), API.into()];
    })
    .await;
    let now = keygate_core::SystemClock.now();
    server.clock.set(now);
    server
}

#[tokio::test]
async fn access_tokens_and_metadata_pass_authlib_pyjwt_and_jose() {
    let Some(tools) = Tools::find() else {
        return;
    };
    let node = PathBuf::from("node");
    for algorithm in SigningAlgorithm::ALL {
        let server = server(algorithm).await;
        let (id, secret) = create_client(&server, "viewer", None).await;
        let issued = ok_json(
            grant(
                &server,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &id),
                    ("client_secret", &secret),
                    ("resource", API),
                ],
            )
            .await,
        )
        .await;
        let token = issued["access_token"].as_str().unwrap();
        let (header, claims) = verify_independently(&server, token).await;
        assert_eq!(header["alg"], algorithm.as_str());
        assert_eq!(claims["aud"], API);
        let jwks = format!("{}/.well-known/jwks.json", server.base);

        // Authlib's JOSE library refuses the name EdDSA (RFC 9864 deprecates it): the README
        // says to choose ES256 or RS256 for resource servers built on Authlib.
        let expect = match algorithm {
            SigningAlgorithm::EdDsa => "refuse-algorithm",
            _ => "accept",
        };
        let args = [jwks.as_str(), ISSUER, API, token];
        let said = [
            tools
                .run(
                    &tools.python,
                    "authlib_rfc9068.py",
                    &[&args[..], &[expect]].concat(),
                )
                .await,
            tools.run(&tools.python, "pyjwt_jwks.py", &args).await,
            tools.run(&node, "jose_remote_jwks.mjs", &args).await,
        ];
        eprintln!("{algorithm}:\n{}", said.concat());
        assert!(said[1].contains(algorithm.as_str()), "{}", said[1]);
        assert!(said[2].contains(algorithm.as_str()), "{}", said[2]);

        let metadata = format!("{}/.well-known/oauth-authorization-server", server.base);
        tools
            .run(&tools.python, "authlib_metadata.py", &[&metadata])
            .await;
    }
}
