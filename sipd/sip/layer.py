"""The transaction layer: matching, the four machines of ``transaction.py``, timers and output.

Bytes (or framed messages) come in with the time they arrived; events come out through
``next_event()``; everything to put on the wire is queued for ``messages_to_send(now)``; one timer
deadline is exposed by ``get_timer()`` and fired by ``handle_timer(now)`` (the aioquic shape).

Matching (RFC 3261 §17.1.3, §17.2.3):

* responses -> client transactions by (top Via branch, CSeq method);
* requests -> server transactions by (branch, sent-by, method) with ACK mapped to INVITE, when the
  branch carries the ``z9hG4bK`` magic cookie *and* something after it; otherwise (RFC 2543 peers,
  and RFC 4475 §3.2.1's bare ``z9hG4bK``) by (Call-ID, From tag, CSeq number, method, top Via).
  The To tag is left out of the fallback key so the ACK for a non-2xx (which carries our To tag)
  matches its INVITE; the Request-URI is left out so responses can be matched to it too.
* CANCEL gets a server transaction of its own (so ``send_response`` can answer 200 or 481) and
  is reported as ``CancelReceived`` with the key of the INVITE server transaction it cancels
  (None if there is none).

Responses from server transactions go back to the address the request came from (RFC 3581
symmetric response routing; on TCP/TLS the same connection), which is what NATed endpoints need.

Stateless requests (``LayerConfig.stateless_requests``, what a proxy under attack wants, as
Kamailio's ``sl_send_reply``/``www_challenge``): a request that starts something -- not an ACK, a
CANCEL or a retransmission of a request we keep a transaction for -- is passed up *without* a
server transaction, with ``RequestReceived.sl_key`` naming it for its retransmissions. It is then
either answered statelessly (``send_stateless_reply``: nothing stays behind but the bytes of a
final answer worth replaying, so a flood of refused or challenged requests costs CPU only, never
memory or timers), or given its transaction when it will be forwarded (``adopt``). A REGISTER is
answered statelessly whatever the answer (RFC 3261 §17 lets a UAS answer a non-INVITE without a
transaction; OpenSIPS's ``save()`` does): its retransmission is answered from the kept 2xx, so the
registrar and the nonce counter see each REGISTER once. A retransmission that arrives while the
request is still being decided (``mark_pending``) is ignored; one after a refusal is answered from
a small cache of refusals (under a flood they are recomputed rather than kept).
"""

from __future__ import annotations

import heapq
from sys import intern
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import LocalProtocolError, RemoteProtocolError, TransactionError
from .client_requests import make_ack, make_cancel, slim_invite
from .headers import Via, parse_via
from .message import Request, Response, make_response
from .parser import parse_message
from .stateless import ReplyCache, is_stateless_tag, stateless_tag
from .transaction import (
    INITIAL_TIMERS,
    TIMER_INPUT,
    Action,
    Input,
    Kind,
    State,
    TimerValues,
    Transaction,
)

# (transport, host, port, conn_id | None); transport is "udp", "tcp", "tls" ...
Address = tuple[str, str, int, Any]
TxKey = tuple[Any, ...]

RELIABLE = frozenset({"tcp", "tls", "sctp", "ws", "wss"})
MAGIC_COOKIE = "z9hG4bK"
STREAM = "stream"  # first item of the stateless key of a request read from a TCP/TLS connection


def _default_factory() -> str:
    raise LocalProtocolError("LayerConfig needs a branch_factory/tag_factory", None)


@dataclass
class LayerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    branch_factory: Callable[[], str] = _default_factory  # returns a branch *with* z9hG4bK
    tag_factory: Callable[[], str] = _default_factory
    # the To tag prefix of our stateless answers (sip/stateless.py): an ACK carrying such a tag
    # and matching no transaction acknowledges one of them and is absorbed here
    stateless_prefix: str | None = None
    # called for each ACK absorbed that way (the daemon counts them as sl:received_ACKs)
    on_stateless_ack: Callable[[], None] | None = None
    # requests that start something are passed up without a server transaction (module docstring)
    stateless_requests: bool = False
    # answers a stateless request from its raw bytes before it is parsed, or declines (None):
    # (status, answer), kept for retransmissions as any stateless answer (sipd/services/challenge.py)
    answer_raw: Callable[[bytes, Address], tuple[int, bytes] | None] | None = None
    reply_ttl: float = 32.0  # seconds a stateless final answer is kept for retransmissions (64*T1, as Timer J)
    reply_cache_size: int = 65536  # ... at most this many accepted requests' answers (oldest dropped first)
    refusal_cache_size: int = 1024  # ... and refusals (a flood's answers: kept few, recomputed when gone)


# -- events --------------------------------------------------------------------------------------
# Events and outgoing messages are values: nothing changes them once made. They are not frozen
# dataclasses all the same: a frozen one's __init__ sets each field through object.__setattr__,
# about three times the cost, and a call makes a dozen of them.


@dataclass(kw_only=True, slots=True, unsafe_hash=True)
class RequestReceived:
    request: Request
    source: Address
    tx_key: TxKey | None  # None: ACK for a 2xx (or unmatched ACK), or a stateless request: no transaction
    sl_key: Any = None  # a stateless request's key (for send_stateless_reply, mark_pending, adopt)


@dataclass(kw_only=True, slots=True, unsafe_hash=True)
class CancelReceived:
    request: Request
    source: Address
    tx_key: TxKey | None  # the INVITE server transaction it cancels, None if none


@dataclass(kw_only=True, slots=True, unsafe_hash=True)
class ResponseReceived:
    response: Response
    tx_key: TxKey | None  # None: stray (e.g. 2xx retransmission after the transaction ended)


@dataclass(kw_only=True, slots=True, unsafe_hash=True)
class TransactionTimedOut:
    tx_key: TxKey


@dataclass(kw_only=True, slots=True, unsafe_hash=True)
class TransactionTerminated:
    tx_key: TxKey


@dataclass(kw_only=True, slots=True, unsafe_hash=True)
class MessageRejected:
    source: Address
    status: int | None  # the error reply already queued, None if dropped silently
    reason: str


Event = (
    RequestReceived | CancelReceived | ResponseReceived | TransactionTimedOut
    | TransactionTerminated | MessageRejected
)


@dataclass(slots=True, unsafe_hash=True)
class Outgoing:
    data: bytes
    dest: Address


# -- keys ------------------------------------------------------------------------------------------


# Keys live as long as their transactions: the method and sent-by strings are interned (shared by
# every transaction from the same peer; interned strings are freed with their last user).


_SERVER_KEY = " server key"  # in the parsed-values cache: no header key has a space


def server_key(msg: Request | Response, method: str) -> TxKey:
    """A received request's key is looked for two or three times (a retransmission?, then the
    transaction made for it; an INVITE's again for its ACK or CANCEL): kept with the parsed Vias it
    was read from, so a change of Via (which drops them) makes it computed afresh."""
    via = msg.via
    c = msg.headers._cache
    vias = c["via"]
    memo = c.get(_SERVER_KEY)
    if memo is not None and memo[0] is vias and memo[1] == method:
        return memo[2]  # type: ignore[no-any-return]
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        key: TxKey = ("s", branch, intern(via.sent_by.lower()), intern(method))
    else:
        key = ("s2543", msg.call_id, msg.from_.tag, msg.cseq.seq, intern(method), str(via))
    c[_SERVER_KEY] = (vias, method, key)
    return key


def _top_via(request: Request) -> Via:
    """The first Via value of a request we send. Only that one is parsed: the others were checked
    when the request was received, and a proxy's forwarded copy has one more Via than its cache."""
    h = request.headers
    vias = h._cache.get("via")
    if vias:
        return vias[0]
    lst = h._idx().get("via")
    if not lst:
        raise LocalProtocolError("request without Via", None)
    try:
        return parse_via(lst[0][2])[0]
    except RemoteProtocolError as e:
        raise LocalProtocolError(str(e), None) from None


def client_key(msg: Request | Response) -> TxKey:
    return ("c", msg.via.branch, intern(msg.cseq.method))


def _is_reliable(addr: Address) -> bool:
    return addr[0].lower() in RELIABLE


_NO_TIMERS = (None, None, None, None)


class TransactionLayer:
    """Sans-IO RFC 3261 transaction layer (client and server, INVITE and non-INVITE)."""

    def __init__(self, config: LayerConfig | None = None) -> None:
        self.config = config or LayerConfig()
        self._values = TimerValues(self.config.t1, self.config.t2, self.config.t4)
        self._txs: dict[TxKey, Transaction] = {}
        self._events: deque[Event] = deque()
        self._out: list[Outgoing] = []
        self._heap: list[tuple[float, int, TxKey, str]] = []
        self._seq = 0
        cfg = self.config
        self.replies = ReplyCache(cfg.reply_ttl, cfg.reply_cache_size)  # stateless 2xx (and in-progress marks)
        self.refusals = ReplyCache(cfg.reply_ttl, cfg.refusal_cache_size)  # stateless answers >= 300

    # -- introspection ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._txs)

    def get_transaction(self, key: TxKey) -> Transaction | None:
        return self._txs.get(key)

    def state_of(self, key: TxKey) -> State | None:
        tx = self._txs.get(key)
        return tx.state if tx else None

    # -- output -----------------------------------------------------------------------------------
    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def has_output(self) -> bool:
        """Messages wait for ``messages_to_send`` (anything that starts a timer also sends)."""
        return bool(self._out)

    def messages_to_send(self, now: float) -> list[Outgoing]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        heap = self._heap
        txs = self._txs
        while heap:
            deadline, _, key, name = heap[0]
            tx = txs.get(key)
            if tx is not None and tx.deadline(name) == deadline:
                return deadline
            heapq.heappop(heap)  # stale entry (timer cancelled or restarted, transaction gone)
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        txs = self._txs
        for _ in range(len(heap) + 1):  # bounded: each entry is popped at most once
            if not heap or heap[0][0] > now:
                return
            deadline, _, key, name = heapq.heappop(heap)
            tx = txs.get(key)
            if tx is None or tx.deadline(name) != deadline:
                continue
            tx.fired(name)
            self._step(tx, TIMER_INPUT[name], now)

    # -- input ------------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if not data.strip(b"\r\n"):
            return  # CRLF keep-alive (RFC 5626 §3.5.1 / §4.4.1)
        key = None
        if self.config.stateless_requests and data[:4] != b"SIP/":
            key = (hash(data), addr[1], addr[2])  # SipHash, randomised per process: no crafted collisions
            sent = self.replies.get(key)
            if sent is None:
                sent = self.refusals.get(key)
            if sent is not None:  # a retransmission of a request answered statelessly
                if sent:  # (empty: still being decided)
                    self._out.append(Outgoing(sent, addr))
                return
            answer_raw = self.config.answer_raw
            if answer_raw is not None and (answer := answer_raw(data, addr)) is not None:
                self.send_stateless_reply(key, answer[0], answer[1], addr, now)
                return
        try:
            msg = parse_message(data)
        except RemoteProtocolError as e:
            self.reject(e, addr)
            return
        if isinstance(msg, Response):  # also one after leading CRLFs (RFC 3261 §7.5)
            self._on_response(msg, now)
        elif key is not None:
            self._on_request_stateless(msg, addr, now, key)
        else:
            self._on_request(msg, addr, now)

    def reject(self, error: RemoteProtocolError, addr: Address) -> None:
        """Queue the stateless error reply for a message that failed to parse (if possible).

        With a ``stateless_prefix`` the reply carries a stateless To tag, as every stateless
        answer does: the ACK of a rejected INVITE is then absorbed by its tag like any other."""
        status = error.status_hint
        if status is not None and error.partial is not None:
            try:
                prefix = self.config.stateless_prefix
                to_tag = None if prefix is None else stateless_tag(prefix, error.partial)
                resp = make_response(error.partial, status, to_tag=to_tag)
                self._out.append(Outgoing(resp.to_bytes(), addr))
            except Exception:  # noqa: BLE001 - best effort on a broken message
                status = None
        else:
            status = None
        self._events.append(MessageRejected(source=addr, status=status, reason=str(error)))

    def receive_message(self, msg: Request | Response, addr: Address, now: float) -> None:
        """A message framed from a TCP/TLS connection (or parsed by the caller)."""
        if isinstance(msg, Response):
            self._on_response(msg, now)
        elif self.config.stateless_requests:
            self._on_request_stateless(msg, addr, now, (STREAM, id(msg)))
        else:
            self._on_request(msg, addr, now)

    def _on_request_stateless(self, req: Request, addr: Address, now: float, sl_key: Any) -> None:
        method = req.method
        if method != "REGISTER" and (method == "ACK" or method == "CANCEL" or self.match(req) is not None):
            self._on_request(req, addr, now)  # matched or absorbed by a transaction, as ever
        else:
            self._events.append(RequestReceived(request=req, source=addr, tx_key=None, sl_key=sl_key))

    def send_stateless_reply(self, sl_key: Any, status: int, data: bytes, dest: Address, now: float) -> None:
        """Send the answer to a request passed up without a transaction, and keep a final one for
        its retransmissions: a 2xx among the replies, a refusal among the refusals. Over TCP/TLS
        nothing is retransmitted, so nothing is kept."""
        if status >= 200 and sl_key[0] is not STREAM:
            if status < 300:
                self.replies.put(sl_key, data, now)
            else:
                self.replies.discard(sl_key)  # an in-progress mark
                self.refusals.put(sl_key, data, now)
        self._out.append(Outgoing(data, dest))

    def mark_pending(self, sl_key: Any, now: float) -> None:
        """A stateless request waits for something slow (the database): its retransmissions are
        ignored until it is answered."""
        if sl_key[0] is not STREAM:
            self.replies.put(sl_key, b"", now)

    def expire_stateless(self, now: float) -> None:
        """Forget stateless answers past their time (also when no request comes to push them out)."""
        self.replies.expire(now)
        self.refusals.expire(now)

    def _on_request(self, req: Request, addr: Address, now: float) -> None:
        method = req.method
        if method == "ACK":
            tx = self._txs.get(server_key(req, "INVITE"))
            if tx is not None and tx.kind is Kind.IST:
                if Action.PASS_UP in self._step(tx, Input.RECV_ACK, now):
                    self._events.append(RequestReceived(request=req, source=addr, tx_key=None))
                return
            prefix = self.config.stateless_prefix
            if prefix is not None and is_stateless_tag(prefix, req.to.tag):
                if self.config.on_stateless_ack is not None:
                    self.config.on_stateless_ack()
                return  # the ACK of a stateless non-2xx final: nothing to pass up
            self._events.append(RequestReceived(request=req, source=addr, tx_key=None))
            return
        key = server_key(req, method)
        tx = self._txs.get(key)
        if tx is not None:
            self._step(tx, Input.RECV_REQUEST, now)
            return
        kind = Kind.IST if method == "INVITE" else Kind.NIST
        tx = Transaction(kind, key, req, addr, _is_reliable(addr), self._values)
        self._txs[key] = tx
        if method == "CANCEL":
            inv_key = key[:-1] + ("INVITE",) if key[0] == "s" else key[:4] + ("INVITE",) + key[5:]
            inv = self._txs.get(inv_key)
            found = inv_key if inv is not None and inv.kind is Kind.IST else None
            self._events.append(CancelReceived(request=req, source=addr, tx_key=found))
        else:
            self._events.append(RequestReceived(request=req, source=addr, tx_key=key))

    def _on_response(self, resp: Response, now: float) -> None:
        key = client_key(resp)
        tx = self._txs.get(key)
        if tx is None:
            self._events.append(ResponseReceived(response=resp, tx_key=None))
            return
        s = resp.status
        inp = Input.RECV_1XX if s < 200 else Input.RECV_2XX if s < 300 else Input.RECV_FINAL
        self._step(tx, inp, now, resp)
        if tx.pending_cancel is not None and tx.kind is Kind.ICT:
            cancel, tx.pending_cancel = tx.pending_cancel, None
            if tx.state is State.PROCEEDING:
                self._start_client(cancel, tx.peer, now)

    def match(self, req: Request) -> TxKey | None:
        """The key of the server transaction ``req`` belongs to (a retransmission), or None."""
        key = server_key(req, "INVITE" if req.method == "ACK" else req.method)
        return key if key in self._txs else None

    def adopt(self, req: Request, addr: Address, sl_key: Any = None) -> TxKey | None:
        """Create the server transaction of a request that was handled statelessly until now and
        will now be answered through a transaction, as a request that passed authentication and
        is forwarded (``sl_key``: its stateless key, whose in-progress mark goes). No event is
        emitted. Returns its key, or None when a transaction for it exists already (a
        retransmission got there first)."""
        method = req.method
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"{method} is not adopted: give it to receive_message", None)
        if sl_key is not None:
            self.replies.discard(sl_key)
        key = server_key(req, method)
        if key in self._txs:
            return None
        kind = Kind.IST if method == "INVITE" else Kind.NIST
        self._txs[key] = Transaction(kind, key, req, addr, _is_reliable(addr), self._values)
        return key

    # -- sending ----------------------------------------------------------------------------------
    def send_request(self, request: Request, dest: Address, now: float) -> TxKey:
        """Start a client transaction. The request needs a top Via; a branch is added if missing."""
        if request.method == "ACK":
            raise LocalProtocolError("ACK is not sent in a transaction: use send_stateless", None)
        via = _top_via(request)
        branch = via.branch
        if not (branch or "").startswith(MAGIC_COOKIE) or branch == MAGIC_COOKIE:
            params = dict(via.params)  # a new Via: the parsed one may be shared with the request it was copied from
            params["branch"] = branch = self.config.branch_factory()
            request.replace_first("Via", str(Via(via.transport, via.host, via.port, params, via.protocol)))
        return self._start_client(request, dest, now, ("c", branch, intern(request.cseq.method)))

    def _start_client(self, request: Request, dest: Address, now: float, key: TxKey | None = None) -> TxKey:
        if key is None:
            key = client_key(request)
        if key in self._txs:
            raise LocalProtocolError(f"transaction {key} already exists", None)
        kind = Kind.ICT if request.method == "INVITE" else Kind.NICT
        data = request.to_bytes()
        slim = slim_invite(request) if kind is Kind.ICT else None
        tx = Transaction(kind, key, slim, dest, _is_reliable(dest), self._values)
        self._txs[key] = tx
        self._out.append(Outgoing(data, dest))
        for name in INITIAL_TIMERS[kind]:
            tx.start_timer(name, now)
        if tx.retx_name is not None:  # kept only to retransmit (unreliable transports)
            tx.request_bytes = data
        self._arm(tx, _NO_TIMERS)
        return key

    def send_response(self, response: Response, now: float, tx_key: TxKey | None = None) -> None:
        """Send a response through its server transaction: ``tx_key`` (the key the request came
        with, as the proxy holds it) or else matched by the response's Via branch/sent-by and CSeq."""
        if tx_key is None:
            tx_key = server_key(response, response.cseq.method)
        tx = self._txs.get(tx_key)
        if tx is None or tx.kind not in (Kind.IST, Kind.NIST):
            raise TransactionError(f"no server transaction for {response!r} ({tx_key})")
        s = response.status
        inp = Input.SEND_1XX if s < 200 else Input.SEND_2XX if s < 300 else Input.SEND_FINAL
        tx.last_response_bytes = response.to_bytes()
        self._step(tx, inp, now)

    def send_stateless(self, msg: Request | Response, dest: Address, now: float) -> None:
        self._out.append(Outgoing(msg.to_bytes(), dest))

    def abandon(self, tx_key: TxKey) -> None:
        """Forget a server transaction that got no response yet, without any event: the request
        was handed to another process, whose transaction answers it (timers left in the heap
        find nothing and are skipped)."""
        tx = self._txs.get(tx_key)
        if tx is not None and tx.kind in (Kind.IST, Kind.NIST) and tx.last_response_bytes is None:
            del self._txs[tx_key]

    def cancel(self, tx_key: TxKey, now: float) -> Request | None:
        """Build and send (once a provisional arrived) a CANCEL for a client INVITE transaction."""
        tx = self._txs.get(tx_key)
        if tx is None or tx.kind is not Kind.ICT:
            raise TransactionError(f"no client INVITE transaction {tx_key}")
        if tx.state not in (State.CALLING, State.PROCEEDING) or tx.pending_cancel is not None:
            return None
        if ("c", tx.key[1], "CANCEL") in self._txs:
            return None  # already cancelled
        cancel = make_cancel(tx.request)
        if tx.state is State.PROCEEDING:
            self._start_client(cancel, tx.peer, now)
        else:  # RFC 3261 §9.1: wait for a provisional response before sending
            tx.pending_cancel = cancel
        return cancel

    def transport_error(self, tx_key: TxKey, now: float) -> None:
        tx = self._txs.get(tx_key)
        if tx is not None:
            self._step(tx, Input.TRANSPORT_ERROR, now)

    # -- machinery --------------------------------------------------------------------------------
    def _step(
        self, tx: Transaction, inp: Input, now: float, resp: Response | None = None
    ) -> tuple[Action, ...]:
        old = (tx.retx_name, tx.retx_at, tx.main_name, tx.main_at)
        try:
            actions = tx.step(inp, now)
        except RemoteProtocolError:
            return ()
        out = self._out
        for a in actions:
            if a is Action.PASS_UP:
                if resp is not None:  # client transactions: the response received
                    self._events.append(ResponseReceived(response=resp, tx_key=tx.key))
            elif a is Action.RETRANSMIT:
                out.append(Outgoing(tx.request_bytes or b"", tx.peer))
            elif a is Action.SEND or a is Action.RESEND:
                if tx.last_response_bytes is not None:
                    out.append(Outgoing(tx.last_response_bytes, tx.peer))
            elif a is Action.SEND_ACK:
                if tx.ack_bytes is None:  # retransmitted finals get the same ACK (§17.1.1.3)
                    tx.ack_bytes = make_ack(tx.request, resp).to_bytes()
                out.append(Outgoing(tx.ack_bytes, tx.peer))
            elif a is Action.TIMEOUT:
                self._events.append(TransactionTimedOut(tx_key=tx.key))
        state = tx.state
        if state is State.TERMINATED:
            self._txs.pop(tx.key, None)
            self._events.append(TransactionTerminated(tx_key=tx.key))
            return actions
        if tx.retx_at is None:  # no more retransmissions (A stops at the first provisional)
            tx.request_bytes = None
        if state is State.COMPLETED or state is State.ACCEPTED:
            # past the final response nothing is retransmitted or cancelled any more: a client
            # transaction keeps only the ACK bytes (server ones never keep the request)
            tx.request = tx.pending_cancel = None
        if tx.main_at is not None and tx.main_at <= now:
            name = tx.main_name  # zero-length timers (reliable transports) fire at once
            tx.fired(name)
            self._step(tx, TIMER_INPUT[name], now)
        else:
            self._arm(tx, old)
        return actions

    def _arm(self, tx: Transaction, old: tuple[Any, ...]) -> None:
        """Queue the timers ``step`` (re)started; cancelled ones stay in the heap until popped or
        swept (lazy deletion), and the sweep keeps the heap within 3 entries per transaction."""
        heap = self._heap
        if tx.retx_at is not None and (tx.retx_at != old[1] or tx.retx_name != old[0]):
            self._seq += 1
            heapq.heappush(heap, (tx.retx_at, self._seq, tx.key, tx.retx_name))
        if tx.main_at is not None and (tx.main_at != old[3] or tx.main_name != old[2]):
            self._seq += 1
            heapq.heappush(heap, (tx.main_at, self._seq, tx.key, tx.main_name))
        txs = self._txs
        if len(heap) > 3 * len(txs) + 64:  # at most 2 live timers per transaction: amortised O(1)
            self._heap = [
                e for e in heap if (t := txs.get(e[2])) is not None and t.deadline(e[3]) == e[0]
            ]
            heapq.heapify(self._heap)


__all__ = [
    "Address", "CancelReceived", "Event", "LayerConfig", "MessageRejected", "Outgoing",
    "RequestReceived", "ResponseReceived", "TransactionLayer", "TransactionTerminated",
    "TransactionTimedOut", "TxKey", "make_ack", "make_cancel",
]
