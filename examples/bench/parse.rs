//! The parse section: the stanza reader against raw `xmlparser` tokenization, JSON decode.

use super::*;

// -- parse speed ---------------------------------------------------------------------------

/// A client's inbound stream: per 10 stanzas, 8 acks, 1 upstream message, 1 receipt.
pub(crate) fn inbound_stream(stanzas: usize) -> String {
    let mut s = String::from(
        "<stream:stream from=\"gcm.googleapis.com\" id=\"A1B2C3D4\" version=\"1.0\" \
         xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">",
    );
    for i in 0..stanzas {
        let json = match i % 10 {
            8 => upstream_json(i),
            9 => format!(
                "{{\"category\":\"com.example.app\",\"data\":{{\"message_status\":\
                 \"MESSAGE_SENT_TO_DEVICE\",\"original_message_id\":\"m-{i}\",\
                 \"device_registration_id\":\"{TOKEN}\",\"message_sent_timestamp\":\
                 \"1440000000000\"}},\"time_to_live\":0,\"from\":\"gcm.googleapis.com\",\
                 \"message_id\":\"dr2:m-{i}\",\"message_type\":\"receipt\"}}"
            ),
            _ => ack_json(i),
        };
        s.push_str("<message><data:gcm xmlns:data=\"google:mobile:data\">");
        s.push_str(&json.replace('&', "&amp;").replace('<', "&lt;"));
        s.push_str("</data:gcm></message>");
    }
    s
}

pub(crate) fn ack_json(i: usize) -> String {
    format!("{{\"from\":\"{TOKEN}\",\"message_id\":\"m-{i}\",\"message_type\":\"ack\"}}")
}

pub(crate) fn upstream_json(i: usize) -> String {
    format!(
        "{{\"category\":\"com.example.app\",\"data\":{{\"text\":\"{}\",\"thread\":\"{}\"}},\
         \"message_id\":\"u-{i}\",\"from\":\"{TOKEN}\",\"time_to_live\":86400}}",
        UPSTREAM_DATA[0].1, UPSTREAM_DATA[1].1
    )
}

/// Fastest of `runs` timings of `f`, which returns a count that must equal `want`.
pub(crate) fn best_of(runs: usize, want: usize, f: &dyn Fn() -> usize) -> Res<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        let got = std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
        if got != want {
            return Err(format!("counted {got}, expected {want}"));
        }
    }
    Ok(best)
}

pub(crate) fn parse(mode: Mode) -> Res<()> {
    let n = mode.n(200_000);
    let text = inbound_stream(n);
    let mb = text.len() as f64 / 1e6;
    println!(
        "# {n} inbound stanzas (8 acks : 1 upstream : 1 receipt), {mb:.1} MB, fed in 16 KiB blocks"
    );
    // As the client reads: CCS message stanzas of the common shape (the acks, the
    // upstream message and receipt here) without a tree, anything else as a tree.
    let read = |tree: bool| {
        let mut r = StanzaReader::new(ReaderLimits::default());
        let mut stanzas = 0;
        for block in text.as_bytes().chunks(StanzaReader::READ_BLOCK) {
            r.feed(block);
            if tree {
                while let Ok(Some(p)) = r.next_packet() {
                    stanzas += matches!(p, Packet::Stanza(_)) as usize;
                }
            } else {
                while let Ok(Some(i)) = r.next_item() {
                    stanzas +=
                        matches!(i, Item::GcmPayload(_) | Item::Packet(Packet::Stanza(_))) as usize;
                }
            }
        }
        stanzas
    };
    let reader = best_of(5, n, &|| read(false))?;
    // Every stanza built into an element tree (`next_packet`).
    let tree = best_of(5, n, &|| read(true))?;
    // Raw tokenization: every token of the same text, no tree, no checks of our own.
    let tokens = xmlparser::Tokenizer::from(text.as_str()).count();
    let tokenizer = best_of(5, tokens, &|| {
        xmlparser::Tokenizer::from(text.as_str())
            .filter(|t| t.is_ok())
            .count()
    })?;
    figure("reader_mb_per_s", mb / reader, "MB/s");
    figure("tokenizer_mb_per_s", mb / tokenizer, "MB/s");
    figure("reader_vs_tokenizer_ratio", tokenizer / reader, "ratio");
    figure("reader_stanzas_per_s", n as f64 / reader, "stanza/s");
    figure("reader_tree_mb_per_s", mb / tree, "MB/s");
    figure("reader_tree_vs_tokenizer_ratio", tokenizer / tree, "ratio");

    let k = mode.n(200_000);
    for (name, json) in [("ack", ack_json(7)), ("upstream", upstream_json(7))] {
        let secs = best_of(3, k, &|| {
            (0..k)
                .filter(|_| Event::from_json(std::hint::black_box(&json)).is_ok())
                .count()
        })?;
        figure(
            &format!("json_decode_{name}_events_per_s"),
            k as f64 / secs,
            "event/s",
        );
    }
    Ok(())
}
