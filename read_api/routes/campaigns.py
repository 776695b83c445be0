"""``/v1/campaigns``: launched campaigns and their results (the `analyst` scope)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status

from projections import campaign_results as results
from read_api.deps import AnalystPrincipal, ReadPrincipal, StoreDep, WantedPositions
from read_api.freshness import freshness
from read_api.models import (
    CampaignResultsPublic,
    CampaignsPublic,
    CampaignSummaryPublic,
    FunnelPublic,
    MeanUpliftPublic,
    RfmSegmentResultsPublic,
    UpliftPublic,
    respond,
)
from read_api.routes.customers import AUTH_RESPONSES, _error

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])

CampaignId = Annotated[str, Path(min_length=1, max_length=128, description="a campaign id")]


@router.get("", response_model=CampaignsPublic, responses=AUTH_RESPONSES)
def list_campaigns(_principal: ReadPrincipal, store: StoreDep, wanted: WantedPositions) -> Response:
    """Every launched campaign, newest first."""
    rows, positions = store.campaigns()
    return respond(
        CampaignsPublic(
            data=[CampaignSummaryPublic(**r) for r in rows],
            freshness=freshness(store.topic, positions, wanted),
        )
    )


@router.get(
    "/{campaign_id}/results",
    response_model=CampaignResultsPublic,
    responses={
        **AUTH_RESPONSES,
        403: _error("The key lacks the `analyst` scope."),
        404: _error("No campaign was launched with this id."),
    },
)
def get_campaign_results(
    _principal: AnalystPrincipal, store: StoreDep, wanted: WantedPositions, campaign_id: CampaignId
) -> Response:
    """Funnel per group, rates, revenue by currency and the uplift of treatment over
    control: conversion rate (Newcombe interval) overall and per RFM segment at
    targeting, revenue per customer in the main currency (Welch interval)."""
    campaign, rows, positions = store.campaign(campaign_id)
    if campaign is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"campaign {campaign_id} not found")
    figures = results.compute(rows)
    return respond(
        CampaignResultsPublic(
            campaign=CampaignSummaryPublic(**campaign),
            groups={g: FunnelPublic(**f.public()) for g, f in figures.groups.items()},
            conversion_uplift=UpliftPublic(**asdict(figures.conversion_uplift)),
            revenue_currency=figures.currency,
            revenue_uplift=MeanUpliftPublic(**asdict(figures.revenue_uplift)),
            by_rfm_segment=[
                RfmSegmentResultsPublic(
                    rfm_segment=rfm,
                    groups={g: FunnelPublic(**f.public()) for g, f in groups.items()},
                    conversion_uplift=UpliftPublic(**asdict(uplift)),
                )
                for rfm, (groups, uplift) in figures.by_rfm_segment.items()
            ],
            freshness=freshness(store.topic, positions, wanted),
        )
    )
