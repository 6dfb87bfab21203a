// Drives node-xcs (npm 0.1.8) against a local CCS emulator: COUNT downstream messages on
// one connection, timed from the connection coming online to the last ack.
// Usage: node node_xcs.js PORT COUNT SENDER_ID SERVER_KEY   (NODE_EXTRA_CA_CERTS=emulator CA)
// Prints `name: value unit` lines; exit 1 on a NACK, an error or a 300 s stall.
"use strict";

const [port, count, senderId, serverKey] = process.argv.slice(2);
const total = Number(count);
const xcs = require("node-xcs");

// node-xcs reads its endpoint from Constants when a Sender is built; its XMPP domain
// stays fcm.googleapis.com, which the emulator accepts.
xcs.Constants.FCM_SEND_ENDPOINT = "127.0.0.1";
xcs.Constants.FCM_SEND_PRODUCTION_PORT = Number(port);

const TOKEN = process.env.BENCH_TOKEN;
const TEXT = "Your order #8812 has shipped and arrives Tuesday 9-12; track it in our app";

const guard = setTimeout(() => {
    console.error(`node-xcs: stalled, ${acked} of ${total} acked`);
    process.exit(1);
}, 300000);

let acked = 0;
let started = 0;
const sender = new xcs.Sender(senderId, serverKey, xcs.Constants.FCM_PRODUCTION_IDX, false);
sender.on("error", (e) => {
    console.error(`node-xcs: ${e}`);
    process.exit(1);
});
sender.once("connected", () => {
    started = process.hrtime.bigint();
    for (let i = 0; i < total; i++) {
        const m = new xcs.Message(`n-${i}`)
            .timeToLive(600)
            .addData("seq", String(i))
            .addData("text", TEXT)
            .build();
        sender.sendNoRetry(m, TOKEN, (result) => {
            if (result.getError()) {
                console.error(`node-xcs: nack ${result.getError()}`);
                process.exit(1);
            }
            acked += 1;
            if (acked === total) {
                const secs = Number(process.hrtime.bigint() - started) / 1e9;
                console.log(`node_xcs_msgs_per_s: ${Math.round(total / secs)} msg/s`);
                console.log(`node_xcs_peak_rss_kib: ${process.resourceUsage().maxRSS} KiB`);
                clearTimeout(guard);
                process.exit(0);
            }
        });
    }
});
try {
    sender.start();
} catch (e) {
    // Sender.start() throws a TypeError (setTimeout on a socket wrapper that has none)
    // right after it starts connecting; the connection under way goes on.
    if (!(e instanceof TypeError)) throw e;
}
