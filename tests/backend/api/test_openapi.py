"""The OpenAPI document describes every route and is generated from the same models."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from backend.api.route_table import ROUTES


async def test_openapi_document_lists_every_route_with_its_schemas(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    response = await client.get("/api/v1/openapi.json", headers=service_headers)
    assert response.status == 200
    spec = await response.json()
    assert spec["openapi"].startswith("3.")
    operations = {
        op["operationId"] for methods in spec["paths"].values() for op in methods.values()
    }
    assert operations == {route.name for route in ROUTES}
    identify = spec["paths"]["/api/v1/identify"]["post"]
    body_ref = identify["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref == "#/components/schemas/IdentifyRequest"
    schema = spec["components"]["schemas"]["IdentifyRequest"]
    assert set(schema["required"]) == {"channel", "address"}
    assert spec["paths"]["/health"]["get"]["security"] == []
