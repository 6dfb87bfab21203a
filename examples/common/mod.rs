//! Shared bits of the example programs: one argument parser with `--help`,
//! the connection flags, JSON lines, durations for people, a stderr logger.
//! Only the crate's public API is used.
#![allow(dead_code)] // each example uses a different subset

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use fcm_xmpp::client::{Rejection, ReturnReason};
use fcm_xmpp::{Config, Endpoint, Timeouts};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: a fatal error or a usage error (one `error: ...` line on stderr).
pub const EXIT_FATAL: i32 = 1;
/// Exit code: the run finished but some messages were rejected or given up on.
pub const EXIT_REJECTED: i32 = 2;
/// Exit code: `echo_server --max-upstream` left with echoes still pending.
pub const EXIT_PENDING: i32 = 3;

/// One command-line flag, for the parser and for `--help`.
pub struct Flag {
    /// The name without the leading `--`.
    pub name: &'static str,
    /// The value's placeholder in `--help` (`N`, `PATH`); `None` for a switch.
    pub value: Option<&'static str>,
    /// The default shown by `--help`; empty for none.
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
}

impl Flag {
    /// A flag that takes a value.
    pub const fn value(
        name: &'static str,
        value: &'static str,
        default: &'static str,
        help: &'static str,
    ) -> Flag {
        Flag {
            name,
            value: Some(value),
            default,
            help,
        }
    }

    /// A switch (no value).
    pub const fn switch(name: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            value: None,
            default: "",
            help,
        }
    }
}

/// What `--help` prints and what the parser accepts.
pub struct Program {
    /// The program's name.
    pub name: &'static str,
    /// One paragraph: what it does.
    pub about: &'static str,
    /// The synopsis after the name.
    pub usage: &'static str,
    /// Groups of flags, each with a heading.
    pub groups: &'static [(&'static str, &'static [Flag])],
    /// Extra paragraphs after the flags (environment, output).
    pub notes: &'static str,
    /// The exit codes, one `(code, meaning)` per line.
    pub exits: &'static [(i32, &'static str)],
}

impl Program {
    fn flag(&self, name: &str) -> Option<&Flag> {
        self.groups
            .iter()
            .flat_map(|(_, flags)| flags.iter())
            .find(|f| f.name == name)
    }

    /// The `--help` text.
    pub fn help(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} - {}\n", self.name, self.about);
        let _ = writeln!(out, "usage: {} {}", self.name, self.usage);
        let groups = self
            .groups
            .iter()
            .chain(std::iter::once(&("\n", HELP_FLAGS)));
        // A group without a heading continues the one before; the help flag stands alone.
        for (heading, flags) in groups {
            match *heading {
                "" => {}
                "\n" => out.push('\n'),
                h => {
                    let _ = writeln!(out, "\n{h}:");
                }
            }
            for f in flags.iter() {
                let mut left = format!("--{}", f.name);
                if f.name == "help" {
                    left = "-h, --help".to_string();
                }
                if let Some(v) = f.value {
                    left.push(' ');
                    left.push_str(v);
                }
                let mut help = f.help.to_string();
                if !f.default.is_empty() {
                    let _ = write!(help, " (default {})", f.default);
                }
                let _ = writeln!(out, "  {left:<28}{help}");
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\n{}", self.notes.trim_end());
        }
        out.push_str("\nexit codes:\n");
        for (code, what) in self.exits {
            let _ = writeln!(out, "  {code}  {what}");
        }
        out
    }
}

const HELP_FLAGS: &[Flag] = &[Flag::switch("help", "print this help and exit")];

/// The connection flags of `fcm_send` and `echo_server`. `--max-connect-attempts`
/// is listed by each program (their defaults differ).
pub const CONNECTION_FLAGS: &[Flag] = &[
    Flag::value(
        "endpoint",
        "HOST:PORT",
        "fcm-xmpp.googleapis.com:5235",
        "the CCS server to dial",
    ),
    Flag::value(
        "domain",
        "NAME",
        "gcm.googleapis.com",
        "the XMPP domain of the sender's JID",
    ),
    Flag::value(
        "ca-file",
        "PEM",
        "",
        "trust the certificates in this PEM file too (a bundle adds each)",
    ),
    Flag::value(
        "sender-id",
        "ID",
        "",
        "the sender id (project number); required",
    ),
    Flag::value(
        "connect-timeout",
        "S",
        "10",
        "seconds for name lookup and the TCP connect",
    ),
    Flag::value(
        "handshake-timeout",
        "S",
        "20",
        "seconds for TLS + XMPP stream setup and authentication",
    ),
];

/// The environment lines of the `--help` of `fcm_send` and `echo_server`.
pub const CLIENT_NOTES: &str = "environment:
  FCM_SERVER_KEY  the server key (required; never taken from a flag, never printed)
  FCM_LOG         stderr log level: off, error, warn, info, debug, trace (default warn)";

/// Command-line flags as `(name, value)` pairs, in order. `--flag VALUE` and
/// `--flag=VALUE` both work; switches take no value. A value flag followed by
/// another `--word` (or by nothing) is an error, so is a flag the program does
/// not list, so is a word that is not a flag.
pub struct Args {
    pub pairs: Vec<(String, String)>,
}

/// The parser's verdict: flags, or a request for help.
pub enum Parsed {
    Args(Args),
    Help,
}

impl Args {
    /// Parses the process arguments for `program`: prints the help and exits 0
    /// on `-h`/`--help`, prints one `error:` line and exits 1 on a bad argument.
    pub fn parse(program: &Program) -> Args {
        match Args::parse_from(std::env::args().skip(1), program) {
            Ok(Parsed::Args(a)) => a,
            Ok(Parsed::Help) => {
                print!("{}", program.help());
                let _ = std::io::stdout().flush();
                std::process::exit(EXIT_OK)
            }
            Err(e) => die(format!("{e} (see {} --help)", program.name)),
        }
    }

    /// Parses `words` for `program`.
    pub fn parse_from(
        words: impl IntoIterator<Item = String>,
        program: &Program,
    ) -> Result<Parsed, String> {
        let mut pairs = Vec::new();
        let mut it = words.into_iter().peekable();
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                return Ok(Parsed::Help);
            }
            let Some(flag) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let Some(spec) = program.flag(name) else {
                return Err(format!("unknown flag --{name}"));
            };
            let value = match (inline, spec.value) {
                (Some(_), None) => return Err(format!("--{name} takes no value")),
                (Some(v), Some(_)) => v,
                (None, None) => String::new(),
                (None, Some(_)) => match it.next_if(|w| !w.starts_with("--")) {
                    Some(v) => v,
                    None => return Err(format!("--{name} needs a value")),
                },
            };
            pairs.push((name.to_string(), value));
        }
        Ok(Parsed::Args(Args { pairs }))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }

    pub fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: not a number: {v:?}")),
        }
    }

    /// A duration in seconds (fractions allowed), finite and not negative.
    pub fn seconds(&self, name: &str, default: f64) -> Result<Duration, String> {
        let secs: f64 = self.number(name, default)?;
        Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("--{name}: not a number of seconds: {secs}"))
    }

    /// Like [`Args::seconds`], `None` if the flag is absent.
    pub fn opt_seconds(&self, name: &str) -> Result<Option<Duration>, String> {
        match self.has(name) {
            true => self.seconds(name, 0.0).map(Some),
            false => Ok(None),
        }
    }

    /// Calls `die` with the error, or gives the value.
    pub fn or_die<T>(r: Result<T, String>) -> T {
        r.unwrap_or_else(|e| die(e))
    }
}

/// Parses `--endpoint`: only `HOST:PORT` (or `[IPV6]:PORT`); URLs and paths are refused
/// with what to write instead.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    if let Some((scheme, rest)) = text.split_once("://") {
        let hostport = rest.split('/').next().unwrap_or(rest);
        return Err(format!(
            "--endpoint wants HOST:PORT, not a URL: drop the {scheme}:// (e.g. --endpoint {hostport})"
        ));
    }
    if text.contains('/') {
        return Err(format!("--endpoint wants HOST:PORT, not a path: {text:?}"));
    }
    text.parse().map_err(|e| format!("--endpoint: {e}"))
}

/// The [`Config`] from the connection flags and `FCM_SERVER_KEY`, validated (the
/// `--ca-file` certificates are parsed here, so a bad file is refused before connecting).
pub fn config(args: &Args) -> Result<Config, String> {
    let sender = args.get("sender-id").ok_or("--sender-id is required")?;
    let key = std::env::var("FCM_SERVER_KEY").map_err(|_| {
        "the server key must be in the environment variable FCM_SERVER_KEY".to_string()
    })?;
    let mut config = Config::new(sender, key);
    if let Some(ep) = args.get("endpoint") {
        config = config.endpoint(parse_endpoint(ep)?);
    }
    if let Some(d) = args.get("domain") {
        config = config.domain(d);
    }
    if let Some(path) = args.get("ca-file") {
        config = config
            .add_root_pem_file(path)
            .map_err(|e| format!("--ca-file: {e}"))?;
    }
    let defaults = Timeouts::default();
    let connect = args.opt_seconds("connect-timeout")?;
    let handshake = args.opt_seconds("handshake-timeout")?;
    for (name, d) in [
        ("connect-timeout", connect),
        ("handshake-timeout", handshake),
    ] {
        if d == Some(Duration::ZERO) {
            return Err(format!("--{name}: must be more than 0 seconds"));
        }
    }
    config = config
        .connect_timeout(connect.or(defaults.connect))
        .handshake_timeout(handshake.or(defaults.handshake));
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// `--max-connect-attempts`: failed connection attempts in a row, before any connection
/// was established, that end the program; `None` for 0 (never give up).
pub fn max_connect_attempts(args: &Args, default: u32) -> Result<Option<u32>, String> {
    let n: u32 = args.number("max-connect-attempts", default)?;
    Ok((n > 0).then_some(n))
}

/// A duration for people: `250ms`, `1.2s`, `2m05s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// The `error` of a `nack` line for a rejected message: the NACK code, or
/// the stanza error condition.
pub fn rejection_code(reason: &Rejection) -> String {
    match reason {
        Rejection::Nack(n) => n.code.as_str().to_string(),
        Rejection::StanzaError(e) => e.condition.clone(),
        other => other.to_string(),
    }
}

/// The `error` of a `nack` line for a message given up on: the last NACK
/// code after the retries ran out, or the reason.
pub fn return_code(reason: &ReturnReason) -> String {
    match reason {
        ReturnReason::RetriesExhausted(c) => c.as_str().to_string(),
        other => other.to_string(),
    }
}

/// Buffered stdout for JSON lines: [`Out::flush`] when there is nothing more to
/// print right now (one write per batch, not per line).
pub struct Out(std::io::BufWriter<std::io::Stdout>);

impl Out {
    pub fn new() -> Out {
        Out(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ))
    }

    pub fn line(&mut self, line: &mut Line) {
        line.0.push_str("}\n");
        let _ = self.0.write_all(line.0.as_bytes());
    }

    pub fn flush(&mut self) {
        let _ = self.0.flush();
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One JSON object, built field by field, printed as one line.
pub struct Line(String);

impl Line {
    pub fn event(name: &str) -> Line {
        let mut l = Line(String::from("{"));
        l.str("event", name);
        l
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        quote(k, &mut self.0);
        self.0.push(':');
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        quote(v, &mut self.0);
        self
    }

    pub fn opt(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        self.key(k);
        match v {
            Some(v) => quote(v, &mut self.0),
            None => self.0.push_str("null"),
        }
        self
    }

    pub fn num(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    pub fn map<'a>(
        &mut self,
        k: &str,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> &mut Self {
        self.key(k);
        self.0.push('{');
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            quote(k, &mut self.0);
            self.0.push(':');
            quote(v, &mut self.0);
        }
        self.0.push('}');
        self
    }

    /// Prints the line on stdout at once (unbuffered).
    pub fn print(&mut self) {
        self.0.push('}');
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.0);
        let _ = out.flush();
    }
}

fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Logs to stderr; level from `FCM_LOG` (off, error, warn, info, debug,
/// trace; default warn).
///
/// By default the crate's own "client stopped: ..." error record is left out:
/// the programs report that error themselves, from the client's `Fatal`
/// event, as their one-line `error: ...` reason. Any `FCM_LOG` level shows it.
struct StderrLogger;

static QUIET_FATAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let text = r.args().to_string();
        if QUIET_FATAL.load(std::sync::atomic::Ordering::Relaxed)
            && r.level() == log::Level::Error
            && r.target().starts_with("fcm_xmpp::")
            && text.starts_with("client stopped:")
        {
            return;
        }
        eprintln!("[{}] {}: {text}", r.level(), r.target());
    }
    fn flush(&self) {}
}

/// The log level an `FCM_LOG` value names; `None` for an unknown value.
pub fn log_level(value: &str) -> Option<log::LevelFilter> {
    Some(match value.trim().to_ascii_lowercase().as_str() {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => return None,
    })
}

/// Installs the stderr logger; an unknown `FCM_LOG` value is reported (one
/// `warning:` line) and the default `warn` used.
pub fn init_logging() {
    let var = std::env::var("FCM_LOG").ok();
    let level = match var.as_deref().map(|v| (v, log_level(v))) {
        None => None,
        Some((_, Some(level))) => Some(level),
        Some((v, None)) => {
            eprintln!(
                "warning: FCM_LOG={v:?} is not a level (off, error, warn, info, debug, trace); using warn"
            );
            None
        }
    };
    QUIET_FATAL.store(level.is_none(), std::sync::atomic::Ordering::Relaxed);
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level.unwrap_or(log::LevelFilter::Warn));
    }
}

/// Prints the reason on stderr and exits 1.
pub fn die(reason: impl std::fmt::Display) -> ! {
    eprintln!("error: {reason}");
    std::process::exit(EXIT_FATAL)
}
