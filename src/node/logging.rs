//! Log output: tracing with the node id on every line, as text or JSON.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Returns a handle that changes the filter at run time, and
/// a guard that flushes what is still queued when dropped (keep it until the node stops).
///
/// Lines are written by a thread of their own: a write to a log file can block while the file
/// system commits other processes' data (the log thread waiting in ext4 under heavy fsync load),
/// and the async runtime's worker threads should not wait with it. The queue holds 128k lines;
/// beyond that a writer waits rather than drop a line.
pub fn init(
    node_id: &str,
    filter: &str,
    json: bool,
) -> (FilterHandle, tracing_appender::non_blocking::WorkerGuard) {
    use tracing_subscriber::prelude::*;
    let filter_text = filter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let format = NodeFormat {
        node_id: node_id.to_string(),
        json,
        text: Format::default(),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("torua-log")
        .finish(std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .event_format(format);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(ErrorCounter)
        .try_init();
    let handle = FilterHandle {
        handle,
        current: std::sync::Arc::new(std::sync::Mutex::new(filter_text.to_string())),
    };
    (handle, guard)
}

static ERRORS: AtomicU64 = AtomicU64::new(0);

/// Error-level events logged since start (reported in health reports).
pub fn errors_total() -> u64 {
    ERRORS.load(Ordering::Relaxed)
}

/// Counts error events (that pass the filter) for [`errors_total`].
struct ErrorCounter;

impl<S: Subscriber> tracing_subscriber::Layer<S> for ErrorCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            ERRORS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Changes the log filter of a running node.
#[derive(Clone)]
pub struct FilterHandle {
    handle: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    current: std::sync::Arc<std::sync::Mutex<String>>,
}

impl FilterHandle {
    pub fn set(&self, filter: &str) -> Result<(), crate::error::Error> {
        use crate::error::Error;
        let f = EnvFilter::try_new(filter)
            .map_err(|e| Error::Invalid(format!("bad log filter {filter:?}: {e}")))?;
        self.handle
            .reload(f)
            .map_err(|e| Error::Internal(format!("the log filter could not be changed: {e}")))?;
        *self.current.lock().expect("filter lock") = filter.to_string();
        Ok(())
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.current.lock().expect("filter lock").clone()
    }
}

/// Prefixes every text line with `node=<id>`, or writes one JSON object per event with a
/// `node_id` field.
struct NodeFormat {
    node_id: String,
    json: bool,
    text: Format<Full>,
}

impl<S, N> FormatEvent<S, N> for NodeFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if !self.json {
            write!(writer, "node={} ", self.node_id)?;
            return self.text.format_event(ctx, writer, event);
        }
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let meta = event.metadata();
        let mut obj = serde_json::Map::new();
        obj.insert(
            "ts".into(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());
        obj.insert("node_id".into(), self.node_id.clone().into());
        obj.extend(fields.0);
        writeln!(writer, "{}", serde_json::Value::Object(obj))
    }
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[allow(dead_code)]
type _Fields = DefaultFields;
