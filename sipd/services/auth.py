"""Digest authentication of requests (RFC 3261 §22, RFC 8760 SHA-256) against cached HA1s.

Decisions only: the digest arithmetic is in ``sipd.sip.auth`` (pure) and the HA1s come from the
``SubscriberCache`` (filled from the ``subscriber`` table by ``store.py``). Rules:
- realm = the domain of the AOR (To for REGISTER, From otherwise), as OpenSIPS ``www_authorize("$td")``.
- Challenges list the configured algorithms in order (only MD5 by default: baresip 1.0 fails on any
  list naming SHA-256, even after MD5; SIPp/sipsak read only the first one; liblinphone 5.1 answers
  the first it can, or the one its auth_info pins -- tests/e2e/test_linphone.py).
- An unknown user gets exactly the same treatment as a wrong password (a fresh challenge), so the
  answers do not reveal which users exist.
- A nonce past its age gets a new challenge with ``stale=true`` (the UA retries without asking the user).
- With qop the nonce count must grow; an answer without qop uses its nonce once (replay guard, bounded).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..sip import auth as digest

if TYPE_CHECKING:
    from ..config import AuthSection

logger = logging.getLogger(__name__)

#: The HA1 cache answers "unknown" for this long before asking the database again (a user added
#: with sipctl is then usable within this time, or at once after ``sipctl`` reloads the cache).
NEGATIVE_TTL = 30.0
NEGATIVE_MAX = 20000  # misses remembered (the oldest forgotten first): a flood of random users is bounded
#: Database look-ups of users missing from the cache, per second at most: beyond it a miss is
#: answered from memory (unknown) at once, so a flood of random user names never becomes a
#: database query per packet (the cache holds every subscriber; a miss is rarely a real user).
MISS_LOOKUPS_PER_S = 20.0


@dataclass(frozen=True, slots=True)
class Credentials:
    ha1: str
    ha1_sha256: str


class SubscriberCache:
    """(user, domain) -> HA1 values, filled at start; misses are looked up through ``loader``."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Credentials] = {}
        self._negative: dict[tuple[str, str], float] = {}
        self._budget = MISS_LOOKUPS_PER_S  # look-ups of misses left (token bucket) ...
        self._budget_at = 0.0  # ... as of this time
        self.loader = None  # async (user, domain) -> Credentials | None ; set by the server
        self.reloader = None  # async () -> None

    def load(self, rows: list[tuple[str, str, str, str]]) -> None:
        self._entries = {(u, d.lower()): Credentials(h1 or "", h2 or "") for u, d, h1, h2 in rows}
        self._negative.clear()

    def get(self, user: str, domain: str) -> Credentials | None:
        return self._entries.get((user, domain.lower()))

    def known_missing(self, user: str, domain: str, now: float) -> bool:
        t = self._negative.get((user, domain.lower()))
        return t is not None and t > now

    def put(self, user: str, domain: str, creds: Credentials | None, now: float) -> None:
        key = (user, domain.lower())
        if creds is None:
            negative = self._negative
            negative.pop(key, None)
            negative[key] = now + NEGATIVE_TTL
            if len(negative) > NEGATIVE_MAX:
                negative.pop(next(iter(negative)))
        else:
            self._entries[key] = creds
            self._negative.pop(key, None)

    def may_look_up(self, now: float) -> bool:
        """Whether a miss may be looked up in the database now (MISS_LOOKUPS_PER_S)."""
        budget = min(MISS_LOOKUPS_PER_S, self._budget + (now - self._budget_at) * MISS_LOOKUPS_PER_S)
        self._budget_at = now
        if budget < 1.0:
            self._budget = budget
            return False
        self._budget = budget - 1.0
        return True

    def forget(self, user: str, domain: str) -> None:
        """Drop what is known of one user (an entry or a miss): the next request reads it anew."""
        key = (user, domain.lower())
        self._entries.pop(key, None)
        self._negative.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    async def reload(self) -> None:
        if self.reloader is not None:
            await self.reloader()
        else:
            self._negative.clear()


@dataclass(slots=True)
class AuthResult:
    """ok: user authenticated; else reply ``status`` with ``headers`` (a challenge), or look up."""

    ok: bool
    user: str = ""
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    lookup: tuple[str, str] | None = None  # (user, realm) to load, then call again
    why: str = ""
    failed: str = ""  # "unknown_user" | "wrong_password" | "bad_algorithm" when credentials were wrong
    user_tried: str = ""


class Authenticator:
    def __init__(self, cfg: AuthSection, *, rand=os.urandom, nonce_table: int = 100_000):
        self.cfg = cfg
        self.secret = cfg.secret.encode() if cfg.secret else rand(32)
        self.rand = rand
        self.nonce_counter = digest.NonceCounter(nonce_table)
        self._templates: dict[tuple, tuple[tuple[str, str, str], ...]] = {}

    def challenge(self, realm: str, now: float, *, proxy: bool, stale: bool = False, why: str = "") -> AuthResult:
        nonce = digest.make_nonce(self.secret, now, self.rand(12))
        key = (realm, proxy, stale, tuple(self.cfg.algorithms))
        parts = self._templates.get(key)
        if parts is None and "\x00" not in realm:
            parts = self._template(key)
        if parts is None:
            name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
            headers = tuple((name, digest.challenge(realm, nonce, alg, stale=stale)) for alg in self.cfg.algorithms)
        elif len(parts) == 1:  # one algorithm (the default): no generator
            name, head, tail = parts[0]
            headers = ((name, f"{head}{nonce}{tail}"),)
        else:
            headers = tuple((name, f"{head}{nonce}{tail}") for name, head, tail in parts)
        return AuthResult(False, status=407 if proxy else 401, headers=headers, why=why)

    def _template(self, key: tuple) -> tuple[tuple[str, str, str], ...]:
        """The challenge headers of ``key`` split around the nonce: the rest does not change
        between challenges (realm, algorithm, qop, stale), so it is rendered once."""
        realm, proxy, stale, algorithms = key
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        mark = "\x00"
        parts = []
        for alg in algorithms:
            value = digest.challenge(realm, mark, alg, stale=stale)
            head, _, tail = value.partition(mark)  # the realm has no NUL (checked by the caller)
            parts.append((name, head, tail))
        if len(self._templates) >= 1024:  # realms are local domains; bound it anyway
            self._templates.clear()
        self._templates[key] = result = tuple(parts)
        return result

    def check(self, request, realm: str, cache: SubscriberCache, now: float, *, proxy: bool) -> AuthResult:
        """Authenticate ``request`` for ``realm``. ``now`` is wall-clock time (nonces are stored)."""
        creds = None
        # the header lines as get_all() would list them (neither header is a comma list)
        for item in request.headers._idx().get("proxy-authorization" if proxy else "authorization", ()):
            value = item[2]
            if not value.lstrip()[:6].lower() == "digest":
                continue  # unknown scheme: as if absent (RFC 4475 §3.3.7)
            try:
                c = parse_credentials_fast(value) or digest.parse_credentials(value)
            except Exception:  # noqa: BLE001 - any malformed credentials are just a new challenge
                continue
            if (c.realm or "").lower() == realm.lower():
                creds = c
                break
        if creds is None:
            return self.challenge(realm, now, proxy=proxy, why="no credentials")
        user = creds.username or ""
        if "@" in user:  # some UAs send user@domain as the username
            user = user.split("@", 1)[0]
        state = digest.check_nonce(self.secret, creds.nonce or "", now, self.cfg.nonce_expires)
        if state == "invalid":
            return self.challenge(realm, now, proxy=proxy, why="invalid nonce")
        sub = cache.get(user, realm)
        if sub is None:
            if cache.loader is not None and not cache.known_missing(user, realm, now):
                return AuthResult(False, lookup=(user, realm))
            result = self.challenge(realm, now, proxy=proxy, why=f"authentication failed for {user}")
            result.failed, result.user_tried = "unknown_user", user
            return result
        algorithm = (creds.algorithm or "MD5").upper()
        ha1 = sub.ha1_sha256 if algorithm.startswith("SHA-256") else sub.ha1
        if algorithm not in ("MD5", "SHA-256") or algorithm not in self.cfg.algorithms or not ha1:
            # a failure like any other: an unknown user's answer counts towards the ban, so a known
            # user's must too, or the ban would tell which users exist
            result = self.challenge(realm, now, proxy=proxy, why=f"algorithm {algorithm} not offered")
            result.failed, result.user_tried = "bad_algorithm", user
            return result
        if not digest.verify(creds, request.method, ha1, body=request.body):
            result = self.challenge(realm, now, proxy=proxy, why=f"authentication failed for {user}")
            result.failed, result.user_tried = "wrong_password", user
            return result
        if state == "stale":
            return self.challenge(realm, now, proxy=proxy, stale=True, why="stale nonce")
        # with qop the count must grow; an answer without qop (RFC 2069 style) counts as 0: single use
        if not self.nonce_counter.check_and_update(creds.nonce, creds.nc if creds.qop else None):
            return self.challenge(realm, now, proxy=proxy, why="nonce count replayed")
        return AuthResult(True, user=user)


#: One ``name=token`` or ``name="quoted"`` item followed by a comma or the end. The value holds no
#: backslash, CR or LF (the caller checks that once for the whole value: ``[^"]`` is the regex
#: engine's fast single-character loop, ``[^"\\\r\n]`` a set tested per character).
_CRED_ITEM = re.compile(r'[ \t]*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)[ \t]*=[ \t]*(?:"([^"]*)"|([^ \t",]+))[ \t]*(?:,|\Z)')
_CRED_SCAN = re.compile(f"{_CRED_ITEM.pattern}|([\\s\\S])")
_MANDATORY = frozenset(("username", "realm", "nonce", "uri", "response"))


def parse_credentials_fast(value: str) -> digest.Credentials | None:
    """The usual ``Digest a="b", c=d`` credentials in one regex pass (a third of the general
    parser's time, which was 37 us of a REGISTER). Returns None for anything else (other scheme,
    escapes, empty items, missing fields, unknown algorithm ...): the caller then uses
    ``digest.parse_credentials``, which decides and raises exactly as before."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest" or "\\" in rest or "\r" in rest or "\n" in rest:
        return None
    # one findall: an item where one can start, else one stray character (its name is ""); no
    # stray character means the items chain from 0 to the end. An unquoted value is never empty,
    # so ``q or u`` is the quoted value when there was one ("" included).
    params = {name.lower(): q or u for name, q, u, _stray in _CRED_SCAN.findall(rest)}
    if "" in params or not params.keys() >= _MANDATORY:
        return None
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in digest.ALGORITHMS:
        return None
    qop = params.get("qop")
    if qop is not None and ("cnonce" not in params or "nc" not in params):
        return None
    return digest.make_credentials(
        params["username"], params["realm"], params["nonce"], params["uri"], params["response"], algorithm,
        params.get("cnonce"), params.get("nc"), qop, params.get("opaque"),
    )
