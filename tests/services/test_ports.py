"""The ports (sipd/services/ports.py) are only Protocols: nothing checks at run time that the
daemon implements them. These tests do, so renaming a method on one side fails here instead of
on the first call that needs it."""

from __future__ import annotations

import inspect

import pytest

from sipd.daemon.endpoint import Endpoint
from sipd.services import ports
from sipd.sip.layer import TransactionLayer

PORTS = [ports.Scheduler, ports.Transactions, ports.Transmitter, ports.Replier, ports.Upstream, ports.Listeners,
         ports.Hop, ports.Destinations, ports.AorCopies, ports.OwnRequests, ports.CallControl]


def members(protocol: type) -> dict[str, object]:
    """The methods and properties a Protocol declares (its own and its bases'), by name."""
    out: dict[str, object] = {}
    for cls in reversed(protocol.__mro__):
        if cls is object or not getattr(cls, "_is_protocol", False) or cls.__module__ != ports.__name__:
            continue
        out.update({k: v for k, v in vars(cls).items() if not k.startswith("_")})
    return out


def test_endpoint_is_every_port():
    assert set(members(ports.Endpoint)) == set().union(*(members(p) for p in PORTS if p is not ports.Transactions))
    assert all(len(members(p)) >= 1 for p in PORTS)


def accepts(implemented: object, declared: object) -> bool:
    """Whether ``implemented`` can be called as ``declared`` is: the same positional arguments, the
    same keyword-only names (``self`` included; names of positional parameters may differ)."""
    params = inspect.signature(declared).parameters.values()  # type: ignore[arg-type]
    positional = [object() for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keywords = {p.name: object() for p in params if p.kind is p.KEYWORD_ONLY}
    try:
        inspect.signature(implemented).bind(*positional, **keywords)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("protocol", [p for p in PORTS if p is not ports.Transactions], ids=lambda p: p.__name__)
def test_the_endpoint_implements_the_port(protocol):
    for name, declared in members(protocol).items():
        implemented = inspect.getattr_static(Endpoint, name, None)
        assert implemented is not None, f"Endpoint lacks {protocol.__name__}.{name}"
        if isinstance(declared, property):
            assert isinstance(implemented, property), f"{protocol.__name__}.{name} is a property"
            continue
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared), \
            f"{protocol.__name__}.{name}: async on one side only"
        assert accepts(implemented, declared), f"{protocol.__name__}.{name}: other parameters"


def test_the_transaction_layer_is_the_transactions_port():
    for name, declared in members(ports.Transactions).items():
        assert accepts(getattr(TransactionLayer, name), declared), name


def test_a_missing_or_different_method_is_caught():
    class Half:
        def reply(self, request, tx_key, status):  # no reason, no keywords
            pass

    assert not accepts(Half.reply, ports.Replier.reply)
    assert inspect.getattr_static(Half, "to_tag", None) is None
    assert accepts(Endpoint.reply, ports.Replier.reply)
