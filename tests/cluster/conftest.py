"""Fixtures for several sipd nodes: a real three-node Galera cluster on loopback, started once.

The cluster (tests/helpers/galera.py) is session-scoped: starting it takes a while (a full copy of
the data to each joining node), and the tests leave it as they found it -- three Synced nodes.
A test gets a fresh database on it (``galera_db``), dropped afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from conftest import missing

from helpers.galera import GaleraCluster, missing_parts


@pytest.fixture(scope="session")
def galera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GaleraCluster]:
    """Three Synced Galera nodes; each node's ``url(db)``, ``sql()``, ``stop()``/``start()``."""
    lacking = missing_parts()
    if lacking:
        missing(lacking)
    cluster = GaleraCluster(tmp_path_factory.mktemp("galera"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def galera_db(galera: GaleraCluster) -> Iterator[str]:
    """The name of a new, empty database on the cluster (created on node 1, seen by all)."""
    name = "sipd_g_" + secrets.token_hex(4)
    galera.nodes[0].sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    for node in galera.nodes:  # any node that is up will do; a test may have left one stopped
        if node.pid is not None:
            node.sql(f"DROP DATABASE IF EXISTS `{name}`")
            break
