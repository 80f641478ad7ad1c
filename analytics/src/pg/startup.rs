//! Who may connect: user `polis` to database `polis`; clients on loopback without a password,
//! others with `analytics.pg_password` (asked for in cleartext); nobody past
//! `analytics.pg_max_connections`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, METADATA_DATABASE, METADATA_USER, PgWireConnectionState};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::errors::fatal;
use crate::catalog::{DATABASE, SERVER_VERSION};

/// The one user name accepted.
const USER: &str = "polis";

/// Whether a connection found a free slot.
#[derive(Debug, Clone, Copy)]
pub(super) enum Admission {
    Admitted,
    /// Every one of `limit` slots is taken.
    Full {
        limit: usize,
    },
}

/// The start of one connection.
pub(super) struct Startup {
    pub(super) password: Option<Arc<str>>,
    pub(super) admission: Admission,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                if let Admission::Full { limit } = self.admission {
                    return Err(fatal(
                        "53300", // too_many_connections
                        format!(
                            "too many connections: Polis serves at most {limit} PostgreSQL clients at once (analytics.pg_max_connections); close one or raise the limit"
                        ),
                    ));
                }
                check_login(client.metadata())?;
                if client.socket_addr().ip().is_loopback() {
                    finish_authentication(client, &server_parameters()).await?;
                } else if self.password.is_some() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                } else {
                    return Err(fatal(
                        "28000", // invalid_authorization_specification
                        format!(
                            "clients from {} need a password and none is set: set analytics.pg_password, or connect from this machine",
                            client.socket_addr().ip()
                        ),
                    ));
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let given = message.into_password()?.password;
                if self.password.as_deref() == Some(given.as_str()) {
                    finish_authentication(client, &server_parameters()).await?;
                } else {
                    return Err(fatal(
                        "28P01", // invalid_password
                        format!("password authentication failed for user \"{USER}\""),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Refuses any user but `polis` and any database but `polis` (a missing one means the user's).
fn check_login(metadata: &HashMap<String, String>) -> PgWireResult<()> {
    let user = metadata.get(METADATA_USER).map_or("", String::as_str);
    if user != USER {
        return Err(fatal(
            "28000",
            format!("role \"{user}\" does not exist: connect as user {USER}"),
        ));
    }
    let database = metadata.get(METADATA_DATABASE).map_or(user, String::as_str);
    if database != DATABASE {
        return Err(fatal(
            "3D000", // invalid_catalog_name
            format!("database \"{database}\" does not exist: connect to database {DATABASE}"),
        ));
    }
    Ok(())
}

/// What the client is told about the server after login: every session is read-only.
fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = SERVER_VERSION.to_string();
    parameters.default_transaction_read_only = true;
    parameters.is_superuser = false;
    parameters
}

#[cfg(test)]
mod tests {
    use pgwire::api::DefaultClient;
    use pgwire::error::ErrorInfo;
    use pgwire::messages::startup::{Password, PasswordMessageFamily};
    use pgwire::tokio::server::PgWireMessageServerCodec;
    use tokio::io::DuplexStream;
    use tokio_util::codec::Framed;

    use super::*;

    type Connection = Framed<DuplexStream, PgWireMessageServerCodec<()>>;

    /// A connection as the server sees it, from a client on another host; the other end of the
    /// pipe stands in for the client.
    fn from_another_host() -> (Connection, DuplexStream) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let info = DefaultClient::new("192.0.2.7:40000".parse().unwrap(), false);
        (
            Framed::new(server, PgWireMessageServerCodec::new(info)),
            client,
        )
    }

    async fn start(startup: &Startup, connection: &mut Connection) -> PgWireResult<()> {
        let mut message = pgwire::messages::startup::Startup::new();
        message.parameters.insert(METADATA_USER.into(), USER.into());
        message
            .parameters
            .insert(METADATA_DATABASE.into(), DATABASE.into());
        startup
            .on_startup(connection, PgWireFrontendMessage::Startup(message))
            .await
    }

    fn password(text: &str) -> PgWireFrontendMessage {
        PgWireFrontendMessage::PasswordMessageFamily(PasswordMessageFamily::Password(
            Password::new(text.into()),
        ))
    }

    fn code(result: PgWireResult<()>) -> String {
        ErrorInfo::from(result.unwrap_err()).code
    }

    #[tokio::test]
    async fn other_hosts_need_the_configured_password() {
        let startup = Startup {
            password: Some("s3cret".into()),
            admission: Admission::Admitted,
        };
        let (mut connection, _client) = from_another_host();
        start(&startup, &mut connection).await.unwrap();
        assert!(matches!(
            connection.state(),
            PgWireConnectionState::AuthenticationInProgress
        ));
        let wrong = startup.on_startup(&mut connection, password("guess")).await;
        assert_eq!(code(wrong), "28P01");

        let (mut connection, _client) = from_another_host();
        start(&startup, &mut connection).await.unwrap();
        startup
            .on_startup(&mut connection, password("s3cret"))
            .await
            .unwrap();
        assert!(matches!(
            connection.state(),
            PgWireConnectionState::ReadyForQuery
        ));

        let no_password = Startup {
            password: None,
            admission: Admission::Admitted,
        };
        let (mut connection, _client) = from_another_host();
        assert_eq!(code(start(&no_password, &mut connection).await), "28000");
    }

    fn login(user: &str, database: Option<&str>) -> Result<(), String> {
        let mut metadata = HashMap::from([(METADATA_USER.to_string(), user.to_string())]);
        if let Some(database) = database {
            metadata.insert(METADATA_DATABASE.to_string(), database.to_string());
        }
        check_login(&metadata).map_err(|e| e.to_string())
    }

    #[test]
    fn only_polis_may_open_polis() {
        assert!(login("polis", Some("polis")).is_ok());
        assert!(login("polis", None).is_ok());
        let err = login("postgres", Some("polis")).unwrap_err();
        assert!(err.contains("role \"postgres\" does not exist"), "{err}");
        let err = login("polis", Some("city")).unwrap_err();
        assert!(err.contains("database \"city\" does not exist"), "{err}");
    }
}
