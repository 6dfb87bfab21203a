//! The sections that drive the emulator in this process: machine, throughput, latency,
//! latency-bound and upstream.

use super::*;

// -- the machine's own limits -------------------------------------------------------------

/// Median of `k` timings of `f`, µs.
pub(crate) fn median_us(k: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<Duration> = (0..k)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    percentile(&v, 0.5)
}

/// What a blocking read with a short timeout really waits, a 1 ms sleep, and waking a
/// thread through a channel: the floors under polling I/O threads and hand-offs.
pub(crate) fn machine(mode: Mode) -> Res<()> {
    use std::io::Read;
    let k = mode.n(100).min(50);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let mut c = TcpStream::connect(listener.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let _peer = listener.accept().map_err(|e| e.to_string())?;
    println!("# socket read timeouts (SO_RCVTIMEO) on an idle socket, median of {k}");
    for ms in [1, 2, 5] {
        c.set_read_timeout(Some(Duration::from_millis(ms)))
            .map_err(|e| e.to_string())?;
        let us = median_us(k, || {
            let _ = c.read(&mut [0u8; 16]);
        });
        figure(&format!("read_timeout_{ms}ms_waits_us"), us, "us");
    }
    let us = median_us(k, || thread::sleep(Duration::from_millis(1)));
    figure("sleep_1ms_waits_us", us, "us");
    let (to_tx, to_rx) = std::sync::mpsc::channel::<()>();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
    let echo = thread::spawn(move || {
        while to_rx.recv().is_ok() {
            if back_tx.send(()).is_err() {
                break;
            }
        }
    });
    let us = median_us(k * 10, || {
        let _ = to_tx.send(());
        let _ = back_rx.recv();
    });
    drop(to_tx);
    let _ = echo.join();
    figure("channel_wakeup_round_trip_us", us, "us");
    Ok(())
}

// -- throughput ----------------------------------------------------------------------------

pub(crate) fn throughput(mode: Mode) -> Res<()> {
    let emu = local_emulator(EMULATOR_POLL)?;
    let cfg = emu.client_config();
    println!("# downstream messages/s, emulator in this process, ~100-byte data unless named");
    for (name, payload) in [
        ("small", Payload::Small),
        ("data3500", Payload::Large),
        ("notification", Payload::Notification),
    ] {
        let mut json = String::new();
        messages(1, payload)[0].write_json(&mut json);
        figure(
            &format!("message_json_bytes_{name}"),
            json.len() as f64,
            "bytes",
        );
    }
    let mut raw100 = 0.0;
    for (window, full) in [(1, 20_000), (10, 100_000), (100, 200_000)] {
        let msgs = messages(mode.n(full), Payload::Small);
        let rate = raw_run(&cfg, window, &msgs)?;
        figure(
            &format!("raw_connection_msgs_per_s_window{window}"),
            rate,
            "msg/s",
        );
        if window == 100 {
            raw100 = rate;
        }
    }
    let mut worker100 = 0.0;
    for (window, full) in [(1, 20_000), (10, 100_000), (100, 200_000)] {
        let msgs = messages(mode.n(full), Payload::Small);
        let r = worker_run(cfg.clone(), 1, window, 10_000, msgs, false)?;
        figure(
            &format!("downstream_msgs_per_s_window{window}"),
            r.msgs_per_s,
            "msg/s",
        );
        if window == 100 {
            worker100 = r.msgs_per_s;
        }
    }
    figure("worker_vs_raw_ratio_window100", worker100 / raw100, "ratio");
    for conns in [1, 4, 16] {
        let msgs = messages(mode.n(200_000), Payload::Small);
        let r = worker_run(cfg.clone(), conns, 100, 10_000, msgs, false)?;
        figure(&format!("pool{conns}_msgs_per_s"), r.msgs_per_s, "msg/s");
    }
    for (name, payload, full) in [
        ("data3500", Payload::Large, 50_000),
        ("notification", Payload::Notification, 200_000),
    ] {
        let msgs = messages(mode.n(full), payload);
        let r = worker_run(cfg.clone(), 1, 100, 10_000, msgs, false)?;
        figure(
            &format!("downstream_msgs_per_s_{name}"),
            r.msgs_per_s,
            "msg/s",
        );
        if let Payload::Large = payload {
            figure(
                "downstream_mb_per_s_data3500",
                r.msgs_per_s * 3504.0 / 1e6,
                "MB/s",
            );
        }
    }
    emu.shutdown();
    Ok(())
}

// -- latency -------------------------------------------------------------------------------

pub(crate) fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

pub(crate) fn print_latency(prefix: &str, mut l: Vec<Duration>) {
    l.sort();
    figure(&format!("{prefix}_p50_us"), percentile(&l, 0.50), "us");
    figure(&format!("{prefix}_p99_us"), percentile(&l, 0.99), "us");
    figure(&format!("{prefix}_max_us"), percentile(&l, 1.0), "us");
}

pub(crate) fn latency(mode: Mode) -> Res<()> {
    let emu = local_emulator(EMULATOR_POLL)?;
    let cfg = emu.client_config();
    let gap = Duration::from_millis(5);
    let k = mode.n(2_000).min(2_000);
    println!(
        "# light load: one message at a time, {} ms idle between, {k} messages",
        gap.as_millis()
    );

    // The worker: the connection is idle when each message is sent.
    let (client, mut events) = start_worker(ClientConfig::new(cfg.clone()))?;
    let mut l = Vec::with_capacity(k);
    for m in messages(k, Payload::Small) {
        thread::sleep(gap);
        let t = Instant::now();
        client.send(m).map_err(|e| format!("send: {e}"))?;
        await_deliveries(&mut events, 1, false)?;
        l.push(t.elapsed());
    }
    client.shutdown(Duration::from_secs(5));
    print_latency("send_to_ack", l);

    // The same through a bare Connection: the floor the worker adds to.
    print_latency("raw_connection_send_to_ack", one_at_a_time(&cfg, k, gap)?);

    println!("# full load: window 100, queue of 100, latency from send() returning to the outcome");
    let msgs = messages(mode.n(100_000), Payload::Small);
    let r = worker_run(cfg, 1, 100, 100, msgs, true)?;
    print_latency("send_to_ack_full_load", r.latencies);
    figure("send_to_ack_full_load_msgs_per_s", r.msgs_per_s, "msg/s");
    emu.shutdown();
    Ok(())
}

/// Send-to-ack of `k` messages sent one at a time through a bare `Connection`, `gap`
/// apart.
pub(crate) fn one_at_a_time(cfg: &Config, k: usize, gap: Duration) -> Res<Vec<Duration>> {
    let mut conn = Connection::connect(cfg).map_err(|e| format!("connect: {e}"))?;
    let mut l = Vec::with_capacity(k);
    for m in messages(k, Payload::Small) {
        thread::sleep(gap);
        let t = Instant::now();
        conn.send(&m).map_err(|e| format!("send: {e}"))?;
        match conn.recv_event(Some(STALL)) {
            Ok(Some(ev)) => raw_event(ev)?,
            other => return Err(format!("waiting for an ack: {other:?}")),
        }
        l.push(t.elapsed());
    }
    let _ = conn.close();
    Ok(l)
}

pub(crate) fn latency_bound(mode: Mode) -> Res<()> {
    // Held-back acks leave when due (the emulator's sessions wait on a channel until
    // then), so its poll interval does not matter here.
    let emu = local_emulator(EMULATOR_POLL)?;
    let rtt = Duration::from_millis(20);
    emu.set_ack_delay(rtt);
    println!("# every ack held back 20 ms; limit = connections x window / RTT");
    // What one round trip really takes: one message at a time through a bare Connection.
    let mut rtts = one_at_a_time(&emu.client_config(), mode.n(50).min(50), Duration::ZERO)?;
    rtts.sort();
    let effective = percentile(&rtts, 0.5) / 1e6;
    figure("rtt20ms_effective_rtt_us", effective * 1e6, "us");
    let n = (5000.0 * mode.secs(4.0)) as usize;
    let rate = raw_run(&emu.client_config(), 100, &messages(n, Payload::Small))?;
    figure("rtt20ms_raw_connection_ratio", rate / 5000.0, "ratio");
    for (name, conns) in [("one_connection", 1usize), ("pool16", 16)] {
        let limit = conns as f64 * 100.0 / rtt.as_secs_f64();
        let n = (limit * mode.secs(4.0)) as usize;
        let msgs = messages(n, Payload::Small);
        let r = worker_run(emu.client_config(), conns, 100, 10_000, msgs, false)?;
        figure(&format!("rtt20ms_{name}_msgs_per_s"), r.msgs_per_s, "msg/s");
        figure(&format!("rtt20ms_{name}_limit_msgs_per_s"), limit, "msg/s");
        figure(
            &format!("rtt20ms_{name}_ratio"),
            r.msgs_per_s / limit,
            "ratio",
        );
        // The same against the round trip the emulator really gives (see above).
        figure(
            &format!("rtt20ms_{name}_ratio_to_effective_rtt"),
            r.msgs_per_s * effective / (conns as f64 * 100.0),
            "ratio",
        );
    }
    emu.shutdown();
    Ok(())
}

// -- upstream ------------------------------------------------------------------------------

/// Counts `n` upstream events.
pub(crate) fn await_upstream(events: &mut Events, n: usize) -> Res<()> {
    count_events(events, n, "upstream", |e| {
        matches!(e, ClientEvent::Upstream { .. })
    })
}

pub(crate) const UPSTREAM_DATA: [(&str, &str); 2] = [
    ("text", "Reply from the device: on my way, see you at eight"),
    ("thread", "c-2231"),
];

pub(crate) fn upstream(mode: Mode) -> Res<()> {
    let emu = local_emulator(EMULATOR_POLL)?;
    let n = mode.n(200_000);
    let (client, mut events) = start_worker(ClientConfig::new(emu.client_config()))?;
    let t0 = Instant::now();
    thread::scope(|s| -> Res<()> {
        s.spawn(|| {
            for _ in 0..n {
                emu.inject_upstream(TOKEN, "com.example.app", &UPSTREAM_DATA);
            }
        });
        await_upstream(&mut events, n)
    })?;
    // Handled means acked: wait until the emulator has every ack.
    let deadline = Instant::now() + STALL;
    while !emu.ledger().upstream_unacked.is_empty() {
        if Instant::now() > deadline {
            return Err("upstream acks missing".into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    println!("# upstream: {n} injected by the in-process emulator, received, acked");
    figure("upstream_msgs_per_s", rate, "msg/s");
    client.shutdown(Duration::from_secs(5));
    emu.shutdown();
    Ok(())
}
