"""The hot-path shortcuts of sipd/sip/auth.py give what the plain formulas give: the nonce HMAC
(RFC 2104 from two keyed SHA-256 states) equals ``hmac.new``, the inlined MD5/qop=auth response
equals the general RFC 2617 computation, and ``make_credentials`` builds the same Credentials as
the dataclass constructor."""

from __future__ import annotations

import hashlib
import hmac
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from sipd.sip import auth as digest


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.text(alphabet="0123456789abcdef.", max_size=80))
def test_mac_is_hmac_sha256(secret, payload):
    expected = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).hexdigest()[:32]
    assert digest._mac(secret, payload) == expected
    assert digest._mac(secret, payload) == expected  # second call: the cached key states


def test_nonce_round_trip_with_long_and_short_secrets():
    for secret in (b"", b"k", b"k" * 64, b"k" * 65, bytes(range(256))):
        nonce = digest.make_nonce(secret, 1000.0, b"0123456789ab")
        assert digest.check_nonce(secret, nonce, 1001.0, 300) == "ok"
        assert digest.check_nonce(secret + b"x", nonce, 1001.0, 300) == "invalid"


def _general_response(c: digest.Credentials, method: str, ha1: str) -> str:
    """RFC 2617 §3.2.2.1 written out, for qop=auth."""
    h = digest.ALGORITHMS[c.algorithm.upper()]
    ha2 = h(f"{method}:{c.uri}".encode("utf-8", "surrogateescape")).hexdigest()
    return h(f"{ha1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop}:{ha2}".encode("utf-8", "surrogateescape")).hexdigest()


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(_text, _text, _text, _text, st.sampled_from(["MD5", "SHA-256"]), st.sampled_from(["REGISTER", "INVITE"]))
def test_inlined_md5_response_matches_the_formula(uri, nonce, nc, cnonce, algorithm, method):
    c = digest.make_credentials("u", "r", nonce, uri, "x", algorithm, cnonce, nc, "auth", None)
    ha1 = hashlib.md5(b"u:r:pw").hexdigest()
    assert digest.expected_response(c, method, ha1) == _general_response(c, method, ha1)


def test_make_credentials_is_the_dataclass():
    args = dict(username="alice", realm="example.test", nonce="n", uri="sip:example.test", response="r",
                algorithm="MD5", cnonce="c", nc="00000001", qop="auth", opaque=None)
    fast = digest.make_credentials(*args.values())
    slow = digest.Credentials(**args)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow
    try:
        fast.username = "mallory"  # type: ignore[misc]
    except AttributeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("Credentials must stay frozen")
