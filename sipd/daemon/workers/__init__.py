"""Worker processes: ``[server] workers = N`` (Kamailio ``children``, OpenSIPS ``udp_workers``).

One Python process saturates one core. With N > 1 the main process starts N-1 workers (fresh
interpreters: ``python -m sipd.daemon.workers.process``, so nothing of a running event loop is
forked) that read the same UDP sockets, inherited as file descriptors: each UDP listener is a
SO_REUSEPORT group of N sockets, one per process, and a classic BPF program hands every REGISTER
to one of them at random (even load whatever the sources; Kamailio's children share one socket
instead) and everything else to main's.

Theory of operation (which process a datagram belongs to: affinity.py):
- Ownership. Every AOR has one owner process, ``crc32(user@domain) % N`` (0 is main). Only the
  owner changes an AOR, so two REGISTERs for one AOR never race, and the REGISTER that answers a
  challenge reaches the process that checks its nonce count. The owner is read from the raw To
  header (``affinity.owner_of_datagram``, no parsing); a To it cannot read belongs to main.
- A worker answers the REGISTERs for its AORs, and any REGISTER without credentials when
  ``[auth] register`` is on (that one only gets a stateless challenge). A REGISTER for another
  AOR (and anything else that reaches a worker) goes to main over a socketpair (a framed stream)
  with its source address; main handles it as if read from the socket, and passes a REGISTER for
  a worker's AOR on to that worker. The kernel gives every non-REGISTER datagram to main.
  Replies leave through the process's own socket of the group, so they come from the listen
  address.
- Calls (unless a feature keeps per-call state in main: ``affinity.calls_stay_in_main``). Every
  Call-ID has an owner too, ``crc32(Call-ID) % N``: main hands a request of an INVITE dialog to it
  (so a CANCEL, the ACK of a non-2xx and every in-dialog request meet the INVITE's transactions),
  and a response to the process whose mark (a random one per process, sent in its hello) is in its top
  Via branch. A worker sends its call events (requests forwarded, responses sent upstream, for
  INVITE, BYE, CANCEL and ACK) to main, whose accounting, dialogs and presence see every call. A worker
  routing a call to an AOR it does not own asks main for a copy once; main then sends it every
  change of that AOR. A call that needs DNS is handed back to main as received, and main keeps
  that Call-ID (pinned), like every call that arrived while its worker was down.
- TCP and TLS. Main accepts every connection (bans and limits counted over all processes there)
  and hands the sockets in turn to itself and the ready workers (SCM_RIGHTS on a socketpair of
  their own); the owner runs the TLS handshake. A connection's id names its owner
  (``sipd/transport/stream.py`` ``conn_owner``). A message framed on a connection is routed like a
  datagram, by its raw bytes before anything parses it (only the process that serves it parses
  it), as bytes with the connection in its address; whatever must leave on a connection of
  another process goes to its owner in a ``SEND`` frame (through main). Workers tell main of their
  connections (``CONNECTION``: reuse by peer, the limits per source) and answer its ``PROBE``
  (``sipctl ps``, ``tls list``).
- Location. The owner applies a REGISTER and persists it (write-through, write-back or db-only as
  configured) and sends the AOR's new contact list to main, whose table is therefore complete:
  calls, ``ul show``, NAT pings and statistics read it there. A new, moved or removed binding is
  sent before the 200; a refresh (the same bindings, a later expiry, a new CSeq or Call-ID) goes
  with the others of the second in one write, the latest of each AOR once, while every binding
  main holds lives 10 s more (``process.py`` REFRESH_DELAY: main's expiries, CSeqs and Call-IDs lag
  by up to a second, and a worker killed in that second leaves main the previous ones). A worker gets its AORs from
  main when it starts (so a restarted worker loses nothing, in memory mode too); an AOR main changes
  (``ul rm``, REGISTERs main answered while tracing or while the worker was down) is sent to its
  owner.
- Bans (manual, flood, failed authentication) are shared: a process sends each ban it adds or
  removes, main applies it and forwards it to the other workers. Flood counting is per process.
- Statistics: each worker sends its counters once a second; main adds the increments to its own,
  so ``sipctl stats`` and /metrics count every process.
- ``sipctl trace``: while someone watches, workers pass every REGISTER to main (passthrough) and
  send main a copy of everything they send; main traces what it reads before handing it over,
  so the trace shows every message and calls keep their process.
- Presence, accounting and management stay in main. A worker that dies is
  restarted (at most once per 5 s; main answers its AORs meanwhile); workers end with main
  (SIGTERM on shutdown, PR_SET_PDEATHSIG and the socketpair closing when main dies).

The modules: ``pool.py`` is main's side (start, route, sync, restart, stop), ``process.py`` the
worker process, ``link.py`` the socketpair between them, ``frames.py`` what travels on it (an enum
of kinds and the codec), ``affinity.py`` the ownership rules read from raw bytes.
"""
