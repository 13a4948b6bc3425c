"""A real three-node MariaDB Galera cluster on loopback, for the tests of several sipd nodes.

    cluster = GaleraCluster(tmp_dir)       # nothing runs yet
    cluster.start()                        # node 1 bootstraps (--wsrep-new-cluster), 2 and 3 join
    cluster.nodes[0].url("sipd")           # mysql://root@127.0.0.1:PORT/sipd
    cluster.nodes[1].stop(); cluster.nodes[1].start()    # rejoins by IST (its gcache still holds the gap)
    cluster.close()                        # every mariadbd ended by its PID

Each node is Debian's ``mariadbd`` with the Galera 4 provider, its own data directory under
``tmp_dir`` and its own ports on 127.0.0.1 chosen at run time: SQL, the group communication port,
IST and SST. A joiner with an empty data directory gets a full copy (SST) by rsync, the method that
works offline with what ``.ci/run`` installs (mariabackup is a separate package). Every wait is
bounded; a node is stopped with SIGTERM to its own PID, then SIGKILL after a bounded wait.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from .sipd_proc import _end_pid

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"
PROVIDERS = ("/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so")
START_TIMEOUT = 180.0     # seconds for one node to be Synced (a joiner's SST included, on a busy machine)
STOP_TIMEOUT = 60.0       # seconds after SIGTERM before SIGKILL (a clean shutdown leaves the gcache usable for IST)


def provider() -> str | None:
    """The Galera library, or None when galera-4 is not installed."""
    return next((p for p in PROVIDERS if os.path.exists(p)), None)


def missing_parts() -> str | None:
    """What this machine lacks to run the cluster (None when nothing)."""
    for path, package in ((MARIADBD, "mariadb-server"), (INSTALL_DB, "mariadb-server")):
        if not os.path.exists(path):
            return f"{path} not installed (Debian package {package})"
    if provider() is None:
        return "libgalera_smm.so not installed (Debian package galera-4)"
    for tool in ("rsync", "wsrep_sst_rsync"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "/usr/bin").split(":")):
            return f"{tool} not on PATH (Debian packages rsync, mariadb-server)"
    return None


def free_tcp_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, from tests/conftest.py's ``free_port``: below
    the kernel's ephemeral range, which any outgoing connection may take before mariadbd binds it."""
    from conftest import free_port  # tests/conftest.py

    ports: list[int] = []
    for _ in range(20 * count):  # a repeat is rare (10000 ports to choose from); bounded anyway
        port = free_port("tcp")
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"no {count} distinct free ports found on 127.0.0.1")


class GaleraError(RuntimeError):
    """A node did not start, join or stop in time; the message carries its error log's tail."""


class GaleraNode:
    """One mariadbd of the cluster; ``start()`` and ``stop()`` may be called again (rejoin)."""

    def __init__(self, cluster: GaleraCluster, index: int):
        self.cluster = cluster
        self.index = index
        self.name = f"node{index + 1}"
        self.datadir = cluster.base / self.name / "data"
        self.rundir = cluster.base / self.name
        self.sql_port, self.group_port, self.ist_port, self.sst_port = free_tcp_ports(4)
        self.proc: subprocess.Popen[bytes] | None = None
        self._finalizer = weakref.finalize(self, lambda: None)

    @property
    def log_path(self) -> Path:
        return self.rundir / "error.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def url(self, database: str = "") -> str:
        return f"mysql://root@127.0.0.1:{self.sql_port}/{database}"

    def argv(self, *, new_cluster: bool) -> list[str]:
        c = self.cluster
        peers = ",".join(f"127.0.0.1:{n.group_port}" for n in c.nodes)
        options = ";".join((
            f"base_host=127.0.0.1", f"base_port={self.group_port}",
            f"gmcast.listen_addr=tcp://127.0.0.1:{self.group_port}",
            f"ist.recv_addr=127.0.0.1:{self.ist_port}",
            "gcache.size=64M",          # large enough that a node stopped during a test rejoins by IST
            "pc.recovery=false",        # the tests bootstrap explicitly; no saved view to reuse
            "evs.suspect_timeout=PT5S", "evs.inactive_timeout=PT10S",  # a killed node leaves in seconds
        ))
        argv = [
            MARIADBD, "--no-defaults", f"--datadir={self.datadir}",
            f"--socket={self.rundir / 'mysqld.sock'}", f"--pid-file={self.rundir / 'mysqld.pid'}",
            f"--log-error={self.log_path}", f"--port={self.sql_port}", "--bind-address=127.0.0.1",
            "--skip-name-resolve", "--performance-schema=OFF", "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M", "--max-connections=200",
            "--binlog-format=ROW", "--default-storage-engine=InnoDB", "--innodb-autoinc-lock-mode=2",
            "--wsrep-on=ON", f"--wsrep-provider={c.provider}", f"--wsrep-cluster-name={c.name}",
            f"--wsrep-cluster-address=gcomm://{peers}", f"--wsrep-node-name={self.name}",
            "--wsrep-node-address=127.0.0.1", f"--wsrep-provider-options={options}",
            "--wsrep-sst-method=rsync", f"--wsrep-sst-receive-address=127.0.0.1:{self.sst_port}",
            "--wsrep-slave-threads=2",
        ]
        if self.cluster.user:
            argv.insert(2, f"--user={self.cluster.user}")
        if new_cluster:
            argv.append("--wsrep-new-cluster")
        return argv

    def install(self) -> None:
        """System tables for the first node, with root@127.0.0.1 and no password ("normal"
        authentication): the account the tests use. A joiner gets it with its copy of the data."""
        self.cluster.mkdir(self.datadir)
        argv = [INSTALL_DB, "--no-defaults", f"--datadir={self.datadir}", "--skip-test-db",
                "--auth-root-authentication-method=normal"]
        if self.cluster.user:
            argv.append(f"--user={self.cluster.user}")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise GaleraError(f"mariadb-install-db failed for {self.name}: {r.stdout[-2000:]}{r.stderr[-2000:]}")

    def start(self, *, new_cluster: bool = False, timeout: float = START_TIMEOUT) -> GaleraNode:
        """Start mariadbd and wait (bounded) until it is Synced and the cluster has every node."""
        if self.pid is not None:
            return self
        self.cluster.mkdir(self.rundir)
        self.cluster.mkdir(self.datadir)
        with open(self.rundir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(self.argv(new_cluster=new_cluster), stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _end_pid, self.proc, STOP_TIMEOUT)  # a safety net
        self.wait_synced(timeout)
        return self

    def wait_synced(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise GaleraError(f"{self.name} exited ({self.proc and self.proc.returncode}):\n{self.log_tail()}")
            try:
                state = self.status("wsrep_local_state_comment")
                ready = self.status("wsrep_ready")
                if state == "Synced" and ready == "ON":
                    return
                last = f"state {state}, ready {ready}"
            except Exception as exc:  # noqa: BLE001 - not answering yet (SST running, still starting)
                last = str(exc)
            time.sleep(0.5)
        raise GaleraError(f"{self.name} not Synced within {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def connect(self, database: str = "", **kw: Any) -> Any:
        """A PyMySQL connection as root (autocommit unless ``autocommit=False``) whose reads,
        updates, deletes and inserts (wsrep_sync_wait 7) wait until this node has applied every
        write the cluster committed before them: Galera commits synchronously but applies on the
        other nodes a moment later, so an UPDATE on node 2 right after an INSERT on node 1 could
        otherwise find no row. SHOW does not wait, so a node that lost its quorum still says so."""
        import pymysql

        kw.setdefault("autocommit", True)
        kw.setdefault("init_command", "SET SESSION wsrep_sync_wait = 7")
        return pymysql.connect(host="127.0.0.1", port=self.sql_port, user="root", password="",
                               database=database or None, connect_timeout=5, read_timeout=60, **kw)

    def sql(self, statement: str, params: tuple = (), database: str = "") -> list[tuple]:
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())

    def status(self, name: str) -> str:
        rows = self.sql("SHOW GLOBAL STATUS LIKE %s", (name,))
        return str(rows[0][1]) if rows else ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to this node's PID, a bounded wait for a clean shutdown, then SIGKILL."""
        if self.proc is not None:
            _end_pid(self.proc, timeout)
        self.proc = None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class GaleraCluster:
    """``size`` nodes (3 by default) on loopback under ``base``; ``start()`` brings all up."""

    def __init__(self, base: Path, size: int = 3):
        found = provider()
        if found is None:
            raise GaleraError("libgalera_smm.so not installed (Debian package galera-4)")
        self.provider = found
        # Run as root, mariadbd runs as the mysql account (as Debian runs it), and so does the
        # rsync daemon of a state transfer -- run by root, rsync would switch to "nobody" and could
        # not write the data. Its files then live in a directory of their own under /tmp, since
        # pytest's base directory is closed to other users.
        self.user = ""
        self._own_base = False
        if os.geteuid() == 0:
            try:
                self.owner = pwd.getpwnam("mysql")
            except KeyError:
                raise GaleraError("no mysql account to run mariadbd as (Debian package mariadb-server)") from None
            self.user = "mysql"
            base = Path(tempfile.mkdtemp(prefix="sipd-galera-"))
            os.chown(base, self.owner.pw_uid, self.owner.pw_gid)
            self._own_base = True
        self.base = Path(base)
        self.name = "sipd-test-" + secrets.token_hex(3)
        self.nodes: list[GaleraNode] = []
        for i in range(size):
            self.nodes.append(GaleraNode(self, i))

    def start(self) -> GaleraCluster:
        """Bootstrap the first node, then join the others one at a time (one SST donor at a time)."""
        first = self.nodes[0]
        first.install()
        first.start(new_cluster=True)
        for node in self.nodes[1:]:
            node.start()
        self.wait_size(len(self.nodes))
        return self

    def wait_size(self, size: int, timeout: float = START_TIMEOUT) -> None:
        """Until every running node sees ``size`` members (bounded)."""
        deadline = time.monotonic() + timeout
        sizes: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                sizes = {n.name: n.status("wsrep_cluster_size") for n in self.nodes if n.pid is not None}
            except Exception as exc:  # noqa: BLE001 - a node between views
                sizes = {"error": str(exc)}
            if sizes and all(v == str(size) for v in sizes.values()):
                return
            time.sleep(0.5)
        raise GaleraError(f"cluster size not {size} within {timeout:.0f} s: {sizes}")

    def mkdir(self, path: Path) -> None:
        """A directory (and its parents below ``base``) the nodes' account can write."""
        path.mkdir(parents=True, exist_ok=True)
        if self.user:
            for p in (path, *path.parents):
                if p == self.base:
                    break
                os.chown(p, self.owner.pw_uid, self.owner.pw_gid)

    def close(self) -> None:
        """Stop every node by its PID (the last ones first, so the first stays primary longest)."""
        try:
            for node in reversed(self.nodes):
                node.stop()
        finally:
            if self._own_base:
                shutil.rmtree(self.base, ignore_errors=True)
