"""PIDF documents (RFC 3863, RFC 4479 data model, RFC 4480 RPID) and watcher-info (RFC 3858).

Pure functions over bytes: validate a published body, merge several publications of one
presentity into the one document its watchers get, overlay "on the phone" for users in a call,
and build ``application/watcherinfo+xml`` documents. No I/O, no clock.

Safety: bodies come from the network. A document type declaration (and with it every entity
definition, the "billion laughs" family) is refused before parsing; size is bounded by the caller
(``[presence] max_body``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
CAPS_NS = "urn:ietf:params:xml:ns:pidf:caps"
CIPID_NS = "urn:ietf:params:xml:ns:pidf:cipid"
WINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"

PIDF_TYPE = "application/pidf+xml"
WINFO_TYPE = "application/watcherinfo+xml"

# Prefixes used when a merged document is serialized. Clients match them textually (baresip looks
# for "<rpid:on-the-phone/>"), so keep the customary ones.
_PRIVATE = "sipdpidf0"
for _prefix, _uri in ((_PRIVATE, PIDF_NS), ("dm", DM_NS), ("rpid", RPID_NS), ("caps", CAPS_NS), ("cipid", CIPID_NS)):
    ET.register_namespace(_prefix, _uri)

_TUPLE = f"{{{PIDF_NS}}}tuple"
_STATUS = f"{{{PIDF_NS}}}status"
_BASIC = f"{{{PIDF_NS}}}basic"
_NOTE = f"{{{PIDF_NS}}}note"
_PERSON = f"{{{DM_NS}}}person"
_ACTIVITIES = f"{{{RPID_NS}}}activities"
_XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'

CALL_PERSON_ID = "sipd-call"  # id of the person element added for users in a call


class PidfError(ValueError):
    """The body is not an acceptable PIDF document (answer 400 with this message)."""


@dataclass(frozen=True, slots=True)
class Summary:
    """What a document says, for listings: basic status of the first tuple, notes, activities."""

    basic: str | None
    notes: tuple[str, ...]
    activities: tuple[str, ...]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse(body: bytes) -> ET.Element:
    """Validate a PIDF body and return its root ``<presence>`` element.

    Raises:
        PidfError: not XML, a DOCTYPE, wrong root element or namespace, no ``entity``, a tuple
            without ``id`` or ``status``, or a ``basic`` other than open/closed.
    """
    if not body.strip():
        raise PidfError("empty PIDF body")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise PidfError("DOCTYPE/ENTITY declarations are not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise PidfError(f"malformed XML: {exc}") from None
    if root.tag != f"{{{PIDF_NS}}}presence":
        raise PidfError(f"root element is {root.tag!r}, not presence in {PIDF_NS}")
    entity = root.get("entity", "")
    if ":" not in entity:
        raise PidfError("presence element without an entity URI")
    ids: set[str] = set()
    for t in root.iter(_TUPLE):
        tid = t.get("id")
        if not tid:
            raise PidfError("tuple without id")
        if tid in ids:
            raise PidfError(f"duplicate tuple id {tid!r}")
        ids.add(tid)
        status = t.find(_STATUS)
        if status is None:
            raise PidfError(f"tuple {tid!r} without status")
        basic = status.find(_BASIC)
        if basic is not None and (basic.text or "").strip() not in ("open", "closed"):
            raise PidfError(f"tuple {tid!r}: basic must be open or closed")
    return root


def summary(body: bytes | None) -> Summary:
    """Basic status, notes and RPID activities of a (valid) document; empty for None/invalid."""
    if not body:
        return Summary(None, (), ())
    try:
        root = parse(body)
    except PidfError:
        return Summary(None, (), ())
    basic = None
    for t in root.iter(_TUPLE):
        b = t.find(f"{_STATUS}/{_BASIC}")
        if b is not None and b.text:
            basic = b.text.strip()
            break
    notes = tuple((n.text or "").strip() for n in root.iter() if _local(n.tag) == "note" and (n.text or "").strip())
    acts: list[str] = []
    for a in root.iter(_ACTIVITIES):
        acts.extend(_local(c.tag) for c in a)
    return Summary(basic, notes, tuple(acts))


def _serialize(root: ET.Element) -> bytes:
    # PIDF elements must come out unprefixed (clients match "<basic>"), but ElementTree's
    # default_namespace refuses unqualified attributes (entity, id): serialize with a private prefix
    # and strip it -- element names only; PIDF has no namespaced attributes.
    text = ET.tostring(root, encoding="unicode")
    text = text.replace(f"<{_PRIVATE}:", "<").replace(f"</{_PRIVATE}:", "</").replace(f"xmlns:{_PRIVATE}=", "xmlns=")
    return _XML_DECL + text.encode()


def merge(bodies: list[bytes], entity: str) -> bytes:
    """One document from several publications (newest first in ``bodies``).

    A single publication is passed through byte for byte. Otherwise every tuple, person, device
    and note goes into one ``<presence entity=...>``; colliding ids get a ``-N`` suffix so the
    result stays valid (RFC 3863 §4.1.2: tuple ids are unique within a document).
    """
    if len(bodies) == 1:
        return bodies[0]
    out = ET.Element(f"{{{PIDF_NS}}}presence", {"entity": entity})
    seen: set[str] = set()
    for n, body in enumerate(bodies):
        for child in parse(body):
            child = _copy(child)
            cid = child.get("id")
            if cid is not None:
                if cid in seen:
                    cid = f"{cid}-{n}"
                    child.set("id", cid)
                seen.add(cid)
            out.append(child)
    return _serialize(out)


def _copy(elem: ET.Element) -> ET.Element:
    new = ET.Element(elem.tag, dict(elem.attrib))
    new.text, new.tail = elem.text, elem.tail
    for c in elem:
        new.append(_copy(c))
    return new


def with_call(body: bytes | None, entity: str) -> bytes:
    """The document plus "on the phone" (RFC 4480 activity) for a user in a call.

    With no publication at all, the user is shown open (reachable, registered) and busy.
    """
    if body:
        root = _copy(parse(body))
    else:
        root = ET.Element(f"{{{PIDF_NS}}}presence", {"entity": entity})
        t = ET.SubElement(root, _TUPLE, {"id": "sipd-reg"})
        st = ET.SubElement(t, _STATUS)
        ET.SubElement(st, _BASIC).text = "open"
    person = ET.SubElement(root, _PERSON, {"id": CALL_PERSON_ID})
    acts = ET.SubElement(person, _ACTIVITIES)
    ET.SubElement(acts, f"{{{RPID_NS}}}on-the-phone")
    ET.SubElement(person, f"{{{DM_NS}}}note").text = "On the phone"
    return _serialize(root)


@dataclass(frozen=True, slots=True)
class WatcherEntry:
    id: str
    uri: str
    status: str  # active | pending | waiting | terminated
    event: str  # subscribe | approved | timeout | ... (RFC 3857 §3.2.4)
    duration: int = 0


def winfo(resource: str, version: int, watchers: list[WatcherEntry], package: str = "presence") -> bytes:
    """A full-state watcher-info document (RFC 3858) for ``resource``."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<watcherinfo xmlns="{WINFO_NS}" version="{version}" state="full">',
        f"  <watcher-list resource={quoteattr(resource)} package={quoteattr(package)}>",
    ]
    for w in watchers:
        lines.append(
            f"    <watcher id={quoteattr(w.id)} status={quoteattr(w.status)} event={quoteattr(w.event)}"
            f' duration-subscribed="{max(0, int(w.duration))}">{escape(w.uri)}</watcher>'
        )
    lines += ["  </watcher-list>", "</watcherinfo>", ""]
    return "\n".join(lines).encode()
