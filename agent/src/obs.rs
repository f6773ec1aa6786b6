//! The agent's log: `tracing` events written to standard error, which
//! systemd keeps in the journal (and, for the agent's unit, copies to the
//! serial console). One line per event: `strata: <message> key=value ...`,
//! with the level named when it is not INFO, and no time stamp (the journal
//! adds its own).
//!
//! The subscriber starts no thread, so the single-threaded processes (the
//! shim launcher and the shims, which must stay single-threaded to create
//! containers) may log through it too.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the log for this process (once; later calls do nothing). The
/// agent's own events from INFO up; the libraries' (hickory logs every DNS
/// query at INFO) from WARN up.
pub fn init() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let only_ours = tracing_subscriber::filter::Targets::new()
        .with_target("agent", Level::INFO)
        .with_default(Level::WARN);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .event_format(Line)
                .with_filter(only_ours),
        )
        .try_init();
}

/// `strata: [LEVEL ]message key=value ...`
struct Line;

impl<S, N> FormatEvent<S, N> for Line
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
        write!(writer, "strata: ")?;
        let level = *event.metadata().level();
        if level != Level::INFO {
            write!(writer, "{level} ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
