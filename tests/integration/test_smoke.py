from tests.conftest import API_HEADERS, WEBHOOK_HEADERS, load_fixture


async def test_fixture_round_trip(client, sql):
    resp = await client.post(
        "/v1/alertmanager",
        json=load_fixture("grouped-truncated-firing.json"),
        headers=WEBHOOK_HEADERS,
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["new"] == 2
    assert sql("select count(*) from alerts") == [(2,)]
    resp = await client.get("/v1/breakers", headers=API_HEADERS)
    assert resp.status == 200
