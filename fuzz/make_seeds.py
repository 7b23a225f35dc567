#!/usr/bin/env python3
"""Writes the hand-made seed inputs into fuzz/regressions/<target>/seed-*.

The regression directories double as seed corpora (see README.md). Run from
anywhere: python3 fuzz/make_seeds.py
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def post(path, body, extra=b""):
    return b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
        path,
        extra,
        len(body),
        body,
    )


def frame(payload, opcode=0x1, fin=True, mask=b"\x01\x02\x03\x04"):
    """A masked client frame."""
    if isinstance(payload, str):
        payload = payload.encode()
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(obj):
    return frame(json.dumps(obj, separators=(",", ":")))


def sub(topic="t", last_n=None, rid=None):
    m = {"type": "subscribe", "topic": topic, "client_id": "c"}
    if last_n is not None:
        m["last_n"] = last_n
    if rid:
        m["request_id"] = rid
    return text(m)


def pub(topic="t", payload=1, mid="m"):
    return text({"type": "publish", "topic": topic, "message": {"id": mid, "payload": payload}})


PING = text({"type": "ping", "request_id": "r"})

# Connection programs: see fuzz/logic/connection_program.rs for the opcodes.
ALL = b"\xf1"  # send the rest at once


def send(chunk):
    """Send `chunk` in one step (up to 65535 bytes)."""
    return b"\xf0" + struct.pack("<H", len(chunk)) + chunk


def advance(quarters):
    return b"\xf2" + bytes([quarters])


def room(n):
    return b"\xf3" + struct.pack("<H", n)


def in_pieces(data, size):
    """Send `data` in steps of `size` bytes (at most 240)."""
    steps = (data[i : i + size] for i in range(0, len(data), size))
    return b"".join(bytes([len(step) - 1]) + step for step in steps)


UNLIMITED, EOF, TURN, SHUTDOWN = b"\xf4", b"\xf5", b"\xf6", b"\xf7"

# connection_tls: a header byte, then a connection program with the TLS
# opcodes of fuzz/logic/connection_tls.rs.
TLS13, TLS12, H2, NO_HELLO = 0x00, 0x01, 0x02, 0x80
HOLD, RELEASE, CLOSE_NOTIFY, KEY_UPDATE = b"\xf8", b"\xfa", b"\xfd", b"\xfe"


def records_of(n):
    """Header bits: the client's records carry at most 16 * n + 16 bytes."""
    return n << 2


def deliver(n):
    """The broker reads the next n (1 to 256) bytes waiting on the wire."""
    return b"\xf9" + bytes([n - 1])


def garbage(data):
    """`data` (1 to 256 bytes) onto the wire as it is."""
    return b"\xfb" + bytes([len(data) - 1]) + data


def read_size(n):
    return b"\xfc" + bytes([n])


SESSION = ALL + UPGRADE + sub(rid="s") + pub() + PING

# An HS256 token (not signed with any secret the fuzzed broker knows: its
# checks refuse it, which is what the seeds exercise).
TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1Iiwi"
    "ZXhwIjo0MTAyNDQ0ODAwfQ.c2lnbmF0dXJl"
)

SEEDS = {
    "http_request": {
        "get-topics": b"GET /topics HTTP/1.1\r\nHost: x\r\n\r\n",
        "create": post(b"/topics", b'{"name":"new"}'),
        "create-bad": post(b"/topics", b'{"name":7}') + post(b"/topics", b"[1]"),
        "create-array": post(b"/topics", b'["x"]') + post(b"/topics", b' [["y"]]'),
        "delete-encoded": b"DELETE /topics/a%20b HTTP/1.1\r\n\r\n",
        "probes-pipelined": b"".join(
            b"GET %s HTTP/1.1\r\n\r\n" % p
            for p in (b"/health", b"/readyz", b"/stats", b"/metrics", b"/nope")
        ),
        "post-without-length": b"POST /topics HTTP/1.1\r\n\r\nGET /topics HTTP/1.1\r\n\r\n",
        "upgrade-with-key": UPGRADE.replace(b"GET /ws", b"GET /ws?api_key=s3cret"),
        "api-key-header": b"GET /stats HTTP/1.1\r\nX-API-Key: s3cret\r\n\r\n",
        "http10-wrong-method": b"PUT /health HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        "chunked": b"POST /topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "two-lengths": b"POST /topics HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\n{}",
        "bearer": b"GET /topics/orders HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n" % TOKEN.encode(),
        "upgrade-with-token": UPGRADE.replace(b"GET /ws", b"GET /ws?token=" + TOKEN.encode()),
        "disconnect": post(b"/disconnect", b'{"sub":"u"}'),
    },
    "client_frame": {
        "subscribe": b'{"type":"subscribe","topic":"t","client_id":"c","last_n":5,"request_id":"r1"}',
        "unsubscribe": b'{"type":"unsubscribe","topic":"t","client_id":"c"}',
        "publish": b'{"type":"publish","topic":"orders","message":{"id":"m1","payload":{"order_id":"123"}},"request_id":"r3"}',
        "publish-spaces": b'{ "type" : "publish", "topic":"t\\u00e9", "message" : { "payload" : [1, 2.5e3, null, "\\ud83d\\ude00"] , "id":"x" } }',
        "publish-null-payload": b'{"type":"publish","topic":"t","message":{"id":"m","payload":null}}',
        "ping": b'{"type":"ping","request_id":"r4"}',
        "last-n-negative": b'{"type":"subscribe","topic":"t","client_id":"c","last_n":-1}',
        "last-n-huge": b'{"type":"subscribe","topic":"t","client_id":"c","last_n":123456789012345678901234567890}',
        "array": b'[{"type":"ping"}]',
        "publish-array-message": b'{"type":"publish","topic":"t","message":["m1",{"k":1}]}',
        "unknown-type": b'{"type":"dance","topic":7,"request_id":null}',
        "auth": b'{"type":"auth","token":"%s","request_id":"a1"}' % TOKEN.encode(),
        "auth-not-a-string": b'{"type":"auth","token":{"x":1}}',
        # The publish fast path (src/protocol/fast.rs): what it takes, and
        # what it leaves to serde.
        "publish-fast-any-order": b'{"request_id":null,"x":[1,{"y":-0.5e-3}],"client_id":"c","message":{"payload":{"a":1,"a":"\\udc00"},"id":"\\ud800","k":true},"topic":"t","type":"publish"}',
        "publish-fast-deepest": b'{"type":"publish","topic":"t","message":{"id":"m","payload":%s}}'
        % (b"[" * 126 + b"]" * 126),
        "publish-too-deep-for-fast": b'{"type":"publish","topic":"t","message":{"id":"m","payload":%s}}'
        % (b"[" * 127 + b"]" * 127),
        "publish-escaped-key": b'{"type":"publish","top\\u0069c":"t","message":{"id":"m","payload":1}}',
        "publish-duplicate-id": b'{"type":"publish","topic":"t","message":{"id":"m","id":"n","payload":1}}',
        "publish-leading-zero": b'{"type":"publish","topic":"t","message":{"id":"m","payload":01}}',
    },
    "ws_handshake": {
        "rfc-example": UPGRADE,
        "tokens-lists": UPGRADE.replace(b"Upgrade: websocket", b"upgrade: WebSocket").replace(
            b"Connection: Upgrade", b"connection: keep-alive, upgrade"
        ),
        "version-8": UPGRADE.replace(b"Version: 13", b"Version: 8"),
        "key-too-short": UPGRADE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZQ=="),
        "no-upgrade": b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
    },
    "connection": {
        "session": ALL + UPGRADE + sub(rid="s") + pub() + PING,
        "rest-then-upgrade": ALL
        + b"GET /topics HTTP/1.1\r\n\r\n"
        + post(b"/topics", b'{"name":"v"}')
        + UPGRADE
        + sub("v", last_n=2),
        "replay": send(UPGRADE + pub() + pub(payload=2) + pub(payload=3))
        + send(sub(last_n=10) + pub(payload=4)),
        "slow-consumer": ALL + UPGRADE + sub() + b"".join(pub(payload=i) for i in range(8)),
        "blocked-reader": send(UPGRADE)
        + room(0)
        + send(sub() + pub() + pub() + PING)
        + room(40)
        + send(pub() + pub() + pub())
        + UNLIMITED
        + TURN,
        "split-frames": bytes([0x05])
        + UPGRADE[:6]
        + send(UPGRADE[6:])
        + in_pieces(sub(), 3)
        + TURN,
        "fragmented-and-control": ALL
        + UPGRADE
        + frame('{"type":', fin=False)
        + frame(b"hi", opcode=0x9)
        + frame('"ping"}', opcode=0x0)
        + frame(b"\x00\x01", opcode=0x2)
        + frame(b"\x03\xe8bye", opcode=0x8),
        "too-big": ALL + UPGRADE + pub(payload="x" * 5000),
        "bad-utf8": ALL + UPGRADE + frame(b'{"type":"ping","x":"\xff"}'),
        "heartbeats": send(UPGRADE) + advance(121) + send(PING) + advance(255) + advance(255),
        "handshake-timeout": bytes([0x05]) + b"GET /h" + advance(44),
        "eof-mid-request": bytes([0x09]) + b"GET /topic" + EOF,
        "drain": send(UPGRADE + sub() + pub()) + SHUTDOWN + send(pub() + PING) + advance(8) + advance(255),
        "auth-message": ALL + UPGRADE + text({"type": "auth", "token": TOKEN}) + sub() + pub(),
        "unsubscribe-topic-missing": ALL
        + UPGRADE
        + sub()
        + text({"type": "unsubscribe", "topic": "t", "client_id": "c"})
        + sub("nope")
        + pub("nope"),
    },
    "connection_tls": {
        "session-tls13": bytes([TLS13]) + SESSION,
        "session-tls12": bytes([TLS12]) + SESSION,
        "small-records": bytes([TLS13 | records_of(1)]) + SESSION,
        "small-records-tls12": bytes([TLS12 | records_of(3)])
        + send(b"GET /topics HTTP/1.1\r\n\r\n" + post(b"/topics", b'{"name":"v"}'))
        + send(UPGRADE + sub("v", last_n=2)),
        "held-records-in-pieces": bytes([TLS13 | records_of(2)])
        + send(UPGRADE)
        + HOLD
        + send(sub() + pub() + PING)
        + b"".join(deliver(n) for n in (1, 4, 5, 17, 30, 64, 100, 200, 256))
        + RELEASE
        + TURN,
        "hello-in-pieces": bytes([TLS13])
        + HOLD
        + b"".join(deliver(n) for n in (3, 2, 40, 100))
        + RELEASE
        + send(UPGRADE + PING),
        "hello-in-pieces-tls12": bytes([TLS12])
        + HOLD
        + deliver(5)
        + deliver(60)
        + RELEASE
        + send(UPGRADE + sub() + pub()),
        "short-reads": bytes([TLS13]) + read_size(3) + SESSION,
        "short-reads-tls12": bytes([TLS12]) + read_size(7) + send(UPGRADE) + send(sub() + pub() + PING),
        "blocked-writes": bytes([TLS13])
        + send(UPGRADE)
        + room(0)
        + send(sub() + pub() + pub() + PING)
        + room(40)
        + send(pub() + pub() + pub())
        + UNLIMITED
        + TURN,
        "blocked-handshake": bytes([TLS13])
        + HOLD
        + room(100)
        + RELEASE
        + room(30)
        + send(UPGRADE)
        + UNLIMITED
        + send(PING),
        "slow-consumer": bytes([TLS13])
        + send(UPGRADE + sub())
        + room(0)
        + send(b"".join(pub(payload=i) for i in range(8)))
        + UNLIMITED,
        "key-update": bytes([TLS13])
        + send(UPGRADE + sub())
        + KEY_UPDATE
        + send(pub())
        + KEY_UPDATE
        + KEY_UPDATE
        + send(PING),
        "key-updates-past-the-limit": bytes([TLS13]) + send(UPGRADE) + KEY_UPDATE * 33 + send(PING),
        "close-notify": bytes([TLS13]) + send(UPGRADE + sub()) + CLOSE_NOTIFY + TURN,
        "close-notify-mid-request": bytes([TLS12]) + send(b"GET /topi") + CLOSE_NOTIFY,
        "eof-mid-record": bytes([TLS13]) + send(UPGRADE) + HOLD + send(PING) + deliver(9) + EOF,
        "handshake-timeout": bytes([TLS13]) + HOLD + advance(44),
        "handshake-timeout-half-hello": bytes([TLS12]) + HOLD + deliver(50) + advance(44),
        "heartbeats": bytes([TLS13]) + send(UPGRADE) + advance(121) + send(PING) + advance(255) + advance(255),
        "drain": bytes([TLS13])
        + send(UPGRADE + sub() + pub())
        + SHUTDOWN
        + send(pub() + PING)
        + advance(8)
        + advance(255),
        "alpn-h2": bytes([H2]) + SESSION,
        "plain-http-on-tls": bytes([NO_HELLO]) + garbage(b"GET /topics HTTP/1.1\r\n\r\n"),
        "garbage-after-handshake": bytes([TLS13]) + send(UPGRADE) + garbage(b"\x17\x03\x03\x00\x05hello") + send(PING),
        "garbage-in-handshake-tls12": bytes([TLS12]) + HOLD + deliver(20) + garbage(b"\x16\x03\x01\x00\x01\x00") + RELEASE,
        "alert-from-client": bytes([TLS13]) + send(UPGRADE) + garbage(b"\x15\x03\x03\x00\x02\x02\x28"),
    },
}


def main():
    for target, seeds in SEEDS.items():
        directory = os.path.join(HERE, "regressions", target)
        os.makedirs(directory, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(directory, "seed-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
