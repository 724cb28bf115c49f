//! A real nginx (Debian's package) in front of a static site, asking keygate through
//! `auth_request` whether each request may pass.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::harness::{TestServer, client};

struct Nginx {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!("this test needs nginx (Debian: `apt-get install nginx`); .ci/run installs it")
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts nginx serving a static file, guarded by keygate at `keygate` (host:port).
fn start_nginx(keygate: &str) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("www/admin")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::write(root.join("www/index.html"), "hello from upstream\n").unwrap();
    std::fs::write(root.join("www/admin/index.html"), "admin area\n").unwrap();
    let port = free_port();
    let auth = |name: &str, require: Option<&str>| {
        format!(
            "location = /{name} {{
                internal;
                proxy_pass http://{keygate}/v1/forward-auth;
                proxy_pass_request_body off;
                proxy_set_header Content-Length \"\";
                proxy_set_header X-Original-URI $request_uri;
                proxy_set_header X-Original-Method $request_method;
                proxy_set_header X-Forwarded-For $remote_addr;
                {}
            }}",
            require
                .map(|r| format!("proxy_set_header X-Keygate-Require \"{r}\";"))
                .unwrap_or_default()
        )
    };
    let config = format!(
        "user root;
        worker_processes 1;
        daemon off;
        error_log {dir}/error.log;
        pid {dir}/nginx.pid;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {dir}/tmp;
            proxy_temp_path {dir}/tmp;
            fastcgi_temp_path {dir}/tmp;
            uwsgi_temp_path {dir}/tmp;
            scgi_temp_path {dir}/tmp;
            server {{
                listen 127.0.0.1:{port};
                root {dir}/www;
                location / {{ auth_request /_keygate; }}
                location /admin/ {{ auth_request /_keygate_admin; }}
                {plain}
                {admin}
            }}
        }}",
        dir = root.display(),
        plain = auth("_keygate", None),
        admin = auth("_keygate_admin", Some("zones:write")),
    );
    std::fs::write(root.join("nginx.conf"), config).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(root)
        .arg("-c")
        .arg(root.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(root.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

#[tokio::test]
async fn nginx_auth_request_lets_through_only_what_keygate_allows() {
    let server =
        TestServer::start_with(|c| c.permissions = vec!["zones:read".into(), "zones:write".into()])
            .await;
    let nginx = start_nginx(server.base.trim_start_matches("http://"));
    let viewer = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "reader", "role": "viewer"})),
        )
        .await;
    let viewer = viewer["secret"].as_str().unwrap().to_owned();
    let http = client();
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(format!("{}{path}", nginx.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let allowed = get("/", Some(&viewer)).await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.text().await.unwrap(), "hello from upstream\n");
    let by_apikey = http
        .get(format!("{}/", nginx.base))
        .header("apikey", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(by_apikey.status(), 200);

    assert_eq!(
        get("/", None).await.unwrap().status(),
        401,
        "unauthenticated"
    );
    assert_eq!(
        get("/", Some("kg_live_nonsense")).await.unwrap().status(),
        401
    );

    assert_eq!(
        get("/admin/", Some(&viewer)).await.unwrap().status(),
        403,
        "X-Keygate-Require"
    );
    let admin = get("/admin/", Some(&server.token)).await.unwrap();
    assert_eq!(admin.status(), 200);
    assert_eq!(admin.text().await.unwrap(), "admin area\n");

    // Revoked: refused on the very next request through nginx.
    let id = ok_id(&server, &viewer).await;
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(get("/", Some(&viewer)).await.unwrap().status(), 401);
}

async fn ok_id(server: &TestServer, token: &str) -> String {
    let me = crate::harness::ok_json(server.whoami(&[("apikey", token)]).await).await;
    me["credential"]["id"].as_str().unwrap().to_owned()
}
