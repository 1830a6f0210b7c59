"""Waiting for llama-server to go idle between measurements.

A reader that stops at its token limit leaves the server decoding the few
tokens it was asked for beyond it, until it notices the closed connection;
a request sent meanwhile shares the decode loop with that work. Measurements
that compare requests one by one therefore start on an idle server.
"""

from __future__ import annotations

import http.client
import json
import time

from .readers import Endpoint

__all__ = ["wait_until_idle"]


def wait_until_idle(endpoint: Endpoint, timeout: float = 10.0) -> None:
    """Poll `/slots` until no slot is processing."""
    deadline = time.monotonic() + timeout
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
    try:
        while True:
            connection.request("GET", "/slots", headers=endpoint.headers())
            response = connection.getresponse()
            slots = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"/slots answered {response.status}: {slots}")
            if not any(slot["is_processing"] for slot in slots):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server was still busy after {timeout:g} s")
            time.sleep(0.005)
    finally:
        connection.close()
