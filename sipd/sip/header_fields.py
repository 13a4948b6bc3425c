"""The header fields of one message (RFC 3261 §7.3): an ordered, case-insensitive list that keeps
the text of every line as received.

Each line is stored as ``(key, name, value, raw)``: the canonical key (lowercased long name), the
name as written, the unfolded value and the original text of the line(s), or None for a line we
made or changed. Serialising writes ``raw`` for every untouched line, so a proxy forwards unknown
headers byte for byte; only the lines it changed (Via, Record-Route, Max-Forwards ...) are
rendered. Structured values are parsed on first access (``message.py``) and cached here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .headers import COMPACT_FORMS, LIST_HEADERS, header_key, split_commas

# Exact spellings seen on the wire -> key, to skip lower()/compact lookups on the hot path.
NAME_KEYS: dict[str, str] = {}
for _k in (
    "Via From To Call-ID CSeq Contact Max-Forwards Content-Length Content-Type Route Record-Route "
    "Expires Allow Supported Require Proxy-Require User-Agent Server Authorization "
    "Proxy-Authorization WWW-Authenticate Proxy-Authenticate Accept Date Subject Event Path "
    "Call-Id Cseq Min-Expires Allow-Events Organization Timestamp Unsupported Warning Session-Expires "
    "Min-SE P-Asserted-Identity P-Preferred-Identity Privacy Reason Refer-To Referred-By RSeq RAck "
    "Subscription-State Content-Disposition Content-Encoding Content-Language Accept-Encoding "
    "Accept-Language Alert-Info Call-Info Error-Info Authentication-Info Retry-After Service-Route "
    "Diversion Remote-Party-ID History-Info Reply-To In-Reply-To Priority MIME-Version Replaces "
    "P-Access-Network-Info P-Charging-Vector X-Serialnumber"
).split():
    NAME_KEYS[_k] = _k.lower()
    NAME_KEYS[_k.lower()] = _k.lower()
for _c, _full in COMPACT_FORMS.items():
    NAME_KEYS[_c] = _full
    NAME_KEYS[_c.upper()] = _full
del _k, _c, _full

_KEY_CACHE: dict[str, str] = {}
# One header line: (key, name as written, value, raw line(s) or None if rendered by us).
Item = tuple[str, str, str, Any]


def field_key(name: str) -> str:
    """The canonical key of a header name (the lowercased long form), cached."""
    k = NAME_KEYS.get(name) or _KEY_CACHE.get(name)
    if k is None:
        k = header_key(name)
        if len(_KEY_CACHE) < 1024:  # names from our own code only; bounded anyway
            _KEY_CACHE[name] = k
    return k


def _rest_of_list(key: str, value: str) -> list[str]:
    """The values after the first one of a list header line (nothing for other headers)."""
    if key not in LIST_HEADERS or ("," not in value):
        return []
    return split_commas(value)[1:]


class Headers:
    """Ordered, case-insensitive header list; compact names accepted; raw text kept per line.

    Each entry is an immutable ``(key, name, value, raw)``; ``raw`` is None for an entry we made
    or changed. Entries are replaced, never edited, so copies can share them.
    """

    __slots__ = ("_items", "_index", "_cache")

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        self._items: list[Item] = []
        self._index: dict[str, tuple[Item, ...]] | None = None
        self._cache: dict[str, Any] = {}
        if items:
            for name, value in items:
                self._items.append((field_key(name), name, value, None))

    @classmethod
    def _from_items(cls, items: list[Item]) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        h._index = None
        h._cache = {}
        return h

    def _idx(self) -> dict[str, tuple[Item, ...]]:
        """key -> the entries with that key, in order (tuples: no GC tracking once they settle)."""
        idx = self._index
        if idx is None:
            idx = {}
            for it in self._items:
                lst = idx.get(it[0])
                idx[it[0]] = (it,) if lst is None else lst + (it,)
            self._index = idx
        return idx

    def _changed(self, key: str) -> None:
        c = self._cache
        if c:
            c.pop(key, None)
            if key == "contact":
                c.pop("contact*", None)

    def _pos(self, it: Item) -> int:
        """Index of the entry ``it`` (by identity) in the item list."""
        for i, x in enumerate(self._items):
            if x is it:
                return i
        raise ValueError("header index out of sync")  # pragma: no cover - cannot happen

    # -- reading ----------------------------------------------------------------------------------
    def get(self, name: str) -> str | None:
        """Value of the first header line of that name (whole line, lists not split)."""
        lst = self._idx().get(field_key(name))
        return lst[0][2] if lst else None

    def get_all(self, name: str) -> list[str]:
        """All values; list headers (Via, Contact, Route, Require ...) split on their commas."""
        key = field_key(name)
        lst = self._idx().get(key)
        if not lst:
            return []
        if key not in LIST_HEADERS:
            return [it[2] for it in lst]
        out: list[str] = []
        for it in lst:
            out.extend(v for v in split_commas(it[2]) if v)
        return out

    def count(self, name: str) -> int:
        """Number of header *lines* with that name."""
        return len(self._idx().get(field_key(name), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and field_key(name) in self._idx()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for it in self._items:
            yield it[1], it[2]

    def __len__(self) -> int:
        return len(self._items)

    def raw_lines(self) -> list[str]:
        return [it[3] if it[3] is not None else f"{it[1]}: {it[2]}" for it in self._items]

    # -- editing (the item list and its index are updated in place) ------------------------------
    def set(self, name: str, value: str) -> None:
        """Replace all occurrences by one (at the position of the first, else appended)."""
        key = field_key(name)
        idx = self._idx()
        new = (key, name, value, None)
        old = idx.get(key)
        if not old:
            self._items.append(new)
        else:
            items = self._items
            items[self._pos(old[0])] = new
            if len(old) > 1:
                drop = {id(it) for it in old[1:]}
                self._items = [it for it in items if id(it) not in drop]
        idx[key] = (new,)
        self._changed(key)

    def remove(self, name: str) -> None:
        key = field_key(name)
        if self._idx().pop(key, None):
            self._items = [it for it in self._items if it[0] != key]
        self._changed(key)

    def append(self, name: str, value: str) -> None:
        key = field_key(name)
        idx = self._idx()
        new = (key, name, value, None)
        self._items.append(new)
        lst = idx.get(key)
        idx[key] = (new,) if lst is None else lst + (new,)
        self._changed(key)

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first header of that name (or at the top if there is none)."""
        key = field_key(name)
        idx = self._idx()
        new = (key, name, value, None)
        lst = idx.get(key)
        if lst:
            self._items.insert(self._pos(lst[0]), new)
            idx[key] = (new,) + lst
        else:
            self._items.insert(0, new)
            idx[key] = (new,)
        self._changed(key)

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first *value* of a list header (e.g. the top Via), keeping the others."""
        key = field_key(name)
        idx = self._idx()
        lst = idx.get(key)
        if not lst:
            self.append(name, value)
            return
        it = lst[0]
        rest = _rest_of_list(key, it[2])
        new: list[Item] = [(key, it[1], value, None)]
        if rest:
            new.append((key, it[1], ", ".join(rest), None))
        i = self._pos(it)
        self._items[i : i + 1] = new
        idx[key] = tuple(new) + lst[1:]
        self._changed(key)

    def remove_first(self, name: str) -> None:
        """Remove the first *value* of a list header (pop the top Via of a response)."""
        key = field_key(name)
        idx = self._idx()
        lst = idx.get(key)
        if not lst:
            return
        it = lst[0]
        rest = _rest_of_list(key, it[2])
        i = self._pos(it)
        if rest:
            self._items[i] = new = (key, it[1], ", ".join(rest), None)
            idx[key] = (new,) + lst[1:]
        else:
            del self._items[i]
            if len(lst) > 1:
                idx[key] = lst[1:]
            else:
                del idx[key]
        self._changed(key)

    def copy(self) -> Headers:
        return Headers._from_items(list(self._items))
