"""The four RFC 3261 §17 transaction state machines, as data.

Theory of operation
-------------------
A transaction is a request plus all its responses (RFC 3261 §17). There are four machines:

* INVITE client (ICT, §17.1.1, amended by RFC 6026): Calling -> Proceeding -> Completed (non-2xx:
  the transaction itself sends the ACK, Timer D absorbs retransmitted finals) or -> Accepted
  (2xx: RFC 6026 keeps the transaction for Timer M so retransmitted 2xx reach the TU, which
  sends the ACK end to end) -> Terminated. Timer A retransmits the INVITE (unreliable
  transports only, doubling), Timer B gives up.
* non-INVITE client (NICT, §17.1.2): Trying -> Proceeding -> Completed -> Terminated. Timer E
  retransmits (doubling up to T2; at T2 in Proceeding), Timer F gives up, Timer K absorbs
  retransmitted responses.
* INVITE server (IST, §17.2.1 + RFC 6026): Proceeding -> Completed (non-2xx: Timer G retransmits
  the response until the ACK arrives, Timer H gives up) -> Confirmed (Timer I absorbs ACKs), or
  -> Accepted (2xx: Timer L absorbs INVITE retransmissions while the TU retransmits the 2xx and
  receives the ACK) -> Terminated. The IST never sends 100 Trying by itself: the proxy decides.
* non-INVITE server (NIST, §17.2.2): Trying -> Proceeding -> Completed (Timer J absorbs request
  retransmissions by resending the last response) -> Terminated.

``TRANSITIONS[machine][(State, Input)] = (next State, actions)``. A pair that is not in the table
is an error: :class:`~sipd.sip.errors.LocalProtocolError` for something our own code did (sending
a response in the wrong state), :class:`~sipd.sip.errors.RemoteProtocolError` (``status_hint``
None: drop) for something the network did. The layer executes the actions; this module does no
I/O and knows no clock: deadlines are computed from the ``now`` passed in.

Timers (§17 table 4) are data in ``TIMERS``: per timer, its duration on unreliable and on
reliable transports (None = not used). Reliable transports (TCP, TLS) never retransmit
(no A, E, G) and wait 0 in D, I, J, K, as the RFC says.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import LocalProtocolError, RemoteProtocolError


class State(enum.Enum):
    # Enum members are singletons equal only to themselves: hashing them by identity agrees with
    # their equality, without Enum's own __hash__ (a Python-level call per dict look-up); every
    # step of every transaction looks (kind, state, input) up in the compiled table.
    __hash__ = object.__hash__
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    __hash__ = object.__hash__  # by identity, as State
    # from the network
    RECV_1XX = "recv 1xx"
    RECV_2XX = "recv 2xx"
    RECV_FINAL = "recv 300-699"
    RECV_REQUEST = "recv request retransmission"
    RECV_ACK = "recv ACK"
    # from our transaction user
    SEND_1XX = "send 1xx"
    SEND_2XX = "send 2xx"
    SEND_FINAL = "send 300-699"
    # timers and transport
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TRANSPORT_ERROR = "transport error"


LOCAL_INPUTS = frozenset({Input.SEND_1XX, Input.SEND_2XX, Input.SEND_FINAL})


class Action(enum.Enum):
    PASS_UP = "pass the message to the TU"
    RETRANSMIT = "retransmit the request"
    SEND_ACK = "send (or resend) the ACK for a non-2xx final"
    SEND = "send the response from the TU"
    RESEND = "resend the last response"
    TIMEOUT = "report a timeout to the TU"
    START_A = "start A"
    START_B = "start B"
    START_D = "start D"
    START_E = "start E"
    START_F = "start F"
    START_G = "start G"
    START_H = "start H"
    START_I = "start I"
    START_J = "start J"
    START_K = "start K"
    START_L = "start L"
    START_M = "start M"
    BACKOFF_A = "restart A at twice its interval"
    BACKOFF_E = "restart E at min(2x, T2)"
    BACKOFF_G = "restart G at min(2x, T2)"
    T2_E = "restart E at T2 (Proceeding)"
    CANCEL_A = "cancel A"
    CANCEL_B = "cancel B"
    CANCEL_E = "cancel E"
    CANCEL_F = "cancel F"
    CANCEL_G = "cancel G"
    CANCEL_H = "cancel H"


class Kind(enum.Enum):
    __hash__ = object.__hash__  # by identity, as State
    ICT = "INVITE client"
    NICT = "non-INVITE client"
    IST = "INVITE server"
    NIST = "non-INVITE server"


S, I, A = State, Input, Action

# -- RFC 3261 §17.1.1 + RFC 6026 §7.2: INVITE client ---------------------------------------------
_ICT = {
    (S.CALLING, I.TIMER_A): (S.CALLING, (A.RETRANSMIT, A.BACKOFF_A)),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, (A.TIMEOUT,)),
    (S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.TIMEOUT,)),
    (S.CALLING, I.RECV_1XX): (S.PROCEEDING, (A.CANCEL_A, A.CANCEL_B, A.PASS_UP)),
    (S.CALLING, I.RECV_2XX): (S.ACCEPTED, (A.CANCEL_A, A.CANCEL_B, A.PASS_UP, A.START_M)),
    (S.CALLING, I.RECV_FINAL): (S.COMPLETED, (A.CANCEL_A, A.CANCEL_B, A.PASS_UP, A.SEND_ACK, A.START_D)),
    (S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, (A.PASS_UP,)),
    (S.PROCEEDING, I.RECV_2XX): (S.ACCEPTED, (A.PASS_UP, A.START_M)),
    (S.PROCEEDING, I.RECV_FINAL): (S.COMPLETED, (A.PASS_UP, A.SEND_ACK, A.START_D)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.TIMEOUT,)),
    (S.COMPLETED, I.RECV_1XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.RECV_2XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.RECV_FINAL): (S.COMPLETED, (A.SEND_ACK,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, ()),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, ()),
    (S.ACCEPTED, I.RECV_1XX): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.RECV_2XX): (S.ACCEPTED, (A.PASS_UP,)),
    (S.ACCEPTED, I.RECV_FINAL): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, ()),
}

# -- RFC 3261 §17.1.2: non-INVITE client ----------------------------------------------------------
_NICT = {
    (S.TRYING, I.TIMER_E): (S.TRYING, (A.RETRANSMIT, A.BACKOFF_E)),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, (A.CANCEL_E, A.TIMEOUT)),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.TIMEOUT,)),
    (S.TRYING, I.RECV_1XX): (S.PROCEEDING, (A.PASS_UP,)),
    (S.TRYING, I.RECV_2XX): (S.COMPLETED, (A.CANCEL_E, A.CANCEL_F, A.PASS_UP, A.START_K)),
    (S.TRYING, I.RECV_FINAL): (S.COMPLETED, (A.CANCEL_E, A.CANCEL_F, A.PASS_UP, A.START_K)),
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, (A.RETRANSMIT, A.T2_E)),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, (A.CANCEL_E, A.TIMEOUT)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.TIMEOUT,)),
    (S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, (A.PASS_UP,)),
    (S.PROCEEDING, I.RECV_2XX): (S.COMPLETED, (A.CANCEL_E, A.CANCEL_F, A.PASS_UP, A.START_K)),
    (S.PROCEEDING, I.RECV_FINAL): (S.COMPLETED, (A.CANCEL_E, A.CANCEL_F, A.PASS_UP, A.START_K)),
    (S.COMPLETED, I.RECV_1XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.RECV_2XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.RECV_FINAL): (S.COMPLETED, ()),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.COMPLETED, ()),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, ()),
}

# -- RFC 3261 §17.2.1 + RFC 6026 §7.1: INVITE server ----------------------------------------------
_IST = {
    (S.PROCEEDING, I.RECV_REQUEST): (S.PROCEEDING, (A.RESEND,)),
    (S.PROCEEDING, I.RECV_ACK): (S.PROCEEDING, ()),  # ACK before any final: junk, absorbed
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, (A.SEND,)),
    (S.PROCEEDING, I.SEND_2XX): (S.ACCEPTED, (A.SEND, A.START_L)),
    (S.PROCEEDING, I.SEND_FINAL): (S.COMPLETED, (A.SEND, A.START_G, A.START_H)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.TIMEOUT,)),
    (S.COMPLETED, I.RECV_REQUEST): (S.COMPLETED, (A.RESEND,)),
    (S.COMPLETED, I.RECV_ACK): (S.CONFIRMED, (A.CANCEL_G, A.CANCEL_H, A.START_I)),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, (A.RESEND, A.BACKOFF_G)),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, (A.CANCEL_G, A.TIMEOUT)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.CANCEL_G, A.CANCEL_H, A.TIMEOUT)),
    (S.CONFIRMED, I.RECV_REQUEST): (S.CONFIRMED, ()),
    (S.CONFIRMED, I.RECV_ACK): (S.CONFIRMED, ()),
    (S.CONFIRMED, I.TRANSPORT_ERROR): (S.CONFIRMED, ()),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, ()),
    (S.ACCEPTED, I.RECV_REQUEST): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.RECV_ACK): (S.ACCEPTED, (A.PASS_UP,)),
    (S.ACCEPTED, I.SEND_2XX): (S.ACCEPTED, (A.SEND,)),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, ()),
}

# -- RFC 3261 §17.2.2: non-INVITE server ----------------------------------------------------------
_NIST = {
    (S.TRYING, I.RECV_REQUEST): (S.TRYING, ()),
    (S.TRYING, I.SEND_1XX): (S.PROCEEDING, (A.SEND,)),
    (S.TRYING, I.SEND_2XX): (S.COMPLETED, (A.SEND, A.START_J)),
    (S.TRYING, I.SEND_FINAL): (S.COMPLETED, (A.SEND, A.START_J)),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.TIMEOUT,)),
    (S.PROCEEDING, I.RECV_REQUEST): (S.PROCEEDING, (A.RESEND,)),
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, (A.SEND,)),
    (S.PROCEEDING, I.SEND_2XX): (S.COMPLETED, (A.SEND, A.START_J)),
    (S.PROCEEDING, I.SEND_FINAL): (S.COMPLETED, (A.SEND, A.START_J)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.TIMEOUT,)),
    (S.COMPLETED, I.RECV_REQUEST): (S.COMPLETED, (A.RESEND,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, ()),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, ()),
}

TRANSITIONS: dict[Kind, dict[tuple[State, Input], tuple[State, tuple[Action, ...]]]] = {
    Kind.ICT: _ICT,
    Kind.NICT: _NICT,
    Kind.IST: _IST,
    Kind.NIST: _NIST,
}
INITIAL_STATE = {Kind.ICT: S.CALLING, Kind.NICT: S.TRYING, Kind.IST: S.PROCEEDING, Kind.NIST: S.TRYING}
# Timers started when the transaction is created (§17.1.1.2, §17.1.2.2).
INITIAL_TIMERS = {Kind.ICT: ("A", "B"), Kind.NICT: ("E", "F"), Kind.IST: (), Kind.NIST: ()}

del S, I, A


@dataclass(frozen=True)
class TimerValues:
    t1: float = 0.5  # RTT estimate (RFC 3261 §17.1.1.1)
    t2: float = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum time a message stays in the network


_Dur = Callable[[TimerValues], float]
# timer -> (duration on unreliable transports, duration on reliable ones; None = not started)
TIMERS: dict[str, tuple[_Dur, _Dur | None]] = {
    "A": (lambda t: t.t1, None),  # INVITE retransmit, doubles
    "B": (lambda t: 64 * t.t1, lambda t: 64 * t.t1),  # INVITE transaction timeout
    "D": (lambda t: max(32.0, 64 * t.t1), lambda t: 0.0),  # wait for response retransmits
    "E": (lambda t: t.t1, None),  # non-INVITE retransmit, min(2x, T2)
    "F": (lambda t: 64 * t.t1, lambda t: 64 * t.t1),  # non-INVITE transaction timeout
    "G": (lambda t: t.t1, None),  # INVITE response retransmit, min(2x, T2)
    "H": (lambda t: 64 * t.t1, lambda t: 64 * t.t1),  # wait for ACK receipt
    "I": (lambda t: t.t4, lambda t: 0.0),  # wait for ACK retransmits
    "J": (lambda t: 64 * t.t1, lambda t: 0.0),  # wait for non-INVITE request retransmits
    "K": (lambda t: t.t4, lambda t: 0.0),  # wait for response retransmits
    "L": (lambda t: 64 * t.t1, lambda t: 64 * t.t1),  # RFC 6026: wait for INVITE retransmits
    "M": (lambda t: 64 * t.t1, lambda t: 64 * t.t1),  # RFC 6026: wait for 2xx retransmits
}
TIMER_INPUT = {name: Input[f"TIMER_{name}"] for name in TIMERS}


def timer_duration(name: str, values: TimerValues, reliable: bool) -> float | None:
    unreliable_fn, reliable_fn = TIMERS[name]
    if reliable:
        return None if reliable_fn is None else reliable_fn(values)
    return unreliable_fn(values)


# Per (kind, state, input): (next state, timer operations, I/O actions for the layer), compiled once
# from TRANSITIONS so ``step`` does no string work. Timer operations: ("start", name),
# ("cancel", name), ("backoff", cap_t2: bool) and ("t2", None) (E at T2 in Proceeding).
_TimerOp = tuple[str, Any]
_Compiled = tuple[State, tuple[_TimerOp, ...], tuple[Action, ...]]
_COMPILED: dict[Kind, dict[tuple[State, Input], _Compiled]] = {}


def _compile() -> None:
    for kind, table in TRANSITIONS.items():
        out = _COMPILED[kind] = {}
        for pair, (new, actions) in table.items():
            ops: list[_TimerOp] = []
            io: list[Action] = []
            for a in actions:
                if a.name.startswith("START_"):
                    ops.append(("start", a.name[6]))
                elif a.name.startswith("CANCEL_"):
                    ops.append(("cancel", a.name[7]))
                elif a is Action.BACKOFF_A:
                    ops.append(("backoff", False))
                elif a is Action.BACKOFF_E or a is Action.BACKOFF_G:
                    ops.append(("backoff", True))
                elif a is Action.T2_E:
                    ops.append(("t2", None))
                else:
                    io.append(a)
            out[pair] = (new, tuple(ops), tuple(io))


_compile()
# At most one retransmit timer (A, E or G) runs at a time, and one other: two slots per transaction.
RETRANSMIT_TIMERS = frozenset("AEG")


class Transaction:
    """State of one transaction. The layer owns it and executes the actions ``step`` returns.

    Memory (bench/bench_tx_memory.py): a transaction keeps only what its state needs. Server
    transactions never keep the parsed request, and keep the last response only as bytes (to
    absorb retransmissions). Client transactions keep the request bytes while they retransmit;
    the INVITE client keeps the parsed request (for CANCEL and the ACK) only until its final
    response, then just the ACK bytes. Timers are two slots, not dicts: at most one retransmit
    timer (A, E or G) and one other timer (B, D, F, H, I, J, K, L or M) run at any time.
    """

    __slots__ = (
        "kind", "key", "state", "request", "request_bytes", "peer", "reliable", "values",
        "last_response_bytes", "ack_bytes", "pending_cancel",
        "retx_name", "retx_at", "interval", "main_name", "main_at",
    )

    def __init__(
        self, kind: Kind, key: Any, request: Any, peer: Any, reliable: bool, values: TimerValues
    ) -> None:
        self.kind = kind
        self.key = key
        self.state = INITIAL_STATE[kind]
        # the parsed request: only the INVITE client needs it (make_cancel, make_ack)
        self.request = request if kind is Kind.ICT else None
        self.request_bytes: bytes | None = None
        self.peer = peer  # destination (client) or source (server) Address
        self.reliable = reliable
        self.values = values
        self.last_response_bytes: bytes | None = None
        self.ack_bytes: bytes | None = None
        self.pending_cancel: Any = None
        self.retx_name: str | None = None  # A, E or G
        self.retx_at: float | None = None
        self.interval = 0.0  # current retransmit interval
        self.main_name: str | None = None  # B, D, F, H, I, J, K, L or M
        self.main_at: float | None = None

    @property
    def timers(self) -> dict[str, float]:
        """Running timers: name -> deadline (introspection; the state lives in the slots)."""
        out = {}
        if self.retx_at is not None:
            out[self.retx_name] = self.retx_at
        if self.main_at is not None:
            out[self.main_name] = self.main_at
        return out

    def deadline(self, name: str) -> float | None:
        if name == self.retx_name:
            return self.retx_at
        if name == self.main_name:
            return self.main_at
        return None

    def fired(self, name: str) -> None:
        """Timer ``name`` fired or is cancelled: it no longer runs (a retransmit timer keeps its
        name and interval, so the transition can restart it doubled)."""
        if name == self.retx_name:
            self.retx_at = None
        elif name == self.main_name:
            self.main_at = None

    def start_timer(self, name: str, now: float) -> None:
        d = timer_duration(name, self.values, self.reliable)
        if d is None:
            return
        if name in RETRANSMIT_TIMERS:
            self.interval = d
            self.retx_name, self.retx_at = name, now + d
        else:
            self.main_name, self.main_at = name, now + d

    def backoff(self, now: float, cap: float | None) -> None:
        if self.retx_name is None:
            return
        d = self.interval * 2
        if cap is not None and d > cap:
            d = cap
        self.interval = d
        self.retx_at = now + d

    def step(self, inp: Input, now: float) -> tuple[Action, ...]:
        """Apply one input: change state, update timers; return the I/O actions for the layer."""
        try:
            new, ops, io = _COMPILED[self.kind][(self.state, inp)]
        except KeyError:
            msg = f"{self.kind.value} transaction: no transition from {self.state.value} on {inp.value}"
            if inp in LOCAL_INPUTS:
                raise LocalProtocolError(msg, None) from None
            raise RemoteProtocolError(msg, None) from None
        self.state = new
        for op, arg in ops:
            if op == "start":
                self.start_timer(arg, now)
            elif op == "cancel":
                self.fired(arg)
            elif op == "backoff":
                self.backoff(now, self.values.t2 if arg else None)
            elif self.retx_name == "E":  # "t2": E at T2 in Proceeding
                self.interval = t2 = self.values.t2
                self.retx_at = now + t2
        if new is State.TERMINATED:
            self.retx_name = self.retx_at = self.main_name = self.main_at = None
        return io
