"""CDR Viewer and Missed calls: search, keyset pages, one call's details, CSV export streamed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ...errors import UsageError
from ...lib import cdrview
from ..panel import Panel, view
from ..session import Session


async def _search_page(panel: Panel, request: Request, table: cdrview.Table, template: str,
                       title: str) -> Response:
    search = cdrview.Search.from_mapping(request.query_params)
    before = cdrview.parse_cursor(request.query_params.get("before", ""))
    result = await panel.db(cdrview.page, table, search, before=before)
    query = urlencode({k: v for k, v in search.as_dict().items() if v})
    return panel.render(request, template, title=title, search=search, rows=result["rows"],
                        next=result["next"], query=query, statuses=cdrview.STATUSES,
                        first_page=before is None)


@view()
async def cdrs(panel: Panel, request: Request, session: Session) -> Response:
    return await _search_page(panel, request, cdrview.CDRS, "cdr.html", "CDR Viewer")


@view()
async def missed(panel: Panel, request: Request, session: Session) -> Response:
    return await _search_page(panel, request, cdrview.MISSED, "missed.html", "Missed calls")


@view()
async def details(panel: Panel, request: Request, session: Session) -> Response:
    try:
        cdr_id = int(request.path_params["id"])
    except ValueError:
        raise UsageError("not a CDR id") from None
    info = await panel.db(cdrview.call_details, cdr_id)
    return panel.render(request, "cdr_details.html", title=f"Call {info['cdr']['callid']}", **info)


def _export(panel: Panel, request: Request, table: cdrview.Table, name: str) -> Response:
    from ...lib import db as dblib

    search = cdrview.Search.from_mapping(request.query_params)
    conf = panel.config.database
    chunks = cdrview.export_csv(lambda: dblib.session(conf.url, conf.connect_timeout), table, search)
    header = next(chunks)  # checks the search: a bad date is a message on the page, not a broken file
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def body() -> Iterator[str]:  # batch by batch; sync, so Starlette runs it off the event loop
        yield header
        yield from chunks

    return StreamingResponse(body(), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": f'attachment; filename="{name}-{stamp}.csv"'})


@view()
async def cdrs_csv(panel: Panel, request: Request, session: Session) -> Response:
    return _export(panel, request, cdrview.CDRS, "cdrs")


@view()
async def missed_csv(panel: Panel, request: Request, session: Session) -> Response:
    return _export(panel, request, cdrview.MISSED, "missed-calls")


routes = [Route("/cdr", cdrs), Route("/cdr/export.csv", cdrs_csv), Route("/cdr/{id:int}", details),
          Route("/missed", missed), Route("/missed/export.csv", missed_csv)]
