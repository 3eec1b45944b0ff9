//! Flight SQL `GetSqlInfo` metadata: what Quiver, a DataFusion-backed gateway, supports.
//!
//! [`sql_info_data`] answers every id of [`SqlInfo`]: the JDBC driver (and Tableau on top of
//! it) throws on an id it cannot find, and flightsql-dbapi indexes some ids directly, so a
//! missing id is a client crash rather than a default. Completeness is enforced twice: the
//! `match` in `value_of` has no wildcard arm (a new variant in arrow-flight fails to
//! compile), and a unit test walks every id the enum accepts.
//!
//! Value types follow what the clients actually decode, which for a few ids differs from
//! the comments in `FlightSql.proto` (the Java reference `SqlInfoBuilder`, the JDBC driver
//! and the Arrow ODBC driver agree with each other, and cast without checking):
//!
//! - `SQL_IDENTIFIER_CASE`, `SQL_QUOTED_IDENTIFIER_CASE`, `SQL_NULL_ORDERING` and
//!   `SQL_DEFAULT_TRANSACTION_ISOLATION` are sent as int64 (the proto says int32 ordinal;
//!   JDBC reads the isolation level as a `Long`, ODBC reads all four as int64).
//! - `SQL_OUTER_JOINS_SUPPORT_LEVEL` is sent as an int32 *bitmask* of
//!   `SqlOuterJoinsSupportLevel` (the proto says ordinal; JDBC and ODBC test bits).
//! - `FLIGHT_SQL_SERVER_SUBSTRAIT_{MIN,MAX}_VERSION` should be null when Substrait is not
//!   supported, but the dense union has no null slot, so they are empty strings.

use std::collections::BTreeMap;

use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel, SqlSupportedCaseSensitivity, SqlSupportedGroupBy,
    SqlSupportedResultSetConcurrency, SqlSupportedResultSetType, SqlSupportedSubqueries, SqlSupportedTransaction,
    SqlSupportedUnions, SqlSupportsConvert, SqlTransactionIsolationLevel, SupportedSqlGrammar,
};
use datafusion::arrow::array::new_null_array;
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use datafusion::arrow::error::ArrowError;

/// Product name reported as `FLIGHT_SQL_SERVER_NAME`.
pub const SERVER_NAME: &str = "Quiver";

/// Version of the Arrow implementation Quiver is built on (`FLIGHT_SQL_SERVER_ARROW_VERSION`).
pub const ARROW_VERSION: &str = "59.3.2";

/// `SupportedAnsi92SqlGrammarLevel::ANSI92_ENTRY_SQL`; arrow-flight does not re-export that enum.
const ANSI92_ENTRY_SQL: i32 = 0;

/// Keywords the DataFusion SQL parser reserves beyond SQL:2003's reserved words (what JDBC's
/// `getSQLKeywords` asks for). Listing a word here only makes clients quote it.
const KEYWORDS: &[&str] = &[
    "ANALYZE",
    "COLUMNS",
    "COPY",
    "EXCLUDE",
    "EXPLAIN",
    "FORMAT",
    "FUNCTIONS",
    "ILIKE",
    "LIMIT",
    "LOCATION",
    "OFFSET",
    "OPTIONS",
    "OVERWRITE",
    "PARTITIONED",
    "QUALIFY",
    "SHOW",
    "STORED",
    "TABLES",
    "VERBOSE",
];

/// DataFusion's math functions (names and aliases), upper-cased as JDBC and ODBC expect.
const NUMERIC_FUNCTIONS: &[&str] = &[
    "ABS",
    "ACOS",
    "ACOSH",
    "ASIN",
    "ASINH",
    "ATAN",
    "ATAN2",
    "ATANH",
    "CBRT",
    "CEIL",
    "COS",
    "COSH",
    "COT",
    "DEGREES",
    "EXP",
    "FACTORIAL",
    "FLOOR",
    "GCD",
    "ISNAN",
    "ISZERO",
    "LCM",
    "LN",
    "LOG",
    "LOG10",
    "LOG2",
    "NANVL",
    "PI",
    "POW",
    "POWER",
    "RADIANS",
    "RAND",
    "RANDOM",
    "ROUND",
    "SIGNUM",
    "SIN",
    "SINH",
    "SQRT",
    "TAN",
    "TANH",
    "TRUNC",
];

/// DataFusion's string, regular-expression, binary-string and hashing functions.
const STRING_FUNCTIONS: &[&str] = &[
    "ASCII",
    "BIT_LENGTH",
    "BTRIM",
    "CHAR_LENGTH",
    "CHARACTER_LENGTH",
    "CHR",
    "CONCAT",
    "CONCAT_WS",
    "CONTAINS",
    "DECODE",
    "DIGEST",
    "ENCODE",
    "ENDS_WITH",
    "FIND_IN_SET",
    "INITCAP",
    "INSTR",
    "LEFT",
    "LENGTH",
    "LEVENSHTEIN",
    "LOWER",
    "LPAD",
    "LTRIM",
    "MD5",
    "OCTET_LENGTH",
    "OVERLAY",
    "POSITION",
    "REGEXP_COUNT",
    "REGEXP_INSTR",
    "REGEXP_LIKE",
    "REGEXP_MATCH",
    "REGEXP_REPLACE",
    "REPEAT",
    "REPLACE",
    "REVERSE",
    "RIGHT",
    "RPAD",
    "RTRIM",
    "SHA224",
    "SHA256",
    "SHA384",
    "SHA512",
    "SPLIT_PART",
    "STARTS_WITH",
    "STRPOS",
    "SUBSTR",
    "SUBSTR_INDEX",
    "SUBSTRING",
    "SUBSTRING_INDEX",
    "TO_HEX",
    "TRANSLATE",
    "TRIM",
    "UPPER",
    "UUID",
];

/// DataFusion's conditional and "other" (type and system) functions.
const SYSTEM_FUNCTIONS: &[&str] = &[
    "ARROW_CAST",
    "ARROW_TRY_CAST",
    "ARROW_TYPEOF",
    "COALESCE",
    "GET_FIELD",
    "GREATEST",
    "IFNULL",
    "LEAST",
    "NULLIF",
    "NVL",
    "NVL2",
    "VERSION",
];

/// DataFusion's date and time functions.
const DATETIME_FUNCTIONS: &[&str] = &[
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "DATE_BIN",
    "DATE_FORMAT",
    "DATE_PART",
    "DATE_TRUNC",
    "DATEPART",
    "DATETRUNC",
    "FROM_UNIXTIME",
    "MAKE_DATE",
    "MAKE_TIME",
    "NOW",
    "TO_CHAR",
    "TO_DATE",
    "TO_LOCAL_TIME",
    "TO_TIME",
    "TO_TIMESTAMP",
    "TO_TIMESTAMP_MICROS",
    "TO_TIMESTAMP_MILLIS",
    "TO_TIMESTAMP_NANOS",
    "TO_TIMESTAMP_SECONDS",
    "TO_UNIXTIME",
    "TODAY",
];

/// One value of the `GetSqlInfo` dense union (arrow-flight's own value enum is not exported).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    BigInt(i64),
    Int32(i32),
    StrList(Vec<String>),
    IntListMap(BTreeMap<i32, Vec<i32>>),
}

/// Builds the `GetSqlInfo` answer for a server reporting `server_version`: one row for every
/// id of [`SqlInfo`]. Build it once and serve it with `CommandGetSqlInfo::into_builder`.
pub fn sql_info_data(server_version: &str) -> Result<SqlInfoData, ArrowError> {
    let convert = supported_conversions();
    let mut builder = SqlInfoDataBuilder::new();
    for info in all_sql_infos() {
        match value_of(info, server_version, &convert) {
            Value::Str(v) => builder.append(info, v.as_str()),
            Value::Bool(v) => builder.append(info, v),
            Value::BigInt(v) => builder.append(info, v),
            Value::Int32(v) => builder.append(info, v),
            Value::StrList(v) => builder.append(info, v),
            Value::IntListMap(v) => builder.append(info, v),
        }
    }
    builder.build().map_err(into_arrow_error)
}

/// Every id the protocol defines (the ids are sparse: 0.., 100.., 500..).
fn all_sql_infos() -> impl Iterator<Item = SqlInfo> {
    (0..=i32::from(u16::MAX)).filter_map(|id| SqlInfo::try_from(id).ok())
}

fn into_arrow_error(e: FlightError) -> ArrowError {
    match e {
        FlightError::Arrow(e) => e,
        other => ArrowError::ExternalError(Box::new(other)),
    }
}

/// An int32 bitmask with bit `1 << v` set for each enum value `v`.
fn bits(values: &[i32]) -> Value {
    Value::Int32(values.iter().fold(0, |mask, v| mask | (1 << v)))
}

fn strings(values: &[&str]) -> Value {
    Value::StrList(values.iter().map(|s| (*s).to_owned()).collect())
}

fn value_of(info: SqlInfo, server_version: &str, convert: &BTreeMap<i32, Vec<i32>>) -> Value {
    use SqlInfo as I;
    use Value::{BigInt, Bool, Int32, Str};
    // No wildcard arm on purpose: a new SqlInfo variant must get a deliberate value.
    match info {
        // ---- Server ----
        I::FlightSqlServerName => Str(SERVER_NAME.to_owned()),
        I::FlightSqlServerVersion => Str(server_version.to_owned()),
        I::FlightSqlServerArrowVersion => Str(ARROW_VERSION.to_owned()),
        I::FlightSqlServerReadOnly => Bool(false),
        I::FlightSqlServerSql => Bool(true),
        I::FlightSqlServerSubstrait => Bool(false),
        // The protocol wants null here when Substrait is unsupported; the union cannot hold one.
        I::FlightSqlServerSubstraitMinVersion | I::FlightSqlServerSubstraitMaxVersion => Str(String::new()),
        I::FlightSqlServerTransaction => Int32(SqlSupportedTransaction::None as i32),
        I::FlightSqlServerCancel => Bool(true),
        I::FlightSqlServerBulkIngestion => Bool(false),
        I::FlightSqlServerIngestTransactionsSupported => Bool(false),
        I::FlightSqlServerStatementTimeout => Int32(0),
        I::FlightSqlServerTransactionTimeout => Int32(0),

        // ---- DDL and identifiers ----
        // Catalogs come from configuration; schemas and tables can be created in writable ones.
        I::SqlDdlCatalog => Bool(false),
        I::SqlDdlSchema => Bool(true),
        I::SqlDdlTable => Bool(true),
        // DataFusion lower-cases unquoted identifiers. Sent as int64: see the module docs.
        I::SqlIdentifierCase => BigInt(SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i64),
        I::SqlIdentifierQuoteChar => Str("\"".to_owned()),
        // Quoted identifiers are kept as written and compared case-sensitively. The enum has no
        // "case sensitive" value; UNKNOWN is what the ODBC driver maps to SQL_IC_SENSITIVE.
        I::SqlQuotedIdentifierCase => BigInt(SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i64),
        // Authorization policies may refuse to read a table that listing showed.
        I::SqlAllTablesAreSelectable => Bool(false),
        // DataFusion's default (`nulls_max`): NULLS LAST ascending, NULLS FIRST descending.
        I::SqlNullOrdering => BigInt(SqlNullOrdering::SqlNullsSortedHigh as i64),
        I::SqlKeywords => strings(KEYWORDS),
        I::SqlNumericFunctions => strings(NUMERIC_FUNCTIONS),
        I::SqlStringFunctions => strings(STRING_FUNCTIONS),
        I::SqlSystemFunctions => strings(SYSTEM_FUNCTIONS),
        I::SqlDatetimeFunctions => strings(DATETIME_FUNCTIONS),
        I::SqlSearchStringEscape => Str("\\".to_owned()),
        // The generic dialect also takes `@`, `#` and `$`, but other dialects do not; claiming
        // none only makes clients quote more.
        I::SqlExtraNameCharacters => Str(String::new()),
        I::SqlSupportsColumnAliasing => Bool(true),
        I::SqlNullPlusNullIsNull => Bool(true),
        I::SqlSupportsConvert => Value::IntListMap(convert.clone()),
        I::SqlSupportsTableCorrelationNames => Bool(true),
        I::SqlSupportsDifferentTableCorrelationNames => Bool(false),
        I::SqlSupportsExpressionsInOrderBy => Bool(true),
        I::SqlSupportsOrderByUnrelated => Bool(true),
        I::SqlSupportedGroupBy => {
            bits(&[SqlSupportedGroupBy::SqlGroupByUnrelated as i32, SqlSupportedGroupBy::SqlGroupByBeyondSelect as i32])
        }
        I::SqlSupportsLikeEscapeClause => Bool(true),
        I::SqlSupportsNonNullableColumns => Bool(true),
        I::SqlSupportedGrammar => {
            bits(&[SupportedSqlGrammar::SqlMinimumGrammar as i32, SupportedSqlGrammar::SqlCoreGrammar as i32])
        }
        I::SqlAnsi92SupportedLevel => bits(&[ANSI92_ENTRY_SQL]),
        I::SqlSupportsIntegrityEnhancementFacility => Bool(false),
        // LEFT, RIGHT and FULL OUTER JOIN. A bitmask (see the module docs); JDBC expects the
        // limited bit whenever full outer joins are supported.
        I::SqlOuterJoinsSupportLevel => bits(&[
            SqlOuterJoinsSupportLevel::SqlLimitedOuterJoins as i32,
            SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
        ]),
        I::SqlSchemaTerm => Str("schema".to_owned()),
        I::SqlProcedureTerm => Str("procedure".to_owned()),
        I::SqlCatalogTerm => Str("catalog".to_owned()),
        I::SqlCatalogAtStart => Bool(true),
        // No procedures, no indexes, no GRANT: no element action applies.
        I::SqlSchemasSupportedActions => Int32(0),
        I::SqlCatalogsSupportedActions => Int32(0),
        I::SqlSupportedPositionedCommands => Int32(0),
        I::SqlSelectForUpdateSupported => Bool(false),
        I::SqlStoredProceduresSupported => Bool(false),
        I::SqlSupportedSubqueries => bits(&[
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
            SqlSupportedSubqueries::SqlSubqueriesInQuantifieds as i32,
        ]),
        I::SqlCorrelatedSubqueriesSupported => Bool(true),
        I::SqlSupportedUnions => bits(&[SqlSupportedUnions::SqlUnion as i32, SqlSupportedUnions::SqlUnionAll as i32]),

        // ---- Limits: 0 means no (known) limit ----
        I::SqlMaxBinaryLiteralLength
        | I::SqlMaxCharLiteralLength
        | I::SqlMaxColumnNameLength
        | I::SqlMaxColumnsInGroupBy
        | I::SqlMaxColumnsInIndex
        | I::SqlMaxColumnsInOrderBy
        | I::SqlMaxColumnsInSelect
        | I::SqlMaxColumnsInTable
        | I::SqlMaxConnections
        | I::SqlMaxCursorNameLength
        | I::SqlMaxIndexLength
        | I::SqlDbSchemaNameLength
        | I::SqlMaxProcedureNameLength
        | I::SqlMaxCatalogNameLength
        | I::SqlMaxRowSize
        | I::SqlMaxStatementLength
        | I::SqlMaxStatements
        | I::SqlMaxTableNameLength
        | I::SqlMaxTablesInSelect
        | I::SqlMaxUsernameLength => BigInt(0),
        // A boolean despite its neighbours; moot without a row-size limit.
        I::SqlMaxRowSizeIncludesBlobs => Bool(false),

        // ---- Transactions: none ----
        // Sent as int64: see the module docs.
        I::SqlDefaultTransactionIsolation => BigInt(SqlTransactionIsolationLevel::SqlTransactionNone as i64),
        I::SqlTransactionsSupported => Bool(false),
        I::SqlSupportedTransactionsIsolationLevels => Int32(0),
        I::SqlDataDefinitionCausesTransactionCommit => Bool(false),
        I::SqlDataDefinitionsInTransactionsIgnored => Bool(false),

        // ---- Result sets: streamed, forward-only, read-only ----
        I::SqlSupportedResultSetTypes => bits(&[SqlSupportedResultSetType::SqlResultSetTypeForwardOnly as i32]),
        I::SqlSupportedConcurrenciesForResultSetUnspecified => Int32(0),
        I::SqlSupportedConcurrenciesForResultSetForwardOnly => {
            bits(&[SqlSupportedResultSetConcurrency::SqlResultSetConcurrencyReadOnly as i32])
        }
        I::SqlSupportedConcurrenciesForResultSetScrollSensitive => Int32(0),
        I::SqlSupportedConcurrenciesForResultSetScrollInsensitive => Int32(0),

        // ---- Misc ----
        // A prepared update runs once per bound parameter row.
        I::SqlBatchUpdatesSupported => Bool(true),
        I::SqlSavepointsSupported => Bool(false),
        I::SqlNamedParametersSupported => Bool(false),
        I::SqlLocatorsUpdateCopy => Bool(false),
        I::SqlStoredFunctionsUsingCallSyntaxSupported => Bool(false),
    }
}

/// The Arrow type a column of SQL type `c` typically has (the source side of a conversion).
fn source_type(c: SqlSupportsConvert) -> DataType {
    use SqlSupportsConvert as C;
    match c {
        C::SqlConvertBigint => DataType::Int64,
        C::SqlConvertBinary => DataType::FixedSizeBinary(16),
        C::SqlConvertBit => DataType::Boolean,
        C::SqlConvertChar | C::SqlConvertVarchar => DataType::Utf8,
        C::SqlConvertDate => DataType::Date32,
        C::SqlConvertDecimal | C::SqlConvertNumeric => DataType::Decimal128(38, 10),
        C::SqlConvertFloat | C::SqlConvertReal => DataType::Float32,
        C::SqlConvertInteger => DataType::Int32,
        C::SqlConvertIntervalDayTime => DataType::Interval(IntervalUnit::DayTime),
        C::SqlConvertIntervalYearMonth => DataType::Interval(IntervalUnit::YearMonth),
        C::SqlConvertLongvarbinary => DataType::LargeBinary,
        C::SqlConvertLongvarchar => DataType::LargeUtf8,
        C::SqlConvertSmallint => DataType::Int16,
        C::SqlConvertTime => DataType::Time64(TimeUnit::Nanosecond),
        C::SqlConvertTimestamp => DataType::Timestamp(TimeUnit::Nanosecond, None),
        C::SqlConvertTinyint => DataType::Int8,
        C::SqlConvertVarbinary => DataType::Binary,
    }
}

/// The Arrow type DataFusion's `CAST(.. AS <type>)` produces for SQL type `c`, if the type can
/// be named in a cast at all (fixed-length BINARY cannot).
fn target_type(c: SqlSupportsConvert) -> Option<DataType> {
    use SqlSupportsConvert as C;
    Some(match c {
        C::SqlConvertBinary => return None,
        // CHAR, VARCHAR and TEXT all plan to Utf8View by default.
        C::SqlConvertChar | C::SqlConvertVarchar | C::SqlConvertLongvarchar => DataType::Utf8View,
        // BYTEA.
        C::SqlConvertVarbinary | C::SqlConvertLongvarbinary => DataType::Binary,
        // INTERVAL is always month-day-nano.
        C::SqlConvertIntervalDayTime | C::SqlConvertIntervalYearMonth => DataType::Interval(IntervalUnit::MonthDayNano),
        other => source_type(other),
    })
}

/// Whether DataFusion's CAST takes `src` to `dst`. `can_cast_types` is what CAST planning asks,
/// but it over-promises for a few pairs (intervals to integers in arrow 59), so the kernel is
/// also run on a one-row null array, which exercises the type dispatch.
fn casts(src: &DataType, dst: &DataType) -> bool {
    can_cast_types(src, dst) && cast(&new_null_array(src, 1), dst).is_ok()
}

/// `SQL_SUPPORTS_CONVERT`: for each SQL type, the SQL types a value of it can be CAST to, as
/// decided by the same Arrow cast kernel DataFusion's CAST uses.
fn supported_conversions() -> BTreeMap<i32, Vec<i32>> {
    let all: Vec<SqlSupportsConvert> = (0..64).filter_map(|v| SqlSupportsConvert::try_from(v).ok()).collect();
    all.iter()
        .map(|&from| {
            let src = source_type(from);
            let to = all
                .iter()
                .filter(|&&to| target_type(to).is_some_and(|dst| casts(&src, &dst)))
                .map(|&to| to as i32)
                .collect();
            (from as i32, to)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Array, BooleanArray, Int32Array, Int64Array, ListArray, MapArray, RecordBatch, StringArray, UInt32Array,
        UnionArray,
    };
    use datafusion::prelude::SessionContext;

    fn data() -> SqlInfoData {
        sql_info_data("1.2.3").expect("sql info builds")
    }

    fn row(info: SqlInfo) -> RecordBatch {
        let batch = data().record_batch([info as u32]).expect("filter");
        assert_eq!(batch.num_rows(), 1, "{info:?}");
        batch
    }

    /// The union child type id of `info`'s value, and the offset into that child.
    fn union_slot(batch: &RecordBatch) -> (i8, usize, UnionArray) {
        let union = batch.column(1).as_any().downcast_ref::<UnionArray>().expect("dense union").clone();
        let type_id = union.type_id(0);
        let offset = union.value_offset(0);
        (type_id, offset, union)
    }

    fn string_value(info: SqlInfo) -> String {
        let (type_id, offset, union) = union_slot(&row(info));
        assert_eq!(type_id, 0, "{info:?} is not a string");
        let child = union.child(type_id).as_any().downcast_ref::<StringArray>().expect("utf8").clone();
        child.value(offset).to_owned()
    }

    fn bool_value(info: SqlInfo) -> bool {
        let (type_id, offset, union) = union_slot(&row(info));
        assert_eq!(type_id, 1, "{info:?} is not a bool");
        union.child(type_id).as_any().downcast_ref::<BooleanArray>().expect("bool").value(offset)
    }

    fn bigint_value(info: SqlInfo) -> i64 {
        let (type_id, offset, union) = union_slot(&row(info));
        assert_eq!(type_id, 2, "{info:?} is not an int64");
        union.child(type_id).as_any().downcast_ref::<Int64Array>().expect("int64").value(offset)
    }

    fn int32_value(info: SqlInfo) -> i32 {
        let (type_id, offset, union) = union_slot(&row(info));
        assert_eq!(type_id, 3, "{info:?} is not an int32");
        union.child(type_id).as_any().downcast_ref::<Int32Array>().expect("int32").value(offset)
    }

    fn list_value(info: SqlInfo) -> Vec<String> {
        let (type_id, offset, union) = union_slot(&row(info));
        assert_eq!(type_id, 4, "{info:?} is not a string list");
        let list = union.child(type_id).as_any().downcast_ref::<ListArray>().expect("list").value(offset);
        let strings = list.as_any().downcast_ref::<StringArray>().expect("utf8 items");
        strings.iter().map(|s| s.expect("no null items").to_owned()).collect()
    }

    fn variant_count() -> usize {
        (0..=1000).filter(|&id| SqlInfo::try_from(id).is_ok()).count()
    }

    #[test]
    fn every_sql_info_id_has_a_value() {
        let data = data();
        let mut seen = 0;
        for id in 0..=1000 {
            if let Ok(info) = SqlInfo::try_from(id) {
                let batch = data.record_batch([id as u32]).expect("filter");
                assert_eq!(batch.num_rows(), 1, "no value for {info:?} ({id})");
                let names = batch.column(0).as_any().downcast_ref::<UInt32Array>().expect("u32 names");
                assert_eq!(names.value(0), id as u32);
                seen += 1;
            }
        }
        // The proto defines 91 ids today; more is fine, fewer means the loop broke.
        assert!(seen >= 91, "only {seen} SqlInfo ids found");
    }

    #[test]
    fn empty_request_returns_all_ids() {
        let batch = data().record_batch(Vec::<u32>::new()).expect("all");
        assert_eq!(batch.num_rows(), variant_count());
        assert_eq!(batch.schema().as_ref(), SqlInfoDataBuilder::schema());
    }

    #[test]
    fn identification_values() {
        assert_eq!(string_value(SqlInfo::FlightSqlServerName), "Quiver");
        assert_eq!(string_value(SqlInfo::FlightSqlServerVersion), "1.2.3");
        assert_eq!(string_value(SqlInfo::FlightSqlServerArrowVersion), ARROW_VERSION);
        assert!(!bool_value(SqlInfo::FlightSqlServerReadOnly));
        assert!(bool_value(SqlInfo::FlightSqlServerSql));
        assert!(!bool_value(SqlInfo::FlightSqlServerSubstrait));
        assert_eq!(string_value(SqlInfo::SqlIdentifierQuoteChar), "\"");
        assert_eq!(string_value(SqlInfo::SqlSearchStringEscape), "\\");
        assert_eq!(int32_value(SqlInfo::FlightSqlServerTransaction), SqlSupportedTransaction::None as i32);
    }

    #[test]
    fn arrow_version_matches_cargo_lock() {
        let lock = include_str!("../../Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|package| package.contains("\nname = \"arrow\"\n"))
            .and_then(|package| package.lines().find_map(|line| line.strip_prefix("version = ")))
            .expect("arrow in Cargo.lock");
        assert_eq!(locked.trim_matches('"'), ARROW_VERSION, "update ARROW_VERSION with the arrow upgrade");
    }

    #[test]
    fn client_decoded_types() {
        // JDBC reads these as Long, ODBC as int64.
        assert_eq!(bigint_value(SqlInfo::SqlDefaultTransactionIsolation), 0);
        assert_eq!(bigint_value(SqlInfo::SqlIdentifierCase), 3);
        assert_eq!(bigint_value(SqlInfo::SqlQuotedIdentifierCase), 0);
        assert_eq!(bigint_value(SqlInfo::SqlNullOrdering), 0);
        assert_eq!(bigint_value(SqlInfo::SqlMaxColumnsInSelect), 0);
        assert!(!bool_value(SqlInfo::SqlMaxRowSizeIncludesBlobs));
        // Bitmasks.
        assert_eq!(int32_value(SqlInfo::SqlOuterJoinsSupportLevel), 0b110);
        assert_eq!(int32_value(SqlInfo::SqlSupportedGroupBy), 0b11);
        assert_eq!(int32_value(SqlInfo::SqlSupportedSubqueries), 0b1111);
        assert_eq!(int32_value(SqlInfo::SqlSupportedUnions), 0b11);
        assert_eq!(int32_value(SqlInfo::SqlSupportedResultSetTypes), 0b10);
        assert_eq!(int32_value(SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly), 0b10);
        assert_eq!(int32_value(SqlInfo::SqlSupportedGrammar), 0b11);
        assert_eq!(int32_value(SqlInfo::SqlAnsi92SupportedLevel), 0b1);
        assert_eq!(int32_value(SqlInfo::SqlSupportedTransactionsIsolationLevels), 0);
        assert_eq!(int32_value(SqlInfo::FlightSqlServerStatementTimeout), 0);
    }

    #[test]
    fn function_lists_name_registered_datafusion_functions() {
        let state = SessionContext::new().state();
        let registered = state.scalar_functions();
        for list in [
            SqlInfo::SqlNumericFunctions,
            SqlInfo::SqlStringFunctions,
            SqlInfo::SqlSystemFunctions,
            SqlInfo::SqlDatetimeFunctions,
        ] {
            let names = list_value(list);
            assert!(!names.is_empty(), "{list:?}");
            for name in names {
                assert_eq!(name, name.to_uppercase());
                assert!(registered.contains_key(&name.to_lowercase()), "{list:?}: {name} is not a DataFusion function");
            }
        }
    }

    #[test]
    fn keywords_are_parser_keywords() {
        let parser_keywords = datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
        for keyword in list_value(SqlInfo::SqlKeywords) {
            assert!(parser_keywords.contains(&keyword.as_str()), "{keyword} is not a sqlparser keyword");
        }
    }

    #[test]
    fn conversions_follow_datafusion_casts() {
        let map = supported_conversions();
        let to = |from: SqlSupportsConvert| map.get(&(from as i32)).cloned().unwrap_or_default();
        use SqlSupportsConvert as C;
        assert!(to(C::SqlConvertVarchar).contains(&(C::SqlConvertInteger as i32)));
        assert!(to(C::SqlConvertVarchar).contains(&(C::SqlConvertTimestamp as i32)));
        assert!(to(C::SqlConvertInteger).contains(&(C::SqlConvertVarchar as i32)));
        assert!(to(C::SqlConvertInteger).contains(&(C::SqlConvertDecimal as i32)));
        assert!(to(C::SqlConvertTimestamp).contains(&(C::SqlConvertDate as i32)));
        assert!(to(C::SqlConvertBit).contains(&(C::SqlConvertInteger as i32)));
        // Nothing can be cast to fixed-length BINARY: the type has no SQL name in DataFusion.
        assert!(map.values().all(|targets| !targets.contains(&(C::SqlConvertBinary as i32))));
        // Every SqlSupportsConvert value is a key.
        assert_eq!(map.len(), (0..64).filter(|&v| SqlSupportsConvert::try_from(v).is_ok()).count());

        // And it is what the SQL_SUPPORTS_CONVERT row carries.
        let (type_id, offset, union) = union_slot(&row(SqlInfo::SqlSupportsConvert));
        assert_eq!(type_id, 5);
        let sent = union.child(type_id).as_any().downcast_ref::<MapArray>().expect("map").value(offset);
        assert_eq!(sent.len(), map.len());
    }

    /// SQL type name DataFusion accepts in `CAST(.. AS <name>)` for each target.
    fn cast_name(c: SqlSupportsConvert) -> &'static str {
        use SqlSupportsConvert as C;
        match c {
            C::SqlConvertBigint => "BIGINT",
            C::SqlConvertBinary => unreachable!("not a cast target"),
            C::SqlConvertBit => "BOOLEAN",
            C::SqlConvertChar => "CHAR",
            C::SqlConvertDate => "DATE",
            C::SqlConvertDecimal => "DECIMAL(38, 10)",
            C::SqlConvertFloat => "FLOAT",
            C::SqlConvertInteger => "INTEGER",
            C::SqlConvertIntervalDayTime | C::SqlConvertIntervalYearMonth => "INTERVAL",
            C::SqlConvertLongvarbinary | C::SqlConvertVarbinary => "BYTEA",
            C::SqlConvertLongvarchar => "TEXT",
            C::SqlConvertNumeric => "NUMERIC(38, 10)",
            C::SqlConvertReal => "REAL",
            C::SqlConvertSmallint => "SMALLINT",
            C::SqlConvertTime => "TIME",
            C::SqlConvertTimestamp => "TIMESTAMP",
            C::SqlConvertTinyint => "TINYINT",
            C::SqlConvertVarchar => "VARCHAR",
        }
    }

    /// Every advertised conversion plans and runs as a DataFusion CAST on a column.
    #[tokio::test]
    async fn advertised_conversions_run_in_datafusion() {
        use datafusion::arrow::datatypes::{Field, Schema};
        use std::sync::Arc;

        let map = supported_conversions();
        let sources: Vec<SqlSupportsConvert> =
            map.keys().map(|&k| SqlSupportsConvert::try_from(k).expect("key")).collect();
        let fields: Vec<Field> =
            sources.iter().map(|&s| Field::new(format!("c{}", s as i32), source_type(s), true)).collect();
        let columns = fields.iter().map(|f| new_null_array(f.data_type(), 1)).collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch");
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch).expect("register");
        let mut failures = Vec::new();
        for (from, targets) in &map {
            for &to in targets {
                let to = SqlSupportsConvert::try_from(to).expect("target");
                let sql = format!("SELECT CAST(c{from} AS {}) FROM t", cast_name(to));
                let result = match ctx.sql(&sql).await {
                    Ok(df) => df.collect().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    failures.push(format!("{sql}: {e}"));
                }
            }
        }
        assert!(failures.is_empty(), "advertised but failing:\n{}", failures.join("\n"));
    }
}
