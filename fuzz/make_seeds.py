#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/<target>/.

Rerun after changing it: `python3 fuzz/make_seeds.py` (from anywhere). The
stanzas follow the protocol reference in the crate docs (module
`fcm_xmpp::protocol`, src/protocol.rs: sections Handshake, Reading stanzas,
Downstream messages, Server messages, Stanza and stream errors, Acks) and
the unit-test fixtures of src/xml/reader/tests.rs, src/event.rs and
src/message.rs. Input formats: see fuzz/src/lib.rs.
"""

import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")

STREAM_NS = "http://etherx.jabber.org/streams"
S_HDR = (
    '<stream:stream from="gcm.googleapis.com" id="3F2A9C0D11B7E845" version="1.0" '
    'xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client">'
)
C_HDR = (
    '<stream:stream to="gcm.googleapis.com" version="1.0" xmlns="jabber:client"\n'
    '     xmlns:stream="http://etherx.jabber.org/streams">'
)

# ---- stanza_reader: whole streams ---------------------------------------

STREAMS = {
    # src/xml/reader/tests.rs HANDSHAKE_FAILURE (SASL refused; see
    # fcm_xmpp::protocol, section Handshake).
    "handshake_failure": "<?xml version='1.0'?>\n" + S_HDR
    + '<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">\n'
    "  <mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>\n"
    "  <mechanism>PLAIN</mechanism></mechanisms></stream:features>"
    '<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><not-authorized/></failure>'
    "</stream:stream>",
    # src/xml/reader/tests.rs SESSION_STREAM (SASL success, restart, bind,
    # session, then traffic).
    "session_stream": "<?xml version='1.0'?>" + S_HDR
    + '<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>X-OAUTH2</mechanism>'
    "<mechanism>X-GOOGLE-TOKEN</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
    '<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>\n'
    "<stream:stream from='gcm.googleapis.com' id='9B1E4C7A22D3F560' version='1.0' xml:lang='en' "
    "xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>"
    '<str:features xmlns:str="http://etherx.jabber.org/streams"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>'
    '<session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></str:features>'
    '<iq type="result" id="bind1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">'
    "<jid>123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E</jid></bind></iq>"
    '<iq type="result" id="sess1"/> \n \t  '
    '<message><data:gcm xmlns:data="google:mobile:data">{"from":"tok-\u00e9","message_id":"m-1","message_type":"ack"}</data:gcm></message>'
    "  "
    '<message to="123456789012@gcm.googleapis.com" from="devices@gcm.googleapis.com" type="normal"><gcm xmlns="google:mobile:data">'
    '\n  {"category":"com.example","data":{"k":"a &amp; b &lt; c &gt; d","e":"&#38;&#x26;&#x1F600;&quot;&apos;"},'
    '"message_id":"u-1","from":"dev"}\n</gcm></message>'
    '<message id="m-42" type="error" to="123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E">'
    '<gcm xmlns="google:mobile:data">{"to":"x","data":{}}</gcm><error code="400" type="modify">'
    '<bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">'
    "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n</text></error></message>"
    '<message><gcm xmlns="google:mobile:data"><![CDATA[{"a":"<b> & ]] > \U0001F600"}]]></gcm></message>'
    "<!-- a comment between stanzas --></stream:stream>",
    # The server's side of the handshake (fcm_xmpp::protocol, section
    # Handshake), laid out on several lines.
    "protocol_s3_server": S_HDR + "\n"
    '<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">\n'
    "     <mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>\n"
    "     <mechanism>PLAIN</mechanism></mechanisms></stream:features>\n"
    '<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>\n'
    '<stream:stream from="gcm.googleapis.com" id="9B1E4C7A22D3F560" version="1.0"\n'
    '     xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client">\n'
    '<stream:features><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>\n'
    '     <session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></stream:features>\n'
    '<iq type="result" id="bind1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">\n'
    "     <jid>123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E</jid></bind></iq>\n"
    '<iq type="result" id="sess1"/>\n',
    # The client's side of the handshake (fcm_xmpp::protocol, section Handshake).
    "protocol_s3_client": C_HDR + "\n"
    '<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">'
    "ADEyMzQ1Njc4OTAxMkBnY20uZ29vZ2xlYXBpcy5jb20AU0VSVkVSX0tFWQ==</auth>\n"
    '<iq type="set" id="bind1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">\n'
    "     <resource>fcmxmpp</resource></bind></iq>\n"
    '<iq type="set" id="sess1"><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>\n'
    '<iq to="gcm.googleapis.com" id="p7" type="get"><ping\n  xmlns="urn:xmpp:ping"/></iq>',
    # The wrappers and JSON of every server message kind (fcm_xmpp::protocol,
    # sections Reading stanzas and Server messages).
    "protocol_s4_s7_traffic": S_HDR
    + '<message><data:gcm xmlns:data="google:mobile:data">{"from":"TOKEN","message_id":"m-1","message_type":"ack","registration_id":"CANON"}</data:gcm></message>'
    + '<message><data:gcm xmlns:data="google:mobile:data">{"message_type":"nack","message_id":"m-2","from":"TOKEN","error":"INVALID_JSON",'
    '"error_description":"InvalidJson: JSON_TYPE_ERROR : Field \\"time_to_live\\" must be a JSON java.lang.Number: abc"}</data:gcm></message>'
    + " "
    + '<message><data:gcm xmlns:data="google:mobile:data">{"message_type":"control","control_type":"CONNECTION_DRAINING"}</data:gcm></message>'
    + '<message to="123456789012@gcm.googleapis.com" from="devices@gcm.googleapis.com" type="normal"><gcm xmlns="google:mobile:data">'
    '{"category":"com.example.app","data":{"message_status":"MESSAGE_SENT_TO_DEVICE","original_message_id":"m-1366082849205",'
    '"device_registration_id":"REG","message_sent_timestamp":"1430277821658"},"message_id":"dr2:m-1366082849205",'
    '"message_type":"receipt","time_to_live":0,"from":"gcm.googleapis.com"}</gcm></message>'
    + '<message to="123456789012@gcm.googleapis.com" from="devices@gcm.googleapis.com" type="normal"><gcm xmlns="google:mobile:data">\n'
    '{"from":"DEVICE","category":"com.example","message_id":"u-1","time_to_live":86400,"data":{"hello":"world","n":5}}\n'
    "</gcm></message>"
    + '<iq from="gcm.googleapis.com" id="p7" type="result"/>'
    + " " * 40,
    # What the client writes (fcm_xmpp::protocol, sections Downstream messages
    # and Acks).
    "protocol_s6_s12_client": C_HDR
    + '<message id="m-42"><gcm xmlns="google:mobile:data">{"to":"TOKEN","message_id":"m-42",\n'
    '"time_to_live":600,"data":{"k":"a &amp; b &lt; c"}}</gcm></message>'
    + '<message id="a-9"><gcm xmlns="google:mobile:data">{"to":"DEVICE_TOKEN","message_id":"m-123",\n'
    '"message_type":"ack"}</gcm></message>'
    + " ",
    # Stanza errors 400 and 406, then a stream error (fcm_xmpp::protocol,
    # section Stanza and stream errors).
    "protocol_s9_errors": S_HDR
    + '<message id="m-42" type="error" to="123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E">'
    '<gcm xmlns="google:mobile:data">{"to":"TOKEN","time_to_live":600}</gcm>'
    '<error code="400" type="modify"><bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>\n'
    '  <text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">InvalidJson: JSON_PARSING_ERROR : Missing\n'
    "  Required Field: message_id\n</text></error></message>"
    + '<message id="a-9" type="error"><gcm xmlns="google:mobile:data">{"to":"TOKEN","message_id":"m-1","message_type":"ack"}</gcm>'
    '<error code="406" type="modify"><not-acceptable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></message>'
    + '<stream:error><invalid-xml xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>\n</stream:error></stream:stream>',
    # Reader corner cases (src/xml/reader/tests.rs): prolog, PIs, comments,
    # CDATA, references, line ends, prefixes, nesting, a second stream.
    "reader_oddities": "\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n<?pi x?>"
    "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client' xmlns:d='google:mobile:data'>"
    "<a b='x&#9;y&#xA;z' c=\"1\r\n2\" xml:lang='en'><!-- c --><?p i?>t&lt;&#x1F600;<![CDATA[]]]]><![CDATA[>]]>\r\nu<d:gcm/><b><c><d/></c></b> </a>"
    "<d:gcm d:k='v'>{}</d:gcm>"
    "<q xmlns=''><r xmlns='urn:x'/></q>"
    "</s:stream>\n"
    "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><iq/></stream:stream>",
    # Errors the reader must report the same way however the bytes arrive.
    "error_doctype": "<!DOCTYPE x>" + S_HDR,
    "error_entity": S_HDR + "<message>&nbsp;</message>",
    "error_truncated": S_HDR + '<message><gcm xmlns="google:mobile:data">{"a"',
    "error_too_deep": S_HDR + "<a>" + "<b>" * 20 + "</b>" * 20 + "</a>",
    "error_too_large": S_HDR + "<a>" + "x" * 5000 + "</a>",
}

# Chunkings: (flags, size codes); flags bits 0-1 limits, bit 2 read_from.
CHUNKINGS = {
    "a": (0, [0x00, 0x06, 0x90]),  # 4096/16, feed 1, 7, 2176 bytes
    "b": (4, [0x0B, 0xFF]),  # 4096/16, read_from 12, 16384 bytes
}
SMALL = {"c": (2, [0x1F, 0x02])}  # 512/4, feed 32, 3 bytes


def reader_seed(flags, codes, stream):
    assert len(codes) < 32
    return bytes([flags | len(codes) << 3] + codes) + stream.encode("utf-8")


# ---- event_json ------------------------------------------------------------

EVENTS = {
    "ack": '{"from":"tok","message_id":"m-1","message_type":"ack"}',
    "ack_canonical": '{"message_type":"ack","message_id":"m-2","registration_id":"canon"}',
    "nack_invalid_json": '{"message_type":"nack","message_id":"m-7","from":"tok","error":"INVALID_JSON",'
    '"error_description":"InvalidJson: JSON_TYPE_ERROR : Field \\"time_to_live\\" must be a JSON java.lang.Number: abc"}',
    "nack_draining": '{"message_type":"nack","message_id":"m","error":"CONNECTION_DRAINING"}',
    "nack_unknown_code": '{"message_type":"nack","message_id":"m","error":"SOMETHING_NEW"}',
    "nack_odd_types": '{"message_type":"nack","message_id":"m","error":5,"from":7}',
    "nack_no_error": '{"message_type":"nack","message_id":"m"}',
    "receipt": '{"category":"com.example.app","data":{"message_status":"MESSAGE_SENT_TO_DEVICE",\n'
    '  "original_message_id":"m-1366082849205","device_registration_id":"REG",\n'
    '  "message_sent_timestamp":"1430277821658"},"message_id":"dr2:m-1366082849205",\n'
    '  "message_type":"receipt","time_to_live":0,"from":"gcm.googleapis.com"}',
    "receipt_numeric_ts": '{"message_type":"receipt","message_id":"dr2:m-9","from":"gcm.googleapis.com",'
    '"data":{"message_status":"MESSAGE_SENT_TO_DEVICE","message_sent_timestamp":1430277821658}}',
    "receipt_junk": '{"message_type":"receipt","message_id":"x-1","from":"gcm.googleapis.com",'
    '"category":5,"data":{"message_sent_timestamp":"soon","device_registration_id":[]}}',
    "control": '{"message_type":"control","control_type":"CONNECTION_DRAINING"}',
    "control_other": '{"message_type":"control","control_type":"SOMETHING_ELSE"}',
    "upstream": '{"from":"DEVICE","category":"com.example","message_id":"u-1","time_to_live":86400,\n'
    '"data":{"s":"text","n":5,"f":1.5,"b":true,"z":null,"o":{"a":[1,"x"]},"a":[]}}',
    "upstream_escapes": '\n  {"category":"com.example","data":{"k":"a & b < c > d","e":"&&\\ud83d\\ude00\\"\'",'
    '"\\u00e9":"\\u0001\\t"},"message_id":"u-1","from":"dev","time_to_live":6e2}\n',
    "unknown": '\n  {"message_type":"future","message_id":"x","payload":{"k":1}}\n',
    "not_an_object": '["message_type","ack"]',
    # With error-stanza parts: payload, id, code, type, condition, text.
    "stanza_error_400": '{"to":"x","message_id":"m-42","data":{}}\x1fm-42\x1f400\x1fmodify\x1fbad-request\x1f'
    "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n",
    "stanza_error_406": '{"to":"TOKEN","message_id":"m-1","message_type":"ack"}\x1fa-9\x1f406\x1fmodify\x1fnot-acceptable',
    "stanza_error_bare": "\x1f\x1f \x1f\x1f",
}

# ---- message_validation ----------------------------------------------------

MESSAGES = {
    "protocol_s6": '{"to":"TOKEN","message_id":"m-42",\n"time_to_live":600,"data":{"k":"a & b < c"}}',
    "condition": '{"condition":"\'a\' in topics && \'b\' in topics","message_id":"x","priority":"high"}',
    "topic_notification": '{"to":"/topics/news","message_id":"m","time_to_live":0,"content_available":true,'
    '"mutable_content":false,"delivery_receipt_requested":true,"dry_run":false,"delay_while_idle":false,'
    '"collapse_key":"ck","priority":"normal","data":{"z":"1","a":"4","m":"3"},'
    '"notification":{"title":"Hello","body":"World","android_channel_id":"c","icon":"i","sound":"s",'
    '"tag":"t","color":"#ff0000","click_action":"OPEN","badge":"1","subtitle":"sub","body_loc_key":"bk",'
    '"body_loc_args":["a","b"],"title_loc_key":"tk","title_loc_args":[]}}',
    "ttl_string": '{"to":"T","message_id":"m","time_to_live":"600"}',
    "ttl_too_big": '{"to":"T","message_id":"m","time_to_live":2419201}',
    "ttl_float": '{"to":"T","message_id":"m","time_to_live":6e2}',
    "reserved_key": '{"to":"T","message_id":"m","data":{"gcm.x":"x"}}',
    "both_targets": '{"to":"a","condition":"\'b\' in topics","message_id":"m"}',
    "missing_id": '{"to":"T"}',
    "bad_topic": '{"to":"/topics/a b","message_id":"m"}',
    "null_fields": '{"to":"T","message_id":"m","collapse_key":null,"data":null,"notification":null}',
}


def message_struct(f0, f1, f2, strings, tail=b""):
    """A builder-half seed: the flag bytes, length-prefixed strings, a tail."""
    out = bytes([f0, f1, f2])
    for s in strings:
        if isinstance(s, bytes):
            out += s
            continue
        b = s.encode("utf-8")
        assert len(b) < 256
        out += bytes([len(b)]) + b
    return out + tail


STRUCTS = {
    # Message::to("TOKEN").message_id("m-1").time_to_live(600) + 2 data pairs.
    "built_to": message_struct(
        0b0100_0100, 0, 2 << 2, ["TOKEN", "m-1", struct.pack("<I", 600), "k", "v", "b", "a & b"]
    ),
    # to_topic("news"), priority high, flags, notification with title, body, args.
    "built_topic": message_struct(
        0b1011_1001,
        0b1011_0111,
        0b11,
        ["news", "ck", struct.pack("<H", 0b01_0000_0000_0011), "T", "B", b"\x02", "x", "y"],
    ),
    # to_condition with three operators (invalid).
    "built_condition": message_struct(
        0b0000_0110, 0, 0, ["'a' in topics && 'b' in topics || 'c' in topics && 'd' in topics", "m"]
    ),
    # A reserved data key and an empty key (invalid).
    "built_reserved": message_struct(0b0000_0100, 0, 2 << 2, ["T", "m", "google.x", "1", "", "2"]),
}


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    if os.path.isdir(SEEDS):
        shutil.rmtree(SEEDS)
    for name, stream in STREAMS.items():
        chunkings = dict(CHUNKINGS)
        if name in ("handshake_failure", "protocol_s4_s7_traffic", "reader_oddities"):
            chunkings.update(SMALL)
        for tag, (flags, codes) in chunkings.items():
            write("stanza_reader", f"{name}.{tag}", reader_seed(flags, codes, stream))
    for name, text in EVENTS.items():
        write("event_json", name, text)
    for name, text in MESSAGES.items():
        write("message_validation", name, text)
    for name, data in STRUCTS.items():
        write("message_validation", name, data)


if __name__ == "__main__":
    main()
