//! The CCS protocol as this crate understands it: the facts the code relies on.
//!
//! This module holds no code. It is the crate's protocol reference, and the
//! rest of the crate's documentation links to its sections. It condenses
//! Google's GCM/FCM XMPP documentation, wire captures that users of the
//! service published, and what other CCS clients do; where those sources
//! disagree or say nothing, the last section lists the question and the
//! choice made here. "Observed" marks behaviour seen on the real server
//! rather than promised by the documentation. Every stanza shown is an
//! illustration written for this page, not a capture.
//!
//! # Endpoints
//!
//! Google deprecated the XMPP interface of FCM in June 2023 and shut it down
//! in the course of 2024 (the announced date moved from June to 22 July
//! 2024). The bundled emulator is therefore the test target that lasts.
//!
//! | host | port | use |
//! |---|---|---|
//! | `fcm-xmpp.googleapis.com` | 5235 | FCM production |
//! | `fcm-xmpp.googleapis.com` | 5236 | FCM pre-production (test) |
//! | `gcm.googleapis.com`, `gcm-xmpp.googleapis.com` | 5235 | legacy GCM production |
//! | `gcm-preprod.googleapis.com`, `gcm-staging.googleapis.com` | 5236 | legacy GCM test |
//!
//! [`Endpoint`](crate::Endpoint) has a preset for each and takes any other
//! host and port. The test port still delivers upstream messages sent to the
//! same sender id, so tests should use a sender id of their own. GCM allowed
//! up to 1000 simultaneous connections per sender id; no FCM figure is known.
//!
//! # Transport
//!
//! The connection is TLS from its first byte; the server offers no STARTTLS.
//! A client that speaks plain XML to the port gets a TLS alert back (first
//! byte `0x15`), which is best reported as "TLS required" rather than as bad
//! XML. The TLS server name (SNI) and the name the certificate is checked
//! against are the host name that was dialled; an IP address baked into the
//! client would defeat both.
//!
//! # Handshake
//!
//! An ordinary XMPP client handshake (RFC 6120) with SASL PLAIN, resource
//! binding and an optional session. In order (C = client, S = server):
//!
//! ```text
//! C: <stream:stream to="gcm.googleapis.com" version="1.0"
//!      xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams">
//! S: <stream:stream from="gcm.googleapis.com" id="0123456789ABCDEF" version="1.0"
//!      xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client">
//! S: <stream:features>
//!      <mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">
//!        <mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>
//!        <mechanism>PLAIN</mechanism>
//!      </mechanisms>
//!    </stream:features>
//! C: <auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">BLOB</auth>
//! S: <success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>
//! C: (a second stream header, the same as the first)
//! S: (a second stream header, with a new id)
//! S: <stream:features>
//!      <bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>
//!      <session xmlns="urn:ietf:params:xml:ns:xmpp-session"/>
//!    </stream:features>
//! C: <iq type="set" id="b1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">
//!      <resource>app</resource></bind></iq>
//! S: <iq type="result" id="b1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">
//!      <jid>998877665544@gcm.googleapis.com/app0A1B2C3D</jid></bind></iq>
//! C: <iq type="set" id="s1"><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>
//! S: <iq type="result" id="s1"/>
//! ```
//!
//! - The client's stream header is an open tag, never self-closing. Its `to`
//!   is best `gcm.googleapis.com`, which the server echoes as `from`.
//! - `BLOB` is the base64 of NUL, `SENDER_ID@gcm.googleapis.com`, NUL, server
//!   key, written as one line. The user's domain `@gcm.googleapis.com`
//!   works on every host; FCM-era clients also used `@fcm.googleapis.com`;
//!   the dialled host name (`@fcm-xmpp.googleapis.com`) was refused. The
//!   domain is configurable ([`Config::domain`](crate::Config::domain)).
//! - The server also took the other PLAIN layout, authorization id
//!   `SENDER_ID@gcm.googleapis.com` and authentication id the bare sender id
//!   (one peer client sends that); the emulator accepts both.
//! - A refused key gets `<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl">
//!   <not-authorized/></failure>`, or (observed) the server simply closes the
//!   socket after `<auth>`. Either is final: report that authentication was
//!   refused and do not retry in a loop.
//! - After `<success>` the client opens a new stream on the same socket
//!   without closing the old one.
//! - The server appends eight upper-case hex digits to the proposed resource.
//! - The session request is optional and harmless. A CCS client never sends
//!   presence and never asks for a roster: clients that waited for one
//!   timed out.
//! - The features element may carry any prefix bound to the stream namespace
//!   (Google's documentation once showed `<str:features xmlns:str=…>`), so
//!   elements are matched by namespace, never by their literal tag.
//!
//! # Reading stanzas
//!
//! What the server's stanzas look like on the wire:
//!
//! | kind | wrapper |
//! |---|---|
//! | ack, nack, control | `<message>` without `id` or `type`, payload in a prefixed `<data:gcm xmlns:data="google:mobile:data">` |
//! | upstream, receipt | `<message to="SENDER_ID@gcm.googleapis.com" from="devices@gcm.googleapis.com" type="normal">`, payload in `<gcm xmlns="google:mobile:data">` |
//! | stanza error | `<message id="…" type="error" to="SENDER_ID@…/RESOURCE">`, the echoed `<gcm>` payload, then `<error>` |
//!
//! - The payload is the child with local name `gcm` in namespace
//!   `google:mobile:data`, after prefixes are resolved; the two wrappers above
//!   differ only in the prefix.
//! - The payload's text is one JSON object, XML-unescaped first, possibly
//!   with whitespace and line breaks around it. Its `message_type` says what
//!   it is: `ack`, `nack`, `receipt`, `control`; no `message_type` means an
//!   upstream message. Other values are to be ignored, as the documentation
//!   asks (this crate keeps them as [`Event::Unknown`](crate::Event::Unknown)).
//! - Whitespace between stanzas is the server's keepalive, in any amount.
//! - The end of the TCP stream without a closing `</stream:stream>` is how
//!   Google's server ends a connection; it is a normal disconnect, not an
//!   error in the XML.
//! - An `<iq type="result">` (a pong) and other stanzas nobody asked for are
//!   ignored.
//!
//! # Keepalive
//!
//! - The server writes a single space now and then; how often is not
//!   documented.
//! - The server answers XEP-0199 pings. The `to` must be the domain; a client
//!   that sent `to=''` got no answer:
//!
//! ```text
//! C: <iq to="gcm.googleapis.com" id="p3" type="get"><ping xmlns="urn:xmpp:ping"/></iq>
//! S: <iq from="gcm.googleapis.com" id="p3" type="result"/>
//! ```
//!
//! - Other clients ping every 20 to 100 s and give up on a connection 15 to
//!   30 s after an unanswered ping, or write a space after 100 s of silence.
//!   This crate's defaults ([`Keepalive`](crate::Keepalive)): a space after
//!   60 s without writing, a ping after 120 s without reading, the connection
//!   declared dead 30 s after a ping that got no answer; all configurable.
//!
//! # Downstream messages
//!
//! The JSON object a client sends inside `<gcm>` (built by
//! [`Message`](crate::Message)):
//!
//! | field | type | rule |
//! |---|---|---|
//! | `to` | string | registration token, notification key, or `/topics/NAME` with `NAME` of `[a-zA-Z0-9-_.~%]+` |
//! | `condition` | string | topic expression such as `'a' in topics && 'b' in topics`, operators `&&` and `\|\|`, at most two of them; instead of `to` |
//! | `message_id` | string | required, not empty, unique per sender id |
//! | `collapse_key` | string | a device stores at most four distinct keys |
//! | `priority` | `"normal"` or `"high"` | server default: high for notifications, normal for data |
//! | `content_available` | boolean | iOS: wake the app |
//! | `mutable_content` | boolean | iOS 10 and later |
//! | `time_to_live` | integer 0 to 2419200 (seconds) | default 2419200, four weeks; 0 means "now or never" and must be sent, not dropped as a default |
//! | `delay_while_idle` | boolean | GCM only, removed in FCM |
//! | `delivery_receipt_requested` | boolean | the server sends a receipt once delivered |
//! | `dry_run` | boolean | validate, do not deliver |
//! | `data` | object of string values | keys and values together at most 4096 bytes (later documents: 2048 for topics) |
//! | `notification` | object | `title`, `body`, `android_channel_id`, `icon`, `sound`, `tag`, `color`, `click_action`, `badge`, `subtitle`, `body_loc_key`, `body_loc_args`, `title_loc_key`, `title_loc_args` |
//!
//! - A message has exactly one target, `to` or `condition`; CCS has no
//!   `registration_ids` list.
//! - `data` must not use the keys `from` and `message_type` nor any key
//!   starting with `google` or `gcm`; the server answers those with
//!   `INVALID_JSON`, so the builder refuses them before sending.
//! - Numbers go as JSON numbers, booleans as JSON booleans (the quoted
//!   `"time_to_live":"600"` in Google's samples is a slip of the samples).
//! - `message_id` is best a counter or random id of the sender's own, never a
//!   timestamp, which repeats.
//! - The stanza's `id` attribute carries the same value as `message_id`, so
//!   that a stanza error can be traced back to its message:
//!
//! ```text
//! <message id="n-7"><gcm xmlns="google:mobile:data">{"to":"TOKEN","message_id":"n-7",
//! "time_to_live":3600,"data":{"q":"x &lt; y &amp;&amp; y &gt; z"}}</gcm></message>
//! ```
//!
//! # Server messages
//!
//! The JSON payloads the server sends, by `message_type` (each becomes an
//! [`Event`](crate::Event)):
//!
//! | type | fields |
//! |---|---|
//! | `ack` | `message_id`, `from` (the target), optionally `registration_id`: the target's canonical token, which should replace the stored one |
//! | `nack` | `message_id`, `from`, `error` (the code, see [NACK codes](#nack-codes)), `error_description` (free text, sometimes with a sub-code such as `InvalidJson: JSON_TYPE_ERROR : …`) |
//! | `receipt` | `message_id` = `dr2:` + the original id, `from` = `gcm.googleapis.com`, `category`, `data` with `message_status` (`MESSAGE_SENT_TO_DEVICE`), `original_message_id`, `device_registration_id`, `message_sent_timestamp` (milliseconds since the epoch, as a string); may carry `time_to_live: 0` |
//! | `control` | `control_type`, so far only `CONNECTION_DRAINING`; **no `message_id`** |
//! | none: upstream | `from` (the device's token), `category` (the app's package or bundle id), `message_id`, `data`, often `time_to_live` |
//!
//! An unknown `control_type` is logged and otherwise ignored.
//!
//! # NACK codes
//!
//! The documented rule: a NACKed message is not sent again unless its code
//! says it may be, and an unknown code is treated like
//! `INTERNAL_SERVER_ERROR`. [`NackCode::retry_class`](crate::NackCode::retry_class)
//! encodes this table as a [`RetryClass`](crate::RetryClass).
//!
//! | code | what to do |
//! |---|---|
//! | `SERVICE_UNAVAILABLE` | retry on the same connection, exponential backoff from 1 s with jitter, capped |
//! | `INTERNAL_SERVER_ERROR` | the same |
//! | any unknown code | the same |
//! | `CONNECTION_DRAINING` | retry at once on a new connection; this connection is draining (see [Draining](#draining)) |
//! | `DEVICE_MESSAGE_RATE_EXCEEDED` | not now: back off for this target only, never holding up other targets, or give up (this crate's default outcome) |
//! | `TOPICS_MESSAGE_RATE_EXCEEDED` | the same, per topic |
//! | `QUOTA_EXCEEDED` | the legacy name of the above |
//! | `BAD_REGISTRATION` | final: the token is invalid or belongs to another sender |
//! | `DEVICE_UNREGISTERED` | final: the token is dead and should be deleted |
//! | `INVALID_JSON` | final, fix the message: bad type or field, too large, reserved key, bad TTL, no target |
//! | `BAD_ACK` | a malformed ack of ours: a bug in the client, logged loudly |
//! | `INVALID_APNS_CREDENTIAL` | final, fix the project's configuration (seldom seen) |
//!
//! # Stanza and stream errors
//!
//! Some problems are answered with an XMPP error instead of a NACK.
//!
//! - A downstream message without `message_id` gets the stanza back with
//!   `type="error"`, its `id` and `<gcm>` payload echoed, and an error such as
//!
//! ```text
//! <error code="400" type="modify">
//!   <bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>
//!   <text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">InvalidJson: JSON_PARSING_ERROR
//!   : Missing Required Field: message_id\n</text>
//! </error>
//! ```
//!
//! - An ack for a message that did not arrive on this connection (acking a
//!   downstream ack, say) gets a stanza error with code 406.
//! - The echoed stanza `id`, or failing that the echoed JSON `message_id`,
//!   names the message the error is about; for a downstream message the
//!   outcome is "rejected, fix the request". An error that echoes one of
//!   the client's own acks is about that ack, never about a downstream
//!   message, which is why acks carry stanza ids of their own
//!   (see [Acks](#acks)).
//! - XML the server cannot parse ends the stream:
//!   `<stream:error><invalid-xml xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>
//!   </stream:error>`, then the server closes. Every stream error ends the
//!   connection.
//! - A danger: an ack with a misspelt field (say the `message_type` key) has
//!   no `message_type` for the server, which takes it for a new downstream
//!   message and pushes an empty notification to the device. One tested
//!   function writes every ack.
//!
//! # Flow control
//!
//! - At most 100 downstream messages may be pending on a connection, pending
//!   meaning sent and neither acked nor NACKed yet. (Documents from 2013 said
//!   1000; 100 is the figure to keep.)
//! - The client's own acks (of upstream messages and receipts) do not count
//!   against those 100 and are sent even when the window is full: a client
//!   that stops acking stops receiving upstream messages.
//! - When a connection is lost, every message still pending on it is sent
//!   again on the next connection, in the original order. Devices may then
//!   see duplicates; whether CCS drops repeated `message_id`s is not known.
//! - After an authenticated connection drops, connect again at once (the
//!   documentation asks for no backoff); back off only while connecting or
//!   authenticating itself keeps failing.
//!
//! # Draining
//!
//! Before the server closes a connection (for maintenance, say) it drains it:
//!
//! 1. It sends a `control` message with `CONNECTION_DRAINING`, or answers a
//!    new message with a NACK of that code.
//! 2. The client writes no new downstream message to that connection and
//!    opens another one at once.
//! 3. It keeps reading the old connection: acks and NACKs still arrive there
//!    for messages in flight, and upstream messages and receipts that arrive
//!    there are acked there. The client does not close it; the server does
//!    once it is done.
//! 4. Messages NACKed with `CONNECTION_DRAINING` go out on the new connection
//!    right away.
//! 5. Whatever is still pending when the old connection closes is sent again
//!    on the new one, in order.
//!
//! Mistakes other clients made here: closing the old connection at once,
//! resending in reverse order, and dropping control messages because they
//! have no `message_id`.
//!
//! # Acks
//!
//! The client acks every upstream message and every receipt:
//!
//! ```text
//! <message id="ack-5"><gcm xmlns="google:mobile:data">{"to":"DEVICE_TOKEN",
//! "message_id":"up-31","message_type":"ack"}</gcm></message>
//! ```
//!
//! - `to` is the `from` of the message being acked, `message_id` its id.
//!   For a receipt that is `gcm.googleapis.com` and the whole `dr2:` id.
//! - An ack is only valid on the connection the message arrived on.
//! - The stanza `id` of an ack must not be able to equal a downstream
//!   `message_id`: upstream ids are chosen by devices and easily collide
//!   with the sender's own, and a stanza error about the ack echoes it.
//! - A message that is not acked is delivered again (FCM: on the next
//!   connection, unless it expired). Duplicates therefore happen; filter them
//!   by (`from`, `message_id`) over a bounded window.
//! - The client never NACKs anything.
//!
//! # Encoding
//!
//! - The JSON inside `<gcm>` is XML text: `&`, `<` and `>` must be escaped
//!   (quotes need not be). Several clients, and one of Google's own samples,
//!   did not escape, and broke their stream on the first payload that
//!   needed it.
//! - XML 1.0 allows only tab, line feed, carriage return and the characters
//!   from U+0020 on, except the surrogates and U+FFFE and U+FFFF. A forbidden
//!   character is forbidden as a character reference (`&#x1;`) too, and a
//!   conforming server answers it with the `invalid-xml` stream error.
//! - One JSON object per `<gcm>`, in UTF-8; stanzas need no XML declaration.
//! - The base64 of the SASL PLAIN blob is one line; a client whose base64
//!   library wrapped lines reportedly got `<incorrect-encoding/>`.
//! - The JSON in Google's documentation is not valid as printed (comments,
//!   missing commas, typographic quotes): test fixtures are written by hand.
//!
//! # Emulator fidelity
//!
//! What the bundled emulator (feature `emulator`) reproduces of the above:
//!
//! - TLS only; a stream header with a 16-hex-digit id; the PLAIN mechanism
//!   offered beside the two Google mechanisms.
//! - Both PLAIN layouts, with the user domains `@gcm.googleapis.com` and
//!   `@fcm.googleapis.com`; any other is refused.
//! - Eight hex digits appended to the bound resource; session requests and
//!   pings answered.
//! - Acks, NACKs and control messages in the prefixed `data:gcm` wrapper
//!   without attributes; upstream messages and receipts as `type="normal"`
//!   from `devices@gcm.googleapis.com`; whitespace keepalives.
//! - The limits: 100 pending messages, the TTL range, reserved `data` keys,
//!   4096 bytes of `data`, a missing `message_id` (stanza error 400), acks
//!   only for ids delivered on that connection (stanza error 406). A client
//!   payload without `message_type` is a downstream message, as on the real
//!   server.
//! - Un-acked upstream messages delivered again on the next connection;
//!   draining as a control message, then NACKs with `CONNECTION_DRAINING`
//!   for new messages, then the close.
//!
//! # Open questions
//!
//! The sources disagree or are silent on: the server's keepalive interval
//! and idle timeout; the time between a drain notice and the close; whether
//! the server ever sends a closing `</stream:stream>`; any FCM limit on
//! connections; the exact condition element of the 406 error; the size
//! limits for topics and notifications in each era; whether the server checks
//! the `to` of a receipt's ack. The code does not depend on any of them: it
//! works with or without a closing tag, keeps its own keepalive timers, and
//! checks `data` locally against the 4096-byte limit every era documents,
//! leaving the smaller topic limit to the server.
