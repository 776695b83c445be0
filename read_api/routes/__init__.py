"""One router per resource, gathered here."""

from fastapi import APIRouter

from read_api.routes import assessments, campaigns, customers, ops, privacy, segments

api_router = APIRouter()
api_router.include_router(customers.router)
api_router.include_router(privacy.router)
api_router.include_router(segments.router)
api_router.include_router(campaigns.router)
api_router.include_router(assessments.router)
api_router.include_router(ops.router)

__all__ = ["api_router"]
