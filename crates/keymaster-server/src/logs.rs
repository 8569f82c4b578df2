//! The log stream on stderr: text for people, or one JSON object a line for a log collector
//! (`log_format`).
//!
//! The JSON lines are those of tracing-subscriber's JSON format, with the event's fields and the
//! fields of every span the event sits in (the request span's `request_id`, `method`, `path`)
//! moved to the top level, so that a collector can index them without knowing the span names.
//! What goes into a span or an event is decided where they are made (never a code, token or
//! key); this module only lays the lines out.

use std::fmt;

use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the process's log subscriber on stderr; the level comes from `RUST_LOG` (default
/// `info`). Does nothing if one is installed already (tests that start several servers).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(TopLevelJson::default())
            .try_init(),
    };
}

/// tracing-subscriber's JSON line with the event's and its spans' fields at the top level.
struct TopLevelJson {
    inner: Format<Json>,
}

impl Default for TopLevelJson {
    fn default() -> Self {
        TopLevelJson {
            inner: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true),
        }
    }
}

impl<S, N> FormatEvent<S, N> for TopLevelJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(object)) => {
                writeln!(writer, "{}", Value::Object(hoist_span_fields(object)))
            }
            // The inner format always writes one object; should it not, the line still goes out.
            _ => writer.write_str(&line),
        }
    }
}

/// Moves the fields of the `spans` list (root first) to the top level of `line`. The event's
/// own fields and the line's `timestamp`, `level`, `message` and `target` win over a span field
/// of the same name, and an inner span's field over an outer one's; span names are dropped.
fn hoist_span_fields(mut line: Map<String, Value>) -> Map<String, Value> {
    if let Some(Value::Array(spans)) = line.remove("spans") {
        for span in spans.into_iter().rev() {
            let Value::Object(fields) = span else {
                continue;
            };
            for (name, value) in fields {
                if name != "name" && !line.contains_key(&name) {
                    line.insert(name, value);
                }
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_fields_move_to_the_top_level_and_the_event_wins() {
        let line = serde_json::json!({
            "timestamp": "t", "level": "INFO", "message": "m", "path": "/event",
            "spans": [
                {"name": "outer", "request_id": "outer-id", "path": "/outer"},
                {"name": "request", "request_id": "r-1", "method": "GET"}
            ]
        });
        let Value::Object(line) = line else {
            unreachable!()
        };
        let out = Value::Object(hoist_span_fields(line));
        assert_eq!(
            out,
            serde_json::json!({
                "timestamp": "t", "level": "INFO", "message": "m", "path": "/event",
                "request_id": "r-1", "method": "GET"
            })
        );
    }
}
