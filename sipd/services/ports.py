"""The ports: what a service may ask of the daemon around it, as small typed ``Protocol``s.

A service never holds the daemon's endpoint object; it is handed, at construction, the few ports
it uses (each named by what the service needs), and the daemon passes the object that implements
them. So a service can be read, and tested, against a page of interfaces instead of the whole
daemon, and the daemon can change how it keeps sockets, timers and transactions without touching
the services. The transaction layer of the core (``sipd.sip.layer.TransactionLayer``) implements
``Transactions`` itself.

The ports, by the service that calls them:

- proxy: ``Scheduler``, ``Replier``, ``Transactions``, ``Upstream``, ``Listeners``, ``Hop``,
  ``Destinations``, ``Transmitter``;
- presence: ``Scheduler``, ``Replier`` (its To tags), ``Transactions``, ``OwnRequests``,
  ``Listeners``, ``Hop``, ``Destinations``, ``Transmitter``;
- accounting (ending a dialog): ``Scheduler``, ``Transactions``, ``Listeners``, ``Hop``,
  ``Destinations``, ``Transmitter``, ``CallControl``;
- NAT keep-alive: ``Scheduler``, ``Listeners``, ``Transmitter``;
- failure diversion: ``Destinations``, ``Scheduler`` (no-answer timer), ``Transmitter``;
- the pipeline's stages (services/stages.py): ``Listeners`` (registrar), ``Destinations``
  (location, PSTN, routing hook), ``AorCopies`` (location in a registrar worker);
- reloading: ``Scheduler``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from .pipeline import Branch, Decision
    from .resolve import Target

#: (transport, host, port, connection id or None): where a message goes or came from.
Address = tuple


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Listener(Protocol):
    """One of our listening sockets, as the services see it."""

    proto: str
    host: str
    port: int
    name: str


class Scheduler(Protocol):
    """The event loop's clock and timers, and tasks that the daemon waits for (a bounded grace)
    and cancels when it stops."""

    def time(self) -> float:
        """The loop's monotonic clock, in seconds (the ``now`` of the transaction layer)."""
        ...

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Cancellable: ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the daemon tracks (waited for, then cancelled, at stop)."""
        ...

    @property
    def stopping(self) -> bool:
        """True once the daemon was asked to stop: timers should not be armed again."""
        ...


class Transactions(Protocol):
    """Client transactions of the core's transaction layer. Each call queues output: the caller
    then calls ``Transmitter.transmit()``."""

    def send_request(self, request: Any, dest: Address, now: float) -> Any:
        """Start a client transaction; returns its key (responses and timeouts come as events)."""
        ...

    def send_stateless(self, message: Any, dest: Address, now: float) -> None: ...

    def cancel(self, tx_key: Any, now: float) -> object:
        """CANCEL the INVITE client transaction ``tx_key`` (RFC 3261 §9.1)."""
        ...


class Transmitter(Protocol):
    """The way out to the sockets."""

    def transmit(self) -> None:
        """Send what the transaction layer queued and re-arm its timer."""
        ...

    def send_datagram(self, data: bytes, dest: Address) -> None:
        """Bytes straight to a socket, outside any transaction (NAT keep-alive pings)."""
        ...


class Replier(Protocol):
    """Answers of our own to a request."""

    def reply(self, request: Any, tx_key: Any, status: int, reason: str | None, headers: Any = (), *,
              why: str = "", quiet: bool = False, source: Address | None = None, to_tag: str | None = None,
              sl_key: Any = None) -> None:
        """Answer ``request`` (through its server transaction when ``tx_key`` names one), log the
        answer unless ``quiet``, and report a final answer to the call listeners."""
        ...

    def local_response(self, request: Any, status: int, reason: str | None = None, headers: Any = (),
                       to_tag: str | None = None) -> Any:
        """A response built here (with our Server header), not sent."""
        ...

    def to_tag(self) -> str:
        """A fresh To tag of ours."""
        ...


class Upstream(Protocol):
    """Toward the caller: responses relayed through the proxy, and the call events that
    accounting, dialog tracking and presence listen to."""

    def relay_response(self, ctx: Any, response: Any, now: float) -> None: ...

    def forward_response_stateless(self, response: Any, now: float) -> None:
        """A response without a client transaction (a 2xx retransmission, RFC 3261 §16.11)."""
        ...

    def emit_request(self, request: Any, tx_key: Any, now: float) -> None: ...

    def emit_response(self, ctx: Any, response: Any, now: float) -> None: ...

    def log_final(self, ctx: Any, response: Any) -> None:
        """Count (and log at debug) a final response of a proxied transaction."""
        ...


class Listeners(Protocol):
    """Our listening sockets: which one a message to or from an address uses, and its names. A
    service runs only once the daemon listens, so there is always one to answer."""

    def listener_for(self, addr: Address) -> Listener:
        """The listener of ``addr``'s transport and address family (else of its transport, else
        the first one)."""
        ...

    def advertised_host(self, listener: Listener) -> str:
        """The host we put in our Via, Record-Route and Contact for ``listener`` (``[server]
        advertised_address`` if set), IPv6 in brackets."""
        ...

    def local_socket_name(self, source: Address) -> str:
        """``proto:host:port`` of the listener a message from ``source`` came in on."""
        ...


class Hop(Protocol):
    """The marks our hop puts on a request it sends."""

    def add_via(self, request: Any, listener: Listener, loop_hash: str) -> None: ...

    def has_own_via(self, request: Any, loop_hash: str) -> bool:
        """A Via of ours with the same loop hash: the request came back (RFC 5393 loop)."""
        ...

    def record_route_value(self, listener: Listener, *, here: bool = False) -> str:
        """Our Record-Route for ``listener``; ``here``: this node's own address, never the host
        all nodes of a cluster share."""
        ...


class Destinations(Protocol):
    """Where a request goes."""

    def dest_from_uri(self, uri: Any) -> Address | None:
        """The address of a URI with a numeric host (an open connection to it reused); None when
        DNS is needed."""
        ...

    def reuse_connection(self, dest: Address) -> Address:
        """``dest`` with the id of an open TCP/TLS connection to it, when there is one."""
        ...

    def branch_for_contact(self, contact: Any) -> Branch:
        """The branch that reaches a registered contact (its Path, connection, or NAT pinhole)."""
        ...

    def connection_alive(self, conn_id: Any) -> bool:
        """Whether the TCP/TLS connection ``conn_id`` is still open."""
        ...

    async def resolve(self, uri: Any) -> list[Target]:
        """RFC 3263 targets for ``uri`` over the transports we listen on."""
        ...


class AorCopies(Protocol):
    """The contacts of an AOR this process does not hold (a registrar worker asks main)."""

    async def fetch_aor(self, aor: str) -> Decision | None:
        """None once the copy is here (the stage runs again), or a decision to give up."""
        ...


class OwnRequests(Protocol):
    """Requests the server sends as a user agent (presence NOTIFY): the events of their client
    transactions go to a handler instead of the proxy."""

    def watch(self, tx_key: Any, handler: Callable[[Any], None]) -> None: ...

    def unwatch(self, tx_key: Any) -> None: ...


class CallControl(Protocol):
    """Calls in progress, wherever the process handling them is."""

    def cancel_invite(self, call_id: str, invite_tx: Any) -> bool:
        """CANCEL the branches of a ringing call (an operator ends it); False when no process
        has it."""
        ...


class Endpoint(Scheduler, Transmitter, Replier, Upstream, Listeners, Hop, Destinations, AorCopies,
               OwnRequests, CallControl, Protocol):
    """Everything above: what the daemon's endpoint implements, for the code that wires the
    services (the pipeline builder hands each stage the narrow port it uses)."""
