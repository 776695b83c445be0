"""Identity resolution rules, as pure functions (no I/O).

Identifiers are nodes ``kind:value`` (values normalised by ``schemas``). Identifiers
seen together in one event are linked by edges. A customer is a connected component
of that graph, and the customer's id is derived from the component's smallest node in
a fixed order (account id, email, phone, device id, social handle, then by value).
Ids and components are therefore a function of the *set* of events, never of their
order: replaying, reordering or redelivering events gives the same customers.

Runaway merges are stopped by the shared-identifier guard: a node linked to more than
``threshold`` distinct identifiers of one strong kind (account id, email, phone) is
*shared* (a family phone, a shop's till email, a kiosk device). Shared nodes carry no
links: each is a customer of its own, and events seen only through it land there.

A ``customer_id`` identifier (used by derived events) names a customer directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from itertools import combinations

from schemas import Identifiers

Node = str
KIND_ORDER = ("customer_id", "account_id", "email", "phone", "device_id", "social_handle")
_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}
STRONG_KINDS = ("account_id", "email", "phone")
DEFAULT_SHARED_THRESHOLD = 3


def node(kind: str, value: str) -> Node:
    return f"{kind}:{value}"


def kind_of(n: Node) -> str:
    return n.split(":", 1)[0]


def sort_key(n: Node) -> tuple[int, str]:
    kind, _, value = n.partition(":")
    return (_RANK.get(kind, len(_RANK)), value)


def smallest(nodes: Iterable[Node]) -> Node:
    return min(nodes, key=sort_key)


def customer_id_for(anchor: Node) -> str:
    """The customer id of a component whose smallest node is ``anchor``.

    A hash, so ids carry no personal data; a ``customer_id`` node is its own id.
    """
    kind, _, value = anchor.partition(":")
    if kind == "customer_id":
        return value
    return "cus_" + hashlib.blake2b(anchor.encode(), digest_size=10).hexdigest()


def nodes_of(identifiers: Identifiers | None) -> list[Node]:
    """The event's identifier nodes in precedence order (``customer_id`` first if any)."""
    if identifiers is None:
        return []
    return [node(kind, value) for kind, value in identifiers.present()]


def edges_of(nodes: Iterable[Node]) -> list[tuple[Node, Node]]:
    """Every pair of distinct linkable nodes, in both directions."""
    linkable = sorted({n for n in nodes if kind_of(n) != "customer_id"})
    pairs = list(combinations(linkable, 2))
    return pairs + [(b, a) for a, b in pairs]


def is_shared(strong_neighbours: Mapping[str, int], threshold: int) -> bool:
    """True when a node links more than ``threshold`` identifiers of one strong kind."""
    return any(strong_neighbours.get(kind, 0) > threshold for kind in STRONG_KINDS)


def components(
    nodes: Iterable[Node], edges: Iterable[tuple[Node, Node]], shared: set[Node]
) -> list[set[Node]]:
    """Connected components of ``nodes`` over ``edges``; shared nodes stand alone."""
    neighbours: dict[Node, set[Node]] = {n: set() for n in nodes}
    for a, b in edges:
        if a in neighbours and b in neighbours and a not in shared and b not in shared:
            neighbours[a].add(b)
            neighbours[b].add(a)
    seen: set[Node] = set()
    result: list[set[Node]] = []
    for start in sorted(neighbours, key=sort_key):
        if start in seen:
            continue
        component, frontier = {start}, [start]
        while frontier:
            for nxt in neighbours[frontier.pop()]:
                if nxt not in component:
                    component.add(nxt)
                    frontier.append(nxt)
        seen |= component
        result.append(component)
    return result


def home_node(event_nodes: list[Node], shared: set[Node]) -> Node | None:
    """The node that decides which customer an event belongs to.

    The smallest linkable (non-shared) node; if every node is shared, the smallest
    shared one (that shared identifier's own customer). None if there are no nodes.
    """
    linkable = [n for n in event_nodes if n not in shared and kind_of(n) != "customer_id"]
    if linkable:
        return smallest(linkable)
    candidates = [n for n in event_nodes if kind_of(n) != "customer_id"]
    return smallest(candidates) if candidates else None


def resolve_all(event_nodes: Mapping[str, list[Node]], threshold: int) -> dict[str, str]:
    """Who each event belongs to, computed at once from the whole set of events.

    The specification the incremental store must meet: it depends only on the set of
    ``event_id -> nodes`` given (not on order), and events seen only through a
    ``customer_id`` are left out (their owner depends on merge history).
    """
    edges: set[tuple[Node, Node]] = set()
    counts: dict[Node, dict[str, int]] = {}
    for nodes in event_nodes.values():
        for a, b in edges_of(nodes):
            if (a, b) not in edges:
                edges.add((a, b))
                if kind_of(b) in STRONG_KINDS:
                    per_kind = counts.setdefault(a, {})
                    per_kind[kind_of(b)] = per_kind.get(kind_of(b), 0) + 1
    shared = {n for n, per_kind in counts.items() if is_shared(per_kind, threshold)}
    all_nodes = {n for nodes in event_nodes.values() for n in nodes if kind_of(n) != "customer_id"}
    owner = {
        n: customer_id_for(smallest(component))
        for component in components(all_nodes, edges, shared)
        for n in component
    }
    result = {}
    for event_id, nodes in event_nodes.items():
        home = home_node(nodes, shared)
        if home is not None:
            result[event_id] = owner[home]
    return result
