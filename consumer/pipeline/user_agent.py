"""Relay's user-agent normalization, computed once per distinct user agent (CONTRACT §3).

With `normalize_user_agent` on, Relay reads the request headers (names compared
case-insensitively, the last of each wins): `User-Agent` and the client hints `Sec-CH-UA`,
`Sec-CH-UA-Model`, `Sec-CH-UA-Platform`, `Sec-CH-UA-Platform-Version`. From them it derives a
browser, a device and an OS context, and adds each to the event's contexts unless the event
already has one there: a `browser` (`device`) context whose type is browser (device) blocks the
first two (anything else at that key, even null, is replaced); any value under the OS key blocks
the third. The OS key is `os` for JavaScript events and `client_os` otherwise. Contexts are a
sorted map in Relay, so a new key takes its sorted place.

Parsing is most of the cost of a normalization, and real traffic repeats user agents, so the
worker normalizes with it off and fills the contexts from a bounded cache keyed by those five
header values. A cache miss asks Relay itself, with user-agent normalization on, for the
contexts of a minimal event carrying only those headers: the contexts are Relay's own output,
so the stored event is the one Relay's own normalization would have produced (the tests check
this on every sample event and on sentry-sdk events). Events this shortcut cannot handle (no
contexts map to merge into, see `mergeable`) are sent through the full normalization with it on
instead; applying the cache to such an event afterwards changes nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from consumer import metrics

# Header (lower case) -> position in the cache key; and the names used to ask Relay.
_HEADER_SLOTS = {
    "user-agent": 0,
    "sec-ch-ua": 1,
    "sec-ch-ua-model": 2,
    "sec-ch-ua-platform": 3,
    "sec-ch-ua-platform-version": 4,
}
_HEADER_NAMES = (
    "User-Agent",
    "SEC-CH-UA",
    "SEC-CH-UA-Model",
    "SEC-CH-UA-Platform",
    "SEC-CH-UA-Platform-Version",
)
_NO_INFO = (None, None, None, None, None)
# Header names as events spell them -> their slot (None: a header Relay does not read), so a name
# is lower-cased once, not once per event. Bounded: cleared when full. Shared by the threads that
# call `user_agent_info`: each dict operation is atomic, and a race only computes a slot twice.
_SLOT_BY_NAME: dict[str, int | None] = {}
_MAX_HEADER_NAMES = 4096
_UNSEEN: Any = object()

UserAgentInfo = tuple[str | None, str | None, str | None, str | None, str | None]
# (browser, device, os) contexts as Relay produces them; None where it produces none.
DerivedContexts = tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]

# How often the hit and miss counts go to Prometheus (per lookup, each would take a metric's lock).
_FLUSH_EVERY = 256


def _header_slot(name: str) -> int | None:
    slot = _HEADER_SLOTS.get(name.lower())
    if len(_SLOT_BY_NAME) >= _MAX_HEADER_NAMES:
        _SLOT_BY_NAME.clear()
    _SLOT_BY_NAME[name] = slot
    return slot


def user_agent_info(event: dict[str, Any]) -> UserAgentInfo | None:
    """The five header values Relay reads, or None when the event has no headers to read."""
    request = event.get("request")
    if not isinstance(request, dict):
        return None
    headers = request.get("headers")
    if not isinstance(headers, list):
        return None
    info: list[str | None] | None = None
    for pair in headers:
        if not isinstance(pair, list) or len(pair) != 2:
            continue
        name = pair[0]
        if not isinstance(name, str):
            continue
        slot = _SLOT_BY_NAME.get(name, _UNSEEN)
        if slot is _UNSEEN:
            slot = _header_slot(name)
        if slot is None:
            continue
        if info is None:
            info = [None, None, None, None, None]
        value = pair[1]
        info[slot] = value if isinstance(value, str) else None
    if info is None:
        return _NO_INFO
    return (info[0], info[1], info[2], info[3], info[4])


def mergeable(event: dict[str, Any]) -> bool:
    """Whether `UserAgentContexts.apply` can complete this normalized event: it has no request
    headers, or a contexts map to add to."""
    return isinstance(event.get("contexts"), dict) or user_agent_info(event) is None


def probe_event(info: UserAgentInfo) -> dict[str, Any]:
    """The minimal event whose normalization yields the contexts of `info`."""
    return {
        "event_id": "0" * 32,
        "platform": "other",
        "request": {
            "headers": [
                [name, value]
                for name, value in zip(_HEADER_NAMES, info, strict=True)
                if value is not None
            ]
        },
    }


class UserAgentContexts:
    """A bounded LRU of derived contexts per user agent. Not thread-safe: one per thread.

    `normalize_probe` runs Relay with user-agent normalization on over a probe event and returns
    the normalized event.
    """

    def __init__(
        self, normalize_probe: Callable[[dict[str, Any]], dict[str, Any]], maxsize: int = 4096
    ) -> None:
        self.normalize_probe = normalize_probe
        self.maxsize = maxsize
        self._cache: OrderedDict[UserAgentInfo, DerivedContexts] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self._unflushed = 0

    def derived(self, info: UserAgentInfo) -> DerivedContexts:
        cache = self._cache
        found = cache.get(info)
        if found is not None:
            cache.move_to_end(info)
            self.hits += 1
        else:
            self.misses += 1
            contexts = self.normalize_probe(probe_event(info)).get("contexts") or {}
            found = (contexts.get("browser"), contexts.get("device"), contexts.get("client_os"))
            cache[info] = found
            if len(cache) > self.maxsize:
                cache.popitem(last=False)
        self._unflushed += 1
        if self._unflushed >= _FLUSH_EVERY:
            self.flush_metrics()
        return found

    def flush_metrics(self) -> None:
        metrics.count_cache("user_agent", "hit", self.hits)
        metrics.count_cache("user_agent", "miss", self.misses)
        self.hits = self.misses = self._unflushed = 0

    def apply(self, event: dict[str, Any]) -> bool:
        """Add the contexts Relay's user-agent normalization would add to a normalized event.

        Returns False, changing nothing, when the event has headers but no contexts map to merge
        into: the caller must then normalize it with Relay's own user-agent parsing.
        """
        info = user_agent_info(event)
        if info is None:
            return True
        contexts = event.get("contexts")
        if not isinstance(contexts, dict):
            return False
        if info == _NO_INFO:
            return True
        browser, device, os = self.derived(info)
        added = False
        for key, derived in (("browser", browser), ("device", device)):
            if derived is None:
                continue
            present = contexts.get(key)
            if isinstance(present, dict) and present.get("type") == key:
                continue
            added = added or key not in contexts
            contexts[key] = dict(derived)  # flat: strings only
        if os is not None:
            key = "os" if event.get("platform") == "javascript" else "client_os"
            if key not in contexts:
                contexts[key] = dict(os)
                added = True
        if added:
            event["contexts"] = dict(sorted(contexts.items()))
        return True
