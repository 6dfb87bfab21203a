//! Shared bits of the example programs: flags, JSON lines, a stderr logger.
//! Only the crate's public API is used.
#![allow(dead_code)] // each example uses a different subset

use std::fmt::Write as _;
use std::io::Write as _;

use fcm_xmpp::client::{Rejection, ReturnReason};
use fcm_xmpp::{Config, Endpoint};

/// Command-line flags as `(name, value)` pairs, in order. `--flag VALUE` and
/// `--flag=VALUE` both work; flags listed as boolean take no value. A value
/// flag followed by another `--word` (or by nothing) is an error, so is a flag
/// not in `known`, so is a word that is not a flag.
pub struct Args {
    pub pairs: Vec<(String, String)>,
}

impl Args {
    /// Parses the process arguments.
    pub fn parse(known: &[&str], boolean: &[&str]) -> Result<Args, String> {
        Args::parse_from(std::env::args().skip(1), known, boolean)
    }

    pub fn parse_from(
        words: impl IntoIterator<Item = String>,
        known: &[&str],
        boolean: &[&str],
    ) -> Result<Args, String> {
        let mut pairs = Vec::new();
        let mut it = words.into_iter().peekable();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if !known.contains(&name) && !boolean.contains(&name) {
                return Err(format!("unknown flag --{name}"));
            }
            let value = match inline {
                Some(_) if boolean.contains(&name) => {
                    return Err(format!("--{name} takes no value"))
                }
                Some(v) => v,
                None if boolean.contains(&name) => String::new(),
                None => match it.next_if(|w| !w.starts_with("--")) {
                    Some(v) => v,
                    None => return Err(format!("--{name} needs a value")),
                },
            };
            pairs.push((name.to_string(), value));
        }
        Ok(Args { pairs })
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
    pub fn seconds(&self, name: &str, default: f64) -> Result<std::time::Duration, String> {
        let secs: f64 = self.number(name, default)?;
        std::time::Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("--{name}: not a number of seconds: {secs}"))
    }
}

/// The common flags: `--endpoint`, `--domain`, `--ca-file`, `--sender-id`;
/// the key comes only from `FCM_SERVER_KEY`.
pub const COMMON_FLAGS: &[&str] = &["endpoint", "domain", "ca-file", "sender-id"];

pub fn config(args: &Args) -> Result<Config, String> {
    let sender = args.get("sender-id").ok_or("--sender-id is required")?;
    let key = std::env::var("FCM_SERVER_KEY").map_err(|_| {
        "the server key must be in the environment variable FCM_SERVER_KEY".to_string()
    })?;
    let mut config = Config::new(sender, key);
    if let Some(ep) = args.get("endpoint") {
        let ep: Endpoint = ep.parse().map_err(|e| format!("--endpoint: {e}"))?;
        config = config.endpoint(ep);
    }
    if let Some(d) = args.get("domain") {
        config = config.domain(d);
    }
    if let Some(path) = args.get("ca-file") {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {path}: {e}"))?;
        config = config.add_root_pem(pem);
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
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
/// event, as their one-line `error: ...` reason. Any `FCM_LOG` value shows it.
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

pub fn init_logging() {
    let var = std::env::var("FCM_LOG").ok();
    let level = match var.as_deref() {
        Some("off") => log::LevelFilter::Off,
        Some("error") => log::LevelFilter::Error,
        Some("info") => log::LevelFilter::Info,
        Some("debug") => log::LevelFilter::Debug,
        Some("trace") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Warn,
    };
    QUIET_FATAL.store(var.is_none(), std::sync::atomic::Ordering::Relaxed);
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Prints the reason on stderr and exits 1.
pub fn die(reason: impl std::fmt::Display) -> ! {
    eprintln!("error: {reason}");
    std::process::exit(1)
}
