//! Statements over the wire, simple and extended protocol alike: parsed as PostgreSQL (with
//! rewrites for what clients such as psql and Grafana send), then run by [`SqlService`] under
//! its limits; rows go back encoded by `arrow-pg` in the format the client asked for.

use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;

use super::errors::{query_error, query_failed, syntax_error, user_error};
use crate::sql::{Description, QueryResult, SqlService};

/// Answers the queries of every connection.
pub(super) struct Queries {
    parser: Arc<Parser>,
}

impl Queries {
    pub(super) fn new(sql: SqlService) -> Queries {
        Queries {
            parser: Arc::new(Parser {
                sql,
                postgres: PostgresCompatibilityParser::new(),
            }),
        }
    }
}

/// A statement prepared by the extended protocol: its text parsed and planned once.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    statement: ast::Statement,
    description: Description,
}

pub(super) struct Parser {
    sql: SqlService,
    postgres: PostgresCompatibilityParser,
}

impl Parser {
    fn parse(&self, sql: &str) -> PgWireResult<Vec<ast::Statement>> {
        self.postgres.parse(sql).map_err(syntax_error)
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.parse(sql)?;
        if statements.len() > 1 {
            return Err(user_error(
                "ERROR",
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        let description = self
            .sql
            .describe(statement.clone())
            .await
            .map_err(|e| query_failed(&e))?;
        Ok(Some(Prepared {
            statement,
            description,
        }))
    }

    fn get_parameter_types(&self, prepared: &Prepared) -> PgWireResult<Vec<Type>> {
        prepared
            .description
            .parameters
            .iter()
            .map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type))
            .collect()
    }

    fn get_result_schema(
        &self,
        prepared: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        arrow_schema_to_pg_fields(
            &prepared.description.schema,
            format.unwrap_or(&Format::UnifiedText),
            None,
        )
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.parser.parse(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut responses = Vec::new();
        for statement in statements {
            match self.parser.sql.query_parsed(statement, None).await {
                Ok(result) => responses.push(Response::Query(encode(
                    result,
                    &Format::UnifiedText,
                    options.clone(),
                )?)),
                Err(e) => {
                    responses.push(Response::Error(Box::new(query_error(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let types: Vec<Option<&DataType>> = prepared
            .description
            .parameters
            .iter()
            .map(Option::as_ref)
            .collect();
        let parameters = deserialize_parameters(portal, &types)?;
        let result = self
            .parser
            .sql
            .query_parsed(prepared.statement.clone(), Some(parameters))
            .await
            .map_err(|e| query_failed(&e))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Ok(Response::Query(encode(
            result,
            &portal.result_column_format,
            options,
        )?))
    }
}

/// Rows in the wire format the client asked for, column by column.
fn encode(
    result: QueryResult,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &result.schema,
        format,
        Some(options),
    )?);
    let rows: Vec<_> = result
        .batches
        .into_iter()
        .flat_map(|batch| encode_recordbatch(fields.clone(), batch))
        .collect();
    Ok(QueryResponse::new(fields, futures::stream::iter(rows)))
}
