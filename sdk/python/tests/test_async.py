"""The asyncio clients against the live server: the same calls and errors as the sync ones
(the handoff with a code URI, a swapped key, the SAS exchange, the event stream, refusals),
awaited. Each test runs
its own event loop with asyncio.run, so no pytest plugin is needed."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Dict, List

import httpx
import pytest

from keymaster_client import (
    AsyncAdminClient,
    AsyncDeviceClient,
    AsyncServiceClient,
    Forbidden,
    InvalidCode,
    InvalidRequest,
    KeymasterError,
    KeyMismatch,
    NotFound,
    RateLimited,
    SasMismatch,
    SasTimeout,
    Unauthorized,
    decode_nonce,
    key_commitment,
    sas,
    sas_commitment,
    sas_nonce,
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


async def _reveal_when_asked(device: AsyncDeviceClient, deposit: Dict[str, Any], rid: str, nd: bytes) -> None:
    """The device's side of a SAS exchange: reveals ``nd`` as soon as the service has asked."""
    for _ in range(100):
        try:
            await device.reveal_sas(deposit["id"], deposit["holder_token"], rid, nd)
            return
        except KeymasterError as err:
            if err.code != "sas_not_requested":
                raise
        await asyncio.sleep(0.05)
    raise AssertionError("the service never asked for the SAS")


def test_async_sas_reveal_and_verify(world: World) -> None:
    async def run() -> None:
        ids = await _setup(world)
        url = world.server.url
        async with AsyncDeviceClient(url, ids["app_key"]) as device, AsyncServiceClient(
            url, ids["service_key"]
        ) as service:
            _, pem, spki = ed25519_key()
            nd = sas_nonce()
            deposit = await device.deposit(public_key=pem, sas_commitment=sas_commitment(nd))
            key = await service.retrieve(deposit["code_uri"])
            rid = key["retrieval_id"]
            # Before the service asks, the reveal is refused.
            with pytest.raises(KeymasterError) as early:
                await device.reveal_sas(deposit["id"], deposit["holder_token"], rid, nd)
            assert (early.value.status, early.value.code) == (409, "sas_not_requested")
            assert (await service.sas_nonces(rid)).get("device_nonce") is None
            # Both ends: the device reveals as soon as asked while verify_sas waits for it.
            digits, _ = await asyncio.gather(
                service.verify_sas(key, timeout=10), _reveal_when_asked(device, deposit, rid, nd)
            )
            nonces = await service.sas_nonces(rid)
            assert decode_nonce(nonces["device_nonce"]) == nd
            assert digits == sas(spki, nd, decode_nonce(nonces["service_nonce"]))

    asyncio.run(run())


class _SwapDeviceNonce(httpx.AsyncBaseTransport):
    """Swaps the device's nonce in the answer of GET …/sas, where a key master in the middle
    would (the server itself refuses a reveal that does not open the commitment)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method != "GET" or not request.url.path.endswith("/sas"):
            return response
        body = json.loads(await response.aread())
        if body.get("device_nonce"):
            body["device_nonce"] = base64.urlsafe_b64encode(sas_nonce()).decode().rstrip("=")
        return httpx.Response(response.status_code, json=body)

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_async_verify_sas_refusals(world: World) -> None:
    async def run() -> None:
        ids = await _setup(world)
        url = world.server.url
        async with AsyncDeviceClient(url, ids["app_key"]) as device, AsyncServiceClient(
            url, ids["service_key"]
        ) as service, httpx.AsyncClient(transport=_SwapDeviceNonce()) as swapping:
            _, pem, _ = ed25519_key()
            # A revealed nonce swapped on the way: SasMismatch, disputed, key.disputed.
            nd = sas_nonce()
            deposit = await device.deposit(public_key=pem, sas_commitment=sas_commitment(nd))
            middle = AsyncServiceClient(url, ids["service_key"], http=swapping)
            key = await middle.retrieve(deposit["code_uri"])
            outcome, revealed = await asyncio.gather(
                middle.verify_sas(key, timeout=10),
                _reveal_when_asked(device, deposit, key["retrieval_id"], nd),
                return_exceptions=True,
            )
            assert revealed is None, revealed
            assert isinstance(outcome, SasMismatch), outcome
            assert outcome.code == "sas_mismatch" and outcome.disputed is True
            assert "does not open its commitment" in outcome.detail
            history = (await device.status(deposit["id"], deposit["holder_token"]))["history"]
            disputed = [e["data"] for e in history if e["type"] == "key.disputed"]
            assert len(disputed) == 1, history
            assert (disputed[0]["reason"], disputed[0]["retrieval_id"]) == ("sas_mismatch", key["retrieval_id"])

            # No commitment: SasMismatch at once, disputed.
            deposit = await device.deposit(public_key=pem)
            key = await service.retrieve(deposit["code_uri"])
            with pytest.raises(SasMismatch) as mismatch:
                await service.verify_sas(key, timeout=10)
            assert mismatch.value.disputed is True
            assert "without a SAS commitment" in mismatch.value.detail

            # No reveal in time: SasTimeout, nothing disputed.
            deposit = await device.deposit(public_key=pem, sas_commitment=sas_commitment(sas_nonce()))
            key = await service.retrieve(deposit["code_uri"])
            with pytest.raises(SasTimeout) as timeout:
                await asyncio.wait_for(service.verify_sas(key, timeout=0.3), 5)
            assert (timeout.value.code, timeout.value.retrieval_id) == ("sas_timeout", key["retrieval_id"])
            history = (await device.status(deposit["id"], deposit["holder_token"]))["history"]
            assert not [e for e in history if e["type"] == "key.disputed"]

    asyncio.run(run())
