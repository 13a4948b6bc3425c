"""One statement on a MariaDB server outside any database (create or drop a benchmark's own)."""

from __future__ import annotations

from urllib.parse import urlparse


def admin_sql(url: str, statement: str) -> None:
    """Run ``statement`` on the server of ``url`` (mysql://user[:password]@host[:port]/...)."""
    import pymysql

    u = urlparse(url)
    conn = pymysql.connect(host=u.hostname or "127.0.0.1", port=u.port or 3306, user=u.username or "root",
                           password=u.password or "", autocommit=True, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()
