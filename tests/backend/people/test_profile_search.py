"""Finding people as a person at the console types them (GET /api/v1/profiles?query=):
by the start of any name word, the company or the e-mail, by an e-mail address, and by a
phone number written the way people write them; LIKE's own characters taken literally;
pages; merged-away profiles left out."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp.test_utils import TestClient

from backend.api.tokens import Role
from tests.backend.conftest import Api, IssueToken


async def people(service: Api) -> dict[str, str]:
    ada = await service.identify(
        "sms", "+14155552671", first_name="Ada", last_name="Lovelace",
        email="ada@analytical.example", company="Analytical Engines",
    )  # fmt: skip
    adam = await service.identify("web", "s-adam", first_name="Adam", last_name="Smith")
    grace = await service.identify("web", "s-grace", first_name="Grace", last_name="Hopper",
                                   company="Navy")  # fmt: skip
    only_mail = await service.identify("email", "Mail.Only@Example.com")
    odd = await service.identify("web", "s-odd", last_name="100%_sure")
    return {"ada": ada["id"], "adam": adam["id"], "grace": grace["id"],
            "mail": only_mail["id"], "odd": odd["id"]}  # fmt: skip


async def found(api: Api, query: str, **params: str) -> set[str]:
    extra = "".join(f"&{k}={v}" for k, v in params.items())
    page = await api.get(f"/api/v1/profiles?query={quote(query)}{extra}")
    return {p["id"] for p in page["items"]}


async def test_people_are_found_by_name_email_and_phone(
    service: Api, client: TestClient, issue_token: IssueToken
) -> None:
    who = await people(service)
    analyst = Api(client, await issue_token(Role.ANALYST))
    assert await found(analyst, "ada") == {who["ada"], who["adam"]}
    assert await found(analyst, "ADA love") == {who["ada"]}
    assert await found(analyst, "lovelace") == {who["ada"]}
    assert await found(analyst, "navy") == {who["grace"]}
    assert await found(analyst, "analytical") == {who["ada"]}  # company, and e-mail
    assert await found(analyst, "ada@analytical") == {who["ada"]}
    assert await found(analyst, "mail.only@") == {who["mail"]}  # an e-mail identity
    for written in ("(415) 555-2671", "+1 415 555 2671", "415.555.2671", "+14155552671"):
        assert await found(analyst, written) == {who["ada"]}, written
    assert await found(analyst, "hopper grace") == {who["grace"]}
    assert await found(analyst, "nobody") == set()
    # LIKE's wildcards are plain characters in a search.
    assert await found(analyst, "100%_") == {who["odd"]}
    assert await found(analyst, "1_0") == set()
    assert await found(analyst, "%") == set()


async def test_results_come_in_pages_and_merged_profiles_are_left_out(service: Api) -> None:
    who = await people(service)
    first = await service.get("/api/v1/profiles?query=ada&limit=1")
    assert len(first["items"]) == 1 and first["next"] == first["items"][0]["id"]
    second = await service.get(f"/api/v1/profiles?query=ada&limit=1&after={first['next']}")
    assert {first["items"][0]["id"], second["items"][0]["id"]} == {who["ada"], who["adam"]}
    third = await service.get(f"/api/v1/profiles?query=ada&limit=1&after={second['next']}")
    assert third["items"] == [] and third["next"] is None

    merged = await service.post(f"/api/v1/profiles/{who['ada']}/merge", {"other": who["adam"]})
    assert await found(service, "ada") == {merged["profile"]["id"]}


async def test_a_search_without_words_is_a_clear_400(service: Api) -> None:
    for query in ("", "%20%20", "x" * 201):
        problem = await service.get(f"/api/v1/profiles?query={query}", expect=400)
        assert problem["type"] == "urn:parley:problem:invalid-query"
    problem = await service.get("/api/v1/profiles?query=ada&after=nope", expect=400)
    assert "'after' must be an id (a UUID)" in problem["detail"]
