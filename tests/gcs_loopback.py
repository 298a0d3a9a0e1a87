"""A GCS emulator on 127.0.0.1 that TensorFlow's own `gs://` filesystem talks to.

TF's GCS filesystem has its endpoint compiled in (https://www.googleapis.com/storage/v1/)
and ignores STORAGE_EMULATOR_HOST. It does use libcurl, which honours the proxy
variables, and TF reads CURL_CA_BUNDLE and takes a bearer token from
GOOGLE_AUTH_TOKEN_FOR_TESTING. So, all on loopback:

    TF --HTTPS_PROXY--> proxy (CONNECT www|storage.googleapis.com:443; TLS ends here
    with a throwaway self-signed certificate trusted via CURL_CA_BUNDLE) --> emulator

The emulator (gcp-storage-emulator, in memory) answers resumable uploads with a Location
of http://www.googleapis.com/upload/...; TF sends those through HTTP_PROXY, and the
proxy forwards them one request per connection with the URL made relative. Nothing
leaves the machine and no real credential exists anywhere.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

HOSTS = ("www.googleapis.com", "storage.googleapis.com")  # JSON API; media reads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={HOSTS[0]}",
                    "-addext", "subjectAltName=" + ",".join(f"DNS:{h}" for h in HOSTS),
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _read_head(conn) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(1)
        if not chunk:
            break
        head += chunk
    return head


def _recv_exactly(conn, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(min(65536, count - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _read_line(conn) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        line += chunk
    return line[:-2]


def _read_chunked(conn) -> bytes:
    body = b""
    while size := int(_read_line(conn).split(b";")[0] or b"0", 16):
        body += _recv_exactly(conn, size)
        _read_line(conn)
    while _read_line(conn):  # trailers, then the empty line
        pass
    return body


def _forward_one(client, head: bytes, emulator_port: int) -> None:
    """One request to the emulator (URL made relative); the response, then close."""
    request_line, _, headers = head.partition(b"\r\n")
    method, target, version = request_line.split(b" ", 2)
    if target.startswith(b"http"):
        target = b"/" + (target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"")
    lines = [h for h in headers.split(b"\r\n") if h]
    chunked = any(h.lower().replace(b" ", b"") == b"transfer-encoding:chunked" for h in lines)
    if chunked:  # TF uploads chunked; the emulator reads Content-Length bodies only
        body = _read_chunked(client)
    else:
        body = _recv_exactly(client, next((int(h.split(b":", 1)[1]) for h in lines
                                           if h.lower().startswith(b"content-length:")), 0))
    lines = [h for h in lines if not h.lower().startswith(
        (b"connection:", b"proxy-connection:", b"transfer-encoding:", b"content-length:",
         b"expect:"))] + [b"Content-Length: %d" % len(body)]
    with socket.create_connection(("127.0.0.1", emulator_port)) as upstream:
        upstream.sendall(b" ".join([method, target, version]) + b"\r\n"
                         + b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body)
        response = b""
        while chunk := upstream.recv(65536):
            response += chunk
    status, _, rest = response.partition(b"\r\n")
    client.sendall(status + b"\r\nConnection: close\r\n" + rest)


class _Proxy(threading.Thread):
    """HTTP(S) proxy on loopback: every request goes to the emulator, one per connection."""

    def __init__(self, port, emulator_port, tls: ssl.SSLContext):
        super().__init__(daemon=True)
        self.port, self.emulator_port, self.tls = port, emulator_port, tls
        self.sock = socket.create_server(("127.0.0.1", port))

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            head = _read_head(conn)
            if head.startswith(b"CONNECT"):
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                conn = self.tls.wrap_socket(conn, server_side=True)
                head = _read_head(conn)
            if head:
                _forward_one(conn, head, self.emulator_port)
        except (ssl.SSLError, OSError):
            pass
        finally:
            conn.close()


def _accept_empty_uploads():
    """The emulator reads an empty body as None and fails on TF's zero-byte folder markers."""
    from gcp_storage_emulator.handlers import objects  # noqa: PLC0415

    if getattr(objects._media_upload, "patched", False):
        return
    original = objects._media_upload

    def media_upload(request, response, storage):
        if request.data is None:
            request._data = b""
        return original(request, response, storage)

    media_upload.patched = True
    objects._media_upload = media_upload


def serve(folder: Path, bucket: str) -> None:
    """Runs emulator + proxy until killed (its own process: TensorFlow holds the GIL
    during some gs:// calls, which would starve servers running in the test's process)."""
    from gcp_storage_emulator.server import create_server  # noqa: PLC0415

    _accept_empty_uploads()
    emulator_port, proxy_port = _free_port(), _free_port()
    server = create_server("127.0.0.1", emulator_port, in_memory=True, default_bucket=bucket)
    server.start()
    cert, key = _certificate(folder)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    proxy = _Proxy(proxy_port, emulator_port, tls)
    proxy.start()
    print(f"READY {proxy_port} {cert}", flush=True)
    threading.Event().wait()


@contextlib.contextmanager
def gcs_emulator(folder: Path, bucket: str = "birdkeras-test"):
    """Starts emulator + proxy, sets this process's environment; yields "gs://bucket"."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, __file__, str(folder), bucket],
                               stdout=subprocess.PIPE, text=True)
    try:
        ready = process.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"GCS emulator did not start: {ready}")
        proxy = f"http://127.0.0.1:{ready[1]}"
        env = {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy,
               "http_proxy": proxy, "CURL_CA_BUNDLE": ready[2],
               "GOOGLE_AUTH_TOKEN_FOR_TESTING": "loopback-test-token",
               "NO_GCE_CHECK": "true",
               # Local connections go direct: Beam's workers reach their runner over
               # gRPC on localhost, and gRPC honours the proxy variables too.
               "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1",
               # Read-after-write: no stale caches between build, verify and training.
               "GCS_STAT_CACHE_MAX_AGE": "0", "GCS_MATCHING_PATHS_CACHE_MAX_AGE": "0",
               "GCS_READ_CACHE_MAX_SIZE_MB": "0"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield f"gs://{bucket}"
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2])
