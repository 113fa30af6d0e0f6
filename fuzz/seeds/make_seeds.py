#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/seeds/<target>/) from the
inputs the test suite uses: upgrade requests, client frames, tunnel frames,
admin paths. Run from fuzz/: python3 seeds/make_seeds.py"""
import os

def write(target, name, data):
    d = os.path.join("seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
def upgrade(path, extra=""):
    return (f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()

# http_head: first byte is where the bytes are split.
for i, head in enumerate([
    upgrade("/actors/echo/k"),
    upgrade("/actors/chat/room%2F1/x?name=a", "Sec-WebSocket-Protocol: chat, v2\r\nOrigin: http://x\r\n"),
    b"GET /healthz HTTP/1.1\nHost: t\n\n",
    b"GET /actors/echo/../admin HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /actors/chat/lobby/publish HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"GET / HTTP/1.0\r\n" + b"X: y\r\n" * 70 + b"\r\n",
]):
    write("http_head", f"seed{i}", bytes([17 * i % 256]) + head)

# http_body: first byte is the size of the pieces less one, the second the
# framing (low 2 bits: chunked, length, until close, a whole request).
for i, (mode, body) in enumerate([
    (0, b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nT: x\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    (0, b"00a ; n=\"v\"\r\n0123456789\r\n0\r\n\r\n"),
    (0, b"ffffffffffffffff\r\n"),
    (0, b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
    (0, b"0\r\n folded: x\r\n\r\n"),
    (1 | (1 << 2), b"x" * 97 + b"rest"),
    (2, b"data: 1\n\ndata: 2\n\n"),
    (3, b"POST /actors/a/b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    (3, b"POST /actors/a/b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n"),
    (3, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
]):
    write("http_body", f"seed{i}", bytes([(5 * i) % 256, mode]) + body)

def client_frame(fin, opcode, payload, mask=b"\xa1\x5b\x07\xe2"):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = bytes([first, 0x80 | n])
    elif n < 65536:
        hdr = bytes([first, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([first, 0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return hdr + mask + masked

# ws_decoder: first byte is the size of the pieces the bytes arrive in.
for i, frames in enumerate([
    client_frame(True, 1, b"hello"),
    client_frame(False, 1, b"he") + client_frame(True, 9, b"") + client_frame(True, 0, b"llo"),
    client_frame(True, 2, bytes(300)),
    client_frame(True, 8, b"\x03\xe8bye"),
    client_frame(True, 8, b"\x03\xe8\xff\xfe"),
    client_frame(True, 1, b"\xe2\x82"),
    bytes([0x81, 0x05]) + b"hello",
    client_frame(True, 1, "é€𝄞".encode()) * 3,
]):
    write("ws_decoder", f"seed{i}", bytes([1 + 7 * i]) + frames)

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7f
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def string(s):
    s = s.encode() if isinstance(s, str) else s
    return varint(len(s)) + s

def strings(items):
    return varint(len(items)) + b"".join(string(s) for s in items)

def frame(tag, body):
    return bytes([tag]) + varint(len(body)) + body

HELLO, START_ACTOR, CONN_OPEN, RESTORE_CONN = 0x01, 0x10, 0x20, 0x23
MESSAGE_TEXT, MESSAGE_BINARY, ACK, CLOSE, KEEPALIVE = 0x30, 0x31, 0x32, 0x33, 0x40
headers = varint(1) + string("origin") + string(b"http://x")
for i, data in enumerate([
    frame(HELLO, varint(1) + string("runner-1") + string("default") + varint(100) + varint(0) + strings(["echo", "chat"])),
    frame(START_ACTOR, varint(7) + string("chat") + strings(["room", "1"]) + string(b"")),
    frame(CONN_OPEN, varint(1 << 40) + varint(7) + string("/actors/chat/room") + string("a=1") + headers + strings(["v1"]) + string("127.0.0.1:5000")),
    frame(RESTORE_CONN, varint(3) + varint(8) + string("/actors/chat/r") + string("") + varint(0) + string("v1") + string(b"att") + varint(42)),
    frame(MESSAGE_TEXT, varint(9) + varint(1) + b"hi") + frame(ACK, varint(9) + varint(1)) + frame(KEEPALIVE, varint(5)),
    frame(MESSAGE_BINARY, varint(9) + varint(2) + bytes(64)) + frame(CLOSE, varint(9) + varint(1000) + string("bye")),
    frame(START_ACTOR, varint(7) + string("chat") + varint(17) + b"\x01k" * 17 + string(b"")),
    frame(0x90, string(b"ignorable extension")),
]):
    write("tunnel_decoder", f"seed{i}", data)

# The HTTP frames (PROTOCOL §7b): a request with a body and its answer,
# then the flow-control and cancel frames, then one header over the limit.
HTTP_REQUEST, HTTP_RESPONSE, HTTP_BODY, HTTP_END, HTTP_CANCEL, HTTP_CREDIT = range(0x50, 0x56)
http_headers = varint(2) + string("host") + string(b"example.com") + string("content-length") + string(b"5")
for i, data in enumerate([
    frame(HTTP_REQUEST, varint(9) + varint(7) + string("POST") + string("/history") + string("since=3")
          + http_headers + string("127.0.0.1:5000") + b"\x01")
    + frame(HTTP_BODY, varint(9) + b"hello") + frame(HTTP_END, varint(9)),
    frame(HTTP_RESPONSE, varint(9) + varint(200) + http_headers + b"\x01")
    + frame(HTTP_CREDIT, varint(9) + varint(262144)) + frame(HTTP_BODY, varint(9) + b"data: 1\n\n"),
    frame(HTTP_CANCEL, varint(9) + string("client went away")) + frame(HTTP_RESPONSE, varint(3) + varint(101) + varint(0) + b"\x00"),
    frame(HTTP_RESPONSE, varint(9) + varint(431) + varint(1) + string("x") + string(b"v" * 65536) + b"\x00"),
], start=8):
    write("tunnel_decoder", f"seed{i}", data)

for i, target in enumerate([
    "/healthz", "/metrics", "/actors/chat/room/1", "/actors/chat/lobby/migrate",
    "/actors/chat/lobby/publish?conn=5", "/runners/host%2Da/drain", "/actors/echo/%2E%2E/x",
    "/actors/" + "n" * 70 + "/k", "/runners//drain",
]):
    write("admin_router", f"seed{i}", target.encode())

# http_target: HTTP targets to actors, then an actor's header fields
# (`name:value`, NUL-separated).
for i, data in enumerate([
    b"/actors/chat/lobby/history?n=5\0content-type:text/plain\0content-length:5",
    b"/actors/chat/a/b/-/events\0connection:x-hop\0x-hop:1",
    b"/ns/acme/actors/counter/%2D/-/x?token=t\0content-length:1\0content-length:2",
    b"/actors/chat/-/x\0transfer-encoding:chunked",
    b"/actors/chat/lobby/\0content-length:-1",
]):
    write("http_target", f"seed{i}", data)

# client_credential: heads with tokens in each place, and a bare token.
for i, data in enumerate([
    upgrade("/ns/acme/actors/chat/room?token=tt1.eyJucyI6ImFjbWUifQ.abc&x=1"),
    upgrade("/ns/acme/actors/chat/room", "Authorization: Bearer pk-acme-0123456789abcdef\r\n"),
    upgrade("/actors/chat/room", "Sec-WebSocket-Protocol: chat.v1, tether-token.tt1.aaaa.bbbb\r\n"),
    upgrade("/actors/chat/room?token=a&token=b"),
    b"tt1.eyJucyI6ImFjbWUiLCJuYW1lIjoiY2hhdCIsImtleSI6WyJyb29tIl0sImV4cCI6MX0.P2_v56kjQ3AvQXxcsnDmXh5GgbC3jBBoRquCkuesG6c",
]):
    write("client_credential", f"seed{i}", data)

# tls_server: first byte is where the bytes are split; a ClientHello-shaped
# record, and plain HTTP on the TLS port.
hello = (bytes.fromhex("160301") + (200).to_bytes(2, "big") + bytes.fromhex("010000c40303")
         + bytes(32) + b"\x00" + bytes.fromhex("0002130101000099"))
write("tls_server", "seed0", b"\x05" + hello + bytes(200))
write("tls_server", "seed1", b"\x00" + b"GET / HTTP/1.1\r\n\r\n")

# handover_note: each note of the upgrade channel (src/handover), one
# connection record with everything present and one with nothing.
def note(tag, body=b""):
    return varint(1) + bytes([tag]) + body

def byte_string(b):
    return varint(len(b)) + b

def conn_record(full):
    held = (varint(2) + varint(10) + b"\x00" + byte_string(b"m10")
            + varint(11) + b"\x01" + byte_string(b"\x00\x01")) if full else varint(0)
    headers = (varint(1) + string("origin") + byte_string(b"https://a")) if full else varint(0)
    return (string("default") + string("chat") + strings(["room/1", "a"] if full else [])
            + bytes([3 if full else 0]) + varint((3 << 56) | 77) + string("127.0.0.1:4000")
            + varint(12) + varint(9) + string("x=1" if full else "") + headers
            + string("chat.v1" if full else "") + byte_string(b"att" if full else b"")
            + held + byte_string(b"\x81\x85" if full else b""))

for i, data in enumerate([
    note(1, varint(2) + varint(2)), note(2), note(4, varint(1000)), note(5),
    note(3, conn_record(True)), note(3, conn_record(False)),
]):
    write("handover_note", f"seed{i}", data)
