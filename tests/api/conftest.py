"""Fixtures of the API tests: the example services running and registered with the live server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.api.test_entry_api import register
from tests.examples.test_services import Service, running_services
from tests.support import LiveServer


@pytest.fixture(scope="module")
def services(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """The five example services, registered with the module's server as `make run` registers them."""
    with running_services(tmp_path_factory.mktemp("services")) as running:
        register(server, running)
        yield running
