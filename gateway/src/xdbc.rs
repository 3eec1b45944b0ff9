//! Flight SQL `GetXdbcTypeInfo` metadata: the SQL types DataFusion accepts, described as
//! ODBC/JDBC type-info rows.
//!
//! Type names are the ones DataFusion's SQL planner accepts in `CAST` and `CREATE TABLE`
//! (so BYTEA, not VARBINARY, which it rejects). Unsigned integers, nested types and
//! `TIMESTAMP WITH TIME ZONE` (which needs a session time zone) are left out: they have no
//! ODBC type code of their own.

use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};
use datafusion::arrow::error::ArrowError;

/// Largest DECIMAL precision (and scale) advertised: Decimal128's. DataFusion also plans
/// precisions up to 76 as Decimal256, which few clients decode.
const MAX_DECIMAL_PRECISION: i32 = 38;

/// Builds the `GetXdbcTypeInfo` answer. Build it once and serve it with
/// `CommandGetXdbcTypeInfo::into_builder`, which filters on the requested data type.
pub fn xdbc_type_info_data() -> Result<XdbcTypeInfoData, ArrowError> {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for info in type_infos() {
        builder.append(info);
    }
    builder.build().map_err(|e| match e {
        FlightError::Arrow(e) => e,
        other => ArrowError::ExternalError(Box::new(other)),
    })
}

/// A row with the fields every type shares filled in: nullable, not case-sensitive,
/// comparable with `=`/`<` but not `LIKE`, no literal syntax, no parameters.
fn base(type_name: &str, data_type: XdbcDataType) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: type_name.to_owned(),
        data_type,
        column_size: None,
        literal_prefix: None,
        literal_suffix: None,
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: false,
        searchable: Searchable::Basic,
        unsigned_attribute: None,
        fixed_prec_scale: false,
        auto_increment: None,
        local_type_name: Some(type_name.to_owned()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: None,
        interval_precision: None,
    }
}

/// An exact numeric type: `column_size` decimal digits, signed, radix 10.
fn exact(type_name: &str, data_type: XdbcDataType, digits: i32, max_scale: i32) -> XdbcTypeInfo {
    XdbcTypeInfo {
        column_size: Some(digits),
        unsigned_attribute: Some(false),
        auto_increment: Some(false),
        minimum_scale: Some(0),
        maximum_scale: Some(max_scale),
        num_prec_radix: Some(10),
        ..base(type_name, data_type)
    }
}

/// An approximate numeric type: `bits` binary digits of mantissa, radix 2 (as ODBC asks for
/// approximate types).
fn approximate(type_name: &str, data_type: XdbcDataType, bits: i32) -> XdbcTypeInfo {
    XdbcTypeInfo {
        column_size: Some(bits),
        unsigned_attribute: Some(false),
        auto_increment: Some(false),
        num_prec_radix: Some(2),
        ..base(type_name, data_type)
    }
}

/// A date/time type: ODBC's concise `data_type`, with `sql_data_type` DATETIME and a subcode.
fn datetime(
    type_name: &str,
    data_type: XdbcDataType,
    subcode: XdbcDatetimeSubcode,
    chars: i32,
    scales: Option<(i32, i32)>,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        column_size: Some(chars),
        literal_prefix: Some(format!("{type_name} '")),
        literal_suffix: Some("'".to_owned()),
        minimum_scale: scales.map(|(min, _)| min),
        maximum_scale: scales.map(|(_, max)| max),
        sql_data_type: XdbcDataType::XdbcDatetime,
        datetime_subcode: Some(subcode),
        ..base(type_name, data_type)
    }
}

fn type_infos() -> Vec<XdbcTypeInfo> {
    use XdbcDataType as T;
    vec![
        XdbcTypeInfo { column_size: Some(1), ..base("BOOLEAN", T::XdbcBit) },
        exact("TINYINT", T::XdbcTinyint, 3, 0),
        exact("SMALLINT", T::XdbcSmallint, 5, 0),
        exact("INTEGER", T::XdbcInteger, 10, 0),
        exact("BIGINT", T::XdbcBigint, 19, 0),
        XdbcTypeInfo {
            create_params: Some(vec!["precision".to_owned(), "scale".to_owned()]),
            ..exact("DECIMAL", T::XdbcDecimal, MAX_DECIMAL_PRECISION, MAX_DECIMAL_PRECISION)
        },
        XdbcTypeInfo {
            create_params: Some(vec!["precision".to_owned(), "scale".to_owned()]),
            ..exact("NUMERIC", T::XdbcNumeric, MAX_DECIMAL_PRECISION, MAX_DECIMAL_PRECISION)
        },
        // REAL and FLOAT are both Float32 in DataFusion; DOUBLE is Float64.
        approximate("REAL", T::XdbcReal, 24),
        approximate("FLOAT", T::XdbcFloat, 24),
        approximate("DOUBLE", T::XdbcDouble, 53),
        XdbcTypeInfo {
            // No length limit; a declared VARCHAR(n) is accepted and not enforced.
            column_size: Some(i32::MAX),
            literal_prefix: Some("'".to_owned()),
            literal_suffix: Some("'".to_owned()),
            create_params: Some(vec!["length".to_owned()]),
            case_sensitive: true,
            searchable: Searchable::Full,
            ..base("VARCHAR", T::XdbcVarchar)
        },
        XdbcTypeInfo {
            column_size: Some(i32::MAX),
            literal_prefix: Some("X'".to_owned()),
            literal_suffix: Some("'".to_owned()),
            ..base("BYTEA", T::XdbcVarbinary)
        },
        // XDBC_SUBCODE_DATE shares value 1 with XDBC_SUBCODE_YEAR, which is the name prost kept.
        datetime("DATE", T::XdbcDate, XdbcDatetimeSubcode::XdbcSubcodeYear, 10, None),
        // Time64(ns): "HH:MM:SS.fffffffff", always nine fractional digits.
        datetime("TIME", T::XdbcTime, XdbcDatetimeSubcode::XdbcSubcodeTime, 18, Some((9, 9))),
        // Timestamp(ns) by default; TIMESTAMP(0|3|6|9) picks the unit.
        XdbcTypeInfo {
            create_params: Some(vec!["precision".to_owned()]),
            ..datetime("TIMESTAMP", T::XdbcTimestamp, XdbcDatetimeSubcode::XdbcSubcodeTimestamp, 29, Some((0, 9)))
        },
        // Interval(MonthDayNano): months, days and nanoseconds together, so no single ODBC
        // interval subcode describes it.
        XdbcTypeInfo {
            literal_prefix: Some("INTERVAL '".to_owned()),
            literal_suffix: Some("'".to_owned()),
            ..base("INTERVAL", T::XdbcInterval)
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int32Array, RecordBatch, StringArray};
    use datafusion::prelude::SessionContext;

    fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
        let array = batch.column_by_name(column).expect("column");
        let array = array.as_any().downcast_ref::<StringArray>().expect("utf8");
        array.iter().map(|v| v.map(str::to_owned)).collect()
    }

    fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i32>> {
        let array = batch.column_by_name(column).expect("column");
        let array = array.as_any().downcast_ref::<Int32Array>().expect("int32");
        array.iter().collect()
    }

    #[test]
    fn all_rows_build() {
        let data = xdbc_type_info_data().expect("builds");
        let batch = data.record_batch(None).expect("all");
        assert_eq!(batch.num_rows(), type_infos().len());
        let names: Vec<_> = strings(&batch, "type_name").into_iter().flatten().collect();
        for name in ["BOOLEAN", "INTEGER", "BIGINT", "DECIMAL", "DOUBLE", "VARCHAR", "BYTEA", "DATE", "TIMESTAMP"] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
        // Sorted by data_type, as ODBC's SQLGetTypeInfo requires.
        let data_types: Vec<_> = ints(&batch, "data_type").into_iter().flatten().collect();
        assert!(data_types.windows(2).all(|w| w[0] <= w[1]), "{data_types:?}");
    }

    #[test]
    fn filter_by_data_type_returns_only_that_type() {
        let data = xdbc_type_info_data().expect("builds");
        let batch = data.record_batch(Some(XdbcDataType::XdbcInteger as i32)).expect("filter");
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(strings(&batch, "type_name"), vec![Some("INTEGER".to_owned())]);
        assert_eq!(ints(&batch, "data_type"), vec![Some(4)]);
        assert_eq!(ints(&batch, "num_prec_radix"), vec![Some(10)]);

        let batch = data.record_batch(Some(XdbcDataType::XdbcTimestamp as i32)).expect("filter");
        assert_eq!(strings(&batch, "type_name"), vec![Some("TIMESTAMP".to_owned())]);
        assert_eq!(ints(&batch, "sql_data_type"), vec![Some(XdbcDataType::XdbcDatetime as i32)]);
        assert_eq!(ints(&batch, "datetime_subcode"), vec![Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp as i32)]);

        let batch = data.record_batch(Some(XdbcDataType::XdbcVarchar as i32)).expect("filter");
        assert_eq!(strings(&batch, "literal_prefix"), vec![Some("'".to_owned())]);
        assert_eq!(strings(&batch, "literal_suffix"), vec![Some("'".to_owned())]);

        let batch = data.record_batch(Some(XdbcDataType::XdbcWchar as i32)).expect("filter");
        assert_eq!(batch.num_rows(), 0);
    }

    /// Every advertised type name, and its literal syntax, is accepted by DataFusion.
    #[tokio::test]
    async fn datafusion_accepts_every_type_name_and_literal() {
        let ctx = SessionContext::new();
        let samples = [
            ("BOOLEAN", "true"),
            ("TINYINT", "1"),
            ("SMALLINT", "1"),
            ("INTEGER", "1"),
            ("BIGINT", "1"),
            ("DECIMAL", "1.5"),
            ("NUMERIC", "1.5"),
            ("REAL", "1.5"),
            ("FLOAT", "1.5"),
            ("DOUBLE", "1.5"),
            ("VARCHAR", "'abc'"),
            ("BYTEA", "X'00ff'"),
            ("DATE", "DATE '2024-01-31'"),
            ("TIME", "TIME '12:34:56.123456789'"),
            ("TIMESTAMP", "TIMESTAMP '2024-01-31 12:34:56.123456789'"),
            ("INTERVAL", "INTERVAL '1 day'"),
        ];
        assert_eq!(samples.len(), type_infos().len());
        for (type_name, literal) in samples {
            let sql = format!("SELECT CAST({literal} AS {type_name}) AS v");
            let df = ctx.sql(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            df.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        for sql in [
            "SELECT CAST(1.5 AS DECIMAL(10, 2))",
            "SELECT CAST('a' AS VARCHAR(10))",
            "SELECT CAST(now() AS TIMESTAMP(3))",
        ] {
            let df = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            df.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}
