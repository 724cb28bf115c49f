//! `keygate-bench cold-verify`: how fast keygate verifies a credential it has never seen (a cache
//! miss, read from the store) next to one it has (a cache hit), on SQLite and PostgreSQL, with a
//! million credentials stored.
//!
//! It fills a fresh database with N service tokens whose secrets it keeps, starts the release
//! `keygate serve` on it (pinned to CPU 0 when `taskset` exists; run this tool pinned to CPU 1),
//! then sends `GET /v1/whoami` with credentials never used before (cold), and again with a few
//! already used (warm, the baseline), and prints requests per second and p99 for both.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keygate_core::credential::{CredentialFormat, CredentialKind, Environment};
use keygate_core::id::CredentialId;
use keygate_core::{Clock, SystemClock};

struct Args {
    store: String,
    credentials: usize,
    requests: usize,
    concurrency: usize,
    keygate: String,
}

fn args() -> Args {
    let mut args = Args {
        store: "sqlite".into(),
        credentials: 1_000_000,
        requests: 20_000,
        concurrency: 32,
        keygate: "target/release/keygate".into(),
    };
    let mut it = std::env::args().skip(2);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--store" => args.store = value,
            "--credentials" => args.credentials = value.parse().unwrap_or(args.credentials),
            "--requests" => args.requests = value.parse().unwrap_or(args.requests),
            "--concurrency" => args.concurrency = value.parse().unwrap_or(args.concurrency),
            "--keygate" => args.keygate = value,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("floor") => return floor().await,
        Some("fill") => return fill_command().await,
        Some("fill-usage") => return fill_usage_command().await,
        Some("postgres") => return postgres_command().await,
        Some("forge") => {
            // A well-formed credential with a valid checksum that was never issued.
            let format = CredentialFormat::new("kg", Environment::Live).unwrap();
            println!("{}", format.generate(CredentialKind::Service).unwrap().expose());
            return;
        }
        _ => {}
    }
    let args = args();
    let dir = tempfile::tempdir().unwrap();
    let _cluster;
    let url = if args.store == "postgres" {
        let cluster = keygate_testkit::PgCluster::start();
        let url = cluster.create_database().await;
        _cluster = Some(cluster);
        url
    } else {
        _cluster = None;
        format!("sqlite://{}/keygate.db", dir.path().display())
    };

    let init = std::process::Command::new(&args.keygate)
        .args(["--database", &url, "init", "--json"])
        .env("KEYGATE_LOG__LEVEL", "warn")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let report: serde_json::Value = serde_json::from_slice(&init.stdout).unwrap();
    let tenant = report["tenant"]["id"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let secrets = fill(&url, &tenant, args.credentials).await;
    eprintln!(
        "stored {} credentials in {:.1?}",
        secrets.len(),
        started.elapsed()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = if which("taskset") {
        let mut c = tokio::process::Command::new("taskset");
        c.args(["-c", "0"]).arg(&args.keygate);
        c
    } else {
        tokio::process::Command::new(&args.keygate)
    };
    let mut server = command
        .args(["--database", &url, "--listen", &listen, "serve"])
        .env("KEYGATE_LOG__LEVEL", "warn")
        .env("KEYGATE_STORE__MAX_CONNECTIONS", "8")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .unwrap();
    while client.get(format!("{base}/readyz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Cold: every request presents a credential the server has not seen.
    let cold_set: Arc<Vec<String>> = Arc::new(secrets[..args.requests.min(secrets.len())].to_vec());
    let cold = run(&client, &base, cold_set, args.requests, args.concurrency).await;
    // Warm: the same 100 credentials over and over, all cached after the cold phase.
    let warm_set: Arc<Vec<String>> = Arc::new(secrets[..100].to_vec());
    let _ = run(&client, &base, warm_set.clone(), 1000, args.concurrency).await;
    let warm = run(&client, &base, warm_set, args.requests, args.concurrency).await;

    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "store", "credentials", "cold req/s", "cold p99", "warm req/s", "warm p99", "warm/cold"
    );
    println!(
        "{:<10} {:>12} {:>12.0} {:>12.2?} {:>12.0} {:>12.2?} {:>10.2}",
        args.store,
        secrets.len(),
        cold.rps,
        cold.p99,
        warm.rps,
        warm.p99,
        warm.rps / cold.rps
    );
    let _ = server.kill().await;
}

struct Figures {
    rps: f64,
    p99: Duration,
}

/// `requests` GETs of /v1/whoami over `concurrency` connections, credential i of `set` (mod len).
async fn run(
    client: &reqwest::Client,
    base: &str,
    set: Arc<Vec<String>>,
    requests: usize,
    concurrency: usize,
) -> Figures {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, set, next) = (
            client.clone(),
            format!("{base}/v1/whoami"),
            set.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return latencies;
                }
                let sent = Instant::now();
                let response = client
                    .get(&url)
                    .bearer_auth(&set[i % set.len()])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let _ = response.bytes().await;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Figures {
        rps: requests as f64 / elapsed.as_secs_f64(),
        p99: latencies[latencies.len() * 99 / 100],
    }
}

/// Inserts `n` viewer service tokens into the root tenant; returns their secrets.
async fn fill(url: &str, tenant: &str, n: usize) -> Vec<String> {
    let format = CredentialFormat::new("kg", Environment::Live).unwrap();
    let now = SystemClock.now();
    let mut secrets = Vec::with_capacity(n);
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        let secret = format.generate(CredentialKind::Service).unwrap();
        let id = CredentialId::generate_for(CredentialKind::Service, now).unwrap();
        rows.push((id.to_string(), secret.hash().as_bytes().to_vec(), secret.hint()));
        secrets.push(secret.into_exposed());
    }
    const SQL: &str = "INSERT INTO credentials (id, tenant_id, kind, secret_hash, hint, name, role_id, created_at) ";
    macro_rules! insert_all {
        ($pool:expr, $db:ty) => {
            for chunk in rows.chunks(1000) {
                let mut query = sqlx::QueryBuilder::<$db>::new(SQL);
                query.push_values(chunk, |mut b, (id, hash, hint)| {
                    b.push_bind(id)
                        .push_bind(tenant)
                        .push_bind("service")
                        .push_bind(hash)
                        .push_bind(hint)
                        .push_bind("bench")
                        .push_bind("rol_viewer")
                        .push_bind(now.unix());
                });
                query.build().execute(&$pool).await.unwrap();
            }
        };
    }
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        insert_all!(pool, sqlx::Postgres);
        sqlx::query("ANALYZE credentials").execute(&pool).await.unwrap();
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        insert_all!(pool, sqlx::Sqlite);
        sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    }
    secrets
}

fn which(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `keygate-bench floor ADDR`: the floor, a bare hyper server answering every request with an
/// empty 200, on the same runtime keygate uses.
async fn floor() {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let address = std::env::args().nth(2).unwrap_or_else(|| "127.0.0.1:9999".into());
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                    http_body_util::Empty::<hyper::body::Bytes>::new(),
                ))
            });
            let _ = http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

/// `keygate-bench fill URL TENANT N`: stores N service tokens; prints one of them.
/// `keygate-bench postgres`: starts a PostgreSQL of its own, prints a new database's URL, and
/// stops it when told to (SIGTERM or SIGINT), for a script that runs several keygate nodes on it.
async fn postgres_command() {
    let cluster = keygate_testkit::PgCluster::start();
    println!("{}", cluster.create_database().await);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(cluster);
}

async fn fill_command() {
    let mut it = std::env::args().skip(2);
    let url = it.next().unwrap();
    let tenant = it.next().unwrap();
    let n: usize = it.next().unwrap().parse().unwrap();
    let secrets = fill(&url, &tenant, n).await;
    println!("{}", secrets[n / 2]);
}

/// `keygate-bench fill-usage URL TENANT DAYS`: gives every credential of TENANT hour buckets over
/// the last DAYS days, one a day at an hour of its own, and the oldest credential every hour of
/// them, valid and forbidden; prints that credential's id.
async fn fill_usage_command() {
    let mut it = std::env::args().skip(2);
    let url = it.next().unwrap();
    let tenant = it.next().unwrap();
    let days: i64 = it.next().unwrap().parse().unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM credentials WHERE tenant_id = $1 ORDER BY id")
            .bind(&tenant)
            .fetch_all(&pool)
            .await
            .unwrap();
    let now = SystemClock.now().unix();
    let first_hour = (now - days * 86_400) / 3600 * 3600;
    let mut rows: Vec<(i64, &str, &str, i64)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for day in 0..days {
            let hour = (i as i64 * 7 + day) % 24;
            rows.push((first_hour + day * 86_400 + hour * 3600, id, "valid", 1 + i as i64 % 50));
        }
    }
    let busiest = &ids[0];
    for hour in 0..days * 24 {
        let start = first_hour + hour * 3600;
        if hour % 24 != 0 {
            rows.push((start, busiest, "valid", 100 + hour % 17));
        }
        rows.push((start, busiest, "forbidden", 1 + hour % 3));
    }
    let mut tx = pool.begin().await.unwrap();
    for chunk in rows.chunks(1000) {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR IGNORE INTO usage_hours (start, credential_id, outcome, tenant_id, count) ",
        );
        query.push_values(chunk, |mut b, (start, id, outcome, count)| {
            b.push_bind(*start)
                .push_bind(*id)
                .push_bind(*outcome)
                .push_bind(&tenant)
                .push_bind(*count);
        });
        query.build().execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    eprintln!("stored {} hour buckets for {} credentials", rows.len(), ids.len());
    println!("{busiest}");
}
