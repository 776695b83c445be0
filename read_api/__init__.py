"""The read API: FastAPI over the projection tables (customer 360, search, timeline).

It reads the tables the projections write, through their definitions
(``projections.tables``) and the shared alias rule (``projections.queries``); it never
imports projection logic (reducers, the store). ``create_app`` takes an
engine and a key store; the composition root is ``crm api serve``.
"""

from read_api.app import create_app
from read_api.db import create_read_engine

__all__ = ["create_app", "create_read_engine"]
