"""The panel's pages, one module per menu entry (or a pair that belong together)."""

from __future__ import annotations

from . import audit, auth, cdr, dashboard, dialplan, domains, guard, live, trace, users

ROUTES = [*auth.routes, *dashboard.routes, *domains.routes, *users.routes, *dialplan.routes, *cdr.routes,
          *live.routes, *guard.routes, *trace.routes, *audit.routes]
