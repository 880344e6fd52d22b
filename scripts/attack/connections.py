#!/usr/bin/env python3
"""Connection attacks: sockets that hold a slot without sending a request. Run by scripts/attack.sh.

1. One address opens 600 sockets and sends nothing: how long until a second address is served, how many
   of the 600 the server refuses at once, and when it closes the ones it took.
2. Stalls from five addresses, 20 connections each: nothing sent, a partial HTTP/2 preface, a preface
   and SETTINGS, and `POST /verify` bodies that stop (fixed length and chunked): when each is closed,
   and what it is answered.
3. 600 silent sockets from 20 addresses (30 each, under the per-client cap) take every slot: how long
   until a further address is served.

Prints `name: value` lines. Every wait is bounded.
"""

import os
import selectors
import socket
import time

HOST = os.environ.get("AUTHRUN_ATTACK_HOST", "127.0.0.1")
PORT = int(os.environ["AUTHRUN_ATTACK_PORT"])
LIMIT_S = 60  # the longest any phase waits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
STALLS = {
    "silent": b"",
    "partial_h2_preface": PREFACE[:16],
    "h2_preface_and_settings": PREFACE + EMPTY_SETTINGS,
    "verify_body_fixed": b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 100\r\n\r\ncode=12",
    "verify_body_chunked": b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n5\r\ncode=\r\n",
}


def figure(name, value):
    print(f"{name}: {value}", flush=True)


def connect(source):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((HOST, PORT))
    return s


def health(source):
    """GET /healthz from `source` on a new connection: the status code, or None when refused or cut."""
    try:
        s = connect(source)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        s.close()
        return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    except OSError:
        return None


def time_until_served(source):
    """Milliseconds until `source` gets a 200 from /healthz (retrying), or None within LIMIT_S."""
    started = time.monotonic()
    while time.monotonic() - started < LIMIT_S:
        if health(source) == 200:
            return round((time.monotonic() - started) * 1000)
        time.sleep(0.05)
    return None


def watch_closes(sockets, started):
    """Waits (bounded) until the server closes each socket: {socket: (seconds after `started`, bytes)}."""
    selector = selectors.DefaultSelector()
    received = {}
    for s in sockets:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
        received[s] = b""
    closed = {}
    deadline = time.monotonic() + LIMIT_S
    while len(closed) < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                received[s] += chunk
            else:
                closed[s] = (time.monotonic() - started, received[s])
                selector.unregister(s)
    for s in sockets:
        s.close()
    return closed


def status_of(answer):
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "none"


def one_address_600_silent():
    started = time.monotonic()
    held = [connect("127.0.0.2") for _ in range(600)]
    served_ms = time_until_served("127.0.0.3")
    figure("silent_600_one_address_second_address_served_ms", served_ms if served_ms is not None else "never")
    closes = watch_closes(held, started)
    refused = sum(1 for t, answer in closes.values() if answer.startswith(b"HTTP/1.1 429"))
    figure("silent_600_one_address_refused_429", refused)
    kept = [t for t, answer in closes.values() if not answer]
    figure("silent_600_one_address_held_by_server", len(kept))
    figure("silent_600_one_address_held_closed_after_s", round(max(kept), 1) if kept else "n/a")
    figure("silent_600_one_address_still_open", 600 - len(closes))


def stalls():
    started = time.monotonic()
    groups = {}
    for i, (name, attack) in enumerate(STALLS.items()):
        sockets = []
        for _ in range(20):
            s = connect(f"127.0.1.{i + 1}")
            if attack:
                s.sendall(attack)
            sockets.append(s)
        groups[name] = sockets
    closes = watch_closes([s for sockets in groups.values() for s in sockets], started)
    for name, sockets in groups.items():
        ended = [closes[s] for s in sockets if s in closes]
        if len(ended) < len(sockets):
            figure(f"stall_{name}_closed_after_s", f"{len(sockets) - len(ended)} of {len(sockets)} still open")
            continue
        answers = sorted({status_of(answer) for _, answer in ended})
        figure(f"stall_{name}_closed_after_s", round(max(t for t, _ in ended), 1))
        figure(f"stall_{name}_answer", ",".join(answers))


def many_addresses_600_silent():
    started = time.monotonic()
    held = [connect(f"127.0.2.{i // 30 + 1}") for i in range(600)]
    served_ms = time_until_served("127.0.0.3")
    figure("silent_600_from_20_addresses_another_served_ms", served_ms if served_ms is not None else "never")
    closes = watch_closes(held, started)
    figure("silent_600_from_20_addresses_refused_503",
           sum(1 for _, answer in closes.values() if answer.startswith(b"HTTP/1.1 503")))
    figure("silent_600_from_20_addresses_still_open", 600 - len(closes))


def main():
    one_address_600_silent()
    stalls()
    many_addresses_600_silent()


if __name__ == "__main__":
    main()
