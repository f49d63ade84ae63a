"""Network checks run inside another network namespace (the session pod's,
or a peer's on the same Podman network): `nsenter --net=/proc/PID/ns/net
python probe.py COMMAND ...` prints one JSON object on stdout.

Commands:
  http METHOD URL [FORM]         status, headers and body (FORM: k=v&k2=v2)
  connect HOST PORT              whether a TCP connection opens
  terminal URL PASSWORD COMMAND  log in to the Dozlab terminal over HTTP,
                                 open its WebSocket, run COMMAND in the VM's
                                 shell and return what the shell printed
  lab URL PASSWORD [PAGE]        log in to the Dozlab terminal and GET /api/lab,
                                 or with PAGE POST /api/lab/check {"page": PAGE}

Standard library only: it runs with whatever Python runs the tests.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import struct
import sys
import time
import urllib.parse


def http_request(method: str, url: str, form: str | None = None, headers: dict | None = None) -> dict:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=20)
    hdrs = dict(headers or {})
    body = None
    if form is not None:
        body = form.encode()
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    out = {
        "status": r.status,
        "headers": {k.lower(): v for k, v in r.getheaders()},
        "set_cookie": r.headers.get_all("Set-Cookie") or [],
        "body": data[:8192].decode("utf-8", "replace"),
    }
    conn.close()
    return out


def connect(host: str, port: int) -> dict:
    try:
        with socket.create_connection((host, port), timeout=5):
            return {"ok": True}
    except OSError as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


class WebSocket:
    """The client side of RFC 6455, just enough for the terminal protocol."""

    def __init__(self, host: str, port: int, path: str, headers: dict):
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError(f"connection closed during the upgrade: {head!r}")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"upgrade refused: {head.decode(errors='replace')}")

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf

    def send(self, payload: bytes, opcode: int) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self) -> tuple[int, bytes]:
        b0, b1 = self._recv_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._recv_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._recv_exact(8))[0]
        mask = self._recv_exact(4) if b1 & 0x80 else None
        data = self._recv_exact(n)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        opcode = b0 & 0x0F
        if opcode == 9:
            self.send(data, 10)
        return opcode, data


def terminal(url: str, password: str, command: str, deadline_s: float = 180) -> dict:
    """Log in, open /ws, wait for the shell, run COMMAND followed by a marker
    only the shell can produce, and return the output up to the marker."""
    u = urllib.parse.urlsplit(url)
    base = f"{u.scheme}://{u.netloc}"
    login = http_request("POST", base + "/login", "password=" + urllib.parse.quote(password))
    cookies = [c.split(";", 1)[0] for c in login["set_cookie"]]
    if login["status"] not in (302, 303) or not cookies:
        return {"ok": False, "step": "login", "status": login["status"], "body": login["body"][:500]}
    ws = WebSocket(u.hostname, u.port or 80, "/ws", {"Cookie": "; ".join(cookies), "Origin": base})
    ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}).encode(), 1)
    events, output = [], b""
    sent = False
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        opcode, data = ws.recv()
        if opcode == 1:
            msg = json.loads(data)
            events.append(msg)
            if msg.get("type") in ("exit", "error"):
                break
            if msg.get("type") == "attached" and not sent:
                # The marker needs the shell's arithmetic: its echo of the typed
                # line never matches.
                ws.send(f"{command}; echo DOZLAB-POD-$((6*7))-DONE\n".encode(), 2)
                sent = True
        elif opcode == 2:
            output += data
            if b"DOZLAB-POD-42-DONE" in output:
                ws.send(json.dumps({"type": "close"}).encode(), 1)
                return {"ok": True, "login_status": login["status"], "events": events,
                        "output": output.decode("utf-8", "replace")}
        elif opcode == 8:
            break
    return {"ok": False, "step": "shell", "events": events, "output": output.decode("utf-8", "replace")}


def lab(url: str, password: str, page: str | None = None) -> dict:
    """Log in to the terminal at URL and return GET /api/lab, or with PAGE
    POST /api/lab/check for that page (status, JSON)."""
    base = url.rstrip("/")
    login = http_request("POST", base + "/login", "password=" + urllib.parse.quote(password))
    cookies = [c.split(";", 1)[0] for c in login["set_cookie"]]
    if login["status"] not in (302, 303) or not cookies:
        return {"ok": False, "step": "login", "status": login["status"], "body": login["body"][:500]}
    hdrs = {"Cookie": "; ".join(cookies)}
    if page is None:
        method, path, body = "GET", "/api/lab", None
    else:
        method, path, body = "POST", "/api/lab/check", json.dumps({"page": int(page)}).encode()
        hdrs["Content-Type"] = "application/json"
    u = urllib.parse.urlsplit(base + path)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=120)
    conn.request(method, u.path, body=body, headers=hdrs)
    r = conn.getresponse()
    text = r.read().decode("utf-8", "replace")
    conn.close()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    return {"ok": r.status == 200 and data is not None, "status": r.status, "json": data,
            "body": text[:2000]}


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    try:
        if cmd == "http":
            out = http_request(args[0], args[1], args[2] if len(args) > 2 else None)
        elif cmd == "connect":
            out = connect(args[0], int(args[1]))
        elif cmd == "terminal":
            out = terminal(args[0], args[1], args[2])
        elif cmd == "lab":
            out = lab(args[0], args[1], args[2] if len(args) > 2 else None)
        else:
            print(f"unknown command {cmd}", file=sys.stderr)
            return 2
    except (OSError, ConnectionError, ValueError) as e:
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
