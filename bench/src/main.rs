//! `keygate-bench cold-verify`: how fast keygate verifies a credential it has never seen (a cache
//! miss, read from the store) next to one it has (a cache hit), on SQLite and PostgreSQL, with a
//! million credentials stored.
//!
//! It fills a fresh database with N service tokens whose secrets it keeps, starts the release
//! `keygate serve` on it (pinned to CPU 0 when `taskset` exists; run this tool pinned to CPU 1),
//! then sends `GET /v1/whoami` with credentials never used before (cold), and again with a few
//! already used (warm, the baseline), and prints requests per second, p50 and p99 for both, and
//! what the server's resident size grew by per credential it verified (and so cached) cold. Then,
//! with the cache full, the warm load once more while tokens of the cold set are revoked through
//! the API every 100 ms: its figures next to the warm ones, and how long each revocation took;
//! and again while 500 of them are revoked in one request, and how long that request took.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use keygate_core::credential::{CredentialFormat, CredentialKind, Environment};
use keygate_core::id::CredentialId;
use keygate_core::{Clock, SystemClock};

struct Args {
    store: String,
    credentials: usize,
    requests: usize,
    concurrency: usize,
    keygate: String,
    /// What each request asks: `whoami` (`GET /v1/whoami`, the management API's path) or
    /// `forward-auth` (`GET /v1/forward-auth`, which also keeps each credential's identity
    /// headers rendered).
    path: String,
    /// The server's store pool (`store.max_connections`); its default unless given.
    store_connections: Option<String>,
}

const USAGE: &str = "usage: keygate-bench cold-verify [--store sqlite|postgres] [--credentials N] \
[--requests N] [--concurrency N] [--path whoami|forward-auth] [--keygate BINARY] \
[--store-connections N]";

fn args() -> Args {
    let mut args = Args {
        store: "sqlite".into(),
        credentials: 1_000_000,
        requests: 20_000,
        concurrency: 32,
        keygate: "target/release/keygate".into(),
        path: "whoami".into(),
        store_connections: None,
    };
    let mut it = std::env::args().skip(2);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--store" => args.store = value,
            "--credentials" => args.credentials = value.parse().unwrap_or(args.credentials),
            "--requests" => args.requests = value.parse().unwrap_or(args.requests),
            "--concurrency" => args.concurrency = value.parse().unwrap_or(args.concurrency),
            "--keygate" => args.keygate = value,
            "--path" if ["whoami", "forward-auth"].contains(&value.as_str()) => args.path = value,
            "--store-connections" => args.store_connections = Some(value),
            other => {
                eprintln!("unknown flag {other}\n{USAGE}");
                std::process::exit(2);
            }
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
        Some("leak-keys") => return leak_keys_command(),
        Some("leak-latency") => return leak_latency_command().await,
        Some("deliveries") => return deliveries_command().await,
        Some("forge") => {
            // A well-formed credential with a valid checksum that was never issued.
            let format = CredentialFormat::new("kg", Environment::Live).unwrap();
            println!(
                "{}",
                format.generate(CredentialKind::Service).unwrap().expose()
            );
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
        unpin_store(&url);
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
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&init.stdout).unwrap();
    let tenant = report["tenant"]["id"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let owner = report["token"].as_str().unwrap().to_owned();
    let (secrets, ids) = fill(&url, &tenant, args.credentials).await;
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
    if let Some(connections) = &args.store_connections {
        command.env("KEYGATE_STORE__MAX_CONNECTIONS", connections);
    }
    let mut server = command
        .args(["--database", &url, "--listen", &listen, "serve"])
        .env("KEYGATE_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let address: SocketAddr = listen.parse().unwrap();
    let client = bench_client();
    while client
        .get(format!("http://{listen}/readyz"))
        .send()
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Cold: every request presents a credential the server has not seen, so each is cached
    // afterwards: the growth of the server's resident size over the phase, per credential, is
    // what a cached credential costs. The phase runs in two halves: growth over the whole phase
    // includes what the first misses warm once (SQLite's page caches, the store threads' heaps);
    // growth over the second half alone is what one more cached credential costs. Each reading
    // waits for the usage batch (every 5 s, transient memory in proportion to the credentials
    // used since the last) to have been written, so neither half is read at a batch's peak.
    let server_pid = server.id().unwrap_or_default();
    let resident_before = resident_bytes(server_pid);
    let cold_set = &secrets[..args.requests.min(secrets.len())];
    let cached = cold_set.len();
    let (first, second) = cold_set.split_at(cached / 2);
    let (first_headers, second_headers) = (bearer(first), bearer(second));
    let first_half = run(
        address,
        &args.path,
        first_headers,
        args.requests / 2,
        args.concurrency,
    )
    .await;
    let resident_midway = settled_resident_bytes(server_pid).await;
    let second_half = run(
        address,
        &args.path,
        second_headers,
        args.requests - args.requests / 2,
        args.concurrency,
    )
    .await;
    let resident_after = settled_resident_bytes(server_pid).await;
    let cold = Figures::of(&[first_half, second_half]);
    let per_credential = resident_after.saturating_sub(resident_before) / cached.max(1) as u64;
    let marginal = resident_after.saturating_sub(resident_midway) / second.len().max(1) as u64;
    // Warm: the same 100 credentials over and over, all cached after the cold phase.
    let warm_set = bearer(&secrets[..100]);
    let _ = run(
        address,
        &args.path,
        warm_set.clone(),
        1000,
        args.concurrency,
    )
    .await;
    let warm = Figures::of(&[run(
        address,
        &args.path,
        warm_set,
        args.requests,
        args.concurrency,
    )
    .await]);

    // Revoking: the warm load again, while tokens of the cold set (cached, not in the warm set)
    // are revoked one at a time through the API, every 100 ms. Each revocation drops its entry
    // from the cache under the cache's write lock, which every request of the node waits for:
    // what that costs with the cache full shows in the warm figures next to those above.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let revoker = {
        let (stop, owner, base) = (stop.clone(), owner.clone(), format!("http://{listen}"));
        let ids = ids[100..cached.max(100)].to_vec();
        tokio::spawn(async move {
            let client = bench_client();
            let mut latencies = Vec::new();
            for id in ids {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                let response = client
                    .delete(format!("{base}/v1/tokens/{id}"))
                    .bearer_auth(&owner)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 204, "revoking {id}");
                latencies.push(sent.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            latencies
        })
    };
    let revoking = Figures::of(&[run(
        address,
        &args.path,
        bearer(&secrets[..100]),
        args.requests,
        args.concurrency,
    )
    .await]);
    stop.store(true, Ordering::Relaxed);
    let mut revocations = revoker.await.unwrap();
    revocations.sort();

    // Bulk: 500 cached tokens of the cold set revoked in one request (the most `DELETE
    // /v1/tokens` takes), each a change the cache applies, while the warm load runs again.
    let bulk_from = 100 + revocations.len();
    let bulk_ids = &ids[bulk_from.min(cached)..(bulk_from + 500).min(cached)];
    let bulk = {
        let base = format!("http://{listen}");
        let query: Vec<String> = bulk_ids.iter().map(|id| format!("id={id}")).collect();
        let (owner, expected) = (owner.clone(), bulk_ids.len());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let sent = Instant::now();
            let response = bench_client()
                .delete(format!("{base}/v1/tokens?{}", query.join("&")))
                .bearer_auth(&owner)
                .send()
                .await
                .unwrap();
            let took = sent.elapsed();
            assert_eq!(response.status(), 200, "bulk revocation");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["deleted"].as_array().map(Vec::len), Some(expected));
            took
        })
    };
    let during_bulk = Figures::of(&[run(
        address,
        &args.path,
        bearer(&secrets[..100]),
        args.requests / 4,
        args.concurrency,
    )
    .await]);
    let bulk = bulk.await.unwrap();

    println!(
        "{:<10} {:<12} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>16} {:>16}",
        "store",
        "path",
        "credentials",
        "cold req/s",
        "cold p50",
        "cold p99",
        "warm req/s",
        "warm p50",
        "warm p99",
        "warm/cold",
        "bytes per cached",
        "2nd half, each"
    );
    println!(
        "{:<10} {:<12} {:>11} {:>10.0} {:>10.2?} {:>10.2?} {:>10.0} {:>10.2?} {:>10.2?} {:>9.2} {:>16} {:>16}",
        args.store,
        args.path,
        secrets.len(),
        cold.rps,
        cold.p50,
        cold.p99,
        warm.rps,
        warm.p50,
        warm.p99,
        warm.rps / cold.rps,
        format!("{per_credential} ({cached})"),
        format!("{marginal} ({})", second.len())
    );
    if let (Some(first), Some(last)) = (revocations.first(), revocations.last()) {
        println!(
            "warm while revoking every 100 ms: {:.0} req/s, p50 {:.2?}, p99 {:.2?} (without: {:.0}, \
             {:.2?}, {:.2?}); {} revocations, each {:.2?} to {:.2?}, p50 {:.2?}",
            revoking.rps,
            revoking.p50,
            revoking.p99,
            warm.rps,
            warm.p50,
            warm.p99,
            revocations.len(),
            first,
            last,
            revocations[revocations.len() / 2]
        );
    }
    println!(
        "warm while {} cached tokens are revoked in one request: {:.0} req/s, p50 {:.2?}, p99 \
         {:.2?}; the request took {bulk:.2?}",
        bulk_ids.len(),
        during_bulk.rps,
        during_bulk.p50,
        during_bulk.p99
    );
    let _ = server.kill().await;
}

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    /// The throughput and latencies of `runs` taken together, as if one.
    fn of(runs: &[Run]) -> Self {
        let elapsed: Duration = runs.iter().map(|run| run.elapsed).sum();
        let mut latencies: Vec<Duration> = runs
            .iter()
            .flat_map(|run| run.latencies.iter().copied())
            .collect();
        latencies.sort();
        Self {
            rps: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: latencies[latencies.len() / 2],
            p99: latencies[latencies.len() * 99 / 100],
        }
    }
}

/// One batch of requests: how long it took, and each request's latency.
struct Run {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// A server's resident set size once the usage batch that was due has been written.
async fn settled_resident_bytes(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_secs(6)).await;
    resident_bytes(pid)
}

/// A process's resident set size (`VmRSS`), 0 if unreadable.
fn resident_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// `requests` GETs of /v1/`path` over `concurrency` connections, credential i of `set` (mod
/// len).
///
/// The load shares its core with PostgreSQL (the server has the other), so it is kept lean: a
/// bare HTTP/1.1 connection per worker and each credential's header value made before the clock
/// starts. Through a general-purpose client (its pool, a URL parsed and a header map built per
/// request) the load took more CPU than keygate did, and the warm figures were the client's.
async fn run(
    address: SocketAddr,
    path: &str,
    set: Arc<Vec<HeaderValue>>,
    requests: usize,
    concurrency: usize,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        senders.push(sender);
    }
    let uri: hyper::Uri = format!("/v1/{path}").parse().unwrap();
    let host = HeaderValue::from_str(&address.to_string()).unwrap();
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut sender in senders {
        let (uri, host, set, next) = (uri.clone(), host.clone(), set.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return latencies;
                }
                let sent = Instant::now();
                let mut request = hyper::Request::new(Empty::<Bytes>::new());
                *request.uri_mut() = uri.clone();
                let headers = request.headers_mut();
                headers.insert(HOST, host.clone());
                headers.insert(AUTHORIZATION, set[i % set.len()].clone());
                sender.ready().await.unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let _ = response.into_body().collect().await.unwrap();
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    Run {
        elapsed: started.elapsed(),
        latencies,
    }
}

/// `Bearer <secret>` for each secret, as a request header's value.
fn bearer(secrets: &[String]) -> Arc<Vec<HeaderValue>> {
    Arc::new(
        secrets
            .iter()
            .map(|secret| HeaderValue::from_str(&format!("Bearer {secret}")).unwrap())
            .collect(),
    )
}

/// Inserts `n` viewer service tokens into the root tenant; returns their secrets and their ids.
async fn fill(url: &str, tenant: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let format = CredentialFormat::new("kg", Environment::Live).unwrap();
    let now = SystemClock.now();
    let mut secrets = Vec::with_capacity(n);
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        let secret = format.generate(CredentialKind::Service).unwrap();
        let id = CredentialId::generate_for(CredentialKind::Service, now).unwrap();
        rows.push((
            id.to_string(),
            secret.hash().as_bytes().to_vec(),
            secret.hint(),
        ));
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
        sqlx::query("ANALYZE credentials")
            .execute(&pool)
            .await
            .unwrap();
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        insert_all!(pool, sqlx::Sqlite);
        sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    }
    let ids = rows.into_iter().map(|(id, _, _)| id).collect();
    (secrets, ids)
}

/// Lets the PostgreSQL serving `url` run on every CPU. It inherits this process's affinity, which
/// the script pins to the load's CPU: left there, the store would share a core with the load and
/// leave the server's idle. The server under test stays on its own CPU; the store, which in a
/// deployment runs on a machine of its own, takes whatever either core has free.
fn unpin_store(url: &str) {
    let Some(port) = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
    else {
        return;
    };
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if !which("taskset") || online.trim().is_empty() {
        return;
    }
    let wanted = format!("\0-p\0{port}\0");
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("postgres") && cmdline.contains(&wanted) {
            // -a: every thread; backends forked from the postmaster later inherit it.
            let _ = std::process::Command::new("taskset")
                .args(["-a", "-cp", online.trim()])
                .arg(entry.file_name())
                .stdout(Stdio::null())
                .status();
        }
    }
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
    let address = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "127.0.0.1:9999".into());
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                    hyper::body::Bytes,
                >::new()))
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
    let (secrets, _) = fill(&url, &tenant, n).await;
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
            rows.push((
                first_hour + day * 86_400 + hour * 3600,
                id,
                "valid",
                1 + i as i64 % 50,
            ));
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
    eprintln!(
        "stored {} hour buckets for {} credentials",
        rows.len(),
        ids.len()
    );
    println!("{busiest}");
}

/// `keygate-bench leak-keys DIR`: makes a P-256 key pair standing in for GitHub's and writes
/// `DIR/github-keys.json`, GitHub's key document with its public key as `k1` (for
/// `leaks.github_public_keys_path`), and `DIR/github-key.p8`, the private key (PKCS#8) that
/// `leak-latency` signs reports with.
fn leak_keys_command() {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    let dir = std::path::PathBuf::from(std::env::args().nth(2).unwrap());
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let pem = keygate_core::leaks::p256_public_pem(pair.public_key().as_ref());
    let document = serde_json::json!({
        "public_keys": [{"key_identifier": "k1", "key": pem, "is_current": true}]
    });
    std::fs::write(dir.join("github-keys.json"), document.to_string()).unwrap();
    std::fs::write(dir.join("github-key.p8"), pkcs8.as_ref()).unwrap();
}

/// A client for the benchmarks' own requests: no proxy from the environment, connections kept.
fn bench_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Creates a viewer service token through the API; its secret.
async fn create_token(client: &reqwest::Client, base: &str, owner: &str, name: &str) -> String {
    let response = client
        .post(format!("{base}/v1/tokens"))
        .bearer_auth(owner)
        .json(&serde_json::json!({"kind": "service", "name": name, "role": "viewer"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    assert_eq!(status, 201, "creating a token: {body}");
    body["secret"].as_str().unwrap().to_owned()
}

/// The status of `GET /v1/forward-auth` with `secret`.
async fn forward_auth(client: &reqwest::Client, base: &str, secret: &str) -> u16 {
    let response = client
        .get(format!("{base}/v1/forward-auth"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    status
}

/// The nearest-rank percentile `q` (0 < q <= 1) of sorted `values`, in milliseconds.
fn percentile_ms(values: &[Duration], q: f64) -> f64 {
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1].as_secs_f64() * 1000.0
}

/// `keygate-bench leak-latency BASE_A BASE_B OWNER KEY_FILE SAMPLES`: how long a credential
/// reported leaked on node A keeps working on node B. Each sample creates a token on A, uses it on
/// B (so B has it cached), reports it to A as GitHub would (signed with the key of `leak-keys`),
/// and from A's 200 asks B's forward-auth in a tight loop until it answers 401. Prints, in ms,
/// "refusal_p50 refusal_p99 refusal_max report_p50 report_p99 report_max", then how many samples
/// B refused at the first ask (those measure one round trip to B, the loop's resolution).
async fn leak_latency_command() {
    use base64::Engine;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let mut it = std::env::args().skip(2);
    let (a, b, owner, key_file) = (
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
    );
    let samples: usize = it.next().unwrap().parse().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = std::fs::read(key_file).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng).unwrap();
    let client = bench_client();
    let mut refusals = Vec::with_capacity(samples);
    let mut reports = Vec::with_capacity(samples);
    let mut at_first_ask = 0;
    for n in 0..samples {
        let secret = create_token(&client, &a, &owner, &format!("leak-{n}")).await;
        for _ in 0..2 {
            assert_eq!(
                forward_auth(&client, &b, &secret).await,
                200,
                "node B refused a new token"
            );
        }
        let body = serde_json::json!([{
            "token": secret,
            "type": "keygate_token",
            "url": "https://github.com/o/r/blob/x/.env",
            "source": "content",
        }])
        .to_string();
        let signature = pair.sign(&rng, body.as_bytes()).unwrap();
        let signature = base64::engine::general_purpose::STANDARD.encode(signature.as_ref());

        let sent = Instant::now();
        let response = client
            .post(format!("{a}/v1/leaks/github"))
            .header("content-type", "application/json")
            .header("Github-Public-Key-Identifier", "k1")
            .header("Github-Public-Key-Signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let labels: serde_json::Value = response.json().await.unwrap_or_default();
        let accepted = Instant::now();
        assert_eq!(status, 200, "the report was refused: {labels}");
        assert_eq!(labels[0]["label"], "true_positive", "{labels}");
        reports.push(accepted - sent);

        for ask in 0.. {
            match forward_auth(&client, &b, &secret).await {
                401 => {
                    at_first_ask += usize::from(ask == 0);
                    break;
                }
                200 => {}
                other => panic!("node B answered {other} for a reported token"),
            }
            assert!(
                accepted.elapsed() < Duration::from_secs(30),
                "node B still accepts a token reported 30 s ago"
            );
        }
        refusals.push(accepted.elapsed());
    }
    refusals.sort();
    reports.sort();
    println!(
        "{:.2} {:.2} {:.2} {:.2} {:.2} {:.2} {at_first_ask}",
        percentile_ms(&refusals, 0.5),
        percentile_ms(&refusals, 0.99),
        percentile_ms(&refusals, 1.0),
        percentile_ms(&reports, 0.5),
        percentile_ms(&reports, 0.99),
        percentile_ms(&reports, 1.0),
    );
}

/// What the webhook receiver of `deliveries` has seen.
struct Tally {
    /// `webhook-id`s of the `token.created` deliveries received; a repeat counts once.
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Every POST, repeats included.
    posts: AtomicUsize,
    /// Events written so far (tokens created).
    written: AtomicUsize,
    /// How many distinct deliveries make the run complete, and when the last of them came.
    target: usize,
    complete: std::sync::OnceLock<Instant>,
    done: tokio::sync::Notify,
}

/// The receiver: 200 to every POST, counted; a GET answers "delivered written".
async fn receive(
    tally: Arc<Tally>,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<hyper::body::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    if request.method() != hyper::Method::POST {
        let delivered = tally.seen.lock().unwrap().len();
        let written = tally.written.load(Ordering::Relaxed);
        return Ok(hyper::Response::new(
            format!("{delivered} {written}\n").into(),
        ));
    }
    let id = request
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    tally.posts.fetch_add(1, Ordering::Relaxed);
    let is_event = body
        .windows(b"token.created".len())
        .any(|w| w == b"token.created");
    if is_event {
        let mut seen = tally.seen.lock().unwrap();
        if seen.insert(id) && seen.len() == tally.target {
            let _ = tally.complete.set(Instant::now());
            tally.done.notify_one();
        }
    }
    Ok(hyper::Response::new(http_body_util::Full::default()))
}

/// `keygate-bench deliveries BASE OWNER EVENTS CONCURRENCY PORT`: webhook throughput. Starts a
/// receiver on 127.0.0.1:PORT, subscribes it to `token.created`, creates EVENTS tokens through
/// the API (CONCURRENCY at once), each one event, and waits for every delivery. Prints
/// "events_written_per_s deliveries_per_s seconds repeats": deliveries per second from the first
/// event written to the last delivery received. The webhook is deleted at the end.
async fn deliveries_command() {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let mut it = std::env::args().skip(2);
    let (base, owner) = (it.next().unwrap(), it.next().unwrap());
    let events: usize = it.next().unwrap().parse().unwrap();
    let concurrency: usize = it.next().unwrap().parse().unwrap();
    let port: u16 = it.next().unwrap().parse().unwrap();

    let tally = Arc::new(Tally {
        seen: Default::default(),
        posts: AtomicUsize::new(0),
        written: AtomicUsize::new(0),
        target: events,
        complete: std::sync::OnceLock::new(),
        done: tokio::sync::Notify::new(),
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server_tally = tally.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tally = server_tally.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = service_fn(move |request| receive(tally.clone(), request));
                let _ = http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });

    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let response = client
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({
            "url": format!("http://127.0.0.1:{port}/hook"),
            "events": ["token.created"],
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let webhook: serde_json::Value = response.json().await.unwrap_or_default();
    assert_eq!(status, 201, "creating the webhook: {webhook}");

    let started = Instant::now();
    let first = Arc::new(std::sync::OnceLock::new());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, base, owner, first, next, tally) = (
            client.clone(),
            base.clone(),
            owner.clone(),
            first.clone(),
            next.clone(),
            tally.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    return;
                }
                create_token(&client, &base, &owner, &format!("event-{n}")).await;
                first.get_or_init(Instant::now);
                tally.written.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let written = started.elapsed();
    let first = *first.get().unwrap();
    if tokio::time::timeout(Duration::from_secs(600), tally.done.notified())
        .await
        .is_err()
    {
        panic!(
            "{} of {events} deliveries received in 10 minutes",
            tally.seen.lock().unwrap().len()
        );
    }
    let elapsed = *tally.complete.get().unwrap() - first;

    let id = webhook["id"].as_str().unwrap();
    let deleted = client
        .delete(format!("{base}/v1/webhooks/{id}"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204, "deleting the webhook");
    let repeats = tally.posts.load(Ordering::Relaxed).saturating_sub(events);
    println!(
        "{:.0} {:.0} {:.2} {repeats}",
        events as f64 / written.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
}
