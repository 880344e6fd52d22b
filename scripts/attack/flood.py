#!/usr/bin/env python3
"""A banned client, then a cross-site page, flooding `POST /verify`: what does it cost the disk? Run by
scripts/attack.sh.

1. 127.0.8.1 sends wrong codes until it is banned (5), then for 5 s sends as many requests as 8
   keep-alive connections carry.
2. 127.0.8.2 does the same for 5 s with `Origin: https://evil.example` (refused as cross-site).

Prints `name: value` lines: requests sent, and the audit log's growth in bytes and lines for each; with
the server's stderr at hand (scripts/attack.sh keeps it as `stderr` in the server's directory) its growth
too.

Usage: flood.py [URL [STATE_DIR_OR_AUDIT_LOG]]; without arguments it reads AUTHRUN_ATTACK_HOST,
AUTHRUN_ATTACK_PORT and AUTHRUN_ATTACK_DIR as scripts/attack.sh sets them.
"""

import os
import socket
import sys
import threading
import time

from _shared import figure, server_address, state_place, audit_log

FLOOD_S = 5
CONNECTIONS = 8
TIMEOUT_S = 10
WRONG_CODE = "000000"  # wrong unless it is one of the 3 valid codes in a million









def server_stderr():
    place = state_place()
    path = os.path.join(place if os.path.isdir(place) else os.path.dirname(place), "stderr")
    return path if os.path.isfile(path) else None


def size_and_lines(path):
    if path is None:
        return 0, 0
    with open(path, "rb") as file:
        data = file.read()
    return len(data), data.count(b"\n")


def request(host, port, extra=""):
    body = f"code={WRONG_CODE}".encode()
    head = (
        f"POST /verify HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n{extra}"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


class Connection:
    """A keep-alive HTTP/1.1 connection from one source address."""

    def __init__(self, host, port, source):
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.settimeout(TIMEOUT_S)
        self.sock.connect((host, port))
        self.buffer = b""

    def ask(self, payload):
        """Sends `payload` and reads its answer: the status, or None when the server closed."""
        self.sock.sendall(payload)
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(self.buffer) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        self.buffer = self.buffer[length:]
        return int(head.split(b" ", 2)[1])

    def close(self):
        self.sock.close()


def flood(host, port, source, payload):
    """Requests from `source` for FLOOD_S seconds on CONNECTIONS connections: (sent, statuses seen)."""
    counts = []
    statuses = set()
    deadline = time.monotonic() + FLOOD_S

    def worker():
        sent = 0
        connection = None
        while time.monotonic() < deadline:
            try:
                connection = connection or Connection(host, port, source)
                status = connection.ask(payload)
            except OSError:
                status = None
            if status is None:
                if connection:
                    connection.close()
                connection = None
                continue
            statuses.add(status)
            sent += 1
        if connection:
            connection.close()
        counts.append(sent)

    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(FLOOD_S + TIMEOUT_S * 2)
    return sum(counts), sorted(statuses)


def measured(name, host, port, source, payload):
    log, stderr = audit_log(), server_stderr()
    log_before, stderr_before = size_and_lines(log), size_and_lines(stderr)
    sent, statuses = flood(host, port, source, payload)
    time.sleep(0.5)  # the server's log thread catches up
    log_after, stderr_after = size_and_lines(log), size_and_lines(stderr)
    figure(f"{name}_requests_in_{FLOOD_S}s", sent)
    figure(f"{name}_answers", " ".join(str(status) for status in statuses))
    figure(f"{name}_audit_bytes", log_after[0] - log_before[0])
    figure(f"{name}_audit_lines", log_after[1] - log_before[1])
    if stderr is not None:
        figure(f"{name}_stderr_bytes", stderr_after[0] - stderr_before[0])


def main():
    host, port = server_address()
    banned = "127.0.8.1"
    wrong = request(host, port)
    connection = Connection(host, port, banned)
    first = [connection.ask(wrong) for _ in range(6)]
    connection.close()
    figure("flood_ban_answers", " ".join(str(status) for status in first))
    measured("flood_banned", host, port, banned, wrong)
    foreign = request(host, port, "Origin: https://evil.example\r\n")
    measured("flood_cross_site", host, port, "127.0.8.2", foreign)


if __name__ == "__main__":
    main()
