"""The action server: rasa-sdk's app serving the `actions` package, behind a token.

Rasa sends `Authorization: Bearer <PARLEY_ACTION_SERVER_TOKEN>` (see endpoints.yml);
a call to /webhook without it is refused, so nothing else on the network can run
actions on someone's behalf. `/health` stays open for the supervisor.
"""

from __future__ import annotations

import hmac
import logging

from rasa_sdk.endpoint import create_app
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.settings import BotSettings, settings

log = logging.getLogger("parley.action_server")


def build(config: BotSettings) -> Sanic:
    app: Sanic = create_app("actions", cors_origins=[])
    expected = config.action_server_token.get_secret_value() if config.action_server_token else None

    async def require_token(request: Request) -> HTTPResponse | None:
        if request.path == "/health":
            return None
        if expected is None:
            return response.json({"error": "the action server has no token configured"}, 503)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("action_server.unauthorized path=%s", request.path)
            return response.json({"error": "unauthorized"}, 401)
        return None

    async def close_backend_client(_app: Sanic, _loop: object) -> None:
        from bot.backend_client import shared_client

        await shared_client().close()

    app.register_middleware(require_token, "request")
    app.register_listener(close_backend_client, "after_server_stop")
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    config = settings()
    if config.action_server_token is None:
        raise SystemExit("PARLEY_ACTION_SERVER_TOKEN must be set: the action server needs a token")
    build(config).run(
        host=config.host,
        port=config.action_server_port,
        workers=1,
        access_log=False,
        motd=False,
    )


if __name__ == "__main__":
    main()
