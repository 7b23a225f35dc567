//! Log lines on stderr, as text or as one JSON object per line
//! (`LOG_FORMAT`), with the structured fields (`conn`, `peer`, `worker`,
//! `topic`, `reason`, ...) that call sites attach through `log`'s key-value
//! syntax.
//!
//! Formatting a record is a pure function ([`format_line`]); only [`init`]
//! and [`announce`] touch the process.

use log::kv::{Key, Value, VisitSource};
use serde_json::{Map, Value as Json};
use std::io::Write;
use std::time::SystemTime;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the logger for the whole process.
pub fn init(level: log::LevelFilter, format: LogFormat) {
    env_logger::Builder::new()
        .filter_level(level)
        // tungstenite traces every frame and message it reads, a client's
        // tokens and payloads included: at most its debug lines are kept.
        .filter_module("tungstenite", level.min(log::LevelFilter::Debug))
        .format(move |out, record| {
            let fields = collect_fields(record.key_values());
            let line = format_line(
                format,
                SystemTime::now(),
                record.level(),
                &record.args().to_string(),
                &fields,
            );
            writeln!(out, "{line}")
        })
        .init();
}

/// Writes `msg` to stderr whatever the log level: for the lines a
/// supervisor must always see (`listening on ...`, fatal errors). As text
/// it is the bare message; as JSON, a log object at `level`.
pub fn announce(format: LogFormat, level: log::Level, msg: &str) {
    let line = match format {
        LogFormat::Text => msg.to_string(),
        LogFormat::Json => format_line(format, SystemTime::now(), level, msg, &[]),
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A record's key-value fields, in order, as JSON values.
fn collect_fields(source: &dyn log::kv::Source) -> Vec<(String, Json)> {
    struct Collect(Vec<(String, Json)>);
    impl<'kvs> VisitSource<'kvs> for Collect {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            let json = if let Some(n) = value.to_u64() {
                Json::from(n)
            } else if let Some(n) = value.to_i64() {
                Json::from(n)
            } else if let Some(b) = value.to_bool() {
                Json::from(b)
            } else if let Some(x) = value.to_f64() {
                Json::from(x)
            } else {
                Json::from(value.to_string())
            };
            self.0.push((key.as_str().to_string(), json));
            Ok(())
        }
    }
    let mut collect = Collect(Vec::new());
    let _ = source.visit(&mut collect);
    collect.0
}

/// One log line, without its newline.
pub fn format_line(
    format: LogFormat,
    at: SystemTime,
    level: log::Level,
    msg: &str,
    fields: &[(String, Json)],
) -> String {
    let ts = crate::protocol::timestamp(at);
    match format {
        LogFormat::Text => {
            let mut line = format!("{ts} {level:<5} {msg}");
            for (key, value) in fields {
                match value {
                    Json::String(s) => line.push_str(&format!(" {key}={s}")),
                    other => line.push_str(&format!(" {key}={other}")),
                }
            }
            line
        }
        LogFormat::Json => {
            let mut object = Map::new();
            object.insert("ts".into(), Json::from(ts));
            object.insert(
                "level".into(),
                Json::from(level.as_str().to_ascii_lowercase()),
            );
            object.insert("msg".into(), Json::from(msg));
            for (key, value) in fields {
                object.insert(key.clone(), value.clone());
            }
            Json::Object(object).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn json_lines_are_objects_with_the_fields() {
        let at = UNIX_EPOCH + Duration::from_millis(1_500);
        let fields = vec![
            ("conn".to_string(), Json::from("3.7")),
            ("messages_in".to_string(), Json::from(12u64)),
        ];
        let line = format_line(
            LogFormat::Json,
            at,
            log::Level::Info,
            "connection closed",
            &fields,
        );
        let v: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ts":"1970-01-01T00:00:01.500Z","level":"info","msg":"connection closed","conn":"3.7","messages_in":12})
        );
    }

    #[test]
    fn text_lines_append_key_value_pairs() {
        let fields = vec![
            ("reason".to_string(), Json::from("slow_consumer")),
            ("n".to_string(), Json::from(2u64)),
        ];
        let line = format_line(
            LogFormat::Text,
            UNIX_EPOCH,
            log::Level::Warn,
            "cut",
            &fields,
        );
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000Z WARN  cut reason=slow_consumer n=2"
        );
    }

    #[test]
    fn fields_keep_their_types() {
        let record_fields: [(&str, Value<'_>); 3] = [
            ("n", Value::from(5u64)),
            ("ok", Value::from(true)),
            ("s", Value::from("x")),
        ];
        let fields = collect_fields(&record_fields);
        assert_eq!(
            fields,
            vec![
                ("n".into(), Json::from(5u64)),
                ("ok".into(), Json::from(true)),
                ("s".into(), Json::from("x"))
            ]
        );
    }
}
