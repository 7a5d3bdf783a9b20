async def test_health_answers_ok_with_database(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"
