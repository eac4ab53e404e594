"""Fixtures: one ``kvlab serve`` process (embedded model) shared by the server tests; see serve_helpers."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def server():
    from serve_helpers import start_server, stop_server

    srv = start_server()
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def client(server):
    return server.client()
