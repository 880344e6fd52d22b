#!/usr/bin/env python3
"""A burst of wrong codes released at one moment: how many does authrun check? Run by scripts/attack.sh.

1. 30 connections from one address (under any per-address connection cap) each send a whole
   `POST /verify` with a wrong code but its last byte; then the last bytes go out one right after the
   other. The client limit is 5 failures.
2. The same from 500 addresses (127.0.10.1 and on). The limit from anywhere is 10 within the hour, 5 of
   them already used by step 1.

Prints `name: value` lines: the wrong codes answered 401 (checked) in each step and in the window, the
`wrong` lines of the audit log, and the server's threads (start it with TOKIO_WORKER_THREADS=64 to see
a big machine's race). The server is paused for an hour afterwards.

Usage: burst.py [URL [STATE_DIR_OR_AUDIT_LOG]]; without arguments it reads AUTHRUN_ATTACK_HOST,
AUTHRUN_ATTACK_PORT, AUTHRUN_ATTACK_PID and AUTHRUN_ATTACK_DIR as scripts/attack.sh sets them.
"""

import json
import os
import socket
import sys

from _shared import figure, server_address, audit_log

TIMEOUT_S = 30  # the longest one answer may take
WRONG_CODE = "000000"  # wrong unless it is one of the 3 valid codes in a million







def audited_wrong(path):
    """The `wrong` attempts the audit log holds (a counted line stands for `count` attempts)."""
    if path is None:
        return "no audit log found"
    total = 0
    with open(path, encoding="utf-8") as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "attempt" and entry.get("outcome") == "wrong":
                total += entry.get("count", 1)
    return total


def server_threads():
    pid = os.environ.get("AUTHRUN_ATTACK_PID")
    if not pid:
        return "unknown"
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return "unknown"


def request(host, port):
    body = f"code={WRONG_CODE}".encode()
    head = (
        f"POST /verify HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def status_of(sock):
    """The status of the answer on `sock`, read to its end; None when cut."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    finally:
        sock.close()
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def burst(host, port, sources):
    """Every byte but the last from each source, then the last bytes together: the answers' statuses."""
    payload = request(host, port)
    sockets = []
    for source in sources:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(TIMEOUT_S)
        sock.connect((host, port))
        sock.sendall(payload[:-1])
        sockets.append(sock)
    for sock in sockets:
        sock.sendall(payload[-1:])
    return [status_of(sock) for sock in sockets]


def main():
    host, port = server_address()
    log = audit_log()
    figure("burst_server_threads", server_threads())

    one = burst(host, port, ["127.0.9.1"] * 30)
    figure("burst_one_address_connections", len(one))
    figure("burst_one_address_wrong_codes_checked", f"{one.count(401)} (limit 5)")

    many = [f"127.0.{10 + i // 250}.{i % 250 + 1}" for i in range(500)]
    spread = burst(host, port, many)
    figure("burst_500_addresses_wrong_codes_checked", spread.count(401))
    checked = one.count(401) + spread.count(401)
    figure("burst_wrong_codes_checked_in_window", f"{checked} (limit 10)")
    figure("burst_audited_wrong_codes", audited_wrong(log))
    others = sorted({status for status in one + spread if status != 401}, key=str)
    figure("burst_other_answers", " ".join(str(status) for status in others))


if __name__ == "__main__":
    main()
