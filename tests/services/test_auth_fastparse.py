"""The one-regex credentials parser (sipd/services/auth.py, kept for REGISTER speed) agrees with the general one
in sipd/sip/auth.py on every input: same Credentials, or it declines (None) and the general parser
decides."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipd.services.auth import parse_credentials_fast
from sipd.sip import auth as digest

SAMPLES = [
    'Digest username="alice", realm="example.test", nonce="6a.b1.c2", uri="sip:example.test", '
    'response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="abcdef", nc=00000001, qop=auth',
    'Digest username="user000001",realm="127.0.0.1",uri="sip:127.0.0.1:5070",nonce="x",response="y",algorithm=MD5',
    'digest  username = "a" ,realm="r", nonce="n", uri="sip:a,b@c", response="r", opaque="o"',
    'Digest username="a", realm="r", nonce="n", uri="u", response="r", algorithm=sha-256',
    'Digest username="a", realm="r", nonce="n", uri="u", response="r", algorithm=SHA-512',  # unknown: general raises
    'Digest username="a", realm="r", nonce="n", uri="u", response="r", qop=auth',  # qop without nc: general raises
    'Digest username="a", realm="r", nonce="n", uri="u"',  # no response
    'Digest username="a\\"b", realm="r", nonce="n", uri="u", response="r"',  # escape: general decides
    'Digest username="a", , realm="r", nonce="n", uri="u", response="r"',  # empty item
    'Digest username="a", realm="r", nonce="n", uri="u", response="r",',  # trailing comma
    'Digest username="a", realm="r", nonce="n", uri="u", response="r", username="b"',  # duplicate: last wins
    'Digest username="Jürgen", realm="r", nonce="n", uri="u", response="r"',
    'Basic dXNlcjpwYXNz',
    'Digest username="a" realm="r"',  # no comma
    'Digest username=, realm="r"',
    'Digest username="unterminated, realm="r", nonce="n", uri="u", response="r"',
    'Digest username="a", realm="r", nonce="n", uri="u", response="r", algorithm="MD5"',
    'Digest\tusername="a", realm="r", nonce="n", uri="u", response="r"',
]


def _general(value: str):
    try:
        return digest.parse_credentials(value)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


def _check(value: str) -> None:
    fast = parse_credentials_fast(value)
    if fast is not None:
        assert fast == _general(value), value


@pytest.mark.parametrize("value", SAMPLES)
def test_fast_parser_agrees_or_declines(value):
    _check(value)


def test_usual_credentials_take_the_fast_path():
    assert parse_credentials_fast(SAMPLES[0]) is not None
    assert parse_credentials_fast(SAMPLES[1]).username == "user000001"


_tok = st.text(alphabet="abcAZ09-_.!%*+~=,\" \\\tü", min_size=0, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["username", "realm", "nonce", "uri", "response", "algorithm", "qop",
                                           "nc", "cnonce", "opaque", "Realm", "x"]), _tok, st.booleans()),
                max_size=10),
       st.sampled_from([", ", ",", " , ", ",,"]))
def test_fast_parser_agrees_on_generated_input(items, sep):
    value = "Digest " + sep.join(f'{k}="{v}"' if q else f"{k}={v}" for k, v, q in items)
    _check(value)
