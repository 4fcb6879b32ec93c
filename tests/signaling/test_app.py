"""The app factory: page and static files, /healthz with and without Redis, the other setups wired in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signaling.app import BUNDLED_WEB, create_app
from tests.signaling.ws_harness import signaling_settings
from tests.support.redis_server import RedisServer


async def test_healthz_follows_redis(aiohttp_client: Any, private_redis: RedisServer) -> None:
    client = await aiohttp_client(create_app(signaling_settings(private_redis.url)))
    response = await client.get("/healthz")
    assert response.status == 200 and (await response.json())["ok"] is True
    private_redis.stop()
    response = await client.get("/healthz")
    body = await response.json()
    assert response.status == 503 and body["ok"] is False and "unavailable" in body["redis"]
    private_redis.start()
    response = await client.get("/healthz")
    assert response.status == 200


async def test_serves_the_bundled_page_and_its_modules(
    aiohttp_client: Any, redis_server: RedisServer
) -> None:
    client = await aiohttp_client(create_app(signaling_settings(redis_server.url)))
    page = await client.get("/")
    assert page.status == 200 and "<html" in (await page.text()).lower()
    script = next((BUNDLED_WEB / "js").glob("*.js"))
    module = await client.get(f"/js/{script.name}")
    assert module.status == 200 and await module.read() == script.read_bytes()
    missing = await client.get("/js/../../pyproject.toml")
    assert missing.status in (403, 404)


async def test_a_custom_web_dir_and_routes_of_the_other_parts(
    aiohttp_client: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<html>custom</html>")
    client = await aiohttp_client(create_app(signaling_settings(redis_server.url, web_dir=tmp_path)))
    assert "custom" in await (await client.get("/")).text()
    assert (await client.get("/api/v1/openapi.json")).status == 200  # setup_rest is wired in
    assert (await client.get("/metrics")).status == 200  # setup_monitor is wired in
    assert (await client.get("/no-such-file")).status == 404
