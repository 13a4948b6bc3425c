"""Ladder (sequence) diagram of one call's messages, laid out for an inline SVG on the SIP Trace page.

Pure layout: participants become vertical lifelines, in the order they first appear (so the caller
is on the left, sipd next, the callees to its right), each message an arrow from its sender's line
to its receiver's, one row per message in time order. The template draws it; no script or asset.
"""

from __future__ import annotations

from dataclasses import dataclass

LANE_GAP = 230      # pixels between two lifelines
LEFT = 110          # room for the time column left of the first lifeline
TOP = 46            # room for the participants' names
ROW = 30            # pixels per message
LABEL_MAX = 34      # characters of an arrow's label before it is cut


@dataclass(frozen=True)
class Arrow:
    index: int       # the message's position in the call, for the link to its full text
    y: int
    x1: int
    x2: int
    label: str
    time: str
    kind: str        # "request", "provisional", "success" or "failure": the arrow's colour

    @property
    def mid(self) -> int:
        return (self.x1 + self.x2) // 2


@dataclass(frozen=True)
class Ladder:
    lanes: list[tuple[str, int]]  # (participant, x of its lifeline)
    arrows: list[Arrow]
    width: int
    height: int


def _label(first_line: str) -> tuple[str, str]:
    """An arrow's text and kind: a request's method, a response's status and reason."""
    parts = first_line.split(" ", 2)
    if parts[0].startswith("SIP/") and len(parts) > 1:
        code = parts[1]
        kind = "provisional" if code[:1] == "1" else "success" if code[:1] == "2" else "failure"
        text = " ".join(parts[1:])
    else:
        kind, text = "request", parts[0]
    return (text if len(text) <= LABEL_MAX else text[: LABEL_MAX - 1] + "…"), kind


def layout(messages: list[dict[str, str]]) -> Ladder:
    """``messages``: dicts with ``from``, ``to``, ``first_line`` and ``time``, in time order."""
    order: dict[str, int] = {}
    for m in messages:
        for who in (m["from"], m["to"]):
            order.setdefault(who, len(order))
    x = {who: LEFT + i * LANE_GAP for who, i in order.items()}
    arrows = []
    for i, m in enumerate(messages):
        label, kind = _label(m["first_line"])
        arrows.append(Arrow(index=i, y=TOP + 20 + i * ROW, x1=x[m["from"]], x2=x[m["to"]], label=label,
                            time=m["time"], kind=kind))
    width = LEFT + max(len(order) - 1, 1) * LANE_GAP + LANE_GAP // 2
    return Ladder(lanes=[(who, x[who]) for who in order], arrows=arrows, width=width,
                  height=TOP + 20 + len(messages) * ROW)
