"""SIP Trace: capture the running sipd's messages for a few seconds (filtered by user, IP, method
or Call-ID, in the daemon), show each call as a ladder diagram, and download them as pcap.

A capture is bounded in time and in messages; the last one is kept in the admin's session (and
only there) so that its pcap can be downloaded.
"""

from __future__ import annotations

import io
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import UsageError
from ...lib import trace
from ..panel import Panel, asked, view
from ..ladder import layout
from ..session import Session

MAX_SECONDS = 30
MAX_MESSAGES = 500
FILTERS = ("user", "ip", "method", "call_id")


def _capture(config: Any, filt: dict[str, str], seconds: float) -> list[trace.TraceEvent]:
    from sipd.livetrace import trace_socket_path

    sock = trace.connect(trace_socket_path(config.mgmt.socket), filt)
    try:
        return list(trace.events(sock, count=MAX_MESSAGES, duration=seconds))
    finally:
        sock.close()


def _calls(events: list[trace.TraceEvent]) -> list[dict[str, Any]]:
    """The messages grouped by Call-ID, each group in time order with its ladder diagram."""
    calls: dict[str, dict[str, Any]] = {}
    for ev in events:
        call_id = ev.header("Call-ID", "i") or "(no Call-ID)"
        call = calls.setdefault(call_id, {"call_id": call_id, "messages": []})
        peer = f"{ev.peer[0]}:{ev.peer[1]}"
        call["messages"].append({
            "time": time.strftime("%H:%M:%S", time.localtime(ev.time)) + f".{int(ev.time % 1 * 1000):03d}",
            "from": peer if ev.direction == "in" else "sipd", "to": "sipd" if ev.direction == "in" else peer,
            "proto": ev.proto.upper(), "first_line": ev.first_line, "cseq": ev.header("CSeq"),
            "text": ev.data.decode("latin-1"),
        })
    for call in calls.values():
        call["ladder"] = layout(call["messages"])
    return list(calls.values())


@view()
async def index(panel: Panel, request: Request, session: Session) -> Response:
    q = request.query_params
    filt = {k: q.get(k, "").strip() for k in FILTERS}
    seconds_text = q.get("seconds", "5").strip() or "5"
    calls, problem, captured = [], "", None
    if q.get("run"):
        try:
            seconds = float(seconds_text)
        except ValueError:
            raise UsageError(f"the capture's length must be a number of seconds, not {seconds_text!r}") from None
        if not 0 < seconds <= MAX_SECONDS:
            raise UsageError(f"capture for 1 to {MAX_SECONDS} seconds", hint="e.g. 5")
        found, problem = await asked(panel.off_loop(_capture, panel.config, filt, seconds))
        if found is not None:
            session.trace = found  # for the pcap download
            captured = len(found)
            calls = _calls(found)
    return panel.render(request, "trace.html", title="SIP Trace", filt=filt, seconds=seconds_text, calls=calls,
                        problem=problem, captured=captured, limit=MAX_MESSAGES)


@view()
async def pcap(panel: Panel, request: Request, session: Session) -> Response:
    events = session.trace
    if not events:
        raise UsageError("there is no capture to download", hint="capture first on the SIP Trace page")
    buf = io.BytesIO()
    writer = trace.PcapWriter(buf)
    for ev in events:
        writer.write(ev)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Response(buf.getvalue(), media_type="application/vnd.tcpdump.pcap",
                    headers={"content-disposition": f'attachment; filename="sipd-trace-{stamp}.pcap"'})


routes = [Route("/trace", index), Route("/trace/capture.pcap", pcap)]
