//! PostgreSQL errors as store errors: which mean the data was refused, which a timeout,
//! which that the database is not working; with their whole text for the logs.

use crate::store::StoreError;

/// An error's text with the whole chain of its causes ("db error: relation … does not
/// exist"), for the logs.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A database error as a store error: what PostgreSQL refuses for the data it was given
/// (SQLSTATE classes 22, data exception; 23, integrity constraint; 54, program limit, such
/// as an index row too large) is [`StoreError::Refused`]; a statement timeout is
/// [`StoreError::TimedOut`]; anything else means the database is not working.
pub fn db(error: tokio_postgres::Error) -> StoreError {
    let code = error.code().map(|c| c.code().to_string());
    match code.as_deref() {
        Some(c) if c.starts_with("22") || c.starts_with("23") || c.starts_with("54") => {
            StoreError::Refused(describe(&error))
        }
        Some("57014") => StoreError::TimedOut,
        _ => StoreError::Database(describe(&error)),
    }
}

/// The pool could not give a connection: the database is unreachable.
pub fn unavailable(error: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Database(describe(&error))
}
