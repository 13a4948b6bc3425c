"""sipctl online: the AORs with at least one live contact (opensipsctl online)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..context import get_env
from ..output import Output


def online(
    ctx: typer.Context,
    *,
    json: Annotated[bool, typer.Option("--json", help="A JSON list of AORs.")] = False,
) -> None:
    """List the users online: AORs with at least one unexpired contact, one per line.

    Example: sipctl online
    """
    from ..lib import mgmt

    config = get_env(ctx).config
    aors = sorted(mgmt.online_aors(config))
    out = Output(json_mode=json)
    if json:
        out.json(aors)
        return
    for a in aors:
        out.out.print(a, highlight=False, markup=False)
