"""Both load-generator HTTP clients against a scripted HTTP/1.1 server on 127.0.0.1.

The server (blocking sockets, a thread per connection, no HTTP library) writes exactly the bytes
a test scripts: a well-formed chunked stream with known gaps between events, a bad chunk size,
a body cut short, a connection closed mid-stream, a JSON error. It stamps each write with the
project's clock (`sweep.loadgen.clock`, one monotonic clock per machine), which is the truth the
client's per-token stamps are compared with, as ratios of gaps. Every request is run through
`run_endpoint_workload` with `workload.http_client` set to each client.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time

import pytest

from backends.base import GenRequest
from sweep.core import records as R
from sweep.loadgen.clock import now_s
from sweep.loadgen.http import Endpoint, run_endpoint_workload
from tests.helpers import workload

pytestmark = pytest.mark.timeout(60)

CLIENTS = ["asyncio", "aiohttp"]
MODELS = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'


def event(i: int, last: bool = False) -> bytes:
    """One completions event carrying one token."""
    choice = {"index": 0, "text": f" t{i}", "finish_reason": "length" if last else None}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD_200 = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def reply(status: bytes, body: bytes) -> bytes:
    """A whole JSON reply with its length."""
    head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % (status, len(body)) + body


class Scripted:
    """A loopback HTTP/1.1 server: `script(conn, server)` answers each POST; GETs get MODELS.

    Connections are kept alive; `accepted` counts them, `writes` holds (time, bytes) of what the
    scripts wrote through `write`.
    """

    def __init__(self, script, tls: ssl.SSLContext | None = None):
        self.script = script
        self.tls = tls
        self.accepted = 0
        self.posts = 0
        self.heads: list[bytes] = []  # each POST's request line and headers
        self.writes: list[tuple[float, bytes]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        buffer = b""
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                if head.startswith(b"GET"):
                    conn.sendall(reply(b"200 OK", MODELS))
                    continue
                self.posts += 1
                self.heads.append(head)
                if self.script(conn, self) == "close":
                    conn.close()
                    return
        except OSError:
            return

    def write(self, conn: socket.socket, data: bytes) -> None:
        """Stamp `data`, then send it (stamped after, a read could come before the stamp)."""
        self.writes.append((now_s(), data))
        conn.sendall(data)

    def stop(self):
        self.sock.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass


@pytest.fixture
def scripted():
    started = []

    def start(script, tls=None):
        server = Scripted(script, tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def run(server, client, count=1, tokens=5, concurrency=1, timeout_s=10.0):
    requests = [GenRequest(i, "hi", (1, 2), tokens) for i in range(count)]
    load = workload(concurrency=concurrency, num_requests=count, http_client=client,
                    timeout_s=timeout_s)  # fmt: skip
    return list(run_endpoint_workload(Endpoint(server.url, "m"), requests, [], load))


def well_formed(conn, server, tokens=5):
    server.write(conn, HEAD_200)
    for i in range(tokens):
        server.write(conn, chunk(event(i, last=i == tokens - 1)))
    server.write(conn, chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


@pytest.mark.parametrize("client", CLIENTS)
def test_requests_reuse_one_kept_alive_connection(scripted, client):
    server = scripted(well_formed)
    trackers = run(server, client, count=6)
    assert [t.error for t in trackers] == [None] * 6
    assert all(t.record("t", 0.0)[R.OUTPUT_TOKENS] == 5 for t in trackers)
    assert server.posts == 6
    assert server.accepted == 1  # the pool's connection, opened before the load, carried all


GAPS_S = (0.04, 0.16, 0.04, 0.24, 0.08)  # between the writes of successive events


def spaced(conn, server):
    """Events written one by one with known gaps; the last two in one write."""
    server.write(conn, HEAD_200 + chunk(event(0)))
    for i, gap in enumerate(GAPS_S, start=1):
        time.sleep(gap)
        server.write(conn, chunk(event(i)))
    time.sleep(0.05)
    server.write(conn, chunk(event(6)) + chunk(event(7, last=True)))  # one read, two tokens
    server.write(conn, chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


@pytest.mark.parametrize("client", CLIENTS)
def test_each_token_is_stamped_when_its_read_returned(scripted, client):
    server = scripted(spaced)
    (tracker,) = run(server, client, tokens=8)
    assert tracker.error is None and len(tracker.chunk_times) == 8
    times = tracker.chunk_times
    sent = [at for at, data in server.writes if b'"text"' in data]
    # Each stamp follows its write (one clock on one machine), and the gaps are the server's:
    # a client stamping after batching reads, or at parse time, would shrink or merge them.
    assert all(t >= s for t, s in zip(times, [sent[0], *sent[1:6], sent[6], sent[6]], strict=True))
    for i in range(1, 6):
        truth = sent[i] - sent[i - 1]
        assert (times[i] - times[i - 1]) / truth == pytest.approx(1.0, abs=0.25), (i, truth)
    assert times[7] == times[6]  # two events of one read share that read's stamp


def bad_chunk_size(conn, server):
    server.write(conn, HEAD_200 + chunk(event(0)) + b"zz\r\n" + event(1) + b"\r\n")
    return "close"


def truncated(conn, server):
    server.write(conn, HEAD_200 + chunk(event(0)) + b"200\r\n" + event(1)[:20])
    return "close"


def closed_mid_stream(conn, server):
    server.write(conn, HEAD_200 + chunk(event(0)) + chunk(event(1)))
    return "close"


def json_error(conn, server):
    error = {"message": "Unrecognized request argument supplied: foo", "param": "foo"}
    server.write(conn, reply(b"400 Bad Request", json.dumps({"error": error}).encode()))


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (bad_chunk_size, "disconnect: "),
        (truncated, "disconnect: "),
        (closed_mid_stream, "disconnect: "),
        (json_error, "http_error: HTTP 400: the endpoint rejected field 'foo'"),
    ],
)
def test_a_broken_reply_fails_its_request_in_one_line(scripted, client, script, expected):
    server = scripted(script)
    trackers = run(server, client, count=2)
    for tracker in trackers:
        assert tracker.error is not None and tracker.error.startswith(expected), tracker.error
        assert "\n" not in tracker.error
    assert server.posts == 2  # a broken reply fails its request, never the next one


@pytest.mark.parametrize("client", CLIENTS)
def test_after_an_error_reply_the_connection_carries_the_next_request(scripted, client):
    replies = iter([json_error, well_formed, json_error, well_formed])
    server = scripted(lambda conn, server: next(replies)(conn, server))
    trackers = run(server, client, count=4)
    assert [t.error is None for t in trackers] == [False, True, False, True]
    assert server.accepted == 1


def self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, written to `tmp_path`; (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(loopback, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return cert_path, key_path


def test_the_asyncio_client_streams_over_https_and_checks_the_certificate(
    scripted, tmp_path, monkeypatch
):
    # aiohttp builds its verifying context at import, before a test can name a CA: its https
    # is aiohttp's own; ours builds one per client from the default paths (SSL_CERT_FILE)
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = scripted(well_formed, tls)
    untrusted = run(server, "asyncio", count=1)
    assert untrusted[0].error.startswith("connection_error:"), untrusted[0].error
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted[0].error
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trackers = run(server, "asyncio", count=3)
    assert [t.error for t in trackers] == [None] * 3
    assert all(t.record("t", 0.0)[R.OUTPUT_TOKENS] == 5 for t in trackers)


def test_the_asyncio_client_sends_url_credentials_and_the_endpoints_headers(scripted):
    server = scripted(well_formed)
    url = server.url.replace("http://", "http://user:p%40ss@")
    endpoint = Endpoint(url, "m", headers={"X-Api-Key": "k1"})
    load = workload(concurrency=1, num_requests=1, http_client="asyncio")
    (tracker,) = run_endpoint_workload(endpoint, [GenRequest(0, "hi", (1,), 5)], [], load)
    assert tracker.error is None
    (head,) = server.heads
    assert b"Authorization: Basic " + base64.b64encode(b"user:p@ss") in head
    assert b"X-Api-Key: k1" in head and b"X-Request-Id: " in head
