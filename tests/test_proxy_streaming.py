"""Large bodies through ``premier serve`` (a real gateway process): they stream both ways and the
gateway's memory stays flat, even while the client stops reading."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _servers import Process, backend, gateway_process

MiB = 1024 * 1024
SIZE = 256 * MiB
ALLOWED_GROWTH_KIB = 48 * 1024  # far below the body size: the gateway holds a few buffers, not the body


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    with backend("s1") as origin:
        config = Path(tmp_path_factory.mktemp("streaming")) / "gateway.yaml"
        config.write_text(f"premier:\n  servers: [{origin.url}]\n")
        with gateway_process(config) as gateway:
            warm_up = _connection(gateway)
            warm_up.request("GET", "/warm-up")
            warm_up.getresponse().read()
            warm_up.close()
            yield origin, gateway


def _connection(process: Process) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", process.port, timeout=30)


def test_a_large_download_streams_with_flat_memory_even_to_a_stalled_client(proxied: tuple[Process, Process]) -> None:
    _, gateway = proxied
    before = gateway.peak_rss_kib()
    connection = _connection(gateway)
    connection.request("GET", f"/stream?size={SIZE}&chunk={MiB}")
    response = connection.getresponse()
    assert response.status == 200
    time.sleep(1.0)  # the client reads nothing: the backend could send the whole body meanwhile
    stalled = gateway.peak_rss_kib()
    received = 0
    while chunk := response.read(MiB):
        received += len(chunk)
    connection.close()
    assert received == SIZE
    assert stalled - before < ALLOWED_GROWTH_KIB
    assert gateway.peak_rss_kib() - before < ALLOWED_GROWTH_KIB


def test_a_large_upload_streams_with_flat_memory(proxied: tuple[Process, Process]) -> None:
    _, gateway = proxied
    block = bytes(range(256)) * 4096  # 1 MiB
    expected = hashlib.sha256()
    for _ in range(SIZE // MiB):
        expected.update(block)
    before = gateway.peak_rss_kib()
    connection = _connection(gateway)
    connection.request("POST", "/upload", body=(block for _ in range(SIZE // MiB)),
                       headers={"Content-Length": str(SIZE)})
    response = connection.getresponse()
    result = json.loads(response.read())
    connection.close()
    assert (response.status, result["length"], result["sha256"]) == (200, SIZE, expected.hexdigest())
    assert gateway.peak_rss_kib() - before < ALLOWED_GROWTH_KIB
