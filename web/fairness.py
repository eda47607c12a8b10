"""Fair shares of a worker's in-flight slots: who the client is, and how many slots it may hold now.

The rule (docs/DEPLOYMENT.md, "Fair shares"): a client is active while it holds a slot or sent a
prediction within the last `recent_s` seconds. Each active client may hold at most
ceil(limit / active clients) slots. A client alone may use them all; as soon as another client shows up,
the first one's share falls to half (with two) and the slots it frees are left for the newcomer instead
of being taken again by the flood. Nothing is queued: a request over its client's share gets 503 at once.
A client is its API key when keys are set, else its address (X-Forwarded-For only from a trusted proxy).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Collection

ANONYMOUS_KEY = "-"


def client_address(remote_addr: str | None, forwarded_for: str | None, trusted_proxies: Collection[str]) -> str:
    """The peer's address, or, when the peer is a trusted proxy, the nearest untrusted X-Forwarded-For hop.

    Only hops added by trusted proxies are believed: walking X-Forwarded-For from its right end (the hop
    the trusted proxy itself saw), the first address that is not a trusted proxy is the client. A client
    can write anything to the left of that; it cannot change that hop.
    """
    peer = remote_addr or "unknown"
    if peer not in trusted_proxies or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop[:64]
    return hops[0][:64] if hops else peer


def client_identity(key_id: str | None, address: str) -> str:
    """The name shares are counted by: `key:<id>` when the request carried an API key, else `address:<ip>`."""
    if key_id and key_id != ANONYMOUS_KEY:
        return f"key:{key_id}"
    return f"address:{address}"


def parse_trusted_proxies(text: str) -> frozenset[str]:
    """Addresses of the fronts whose X-Forwarded-For is believed (commas or spaces between them)."""
    return frozenset(part for part in text.replace(",", " ").split() if part)


class FairShares:
    """Slots held per client and the clients active now; not thread-safe (its owner holds a lock)."""

    def __init__(self, limit: int, recent_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.recent_s = recent_s
        self.clock = clock
        self.in_flight = 0
        self.holding: dict[str, int] = {}
        self._last_seen: OrderedDict[str, float] = OrderedDict()  # oldest first

    def active_clients(self) -> int:
        """Clients holding a slot or seen within `recent_s` (stale sightings are dropped here)."""
        horizon = self.clock() - self.recent_s
        while self._last_seen and next(iter(self._last_seen.values())) < horizon:
            self._last_seen.popitem(last=False)
        return len(self._last_seen) + sum(1 for client in self.holding if client not in self._last_seen)

    def share(self) -> int:
        """Slots one client may hold now: the limit divided among the active clients, rounded up."""
        return math.ceil(self.limit / max(1, self.active_clients()))

    def try_take(self, client: str) -> str | None:
        """Take one slot for `client`: None when taken, else why not (for the 503's message)."""
        self._last_seen[client] = self.clock()
        self._last_seen.move_to_end(client)
        if self.in_flight >= self.limit:
            return f"{self.in_flight} studies are in progress in this worker, its limit"
        share, held = self.share(), self.holding.get(client, 0)
        if held >= share:
            return (f"this client already has {held} of the {self.limit} studies this worker runs at once, its"
                    f" share while {self.active_clients()} clients are sending")
        self.holding[client] = held + 1
        self.in_flight += 1
        return None

    def release(self, client: str) -> None:
        """Give back one slot of `client`."""
        self.in_flight -= 1
        held = self.holding.get(client, 0) - 1
        if held > 0:
            self.holding[client] = held
        else:
            self.holding.pop(client, None)
