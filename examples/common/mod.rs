//! Shared bits of the example programs: flags, JSON lines, a stderr logger.
//! Only the crate's public API is used.
#![allow(dead_code)] // each example uses a different subset

use std::fmt::Write as _;
use std::io::Write as _;

use fcm_xmpp::{Config, Endpoint};

/// Command-line flags as `(name, value)` pairs, in order; `--flag` without a
/// value (when the next word is another flag or absent) gets `""`.
pub struct Args {
    pub pairs: Vec<(String, String)>,
}

impl Args {
    pub fn parse(boolean: &[&str]) -> Result<Args, String> {
        let mut pairs = Vec::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if let Some((n, v)) = name.split_once('=') {
                pairs.push((n.to_string(), v.to_string()));
            } else if boolean.contains(&name) {
                pairs.push((name.to_string(), String::new()));
            } else {
                let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                pairs.push((name.to_string(), v));
            }
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

    pub fn check_known(&self, known: &[&str]) -> Result<(), String> {
        for (n, _) in &self.pairs {
            if !known.contains(&n.as_str()) {
                return Err(format!("unknown flag --{n}"));
            }
        }
        Ok(())
    }

    pub fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: not a number: {v:?}")),
        }
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

/// Logs to stderr; level from `FCM_LOG` (error, warn, info, debug, trace; default warn).
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("[{}] {}: {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

pub fn init_logging() {
    let level = match std::env::var("FCM_LOG").as_deref() {
        Ok("error") => log::LevelFilter::Error,
        Ok("info") => log::LevelFilter::Info,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        Ok("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Warn,
    };
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
