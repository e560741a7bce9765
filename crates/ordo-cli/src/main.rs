//! `ordo`: the order-surviving event consumer's command-line tool.
//!
//! Raw flags are parsed by clap into [`cli::Cli`]; each verb resolves them into its own
//! configuration (see `settings`) before doing any work. Exit codes: 0 ok, 1 the run
//! found a problem, 2 bad usage or input.

/// `println!` that ends the process quietly when stdout is closed (`ordo export | head`),
/// instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
}

mod append;
mod bench;
mod chaos;
mod cli;
mod console;
mod demo;
mod dlq;
mod export;
mod handler;
mod notices;
mod pause;
mod relay;
mod run;
mod settings;
mod status;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: ordo_bench::CountingAllocator = ordo_bench::CountingAllocator;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // clap's own exit code for usage errors is 2; help and version are 0.
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    let json_logs = cli.log_format == "json";
    init_logs(json_logs);
    if matches!(
        cli.command,
        cli::Command::Demo(_) | cli::Command::Run(_) | cli::Command::Relay(_)
    ) {
        // Consumers want flat latency: no 2 MiB page zeroed inside a delivery
        // (see `set_transparent_huge_pages`). `bench` turns them off after its core part.
        ordo_bench::alloc::set_transparent_huge_pages(false);
    }
    let result = match cli.command {
        cli::Command::Demo(args) => demo::run(args),
        cli::Command::Run(args) => run::run(args),
        cli::Command::Append(args) => append::run(args),
        cli::Command::Export(args) => export::run(args),
        cli::Command::Dlq { command } => match command {
            cli::DlqCommand::List(args) => dlq::list(args),
            cli::DlqCommand::Replay(args) => dlq::replay(args),
            cli::DlqCommand::Skip(args) => dlq::skip(args),
        },
        cli::Command::Parked { command } => match command {
            cli::ParkedCommand::List(args) => dlq::parked(args),
            cli::ParkedCommand::Skip(args) => dlq::parked_skip(args),
        },
        cli::Command::Pause(args) => pause::run(args, true),
        cli::Command::Resume(args) => pause::run(args, false),
        cli::Command::Notices(args) => notices::run(args),
        cli::Command::Status(args) => status::run(args),
        cli::Command::Console(args) => console::run(args),
        cli::Command::Relay(args) => relay::run(args),
        cli::Command::Chaos(args) => chaos::run(args),
        cli::Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) if broken_pipe(&error) => ExitCode::from(141),
        Err(error) => {
            tracing::error!("{}", error_text(&error));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, as `outer: cause: cause`. ordo's errors say their cause in
/// their own words and also keep it as their `source()`: a cause whose text (or its last
/// part, as in a driver's "Error code 26: file is not a database") the message says
/// already is not repeated.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        let last = said.rsplit(": ").next().unwrap_or(&said);
        if !text.is_empty() && (text.contains(&said) || text.contains(last)) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// Whether the output's reader went away (`ordo export | head`): a quiet end, as
/// [`outln!`] makes it, with the shell's code for SIGPIPE.
fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Library events (`tracing`) on stderr, as human lines or (`json`) one JSON object per
/// line with a timestamp; `ORDO_LOG` picks the level (error, warn, info, debug, trace;
/// default info).
fn init_logs(json: bool) {
    let level = std::env::var("ORDO_LOG")
        .ok()
        .and_then(|text| text.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Broker clients narrate their connections at info level: only their warnings are
    // the operator's business.
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target("async_nats", tracing::Level::WARN.min(level));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    if json {
        logs.json()
            .flatten_event(true)
            .finish()
            .with(targets)
            .init();
    } else {
        logs.event_format(Human).finish().with(targets).init();
    }
}

/// Human log lines as a CLI prints them: `ordo: what happened`, with `warning:` or
/// `error:` in front where it is one, and the event's fields after the message.
struct Human;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Human
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prefix = match *event.metadata().level() {
            tracing::Level::ERROR => "ordo: error: ",
            tracing::Level::WARN => "ordo: warning: ",
            _ => "ordo: ",
        };
        writer.write_str(prefix)?;
        context
            .field_format()
            .format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
