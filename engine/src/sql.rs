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

/// The deepest statement a worker parses (see [`statement_depth`]); the gateway's own limit
/// (`server.max_statement_depth`) is lower.
pub const MAX_STATEMENT_DEPTH: usize = 2000;

/// An upper bound of how deep `sql`'s syntax tree nests, read from its tokens without building
/// the tree: parentheses, plus the longest run of chaining operators (`+ - * / % || AND OR`)
/// within one list item or clause. A left-deep chain `1+1+...+1` is as deep as it is long, and
/// every pass over a tree — parsing, planning, and finally dropping it — recurses that deep;
/// a statement over a limit is refused before any of them runs.
pub fn statement_depth(sql: &str) -> Result<usize, EngineError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| EngineError::InvalidSql(format!("SQL error: {e}")))?;
    // One operator-run counter per open parenthesis.
    let mut runs: Vec<usize> = vec![0];
    let mut deepest = 0;
    for token in tokens {
        let chaining = match &token {
            Token::LParen | Token::LBracket => {
                runs.push(0);
                false
            }
            Token::RParen | Token::RBracket => {
                if runs.len() > 1 {
                    runs.pop();
                }
                false
            }
            Token::Comma | Token::SemiColon => {
                if let Some(run) = runs.last_mut() {
                    *run = 0;
                }
                false
            }
            Token::Plus | Token::Minus | Token::Mul | Token::Div | Token::Mod | Token::StringConcat => true,
            Token::Word(w) => match w.keyword {
                Keyword::AND | Keyword::OR => true,
                Keyword::SELECT
                | Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::ORDER
                | Keyword::HAVING
                | Keyword::LIMIT
                | Keyword::ON
                | Keyword::JOIN
                | Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::END => {
                    if let Some(run) = runs.last_mut() {
                        *run = 0;
                    }
                    false
                }
                _ => false,
            },
            _ => false,
        };
        if chaining && let Some(run) = runs.last_mut() {
            *run += 1;
        }
        deepest = deepest.max(runs.len() + runs.last().copied().unwrap_or(0));
    }
    Ok(deepest)
}

/// Parses one SQL statement and numbers JDBC/ODBC-style `?` placeholders as `$1`, `$2`, ...
/// in text order, which is how DataFusion binds positional parameters.
pub fn parse(state: &SessionState, sql: &str) -> Result<Statement, EngineError> {
    if sql.trim().is_empty() {
        return Err(EngineError::InvalidSql("empty SQL statement".into()));
    }
    let depth = statement_depth(sql)?;
    if depth > MAX_STATEMENT_DEPTH {
        return Err(EngineError::InvalidSql(format!(
            "the statement nests about {depth} levels deep; a worker accepts at most {MAX_STATEMENT_DEPTH}"
        )));
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
    plan_authorized(state, sql, None).await
}

/// A statement's parameters (`$1`, `$2`, ...) with their types as planned (`Null` where the
/// plan does not tell), in order.
pub fn parameters(plan: &LogicalPlan) -> Result<Vec<(String, datafusion::arrow::datatypes::DataType)>, EngineError> {
    let mut params: Vec<(usize, String, datafusion::arrow::datatypes::DataType)> = plan
        .get_parameter_types()?
        .into_iter()
        .map(|(name, ty)| {
            let index = name.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX);
            (index, name, ty.unwrap_or(datafusion::arrow::datatypes::DataType::Null))
        })
        .collect();
    params.sort();
    Ok(params.into_iter().map(|(_, name, ty)| (name, ty)).collect())
}

/// The session's default catalog and schema (what unqualified names resolve to).
pub fn defaults(state: &SessionState) -> (String, String) {
    let options = &state.config_options().catalog;
    (options.default_catalog.clone(), options.default_schema.clone())
}

/// [`plan`], and for a statement the gateway authorized, the checks of
/// [`crate::authorized::check_names`] before planning.
pub async fn plan_authorized(
    state: &SessionState,
    sql: &str,
    authorized: Option<&crate::handle::Authorized>,
) -> Result<LogicalPlan, EngineError> {
    let statement = parse(state, sql)?;
    if let Some(authorized) = authorized {
        let (catalog, schema) = defaults(state);
        crate::authorized::check_names(state, &statement, authorized, &catalog, &schema).await?;
    }
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

    #[test]
    fn statement_depth_counts_operator_chains_and_parentheses_not_lists() {
        let chain = format!("SELECT {}", vec!["1"; 1000].join("+"));
        assert!(statement_depth(&chain).expect("depth") >= 999);
        let parens = format!("SELECT {}1{}", "(".repeat(300), ")".repeat(300));
        assert!(statement_depth(&parens).expect("depth") >= 300);
        let list = format!("SELECT * FROM t WHERE x IN ({})", vec!["1"; 5000].join(", "));
        assert!(statement_depth(&list).expect("depth") < 10);
        let wide = format!("SELECT {}", (0..2000).map(|i| format!("a{i} + 1 AS c{i}")).collect::<Vec<_>>().join(", "));
        assert!(statement_depth(&wide).expect("depth") < 10);
        let ands = format!("SELECT 1 WHERE {}", (0..300).map(|i| format!("x = {i}")).collect::<Vec<_>>().join(" OR "));
        let d = statement_depth(&ands).expect("depth");
        assert!((299..=310).contains(&d), "{d}");
    }

    #[tokio::test]
    async fn statements_deeper_than_a_worker_accepts_are_invalid_not_fatal() {
        let ctx = SessionContext::new();
        let chain = format!("SELECT {}", vec!["1"; MAX_STATEMENT_DEPTH + 10].join("+"));
        let err = plan(&ctx.state(), &chain).await.expect_err("too deep");
        assert!(matches!(&err, EngineError::InvalidSql(m) if m.contains("levels deep")), "{err:?}");
        // Under the limit a long chain plans (recursion protection keeps the stack).
        let ok = format!("SELECT {}", vec!["1"; 1000].join("+"));
        plan(&ctx.state(), &ok).await.expect("1000 terms plan");
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
