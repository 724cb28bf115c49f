//! The throwaway cluster starts, serves, stops and starts again.

use keygate_testkit::PgCluster;
use sqlx::Connection;

#[tokio::test]
async fn a_cluster_starts_stops_and_starts_again() {
    let cluster = PgCluster::start();
    let url = cluster.create_database().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    drop(conn);
    cluster.stop();
    assert!(sqlx::PgConnection::connect(&url).await.is_err());
    cluster.start_server();
    assert!(sqlx::PgConnection::connect(&url).await.is_ok());
}
