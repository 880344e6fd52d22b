"""What the attack scripts share: where the server is, where its audit log is, and how a figure prints.
The leading underscore keeps scripts/attack.sh from running it as an attack."""

import os
import sys
from urllib.parse import urlsplit


def figure(name, value):
    print(f"{name}: {value}", flush=True)


def server_address():
    """argv[1] (a URL), or AUTHRUN_ATTACK_HOST and AUTHRUN_ATTACK_PORT as scripts/attack.sh sets them."""
    if len(sys.argv) > 1:
        url = urlsplit(sys.argv[1])
        return url.hostname or "127.0.0.1", url.port or 80
    return os.environ.get("AUTHRUN_ATTACK_HOST", "127.0.0.1"), int(os.environ["AUTHRUN_ATTACK_PORT"])


def state_place():
    """argv[2], or the server's working directory as scripts/attack.sh sets it."""
    return sys.argv[2] if len(sys.argv) > 2 else os.environ.get("AUTHRUN_ATTACK_DIR", ".")


def audit_log():
    """The audit log: argv[2] (the log, or a directory holding it or `.authrun/`), or the attack dir's."""
    place = state_place()
    if os.path.isfile(place):
        return place
    for candidate in ("audit.log", ".authrun/audit.log", "state/audit.log"):
        path = os.path.join(place, candidate)
        if os.path.isfile(path):
            return path
    return None
