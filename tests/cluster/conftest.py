"""Fixtures for several sipd nodes: a real three-node Galera cluster on loopback, started once.

The cluster (tests/helpers/galera.py) is session-scoped: starting it takes a while (a full copy of
the data to each joining node), and the tests leave it as they found it -- three Synced nodes.
A test gets a fresh database on it (``galera_db``), dropped afterwards.

Several sipd nodes (tests/helpers/sipd_nodes.py): ``shared_db`` is parametrised over the two
databases a cluster runs on -- one MariaDB (127.0.0.1:3306, a fresh database) and the Galera
cluster (each sipd node on its own Galera node) -- and gives one URL per node; ``sipd_nodes`` is a
factory that starts the nodes on it and stops them after the test:

    def test_x(sipd_nodes):
        a, b = sipd_nodes(count=2, users={"alice": "pw"})
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import missing

from dbfixtures import mysql_scratch  # noqa: F401 - shared_db uses it

from helpers.galera import GaleraCluster, missing_parts
from helpers.sipd_nodes import SipdNodes


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


@pytest.fixture(params=["mariadb", "galera"])
def shared_db(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """One database URL per sipd node (three): the same fresh MariaDB database for all, or the
    same fresh database on Galera through a different Galera node each."""
    if request.param == "galera":
        cluster: GaleraCluster = request.getfixturevalue("galera")
        name = request.getfixturevalue("galera_db")
        yield [node.url(name) for node in cluster.nodes]
        return
    scratch = request.getfixturevalue("mysql_scratch")  # tests/dbfixtures.py: dropped afterwards
    scratch.sql(f"CREATE DATABASE `{scratch.name}` CHARACTER SET utf8mb4")
    yield [scratch.url()] * 3


@pytest.fixture
def sipd_nodes(shared_db: list[str], tmp_path: Path) -> Iterator[Callable[..., SipdNodes]]:
    """``sipd_nodes(count=2, users=..., config_overrides=..., per_node=...)``: started nodes on
    ``shared_db`` (SipdNodes' arguments); all stopped, and their logs checked, after the test."""
    started: list[SipdNodes] = []

    def make(**kw):  # type: ignore[no-untyped-def]
        nodes = SipdNodes(tmp_path, shared_db, **kw)
        started.append(nodes)
        return nodes.start()

    yield make
    for nodes in started:
        nodes.close()
