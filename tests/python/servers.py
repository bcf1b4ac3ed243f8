"""Real servers for the remote-read tests, started on 127.0.0.1 on free
ports and stopped afterwards (no process, no temporary directory left):

- NginxServer: nginx serving one docroot over HTTP and HTTPS (a self-signed
  certificate made with openssl for IP 127.0.0.1; clients pass
  ``server.cert`` as ``ca_file``).  Locations:
    /files/<x>          the docroot, with Range support (ETag, 206)
    /norange/<x>        the same files with ``max_ranges 0``: Range is
                        ignored, every answer is a 200 with the whole body
    /redirect/<x>       302 to /files/<x> (/redirect301/, /redirect307/,
                        /redirect308/ the other codes); /loop/<x> redirects
                        to itself forever
    /private/<x>        the docroot, only with "Authorization: Bearer
                        testtoken" (else 401)
    /dav/<x>            PUT and DELETE (WebDAV module) into docroot/dav/
  Every request is logged to ``server.access_log`` as
  "method uri status bytes_sent body_bytes_sent range": see requests().
- MotoServer: moto's standalone server (S3, IAM), in-memory.  auth=True
  makes it check SigV4 signatures and IAM policies (moto's
  /moto-api/reset-auth after an IAM user was made): see enable_auth().
- FaultProxy: a threaded HTTP proxy (stdlib only) in front of either, which
  forwards to the real server and injects faults per request: statuses,
  delays, slow bodies, connection resets, stalls, shifted ranges.

Each class is usable alone (``with NginxServer() as s: ...``); conftest.py
makes session fixtures of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Optional

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                  else None)
OPENSSL = shutil.which("openssl")
BEARER = "testtoken"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: Optional[subprocess.Popen] = None, timeout: float = 20.0,
              what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stops |proc| (which we started) and everything in its process group
    (it was started in a session of its own)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout)
    else:  # the leader is gone; its group may not be
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# ---- nginx ---------------------------------------------------------------------------


_NGINX_CONF = """\
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    types {{ }}
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    log_format dlpx '$request_method $uri $status $bytes_sent $body_bytes_sent "$http_range"';
    access_log {tmp}/access.log dlpx;
    keepalive_requests 10000;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        server_name 127.0.0.1;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /files/ {{ alias {docroot}/; }}
        location /norange/ {{ alias {docroot}/; max_ranges 0; }}
        location /private/ {{
            alias {docroot}/;
            if ($http_authorization != "Bearer {bearer}") {{ return 401; }}
        }}
        location ~ ^/redirect/(.*)$ {{ return 302 /files/$1; }}
        location ~ ^/redirect301/(.*)$ {{ return 301 /files/$1; }}
        location ~ ^/redirect307/(.*)$ {{ return 307 /files/$1; }}
        location ~ ^/redirect308/(.*)$ {{ return 308 /files/$1; }}
        location ~ ^/loop/(.*)$ {{ return 302 /loop/$1; }}
        location /dav/ {{
            alias {docroot}/dav/;
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
        location / {{ return 404; }}
    }}
}}
"""


@dataclass
class LogEntry:
    method: str
    uri: str
    status: int
    bytes_sent: int       # the whole response, headers included
    body_bytes_sent: int
    range: str            # the Range header ("" without one)


class NginxServer:
    """nginx on two free ports (HTTP and HTTPS) serving |docroot|, in a
    temporary directory of its own (removed by stop())."""

    def __init__(self) -> None:
        if NGINX is None:
            raise FileNotFoundError("nginx is not installed")
        if OPENSSL is None:
            raise FileNotFoundError("openssl is not installed")
        self.tmp = tempfile.mkdtemp(prefix="dlpx-nginx-")
        self.proc: Optional[subprocess.Popen] = None
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        t = self.tmp
        self.docroot = os.path.join(t, "www")
        os.makedirs(os.path.join(self.docroot, "dav"))
        for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(t, d))
        self.cert, self.key = os.path.join(t, "cert.pem"), os.path.join(t, "key.pem")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", self.key, "-out", self.cert, "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        self.access_log = os.path.join(t, "access.log")
        self.error_log = os.path.join(t, "error.log")
        self.http_port, self.https_port = free_port(), free_port()
        while self.https_port == self.http_port:
            self.https_port = free_port()
        # as root, workers would switch to "nobody", who cannot read a 0700 tmpdir
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = os.path.join(t, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_NGINX_CONF.format(user=user, tmp=t, http_port=self.http_port,
                                       https_port=self.https_port, cert=self.cert, key=self.key,
                                       docroot=self.docroot, bearer=BEARER))
        self.proc = subprocess.Popen(
            [NGINX, "-p", t, "-c", conf, "-e", self.error_log, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        try:
            wait_port(self.http_port, self.proc, what="nginx")
            wait_port(self.https_port, self.proc, what="nginx")
        except RuntimeError as e:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            raise RuntimeError(f"{e}: {err} {self._errors()}") from None
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.https = f"https://127.0.0.1:{self.https_port}"

    def _errors(self) -> str:
        try:
            with open(self.error_log) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    # files and URLs
    def put(self, name: str, data: bytes) -> str:
        """Writes |data| as docroot/|name| (atomically: a new inode, so a new
        ETag) and returns its path."""
        path = os.path.join(self.docroot, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return path

    def url(self, name: str, location: str = "files", https: bool = False) -> str:
        return f"{self.https if https else self.http}/{location}/{name}"

    # the access log
    def log_mark(self) -> int:
        """The access log's size now: requests() after it sees only newer
        entries."""
        try:
            return os.path.getsize(self.access_log)
        except OSError:
            return 0

    def requests(self, since: int = 0, settle: float = 0.2) -> list[LogEntry]:
        """The access log's entries after byte |since| (nginx writes an entry
        when a response is finished: wait until the log stops growing)."""
        deadline = time.monotonic() + 5
        size = -1
        while time.monotonic() < deadline:
            time.sleep(settle)
            now = self.log_mark()
            if now == size:
                break
            size = now
        with open(self.access_log, "rb") as f:
            f.seek(since)
            lines = f.read().decode().splitlines()
        out = []
        for line in lines:
            head, _, rng = line.partition(' "')
            m, uri, status, sent, body = head.split()
            rng = rng.rstrip("\"")
            out.append(LogEntry(m, uri, int(status), int(sent), int(body), "" if rng == "-" else rng))
        return out

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> NginxServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- moto ----------------------------------------------------------------------------


def moto_available() -> bool:
    try:
        import moto.server  # noqa: F401
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


class MotoServer:
    """moto's standalone server on a free port.  Clients use
    ``endpoint`` (path-style, region us-east-1) and the credentials in
    ``env`` (moto accepts any while auth is off)."""

    ACCESS_KEY = "testing"
    SECRET_KEY = "testing"

    def __init__(self) -> None:
        if not moto_available():
            raise FileNotFoundError("moto[server] and boto3 are not installed")
        self.tmp = tempfile.mkdtemp(prefix="dlpx-moto-")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("AWS_") or k.startswith("MOTO_"):
                del env[k]
        env.update(HOME=self.tmp, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        self._log = open(os.path.join(self.tmp, "moto.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=self.tmp, start_new_session=True)
        try:
            wait_port(self.port, self.proc, timeout=60, what="moto")
            deadline = time.monotonic() + 30
            while True:  # listening is not answering yet
                try:
                    urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.auth = False

    @property
    def env(self) -> dict:
        """Environment for clients (dlpx reads AWS_* at each call)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY, "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self, service: str = "s3", **kw):
        import boto3
        from botocore.config import Config
        args = dict(endpoint_url=self.endpoint, region_name="us-east-1",
                    aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY,
                    config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))
        args.update(kw)
        return boto3.client(service, **args)

    def reset(self) -> None:
        """Drops every bucket and object (and IAM users)."""
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def set_auth(self, count: float) -> None:
        """moto checks signatures and IAM policies after |count| more
        requests (float('inf'): never)."""
        req = urllib.request.Request(self.endpoint + "/moto-api/reset-auth",
                                     data=str(count).encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()
        self.auth = count != float("inf")

    def enable_auth(self) -> tuple[str, str]:
        """Makes an IAM user allowed every s3 action, turns authentication
        on and returns the user's (access key id, secret)."""
        iam = self.client("iam")
        iam.create_user(UserName="dlpx")
        policy = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
        iam.put_user_policy(UserName="dlpx", PolicyName="all-s3", PolicyDocument=policy)
        key = iam.create_access_key(UserName="dlpx")["AccessKey"]
        self.set_auth(0)
        return key["AccessKeyId"], key["SecretAccessKey"]

    def log(self) -> str:
        with open(os.path.join(self.tmp, "moto.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        if getattr(self, "proc", None) is not None:
            stop_process(self.proc, signal.SIGTERM)
            self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- the fault-injecting proxy ---------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str              # the request target, query included
    headers: dict          # lower-case names
    fault: Optional[str] = None


@dataclass
class Fault:
    """One kind of fault for the next |count| requests that |match|.

    kind:
      "status"  answer |status| (no forwarding), body |body|
      "delay"   wait |seconds| before forwarding the response
      "slow"    forward the response |chunk| bytes at a time, |seconds|
                between chunks
      "reset"   forward the response head and |after| bytes of its body, then
                reset the connection (RST: SO_LINGER 0)
      "stall"   forward the head and |after| body bytes, then send nothing for
                |seconds| (or until the proxy stops), then close
      "hang"    never answer (nor forward): wait |seconds| (or until the proxy
                stops), then close
      "shift"   forward the request with its Range moved by |shift| bytes
                (the server answers, truthfully, another range)
      "etag"    forward, with the response's ETag replaced
    """
    kind: str
    count: float = 1
    match: Optional[Callable[[Request], bool]] = None
    status: int = 500
    body: bytes = b""
    seconds: float = 0.0
    chunk: int = 16384
    after: int = 0
    shift: int = 1
    applied: int = 0

    def matches(self, req: Request) -> bool:
        return self.count > 0 and (self.match is None or bool(self.match(req)))


def _s3_error(status: int) -> bytes:
    code = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied",
            404: "NoSuchKey"}.get(status, "InjectedError")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>injected by the test proxy</Message><RequestId>0</RequestId>"
            f"</Error>").encode()


def is_ranged_get(req: Request) -> bool:
    return req.method == "GET" and "range" in req.headers


def is_part_upload(req: Request) -> bool:
    return req.method == "PUT" and "partNumber=" in req.path


class FaultProxy:
    """Forwards HTTP/1.1 requests from 127.0.0.1:``port`` to |upstream|
    ("http://127.0.0.1:PORT"), one request per connection (it asks the
    upstream for "Connection: close" and passes that on), applying the
    first matching fault of ``faults``.  ``requests`` records every request
    seen."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.split("://", 1)[1].rstrip("/").partition(":")
        self.upstream = (host, int(port or 80))
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns: set = set()
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.acceptor = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self.acceptor.start()

    # control
    def inject(self, kind: str, count: float = 1, match=None, **kw) -> Fault:
        f = Fault(kind, count, match, **kw)
        if kind == "status" and not f.body:
            f.body = _s3_error(f.status)
        with self.lock:
            self.faults.append(f)
        return f

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests.clear()

    def _pick(self, req: Request) -> Optional[Fault]:
        with self.lock:
            self.requests.append(req)
            for f in self.faults:
                if f.matches(req):
                    f.count -= 1
                    f.applied += 1
                    req.fault = f.kind
                    return f
        return None

    # serving
    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self.stopping.is_set():
                    c.close()
                    return
                self.conns.add(c)
                t = threading.Thread(target=self._serve, args=(c,), daemon=True)
                self.threads = [x for x in self.threads if x.is_alive()] + [t]
            t.start()

    def _forget(self, *socks) -> None:
        with self.lock:
            for s in socks:
                self.conns.discard(s)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    @staticmethod
    def _read_head(s: socket.socket, buf: bytearray) -> Optional[bytes]:
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                return None
            buf += d
        i = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:i])
        del buf[:i]
        return head

    @staticmethod
    def _parse(head: bytes) -> tuple[str, list[tuple[str, str]]]:
        lines = head.decode("latin-1").split("\r\n")
        return lines[0], [tuple(x.strip() for x in ln.split(":", 1))  # type: ignore[misc]
                          for ln in lines[1:] if ":" in ln]

    def _serve(self, c: socket.socket) -> None:
        up = f = None
        try:
            c.settimeout(60)
            buf = bytearray()
            head = self._read_head(c, buf)
            if head is None:
                return
            start, hdrs = self._parse(head)
            method, target, _ = start.split(" ", 2)
            req = Request(method, target, {k.lower(): v for k, v in hdrs})
            f = self._pick(req)
            if f is not None and f.kind == "status":
                self._answer_status(c, buf, req, f)
                return
            if f is not None and f.kind == "hang":
                self._sleep(f.seconds)
                return
            if f is not None and f.kind == "shift" and "range" in req.headers:
                a, _, b = req.headers["range"].split("=", 1)[1].partition("-")
                rng = f"bytes={int(a) + f.shift}-{int(b) + f.shift if b else ''}"
                hdrs = [(k, rng if k.lower() == "range" else v) for k, v in hdrs]
            hdrs = [(k, v) for k, v in hdrs if k.lower() not in ("connection", "keep-alive",
                                                               "proxy-connection")]
            hdrs.append(("Connection", "close"))
            out = start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
            up = socket.create_connection(self.upstream, timeout=60)
            with self.lock:
                self.conns.add(up)
            up.sendall(out.encode("latin-1"))
            # the request body (after any "100 Continue") flows on its own
            pump = threading.Thread(target=self._pump, args=(c, up, bytes(buf)), daemon=True)
            with self.lock:
                self.threads.append(pump)
            pump.start()
            self._relay_response(up, c, f)
        except OSError as e:
            if not self.stopping.is_set():
                self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            if not (f is not None and f.kind == "reset"):
                for s in (c, up):  # wakes the pump's recv
                    try:
                        if s is not None:
                            s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self._forget(*(s for s in (c, up) if s is not None))

    def _answer_status(self, c, buf, req, f) -> None:
        n = int(req.headers.get("content-length", "0") or 0)
        if n and req.headers.get("expect", "").lower() != "100-continue":
            n -= len(buf)
            while n > 0:  # read the body, so that the client sees the answer
                d = c.recv(min(n, 1 << 20))
                if not d:
                    break
                n -= len(d)
        reason = {500: "Internal Server Error", 503: "Service Unavailable",
                  404: "Not Found", 403: "Forbidden"}.get(f.status, "Injected")
        c.sendall((f"HTTP/1.1 {f.status} {reason}\r\nContent-Type: application/xml\r\n"
                   f"Content-Length: {len(f.body)}\r\nConnection: close\r\n\r\n").encode()
                  + f.body)
        try:
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _pump(self, c: socket.socket, up: socket.socket, first: bytes) -> None:
        try:
            if first:
                up.sendall(first)
            while True:
                d = c.recv(1 << 20)
                if not d:
                    break
                up.sendall(d)
        except OSError:
            pass

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def _relay_response(self, up: socket.socket, c: socket.socket, f: Optional[Fault]) -> None:
        buf = bytearray()
        kind = f.kind if f is not None else None
        while True:  # skip over "100 Continue" heads, forwarding them
            head = self._read_head(up, buf)
            if head is None:
                return
            if head.startswith(b"HTTP/1.1 100") or head.startswith(b"HTTP/1.0 100"):
                c.sendall(head)
                continue
            break
        if kind == "delay":
            self._sleep(f.seconds)
        if kind == "etag":
            start, hdrs = self._parse(head)
            hdrs = [(k, '"changed-by-proxy"' if k.lower() == "etag" else v) for k, v in hdrs]
            head = (start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
                    + "\r\n").encode("latin-1")
        c.sendall(head)
        sent = 0
        if kind in ("reset", "stall"):
            while sent < f.after:
                if not buf:
                    d = up.recv(65536)
                    if not d:
                        break
                    buf += d
                piece = bytes(buf[:f.after - sent])
                del buf[:len(piece)]
                c.sendall(piece)
                sent += len(piece)
            if kind == "reset":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                # wakes the pump's recv (no FIN: only SHUT_WR sends one), so
                # that the close in _serve really closes c: an RST
                c.shutdown(socket.SHUT_RD)
                return
            self._sleep(f.seconds)
            return
        while True:
            if buf:
                d, buf = bytes(buf), bytearray()
            else:
                d = up.recv(f.chunk if kind == "slow" else 1 << 20)
                if not d:
                    return
            if kind == "slow":
                for i in range(0, len(d), f.chunk):
                    c.sendall(d[i:i + f.chunk])
                    self._sleep(f.seconds)
            else:
                c.sendall(d)

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 2  # a thread still blocked then is a daemon
        self.acceptor.join(2)
        for t in list(self.threads):
            t.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            conns = list(self.conns)
            self.conns.clear()
        for s in conns:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- test data -------------------------------------------------------------------------

#: Every safetensors dtype libdlpx reads, with its bits per element.
DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
              "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16,
              "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64,
              "F64": 64, "I64": 64, "U64": 64}
#: Those NumPy has without ml_dtypes.
NUMPY_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
                "F16": "float16", "I32": "int32", "U32": "uint32", "F32": "float32",
                "C64": "complex64", "F64": "float64", "I64": "int64", "U64": "uint64"}


def st_bytes(tensors, metadata=None) -> bytes:
    """A safetensors file built by hand: |tensors| maps name -> (dtype name,
    shape, raw data bytes), laid out in the order given."""
    import struct
    header, data, off = {}, bytearray(), 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dt, shape, raw) in tensors.items():
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + bytes(data)


def random_raw(dt: str, shape, rng) -> bytes:
    """Random bytes for a tensor of |dt| and |shape| (bools are 0 or 1;
    sub-byte dtypes need a count of elements that fills whole bytes)."""
    n = 1
    for d in shape:
        n *= d
    bits = DTYPE_BITS[dt] * n
    assert bits % 8 == 0, (dt, shape)
    if dt == "BOOL":
        return rng.integers(0, 2, n, dtype="uint8").tobytes()
    return rng.integers(0, 256, bits // 8, dtype="uint8").tobytes()


def every_dtype_file(seed: int = 0, big: int = 0) -> bytes:
    """One tensor of every dtype (shape (4, 6): whole bytes for every
    width), a 0-byte tensor and a 0-d one; with |big| > 0 a last U8 tensor
    of |big| bytes."""
    import numpy as np
    rng = np.random.default_rng(seed)
    t = {f"t_{dt.lower()}": (dt, (4, 6), random_raw(dt, (4, 6), rng)) for dt in DTYPE_BITS}
    t["empty"] = ("F32", (0, 3), b"")
    t["scalar"] = ("F64", (), random_raw("F64", (), rng))
    if big:
        t["big"] = ("U8", (big,), random_raw("U8", (big,), rng))
    return st_bytes(t, {"format": "pt", "seed": str(seed)})


def raw_bytes(t) -> bytes:
    """The bytes of a loaded tensor (NumPy, incl. ml_dtypes' one byte per
    sub-byte element; a dlpx.Tensor through NumPy)."""
    import numpy as np
    if not isinstance(t, np.ndarray):
        t = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    return np.ascontiguousarray(t).reshape(-1).view(np.uint8).tobytes()


def assert_same_tensors(got: dict, want: dict) -> None:
    """Same names, dtypes, shapes and bytes (NumPy arrays)."""
    import numpy as np
    assert sorted(got) == sorted(want)
    for k, w in want.items():
        g = got[k]
        if not isinstance(g, np.ndarray):
            g = g.numpy()
        assert str(g.dtype) == str(w.dtype), (k, g.dtype, w.dtype)
        assert tuple(g.shape) == tuple(w.shape), (k, g.shape, w.shape)
        assert raw_bytes(g) == raw_bytes(w), k


def data_offset(data: bytes, name: str) -> int:
    """Where tensor |name|'s bytes start in the safetensors file |data|."""
    n = int.from_bytes(data[:8], "little")
    return 8 + n + json.loads(data[8:8 + n])[name]["data_offsets"][0]


def corrupt(data: bytes, name: str, at: int = 100) -> bytes:
    """|data| with one bit flipped |at| bytes into tensor |name|."""
    b = bytearray(data)
    b[data_offset(data, name) + at] ^= 0x40
    return bytes(b)


def same(a, b) -> bool:
    """Same dtype, shape and bytes (NaNs of random bytes included)."""
    import numpy as np
    a = a if isinstance(a, np.ndarray) else (a.numpy() if hasattr(a, "numpy") else np.asarray(a))
    b = b if isinstance(b, np.ndarray) else (b.numpy() if hasattr(b, "numpy") else np.asarray(b))
    return (str(a.dtype) == str(b.dtype) and tuple(a.shape) == tuple(b.shape)
            and raw_bytes(a) == raw_bytes(b))
