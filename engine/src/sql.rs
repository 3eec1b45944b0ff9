//! SQL text to a safe logical plan: parse, number `?` placeholders, refuse statements that
//! would reach the worker's file system, plan.

use std::ops::ControlFlow;

use datafusion::common::tree_node::TreeNode;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};

use crate::error::EngineError;

/// What kind of statement a plan is: clients need to know whether a statement returns rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Returns rows (SELECT, VALUES, EXPLAIN, SHOW, DESCRIBE).
    Query,
    /// Changes rows and returns a count (INSERT, UPDATE, DELETE).
    Dml,
    /// Changes the catalog (CREATE, DROP).
    Ddl,
}

impl StatementKind {
    /// The kind of `plan`.
    pub fn of(plan: &LogicalPlan) -> Self {
        match plan {
            LogicalPlan::Dml(_) => StatementKind::Dml,
            LogicalPlan::Ddl(_) => StatementKind::Ddl,
            _ => StatementKind::Query,
        }
    }
}

/// Parses one SQL statement and numbers JDBC/ODBC-style `?` placeholders as `$1`, `$2`, ...
/// in text order, which is how DataFusion binds positional parameters.
pub fn parse(state: &SessionState, sql: &str) -> Result<Statement, EngineError> {
    if sql.trim().is_empty() {
        return Err(EngineError::InvalidSql("empty SQL statement".into()));
    }
    let dialect = state.config_options().sql_parser.dialect;
    let mut statement = state.sql_to_statement(sql, &dialect)?;
    refuse_file_access(&statement)?;
    number_placeholders(&mut statement);
    Ok(statement)
}

/// Parses and plans `sql` under `state`, refusing what a gateway client must not do on a
/// worker: touch its file system (`CREATE EXTERNAL TABLE`, `COPY`) or change the worker's
/// settings (`SET`).
pub async fn plan(state: &SessionState, sql: &str) -> Result<LogicalPlan, EngineError> {
    let statement = parse(state, sql)?;
    let plan = state.statement_to_plan(statement).await?;
    SQLOptions::new()
        .with_allow_ddl(true)
        .with_allow_dml(true)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| EngineError::NotAllowed(format!("{e}; use Flight SQL session options instead")))?;
    refuse_file_plans(&plan)?;
    Ok(plan)
}

fn refuse_file_access(statement: &Statement) -> Result<(), EngineError> {
    match statement {
        Statement::CreateExternalTable(_) => Err(EngineError::NotAllowed(
            "CREATE EXTERNAL TABLE is not allowed through Quiver: tables come from configured catalogs".into(),
        )),
        Statement::CopyTo(_) => Err(EngineError::NotAllowed("COPY is not allowed through Quiver".into())),
        Statement::Explain(e) => refuse_file_access(&e.statement),
        Statement::Statement(_) | Statement::Reset(_) => Ok(()),
    }
}

fn refuse_file_plans(plan: &LogicalPlan) -> Result<(), EngineError> {
    let mut found = None;
    let _ = plan.apply(|node| {
        match node {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(_)) => found = Some("CREATE EXTERNAL TABLE"),
            LogicalPlan::Copy(_) => found = Some("COPY"),
            _ => {}
        }
        Ok(if found.is_some() {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        })
    });
    match found {
        Some(what) => Err(EngineError::NotAllowed(format!("{what} is not allowed through Quiver"))),
        None => Ok(()),
    }
}

fn number_placeholders(statement: &mut Statement) {
    match statement {
        Statement::Statement(inner) => {
            let mut n = 0usize;
            let _ = visit_expressions_mut(inner.as_mut(), |expr| {
                if let Expr::Value(v) = expr
                    && let Value::Placeholder(p) = &mut v.value
                    && p == "?"
                {
                    n += 1;
                    *p = format!("${n}");
                }
                ControlFlow::<()>::Continue(())
            });
        }
        Statement::Explain(e) => number_placeholders(&mut e.statement),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn question_marks_become_positional_parameters() {
        let ctx = SessionContext::new();
        let plan = plan(&ctx.state(), "SELECT ? + 1 AS a, ? AS b").await.expect("plan");
        let mut params: Vec<String> = plan.get_parameter_types().expect("types").into_keys().collect();
        params.sort();
        assert_eq!(params, vec!["$1", "$2"]);
    }

    #[tokio::test]
    async fn file_system_statements_are_refused() {
        let ctx = SessionContext::new();
        for sql in [
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "EXPLAIN CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/'",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let err = plan(&ctx.state(), sql).await.expect_err(sql);
            assert!(matches!(err, EngineError::NotAllowed(_)), "{sql}: {err:?}");
        }
    }

    #[tokio::test]
    async fn kinds_are_told_apart() {
        let ctx = SessionContext::new();
        assert_eq!(StatementKind::of(&plan(&ctx.state(), "SELECT 1").await.expect("q")), StatementKind::Query);
        assert_eq!(
            StatementKind::of(&plan(&ctx.state(), "CREATE TABLE t AS VALUES (1)").await.expect("ddl")),
            StatementKind::Ddl
        );
        assert!(matches!(plan(&ctx.state(), "   ").await, Err(EngineError::InvalidSql(_))));
    }
}
