"""HTTP routes, one module per resource; each route adapts HTTP to the job service."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.http import playground
from gateway.http.routes import batches, jobs, process, service_info

# The app includes these in this order; a new router module adds itself here.
ROUTERS: list[APIRouter] = [
    process.router,
    jobs.router,
    batches.router,
    service_info.router,
    playground.router,
]
