"""The projection tables the read API reads: the projection store's own definitions
(table definitions only, no projection logic), so the two can never drift apart.

No schema in the definitions: ``ReadStore`` maps them into the projection schema with
``schema_translate_map``, as the projection store does.
"""

from projections.tables import checkpoints, customer_aliases, customers, identity_nodes, timeline

__all__ = ["checkpoints", "customer_aliases", "customers", "identity_nodes", "timeline"]
