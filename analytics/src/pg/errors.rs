//! Errors as PostgreSQL reports them: a severity, a SQLSTATE code clients can act on, a message.

use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::SqlError;

/// A failed statement, as the error its protocol step returns.
pub(super) fn query_failed(e: &SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(query_error(e)))
}

/// A query error; the connection stays usable.
pub(super) fn query_error(e: &SqlError) -> ErrorInfo {
    let code = match e {
        SqlError::Invalid(_) => "42000", // syntax_error_or_access_rule_violation
        SqlError::ReadOnly(_) => "25006", // read_only_sql_transaction
        SqlError::Timeout(_) => "57014", // query_canceled
        SqlError::Memory(..) => "53200", // out_of_memory
        SqlError::TooManyRows(_) => "54000", // program_limit_exceeded
        SqlError::Internal(_) => "XX000", // internal_error
    };
    ErrorInfo::new("ERROR".into(), code.into(), e.to_string())
}

/// A statement the PostgreSQL parser could not read.
pub(super) fn syntax_error(message: impl std::fmt::Display) -> PgWireError {
    user_error("ERROR", "42601", format!("syntax error: {message}"))
}

/// An error that ends the connection, such as a refused login.
pub(super) fn fatal(code: &str, message: String) -> PgWireError {
    user_error("FATAL", code, message)
}

pub(super) fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.into(),
        code.into(),
        message,
    )))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_sqlstate() {
        for (error, code) in [
            (SqlError::ReadOnly("INSERT".into()), "25006"),
            (SqlError::Timeout(Duration::from_secs(1)), "57014"),
            (
                SqlError::Memory(bytesize::ByteSize::mib(1), "no room".into()),
                "53200",
            ),
            (SqlError::TooManyRows(10), "54000"),
            (SqlError::Invalid("no such column".into()), "42000"),
        ] {
            let info = query_error(&error);
            assert_eq!(
                (info.severity.as_str(), info.code.as_str()),
                ("ERROR", code)
            );
            assert_eq!(info.message, error.to_string());
        }
    }
}
