"""`GET /api/v1/profiles/{id}/score`: a lead score and the rules behind it."""

from __future__ import annotations

from aiohttp import web

from backend.api.bodies import respond
from backend.api.keys import CLOCK, SCORING, SESSIONS
from backend.people.routes import live_profile
from backend.scoring import rules as scoring
from backend.scoring.schemas import ScoreOut, ScoreReason


async def get_score(request: web.Request) -> web.Response:
    rules = request.app[SCORING]
    now = request.app[CLOCK].now()
    async with request.app[SESSIONS]() as session:
        profile = await live_profile(request, session)
        reasons = await scoring.explain(session, rules, profile.id, now)
        score = scoring.current_score(profile, rules, now)
    return respond(
        ScoreOut(
            profile_id=profile.id,
            score=score,
            half_life_days=rules.half_life_days,
            reasons=[ScoreReason.model_validate(r, from_attributes=True) for r in reasons],
        )
    )
