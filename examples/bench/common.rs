//! Shared by the sections: process readings (CPU, memory), the messages, the worker and a
//! bare `Connection` driven against an emulator.

use super::*;

// -- process readings ----------------------------------------------------------------------

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU time (user + system) of this process, exited threads included, in seconds.
pub(crate) fn process_cpu_s() -> f64 {
    cpu_s("self")
}

/// CPU time (user + system) of process `pid` (`self` for this one), in seconds.
pub(crate) fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ, 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of this process, KiB.
pub(crate) fn rss_kib() -> f64 {
    status_kib("VmRSS:")
}

/// A `kB` field of `/proc/self/status` (`VmRSS:`, `VmHWM:`), KiB.
pub(crate) fn status_kib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// CPU seconds and heap allocations at one moment.
#[derive(Clone, Copy)]
pub(crate) struct Snapshot {
    cpu: f64,
    allocs: u64,
    at: Instant,
}

impl Snapshot {
    pub(crate) fn now() -> Self {
        Snapshot {
            cpu: process_cpu_s(),
            allocs: ALLOCATIONS.load(Ordering::Relaxed),
            at: Instant::now(),
        }
    }
    /// (CPU µs per unit, allocations per unit, wall seconds) since `self`.
    pub(crate) fn per(&self, units: usize) -> (f64, f64, f64) {
        let now = Snapshot::now();
        let n = units.max(1) as f64;
        (
            (now.cpu - self.cpu) * 1e6 / n,
            (now.allocs - self.allocs) as f64 / n,
            now.at.duration_since(self.at).as_secs_f64(),
        )
    }
}

// -- messages ------------------------------------------------------------------------------

#[derive(Clone, Copy)]
pub(crate) enum Payload {
    /// About 100 bytes of data.
    Small,
    /// About 3.5 KB of data (CCS allows 4 KB).
    Large,
    /// A notification message, no data.
    Notification,
}

pub(crate) static RUN: AtomicUsize = AtomicUsize::new(0);

/// `n` messages with ids `r{run}-{i}`, so an outcome's index is its id's suffix.
pub(crate) fn messages(n: usize, payload: Payload) -> Vec<Message> {
    lazy_messages(n, payload).collect()
}

/// The same, built one by one as they are taken.
pub(crate) fn lazy_messages(n: usize, payload: Payload) -> impl Iterator<Item = Message> + Send {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let large = "0123456789abcdef".repeat(219); // 3504 bytes
    (0..n).map(move |i| {
        let m = Message::to(TOKEN)
            .message_id(format!("r{run}-{i}"))
            .time_to_live(600);
        match payload {
            Payload::Small => m.data("seq", i.to_string()).data(
                "text",
                "Your order #8812 has shipped and arrives Tuesday 9-12; track it in our app",
            ),
            Payload::Large => m.data("seq", i.to_string()).data("blob", large.as_str()),
            Payload::Notification => m.notification(
                Notification::new()
                    .title("Portugal vs. Denmark")
                    .body("great match! 2-1 after extra time")
                    .icon("ic_launcher"),
            ),
        }
    })
}

pub(crate) fn index_of(id: &str) -> Res<usize> {
    id.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unexpected message id {id:?}"))
}

/// An emulator in this process: ids not recorded (counts only), no keepalives, its
/// connection threads looking at held-back answers every `poll`.
pub(crate) fn local_emulator(poll: Duration) -> Res<Emulator> {
    Emulator::builder()
        .poll_interval(poll)
        .sender_id(SENDER)
        .server_key(KEY)
        .record_ids(false)
        .keepalive_interval(Duration::ZERO)
        .start()
        .map_err(|e| format!("emulator: {e}"))
}

// -- the worker ----------------------------------------------------------------------------

/// One worker run's results.
pub(crate) struct WorkerRun {
    pub(crate) msgs_per_s: f64,
    /// Send-to-ack latency per message (from `send` returning to the outcome), when asked.
    pub(crate) latencies: Vec<Duration>,
}

/// Starts a worker and waits until all its connections are up.
pub(crate) fn start_worker(config: ClientConfig) -> Res<(Client, Events)> {
    let want = config.connections;
    let (client, mut events) = Client::start(config).map_err(|e| format!("client: {e}"))?;
    count_events(&mut events, want, "connections", |e| {
        matches!(e, ClientEvent::Connected { .. })
    })?;
    Ok((client, events))
}

/// Reads events until `n` of them were `wanted`; fails on a stop, a failed connection
/// attempt, a lost connection or a stall.
pub(crate) fn count_events(
    events: &mut Events,
    n: usize,
    what: &str,
    wanted: fn(&ClientEvent) -> bool,
) -> Res<()> {
    let mut got = 0;
    while got < n {
        match events.recv_timeout(STALL) {
            Ok(e) if wanted(&e) => got += 1,
            Ok(ClientEvent::Fatal { error }) => return Err(format!("client: {error}")),
            Ok(ClientEvent::Reconnecting { error, .. }) => return Err(format!("connect: {error}")),
            Ok(ClientEvent::Lost { error, .. }) => return Err(format!("connection lost: {error}")),
            Ok(_) => {}
            Err(e) => return Err(format!("{what}: stalled at {got} of {n}: {e:?}")),
        }
    }
    Ok(())
}

/// Waits for the outcome of every message in `sent` (indexed by id suffix); fails on
/// anything but a delivery. Returns the time of each delivery when `times`.
pub(crate) fn await_deliveries(
    events: &mut Events,
    n: usize,
    times: bool,
) -> Res<Vec<Option<Instant>>> {
    let mut delivered = 0;
    let mut at = if times { vec![None; n] } else { Vec::new() };
    while delivered < n {
        match events.recv_timeout(STALL) {
            Ok(ClientEvent::Delivered { message, .. }) => {
                delivered += 1;
                if times {
                    at[index_of(message.id())?] = Some(Instant::now());
                }
            }
            Ok(ev @ (ClientEvent::Rejected { .. } | ClientEvent::Returned { .. })) => {
                return Err(format!("not delivered: {ev:?}"));
            }
            Ok(ClientEvent::Fatal { error }) => return Err(format!("client: {error}")),
            Ok(ClientEvent::Lost { error, .. }) => eprintln!("bench: connection lost: {error}"),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("stalled at {delivered} of {n} outcomes"))
            }
            Err(RecvTimeoutError::Disconnected) => return Err("client stopped".into()),
        }
    }
    Ok(at)
}

/// Pushes `msgs` through a worker with `conns` connections of window `window`.
pub(crate) fn worker_run(
    base: Config,
    conns: usize,
    window: usize,
    queue: usize,
    msgs: impl IntoIterator<Item = Message, IntoIter: Send + 'static>,
    record_latency: bool,
) -> Res<WorkerRun> {
    let msgs = msgs.into_iter();
    let n = msgs.size_hint().0;
    let (client, mut events) = start_worker(
        ClientConfig::new(base.max_pending(window))
            .connections(conns)
            .queue_capacity(queue),
    )?;
    let t0 = Instant::now();
    let sender = {
        let client = client.clone();
        thread::spawn(move || -> Res<Vec<Instant>> {
            let mut sent = Vec::with_capacity(if record_latency { n } else { 0 });
            for m in msgs {
                client
                    .send_timeout(m, STALL)
                    .map_err(|e| format!("send: {e}"))?;
                if record_latency {
                    sent.push(Instant::now());
                }
            }
            Ok(sent)
        })
    };
    let got = await_deliveries(&mut events, n, record_latency);
    let elapsed = t0.elapsed();
    let sent = sender
        .join()
        .map_err(|_| "sender thread panicked".to_string())??;
    let delivered = got?;
    let unsent = client.shutdown(Duration::from_secs(5));
    if !unsent.is_empty() {
        return Err(format!("{} messages unsent at shutdown", unsent.len()));
    }
    let latencies = sent
        .iter()
        .zip(&delivered)
        .filter_map(|(s, d)| d.map(|d| d.saturating_duration_since(*s)))
        .collect();
    Ok(WorkerRun {
        msgs_per_s: n as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}

// -- a bare Connection ---------------------------------------------------------------------

/// Handles one event of a raw run: an ack counts, anything else fails.
pub(crate) fn raw_event(ev: Event) -> Res<()> {
    match ev {
        Event::Ack(_) => Ok(()),
        other => Err(format!("unexpected event {other:?}")),
    }
}

/// Pushes `msgs` through one `Connection` in a tight loop: fill the window, one write,
/// read what has arrived. Returns messages/s.
pub(crate) fn raw_run(config: &Config, window: usize, msgs: &[Message]) -> Res<f64> {
    let config = config.clone().max_pending(window);
    let mut conn = Connection::connect(&config).map_err(|e| format!("connect: {e}"))?;
    let t0 = Instant::now();
    raw_push(&mut conn, msgs)?;
    let elapsed = t0.elapsed();
    conn.close().map_err(|e| format!("close: {e}"))?;
    Ok(msgs.len() as f64 / elapsed.as_secs_f64())
}

pub(crate) fn raw_push<S>(conn: &mut Connection<S>, msgs: &[Message]) -> Res<()>
where
    S: std::io::Read + std::io::Write + fcm_xmpp::SetTimeout,
{
    let (mut sent, mut acked) = (0, 0);
    let e = |e: fcm_xmpp::Error| e.to_string();
    while acked < msgs.len() {
        while conn.window_free() > 0 && sent < msgs.len() {
            conn.send_buffered(&msgs[sent]).map_err(e)?;
            sent += 1;
        }
        conn.flush().map_err(e)?;
        match conn.recv_event(Some(STALL)).map_err(e)? {
            Some(ev) => raw_event(ev)?,
            None => return Err(format!("stalled at {acked} of {} acks", msgs.len())),
        }
        acked += 1;
        while let Some(ev) = conn.try_recv_event().map_err(e)? {
            raw_event(ev)?;
            acked += 1;
        }
    }
    Ok(())
}
