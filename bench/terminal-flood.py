#!/usr/bin/env python3
"""Resident memory of `dozlab terminal` under floods (security review, issue 15).

Starts the release binary on loopback (no VM: the key files are missing), then
floods it in turn with: 300 half-sent requests held open, 2000 wrong passwords
from 8 threads, and 100 WebSockets each sending a 1 MiB frame (closed with
1009). Prints VmRSS idle, VmHWM (peak) and VmRSS after the floods, next to the
figures of the review (before the fixes: peak <= 43 MiB, back to ~21 MiB).
Usage: bench/terminal-flood.py [target/release/dozlab]
"""
import base64, os, socket, subprocess, sys, tempfile, threading, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/dozlab"

def mem(pid):
    f = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
    kib = lambda k: int(f[k].split()[0])
    return kib("VmRSS") / 1024, kib("VmHWM") / 1024

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def request(port, raw):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(raw)
    out = b""
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
    s.close()
    return out

def login(port, pw):
    body = f"password={pw}".encode()
    return request(port, b"POST /login HTTP/1.1\r\nHost: b\r\nConnection: close\r\n"
                   b"Content-Type: application/x-www-form-urlencoded\r\n"
                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

def ws_big_frame(port, cookie):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: b\r\nCookie: {cookie}\r\nConnection: Upgrade\r\n"
               f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n").encode())
    s.recv(4096)
    n = 1 << 20
    head = bytes([0x82, 0xFF]) + n.to_bytes(8, "big") + b"\0\0\0\0"
    try:
        s.sendall(head + b"x" * n)
        s.recv(4096)
    except OSError:
        pass
    s.close()

def main():
    d = tempfile.mkdtemp()
    open(f"{d}/pw", "w").write("flood-password\n")
    port = free_port()
    p = subprocess.Popen([BIN, "terminal", "--listen", f"127.0.0.1:{port}", "--vm-ip", "127.0.0.1",
                          "--vm-ssh-port", "1", "--password-file", f"{d}/pw",
                          "--ssh-key", f"{d}/none", "--known-hosts", f"{d}/none"],
                         stderr=subprocess.DEVNULL, env={**os.environ, "DOZLAB_LOG": "error"})
    try:
        while True:
            try: socket.create_connection(("127.0.0.1", port)).close(); break
            except OSError: time.sleep(0.05)
        cookie = login(port, "flood-password").split(b"set-cookie: ")[1].split(b";")[0].decode()
        idle, _ = mem(p.pid)
        held = []
        for _ in range(300):
            s = socket.socket(); s.setblocking(False)
            s.connect_ex(("127.0.0.1", port)); held.append(s)
        time.sleep(0.5)
        for s in held:
            try: s.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 2000)
            except OSError: pass
        def guesses():
            for i in range(250): login(port, f"wrong{i}")
        ts = [threading.Thread(target=guesses) for _ in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        ts = [threading.Thread(target=ws_big_frame, args=(port, cookie)) for _ in range(100)]
        [t.start() for t in ts]; [t.join() for t in ts]
        _, peak = mem(p.pid)
        for s in held: s.close()
        time.sleep(12)
        after, _ = mem(p.pid)
        print(f"{'measure':<40} {'dozlab now':>12} {'review (before)':>16} {'ratio':>7}")
        print(f"{'resident memory idle':<40} {idle:>9.1f} MiB {'':>16}")
        print(f"{'peak under floods (VmHWM)':<40} {peak:>9.1f} MiB {43:>12.1f} MiB {peak/43:>7.2f}")
        print(f"{'resident memory after the floods':<40} {after:>9.1f} MiB {21:>12.1f} MiB {after/21:>7.2f}")
    finally:
        p.terminate(); p.wait()

main()
