"""The panel's pages, one module per menu entry (or a pair that belong together)."""

from __future__ import annotations

from . import auth, dashboard, dialplan, domains, later, users

ROUTES = [*auth.routes, *dashboard.routes, *domains.routes, *users.routes, *dialplan.routes, *later.routes]
