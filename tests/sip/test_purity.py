"""sipd/sip is sans-IO: no clock, sockets, threads, randomness, database or DNS (checked on the AST)."""

import ast
from pathlib import Path

import sipd.sip

FORBIDDEN = {"asyncio", "socket", "ssl", "time", "threading", "random", "pymysql", "dns", "sqlite3",
             "subprocess", "secrets", "os", "select", "selectors"}


def test_no_io_imports():
    root = Path(sipd.sip.__file__).parent
    files = sorted(root.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
