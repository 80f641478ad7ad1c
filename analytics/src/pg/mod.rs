//! The PostgreSQL wire protocol listener, so psql, Grafana's PostgreSQL data source and any
//! PostgreSQL driver can query Polis: database and user `polis`, read-only.
//!
//! The protocol itself is `pgwire`'s; this module accepts connections within
//! `analytics.pg_max_connections` ([`startup`] says who may log in) and hands every statement to
//! the same [`SqlService`] as HTTP ([`queries`]), so the same read-only check and time, memory
//! and row limits apply.

mod errors;
mod queries;
mod startup;

use std::sync::Arc;
use std::time::Duration;

use pgwire::api::PgWireServerHandlers;
use pgwire::api::auth::StartupHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::tokio::process_socket;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::AnalyticsConfig;
use crate::sql::SqlService;
use queries::Queries;
use startup::{Admission, Startup};

/// How long a refused client has to read why before the connection is dropped.
const REFUSAL_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves PostgreSQL clients. Build it with [`PgServer::new`], then [`PgServer::serve`].
pub struct PgServer {
    queries: Arc<Queries>,
    password: Option<Arc<str>>,
    max_connections: usize,
}

impl PgServer {
    pub fn new(config: &AnalyticsConfig, sql: SqlService) -> PgServer {
        PgServer {
            queries: Arc::new(Queries::new(sql)),
            password: config.pg_password.as_deref().map(Arc::from),
            max_connections: config.pg_max_connections,
        }
    }

    /// Accepts clients on `listener` until `shutdown`, then closes every connection.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let mut connections = JoinSet::new();
        loop {
            let (socket, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a PostgreSQL connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let permit = slots.clone().try_acquire_owned().ok();
            let admission = match permit {
                Some(_) => Admission::Admitted,
                None => {
                    tracing::warn!(
                        %peer,
                        limit = self.max_connections,
                        "refused a PostgreSQL client: analytics.pg_max_connections reached"
                    );
                    Admission::Full {
                        limit: self.max_connections,
                    }
                }
            };
            let handlers = Handlers {
                queries: self.queries.clone(),
                startup: Arc::new(Startup {
                    password: self.password.clone(),
                    admission,
                }),
            };
            connections.spawn(async move {
                let result = match permit {
                    Some(_permit) => process_socket(socket, None, handlers).await,
                    None => {
                        tokio::time::timeout(REFUSAL_GRACE, process_socket(socket, None, handlers))
                            .await
                            .unwrap_or(Ok(()))
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "a PostgreSQL connection failed");
                }
            });
        }
        connections.shutdown().await;
    }
}

/// The handlers of one connection.
struct Handlers {
    queries: Arc<Queries>,
    startup: Arc<Startup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::task::JoinHandle;
    use tokio_postgres::error::SqlState;
    use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

    use super::*;
    use crate::decode::tests::traffic_batch;
    use crate::store::HotStore;

    struct Server {
        addr: SocketAddr,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    }

    async fn server(config: AnalyticsConfig) -> Server {
        let store = Arc::new(HotStore::new(config.window, config.hot_retention, 1 << 30));
        store
            .insert("traffic", traffic_batch(&[(1_000, 4), (2_000, 6)]))
            .unwrap();
        let sql = SqlService::new(store, &config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(PgServer::new(&config, sql).serve(listener, shutdown.clone()));
        Server {
            addr,
            shutdown,
            task,
        }
    }

    async fn connect(
        addr: SocketAddr,
        user: &str,
        database: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(addr.port())
            .user(user)
            .dbname(database)
            .connect(NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn sum(client: &Client) -> String {
        let messages = client
            .simple_query("SELECT sum(vehicles) FROM traffic")
            .await
            .unwrap();
        match &messages[1] {
            SimpleQueryMessage::Row(row) => row.get(0).unwrap().to_string(),
            other => panic!("expected a row, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn clients_past_the_limit_are_refused_until_one_leaves() {
        let server = server(AnalyticsConfig {
            pg_max_connections: 2,
            ..AnalyticsConfig::default()
        })
        .await;
        let first = connect(server.addr, "polis", "polis").await.unwrap();
        let second = connect(server.addr, "polis", "polis").await.unwrap();
        let err = connect(server.addr, "polis", "polis").await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!(db.code(), &SqlState::TOO_MANY_CONNECTIONS);
        assert!(
            db.message().contains("analytics.pg_max_connections"),
            "{}",
            db.message()
        );
        assert_eq!(sum(&second).await, "10");

        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let third = loop {
            match connect(server.addr, "polis", "polis").await {
                Ok(client) => break client,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "no slot came free after a client left: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(sum(&third).await, "10");
    }

    #[tokio::test]
    async fn only_user_polis_opens_database_polis() {
        let server = server(AnalyticsConfig::default()).await;
        let err = connect(server.addr, "postgres", "polis").await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!(db.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        assert!(
            db.message().contains("connect as user polis"),
            "{}",
            db.message()
        );
        let err = connect(server.addr, "polis", "city").await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!(db.code(), &SqlState::INVALID_CATALOG_NAME);
        let client = connect(server.addr, "polis", "polis").await.unwrap();
        assert!(matches!(
            client.simple_query("-- nothing to run").await.unwrap()[..],
            [SimpleQueryMessage::CommandComplete(0)]
        ));
    }

    #[tokio::test]
    async fn shutdown_closes_every_connection() {
        let server = server(AnalyticsConfig::default()).await;
        let client = connect(server.addr, "polis", "polis").await.unwrap();
        assert_eq!(sum(&client).await, "10");
        server.shutdown.cancel();
        server.task.await.unwrap();
        assert!(client.simple_query("SELECT 1").await.is_err());
        assert!(connect(server.addr, "polis", "polis").await.is_err());
    }
}
