#!/usr/bin/env python3
"""Check that a Kafka broker really answers requests (stdlib only).

Usage: kafka_ping.py HOST:PORT [--timeout SECONDS]

1. Sends an ApiVersions v0 request and expects error_code 0.
2. Sends a Metadata request (a non-flexible version, v1..v8, chosen from the
   ApiVersions answer) for no topics and expects at least one broker.

Exits 0 when both succeed, 1 otherwise (reason printed on stderr).
"""

import argparse
import socket
import struct
import sys

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"orderstream-ping"


class Reader:
    """Tiny big-endian cursor over a response body."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self):
        length = self.take(">h")
        if length < 0:
            return None
        value = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return value


def recv_exact(sock, size):
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return buf


def request(sock, api_key, api_version, correlation_id, body=b""):
    """Send a request with header v1 and return the response body (after correlation id)."""
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    response = recv_exact(sock, size)
    got_id = struct.unpack_from(">i", response)[0]
    if got_id != correlation_id:
        raise ValueError(f"correlation id mismatch: sent {correlation_id}, got {got_id}")
    return Reader(response[4:])


def api_versions(sock):
    """Return {api_key: (min_version, max_version)}; raise on error."""
    r = request(sock, API_VERSIONS, 0, 1)
    error_code = r.take(">h")
    if error_code != 0:
        raise ValueError(f"ApiVersions error_code={error_code}")
    versions = {}
    for _ in range(r.take(">i")):
        key, lo, hi = r.take(">hhh")
        versions[key] = (lo, hi)
    return versions


def metadata_brokers(sock, version):
    """Send Metadata (no topics) and return the list of (node_id, host, port)."""
    body = struct.pack(">i", 0)  # topics: empty array -> no topic metadata
    if version >= 4:
        body += struct.pack(">b", 0)  # allow_auto_topic_creation
    if version >= 8:
        body += struct.pack(">bb", 0, 0)  # include cluster/topic authorized operations
    r = request(sock, API_METADATA, version, 2, body)
    if version >= 3:
        r.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(r.take(">i")):
        node_id = r.take(">i")
        host = r.string()
        port = r.take(">i")
        r.string()  # rack
        brokers.append((node_id, host, port))
    return brokers


def ping(host, port, timeout):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        versions = api_versions(sock)
        lo, hi = versions.get(API_METADATA, (0, -1))
        # Versions 9+ use the "flexible" encoding; stay on the simple ones.
        version = min(hi, 8)
        if version < max(lo, 1):
            return "ApiVersions ok (no simple Metadata version to check brokers)"
        brokers = metadata_brokers(sock, version)
        if not brokers:
            raise ValueError("Metadata returned no brokers")
        listed = ", ".join(f"{node}@{h}:{p}" for node, h, p in brokers)
        return f"ApiVersions ok, Metadata v{version} brokers: {listed}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT of the broker")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    try:
        print(ping(host or "127.0.0.1", int(port), args.timeout))
    except (OSError, ValueError, struct.error) as exc:
        print(f"kafka_ping: {args.address}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
