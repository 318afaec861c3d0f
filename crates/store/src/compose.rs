//! One statement out of several writes: data-modifying CTEs, each written
//! once, in the module that owns its table, with its own `$1..$n`.
//!
//! A round trip inside a payment's transaction costs PostgreSQL (and the
//! service) more than the rows it writes: the same SQL sent as one
//! statement instead of a transaction of eight ran about 25% faster in
//! pgbench (docs/performance.md). A [`Statement`] renumbers each piece's
//! placeholders after the arguments already bound, so a piece reads the
//! same whether it runs alone or inside a larger statement.

use std::fmt::Write as _;

use sqlx::postgres::PgArguments;
use sqlx::{Arguments, Decode, Encode, PgExecutor, Postgres, Type};

/// A statement under construction: its text and its arguments, in order.
#[derive(Default)]
pub struct Statement {
    sql: String,
    args: PgArguments,
}

impl Statement {
    pub fn new() -> Statement {
        Statement::default()
    }

    /// Appends a piece whose placeholders `$1..$n` stand for the next `n`
    /// arguments [`bind`](Self::bind) adds. Nothing else in the piece may
    /// contain a `$` followed by a digit (none of ours does: no
    /// dollar-quoted strings).
    pub fn push(&mut self, piece: &str) {
        let offset = self.args.len();
        let mut rest = piece;
        while let Some(at) = rest.find('$') {
            let (before, after) = rest.split_at(at);
            self.sql.push_str(before);
            let digits = after[1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len() - 1);
            match after[1..=digits].parse::<usize>() {
                Ok(n) if digits > 0 => {
                    // (Writing to a String cannot fail.)
                    let _ = write!(self.sql, "${}", n + offset);
                }
                _ => self.sql.push('$'),
            }
            rest = &after[1 + digits..];
        }
        self.sql.push_str(rest);
    }

    /// Adds the next argument.
    pub fn bind<'q, T>(&mut self, value: T) -> anyhow::Result<&mut Statement>
    where
        T: Encode<'q, Postgres> + Type<Postgres> + 'q,
    {
        self.args
            .add(value)
            .map_err(|e| anyhow::anyhow!("cannot bind a statement argument: {e}"))?;
        Ok(self)
    }

    /// Runs the statement (prepared, and cached per connection by its
    /// text); returns how many rows its main query affected.
    pub async fn execute<'c>(self, executor: impl PgExecutor<'c>) -> Result<u64, sqlx::Error> {
        let result = sqlx::query_with(&self.sql, self.args)
            .execute(executor)
            .await?;
        Ok(result.rows_affected())
    }

    /// Runs the statement and returns the first column of its first row,
    /// if it returned one.
    pub async fn fetch_scalar<'c, T>(
        self,
        executor: impl PgExecutor<'c>,
    ) -> Result<Option<T>, sqlx::Error>
    where
        T: for<'r> Decode<'r, Postgres> + Type<Postgres> + Send + Unpin,
    {
        sqlx::query_scalar_with(&self.sql, self.args)
            .fetch_optional(executor)
            .await
    }

    /// Runs the statement and returns its first row, if it returned one.
    pub async fn fetch_row<'c, T>(
        self,
        executor: impl PgExecutor<'c>,
    ) -> Result<Option<T>, sqlx::Error>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        sqlx::query_as_with(&self.sql, self.args)
            .fetch_optional(executor)
            .await
    }

    #[cfg(test)]
    fn sql(&self) -> &str {
        &self.sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_renumbered_after_the_arguments_bound_before_them() {
        let mut statement = Statement::new();
        statement.push("with a as (insert into t values ($1, $2)), ");
        statement.bind(1_i64).unwrap().bind("x").unwrap();
        statement.push("b as (update u set v = $1 where w = $2 and $1 > 0) ");
        statement.bind(2_i64).unwrap().bind("y").unwrap();
        statement.push("select $1, '$' || 'x', $10");
        assert_eq!(
            statement.sql(),
            "with a as (insert into t values ($1, $2)), \
             b as (update u set v = $3 where w = $4 and $3 > 0) \
             select $5, '$' || 'x', $14"
        );
    }
}
