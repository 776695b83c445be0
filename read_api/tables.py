"""The projection tables the read API reads: the projection store's own definitions
(table definitions only, no projection logic), so the two can never drift apart.

No schema in the definitions: ``ReadStore`` maps them into the projection schema with
``schema_translate_map``, as the projection store does.
"""

from projections.tables import (
    assessment_runs,
    campaigns,
    checkpoints,
    customer_aliases,
    customer_campaigns,
    customer_segments,
    customers,
    identity_nodes,
    segment_definitions,
    segment_history,
    timeline,
)

__all__ = [
    "assessment_runs",
    "campaigns",
    "checkpoints",
    "customer_aliases",
    "customer_campaigns",
    "customer_segments",
    "customers",
    "identity_nodes",
    "segment_definitions",
    "segment_history",
    "timeline",
]
