"""The asyncio clients against the live server: the same calls and errors as the sync ones
(the handoff with a code URI, a swapped key, the event stream, refusals), awaited. Each test runs
its own event loop with asyncio.run, so no pytest plugin is needed."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest

from keymaster_client import (
    AsyncAdminClient,
    AsyncDeviceClient,
    AsyncServiceClient,
    Forbidden,
    InvalidCode,
    InvalidRequest,
    KeyMismatch,
    NotFound,
    RateLimited,
    Unauthorized,
    key_commitment,
)

from conftest import FAILED_PER_MINUTE, World
from keys import ed25519_key, proof, random_digits_code


async def _setup(world: World) -> Dict[str, Any]:
    async with AsyncAdminClient(world.server.url, world.server.admin_token) as admin:
        tenant = await admin.create_tenant("async")
        app_key = await admin.create_app_key(tenant["id"])
        service = await admin.create_service(f"async-{random_digits_code()[:6]}")
        entries = (await admin.audit(limit=2))["entries"]
        assert len(entries) == 2
    return {"tenant": tenant, "app_key": app_key["token"], "service_key": service["token"]}


def test_async_handoff_events_and_mismatch(world: World) -> None:
    async def run() -> None:
        ids = await _setup(world)
        url = world.server.url
        async with AsyncDeviceClient(url, ids["app_key"]) as device, AsyncServiceClient(
            url, ids["service_key"]
        ) as service:
            private, pem, spki = ed25519_key()
            deposit = await device.deposit(public_key=pem, label="async", proof=proof(private, spki))
            seen: List[Dict[str, Any]] = []

            async def follow() -> None:
                async for event in device.events(deposit["id"], deposit["holder_token"]):
                    seen.append(event)

            follower = asyncio.create_task(follow())
            preview = await service.preview(deposit["code_uri"])
            assert preview["tenant"]["name"] == "async" and preview["proven"] is True
            key = await service.retrieve(deposit["code_uri"])
            assert key["public_key_pem"].strip() == pem.strip()
            await asyncio.wait_for(follower, 20)
            assert [e["type"] for e in seen] == ["key.deposited", "key.previewed", "key.retrieved"]
            assert (await device.status(deposit["id"], deposit["holder_token"]))["status"] == "retrieved"
            with pytest.raises(NotFound):
                await service.retrieve(deposit["code"])

            other = await device.deposit(generate="ed25519")
            recoded = await device.recode(other["id"], other["holder_token"])
            forged = f"keymaster:{recoded['code']}?fp={key_commitment(spki)}"
            with pytest.raises(KeyMismatch) as err:
                await service.retrieve(forged)
            assert err.value.disputed
            # The mismatched key was handed over (and so consumed) before the client refused it.
            with pytest.raises(NotFound):
                await device.revoke(other["id"], other["holder_token"])
            live = await device.deposit(generate="ed25519")
            await device.revoke(live["id"], live["holder_token"])
            assert (await device.status(live["id"], live["holder_token"]))["status"] == "revoked"

            held = await device.deposit(generate="ed25519", policy={"require_confirmation": True})
            await service.confirm((await service.retrieve(held["code"]))["retrieval_id"])

    asyncio.run(run())


def test_async_error_kinds(world: World) -> None:
    async def run() -> None:
        ids = await _setup(world)
        url = world.server.url
        async with AsyncDeviceClient(url, ids["app_key"]) as device, AsyncServiceClient(
            url, ids["service_key"]
        ) as service:
            with pytest.raises(InvalidCode):
                await service.retrieve("4729-1047-5518-2036")
            with pytest.raises(InvalidRequest) as bad:
                await device.deposit(generate="dsa")
            assert bad.value.code == "invalid_request"
            with pytest.raises(Unauthorized):
                await AsyncDeviceClient(url, "kma_wrong").deposit(generate="ed25519")
            with pytest.raises(Unauthorized):
                async for _ in device.events("key_unknown", "kmh_wrong"):
                    pass
            deposit = await device.deposit(generate="ed25519", policy={"password": "pw"})
            with pytest.raises(Forbidden) as forbidden:
                await service.retrieve(deposit["code"])
            assert forbidden.value.code == "password_required"
            for _ in range(FAILED_PER_MINUTE - 1):
                with pytest.raises(NotFound):
                    await service.preview(random_digits_code())
            with pytest.raises(RateLimited) as limited:
                await service.retrieve(deposit["code"], password="pw")
            assert limited.value.retry_after is not None and limited.value.retry_after > 0

    asyncio.run(run())
