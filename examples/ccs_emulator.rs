//! A local CCS server: point any CCS client at it (TLS, trust the printed/written test CA).
//!
//! ```text
//! cargo run --example ccs_emulator --features emulator -- \
//!     --listen 127.0.0.1:5235 --sender-id 123456789012 --server-key KEY \
//!     --reject dead-token=DEVICE_UNREGISTERED --cert-out /tmp/ccs-emulator-ca.pem
//! ```
//!
//! Prints one line per event on stdout; runs until killed (Ctrl-C) or for `--duration SECS`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fcm_xmpp::{Emulator, NackCode};

const USAGE: &str = "usage: ccs_emulator [--listen ADDR] [--sender-id ID] [--server-key KEY]
                    [--reject TOKEN=CODE]... [--cert-out PATH] [--duration SECS]
                    [--keepalive SECS]

  --listen ADDR         where to listen (default 127.0.0.1:5235)
  --sender-id ID        sender id clients authenticate as (default 123456789012)
  --server-key KEY      server key clients must present (default: env FCM_SERVER_KEY,
                        else emulator-server-key)
  --reject TOKEN=CODE   NACK messages to TOKEN with CODE, e.g. DEVICE_UNREGISTERED
  --cert-out PATH       write the emulator's test CA certificate (PEM) to PATH
  --duration SECS       stop after SECS seconds (default: run until killed)
  --keepalive SECS      whitespace keepalive interval, 0 = off (default 30)";

struct Args {
    listen: SocketAddr,
    sender_id: String,
    server_key: Option<String>,
    reject: Vec<(String, NackCode)>,
    cert_out: Option<String>,
    duration: Option<Duration>,
    keepalive: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 5235)),
        sender_id: "123456789012".to_string(),
        server_key: None,
        reject: Vec::new(),
        cert_out: None,
        duration: None,
        keepalive: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                args.listen = v.parse().map_err(|e| format!("--listen {v:?}: {e}"))?;
            }
            "--sender-id" => args.sender_id = value()?,
            "--server-key" => args.server_key = Some(value()?),
            "--reject" => {
                let v = value()?;
                let (token, code) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--reject {v:?}: expected TOKEN=CODE"))?;
                if token.is_empty() || code.is_empty() {
                    return Err(format!("--reject {v:?}: expected TOKEN=CODE"));
                }
                args.reject
                    .push((token.to_string(), NackCode::from_code(code)));
            }
            "--cert-out" => args.cert_out = Some(value()?),
            "--duration" => {
                let v = value()?;
                let secs: f64 = v.parse().map_err(|e| format!("--duration {v:?}: {e}"))?;
                if !(secs.is_finite() && secs >= 0.0) {
                    return Err(format!("--duration {v:?}: must be a number of seconds"));
                }
                args.duration = Some(Duration::from_secs_f64(secs));
            }
            "--keepalive" => {
                let v = value()?;
                let secs: u64 = v.parse().map_err(|e| format!("--keepalive {v:?}: {e}"))?;
                args.keepalive = Some(Duration::from_secs(secs));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ccs_emulator: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server_key = args
        .server_key
        .or_else(|| std::env::var("FCM_SERVER_KEY").ok())
        .unwrap_or_else(|| "emulator-server-key".to_string());

    if let Some(path) = &args.cert_out {
        if let Err(e) = std::fs::write(path, Emulator::cert_pem()) {
            eprintln!("ccs_emulator: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }

    let (tx, rx) = mpsc::channel();
    let mut builder = Emulator::builder()
        .bind(args.listen)
        .sender_id(args.sender_id.clone())
        .server_key(server_key)
        .observer(tx);
    if let Some(k) = args.keepalive {
        builder = builder.keepalive_interval(k);
    }
    let emu = match builder.start() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ccs_emulator: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    for (token, code) in args.reject {
        emu.reject_token(token, code);
    }
    println!(
        "ccs emulator listening on {} (dial {}), sender id {}",
        emu.addr(),
        emu.endpoint(),
        args.sender_id
    );
    match &args.cert_out {
        Some(path) => println!("trust the test CA written to {path}"),
        None => println!("trust the test CA (--cert-out PATH writes it)"),
    }

    let deadline = args.duration.map(|d| Instant::now() + d);
    loop {
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left.min(Duration::from_millis(200)),
                None => break,
            },
            None => Duration::from_millis(200),
        };
        match rx.recv_timeout(wait) {
            Ok(event) => println!("{event}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    emu.shutdown();
    for event in rx.try_iter() {
        println!("{event}");
    }
    let ledger = emu.ledger();
    println!(
        "stopped: {} connections, {} downstream received, {} acked, {} nacked",
        ledger.connections_accepted,
        ledger.total_received(),
        ledger.total_acked(),
        ledger.total_nacked()
    );
    ExitCode::SUCCESS
}
