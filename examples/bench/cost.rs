//! The cost section (the emulator in a child process, so what is counted is the client's),
//! and the `--serve-emulator` mode it and the scripts under `benches/` use.

use super::*;

// -- cost per message, with the emulator in a child process --------------------------------

/// The emulator as a child process of this program: its CPU and heap are not ours.
pub(crate) struct ChildEmulator {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
}

impl ChildEmulator {
    pub(crate) fn start() -> Res<Self> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("--serve-emulator")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("emulator process: {e}"))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("emulator process said {line:?}"))?;
        Ok(ChildEmulator { child, stdin, port })
    }

    pub(crate) fn config(&self) -> Config {
        Config::new(SENDER, KEY)
            .endpoint(Endpoint::new("127.0.0.1", self.port))
            .add_root_pem(Emulator::cert_pem())
    }

    /// The child's CPU time so far, seconds.
    pub(crate) fn cpu_s(&self) -> f64 {
        cpu_s(&self.child.id().to_string())
    }

    /// Asks the child to inject `n` upstream messages.
    pub(crate) fn inject(&mut self, n: usize) -> Res<()> {
        let stdin = self.stdin.as_mut().ok_or("emulator process has no stdin")?;
        writeln!(stdin, "inject {n}").map_err(|e| format!("emulator process: {e}"))
    }
}

impl Drop for ChildEmulator {
    fn drop(&mut self) {
        // EOF on its stdin stops it.
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `--serve-emulator` mode: an emulator on a free port; prints `port N`, then reads
/// commands (`inject N`) until stdin closes.
pub(crate) fn serve_emulator() {
    let emu = match Emulator::builder()
        .sender_id(SENDER)
        .server_key(KEY)
        .record_ids(false)
        .start()
    {
        Ok(e) => e,
        Err(e) => fail(format!("emulator: {e}")),
    };
    println!("port {}", emu.addr().port());
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line
            .strip_prefix("inject ")
            .and_then(|n| n.parse::<usize>().ok())
        {
            for _ in 0..n {
                emu.inject_upstream(TOKEN, "com.example.app", &UPSTREAM_DATA);
            }
        }
    }
    emu.shutdown();
}

/// A TLS connector trusting the emulator, built as the library builds one per connection.
pub(crate) fn tls_connector() -> Res<native_tls::TlsConnector> {
    let ca = native_tls::Certificate::from_pem(Emulator::cert_pem()).map_err(|e| e.to_string())?;
    native_tls::TlsConnector::builder()
        .add_root_certificate(ca)
        .build()
        .map_err(|e| e.to_string())
}

/// A TLS connection to the emulator and nothing more (no XMPP).
pub(crate) fn tls_only(
    connector: &native_tls::TlsConnector,
    config: &Config,
) -> Res<native_tls::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", config.endpoint.port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(STALL))
        .map_err(|e| e.to_string())?;
    connector
        .connect("127.0.0.1", tcp)
        .map_err(|e| format!("tls: {e}"))
}

pub(crate) fn cost(mode: Mode) -> Res<()> {
    let mut emu = ChildEmulator::start()?;
    let cfg = emu.config();
    println!("# emulator in a child process: CPU, memory and allocations below are the client's");

    // Memory per idle connection: this process is still fresh, so growth is new memory.
    let warm = Connection::connect(&cfg).map_err(|e| format!("connect: {e}"))?;
    let _ = warm.close();
    // The first connect builds the process's TLS connector (the system's root
    // certificates, about 0.1 s of CPU); the later ones share it.
    let conns = match mode {
        Mode::Full => 100,
        Mode::Quick => 30,
        Mode::Smoke => 10,
    };
    let per = |d: f64| d / conns as f64;
    let r0 = rss_kib();
    let shared = tls_connector()?;
    let tls_shared: Vec<_> = (0..conns)
        .map(|_| tls_only(&shared, &cfg))
        .collect::<Res<_>>()?;
    let r1 = rss_kib();
    let tls: Vec<_> = (0..conns)
        .map(|_| tls_only(&tls_connector()?, &cfg))
        .collect::<Res<_>>()?;
    let r2 = rss_kib();
    let heap0 = LIVE_BYTES.load(Ordering::Relaxed);
    let connects = Snapshot::now();
    let open: Vec<_> = (0..conns)
        .map(|_| Connection::connect(&cfg).map_err(|e| format!("connect: {e}")))
        .collect::<Res<_>>()?;
    let (connect_cpu_us, _, connect_wall) = connects.per(conns);
    let heap1 = LIVE_BYTES.load(Ordering::Relaxed);
    let r3 = rss_kib();
    println!("# {conns} connections of each kind held open at once; RSS growth per connection");
    let tls_conn_kib = per(r1 - r0);
    figure("tls_only_shared_connector_rss_kib", tls_conn_kib, "KiB");
    figure("tls_only_connection_rss_kib", per(r2 - r1), "KiB");
    figure("idle_connection_rss_kib", per(r3 - r2), "KiB");
    // The crate shares one connector between connections, so the TLS part is a
    // connection of the shared connector.
    figure(
        "idle_connection_rss_beyond_tls_kib",
        per((r3 - r2) - (r1 - r0)),
        "KiB",
    );
    figure(
        "idle_connection_rust_heap_kib",
        per(heap1.saturating_sub(heap0) as f64 / 1024.0),
        "KiB",
    );
    figure("connect_ms", connect_wall * 1e3 / conns as f64, "ms");
    figure("connect_client_cpu_ms", connect_cpu_us / 1e3, "ms");
    drop(tls_shared);
    drop(tls);
    for c in open {
        let _ = c.close();
    }

    // An idle worker with 16 connections.
    let r0 = rss_kib();
    let heap0 = LIVE_BYTES.load(Ordering::Relaxed);
    let (client, events) = start_worker(ClientConfig::new(cfg.clone()).connections(16))?;
    let heap1 = LIVE_BYTES.load(Ordering::Relaxed);
    let r1 = rss_kib();
    thread::sleep(Duration::from_millis(500));
    let idle = Duration::from_secs_f64(mode.secs(10.0));
    let s = Snapshot::now();
    thread::sleep(idle);
    let (cpu_us, _, wall) = s.per(1);
    figure("idle_pool16_cpu_percent", cpu_us / 1e6 / wall * 100.0, "%");
    figure("idle_pool16_seconds", wall, "s");
    figure("idle_worker_connection_rss_kib", (r1 - r0) / 16.0, "KiB");
    figure(
        "idle_worker_connection_rss_beyond_tls_kib",
        (r1 - r0) / 16.0 - tls_conn_kib,
        "KiB",
    );
    figure(
        "idle_worker_connection_rust_heap_kib",
        heap1.saturating_sub(heap0) as f64 / 1024.0 / 16.0,
        "KiB",
    );
    client.shutdown(Duration::from_secs(5));
    drop(events);

    // Downstream through the worker, one connection, window 100, steady state.
    let n = mode.n(200_000);
    let build = Snapshot::now();
    let warmup = messages(n / 5, Payload::Small);
    let msgs = messages(n, Payload::Small);
    let (_, build_allocs, _) = build.per(n + n / 5);
    let (client, mut events) = start_worker(ClientConfig::new(cfg.clone()))?;
    let send_all = |client: &Client, events: &mut Events, msgs: Vec<Message>| -> Res<()> {
        let k = msgs.len();
        thread::scope(|s| {
            let sender = s.spawn(|| {
                for m in msgs {
                    client
                        .send_timeout(m, STALL)
                        .map_err(|e| format!("send: {e}"))?;
                }
                Ok::<(), String>(())
            });
            let got = await_deliveries(events, k, false);
            sender.join().map_err(|_| "sender panicked".to_string())??;
            got.map(|_| ())
        })
    };
    send_all(&client, &mut events, warmup)?;
    let emu_cpu = emu.cpu_s();
    let s = Snapshot::now();
    send_all(&client, &mut events, msgs)?;
    let (cpu, allocs, wall) = s.per(n);
    let emu_us = (emu.cpu_s() - emu_cpu) * 1e6 / n as f64;
    client.shutdown(Duration::from_secs(5));
    figure("client_cpu_us_per_msg", cpu, "us");
    figure("allocs_per_send", allocs, "allocs");
    figure("allocs_per_message_build", build_allocs, "allocs");
    figure("cost_run_msgs_per_s", n as f64 / wall, "msg/s");
    figure("emulator_cpu_us_per_msg", emu_us, "us");

    // The same through a bare Connection.
    let warmup = messages(n / 5, Payload::Small);
    let msgs = messages(n, Payload::Small);
    let mut conn = Connection::connect(&cfg).map_err(|e| format!("connect: {e}"))?;
    raw_push(&mut conn, &warmup)?;
    let s = Snapshot::now();
    raw_push(&mut conn, &msgs)?;
    let (cpu, allocs, _) = s.per(n);
    let _ = conn.close();
    figure("raw_connection_cpu_us_per_msg", cpu, "us");
    figure("raw_connection_allocs_per_send", allocs, "allocs");

    // Upstream: received, parsed, acked by the worker, handed to the application.
    let (client, mut events) = start_worker(ClientConfig::new(cfg))?;
    emu.inject(n / 5)?;
    await_upstream(&mut events, n / 5)?;
    let s = Snapshot::now();
    emu.inject(n)?;
    await_upstream(&mut events, n)?;
    let (cpu, allocs, _) = s.per(n);
    client.shutdown(Duration::from_secs(5));
    figure("upstream_cpu_us_per_msg", cpu, "us");
    figure("allocs_per_upstream", allocs, "allocs");
    Ok(())
}
