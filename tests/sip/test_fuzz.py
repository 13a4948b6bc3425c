"""A sample of the PROTOS-style mutation fuzzer (the full run: bench/fuzz_protos.py)."""

import itertools

from sipd.sip.errors import ProtocolError
from sipd.sip.layer import LayerConfig, TransactionLayer
from sipd.sip.framing import StreamParser
from sipd.sip.parser import parse_message

from .fuzz import cases, valid_invite


def test_valid_invite_parses():
    m = parse_message(valid_invite())
    assert m.method == "INVITE" and m.via.branch == "z9hG4bK776asdhds"


def test_mutation_sample_raises_only_protocol_errors():
    n = ok = 0
    layer = TransactionLayer(LayerConfig(branch_factory=lambda: "z9hG4bKf", tag_factory=lambda: "t"))
    addr = ("udp", "192.0.2.1", 5060, None)
    for desc, data in itertools.islice(cases(extra=800), 0, None, 5):
        n += 1
        try:
            m = parse_message(data)
            m.to_bytes()
            ok += 1
        except ProtocolError:
            pass
        layer.receive_datagram(data, addr, 0.0)  # never raises
        layer.messages_to_send(0.0)
        while layer.next_event():
            pass
        try:
            StreamParser().feed(data)
        except ProtocolError:
            pass
    assert n >= 2000 and 0 < ok < n
