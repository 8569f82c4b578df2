"""The asyncio twins of the clients (:class:`AsyncAdminClient`, :class:`AsyncDeviceClient`,
:class:`AsyncServiceClient`) on ``httpx.AsyncClient``: the same methods, arguments, answers and
errors as ``_client``'s, awaited; ``events`` is an async iterator."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, List, Mapping, Optional

import httpx
from httpx_sse import SSEError, aconnect_sse

from ._codes import parse_code_uri
from ._errors import KeymasterError, KeyMismatch, SasMismatch, SasTimeout, from_response
from ._http import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    Body,
    _Target,
    decode,
    drop_none as _drop_none,
    reconnect_delay,
    require,
)
from ._keys import retrieval_matches, retrieved_key_bytes
from ._sas import (
    NO_COMMITMENT,
    NOT_OPENED,
    POLL_INTERVAL,
    b64url as _b64url,
    decoded_commitment,
    opened_nonce,
    sas,
    sas_nonce,
)

__all__ = ["AsyncAdminClient", "AsyncDeviceClient", "AsyncServiceClient"]


class _AsyncConn(_Target):
    """One credential at one key master over an ``httpx.AsyncClient`` (its own unless one is
    given)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        super().__init__(url, token, timeout)
        self._owned = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout, headers=USER_AGENT)

    async def call(
        self,
        method: str,
        *segments: str,
        json_body: Optional[Body] = None,
        params: Optional[Mapping[str, Any]] = None,
        token: Optional[str] = None,
    ) -> Optional[Body]:
        """Sends a request and returns the JSON body of a 2xx answer (``None`` for ``204``), or
        raises the error of any other answer."""
        try:
            response = await self._http.request(
                method,
                self.url(*segments),
                json=json_body,
                params=params,
                headers=self.headers(token),
                timeout=self._timeout,
            )
        except httpx.TransportError as err:
            raise KeymasterError(f"cannot reach the key master: {err!r}") from err
        if not response.is_success:
            raise from_response(response)
        return decode(response)

    async def call_body(self, method: str, *segments: str, **kw: Any) -> Body:
        return require(await self.call(method, *segments, **kw))

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()


class _AsyncClient:
    def __init__(self, conn: _AsyncConn) -> None:
        self._conn = conn

    async def aclose(self) -> None:
        """Closes the connection pool (unless it was passed in)."""
        await self._conn.aclose()

    async def __aenter__(self) -> "_AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncAdminClient(_AsyncClient):
    """:class:`~keymaster_client.AdminClient` for asyncio.

    >>> async with AsyncAdminClient("http://127.0.0.1:8080", "admin-token") as admin:  # doctest: +SKIP
    ...     tenant = await admin.create_tenant("acme")
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        super().__init__(_AsyncConn(url, token, timeout=timeout, http=http))

    async def create_tenant(self, name: str, webhook_url: Optional[str] = None) -> Body:
        """``POST /v1/admin/tenants`` → ``{"id", "name", "webhook_secret"}``."""
        return await self._conn.call_body(
            "POST", "v1", "admin", "tenants", json_body=_drop_none(name=name, webhook_url=webhook_url)
        )

    async def create_app_key(self, tenant_id: str) -> Body:
        """``POST /v1/admin/tenants/{id}/app-keys`` → ``{"id", "token"}`` (a ``kma_`` key)."""
        return await self._conn.call_body("POST", "v1", "admin", "tenants", tenant_id, "app-keys")

    async def delete_app_key(self, app_key_id: str) -> None:
        """``DELETE /v1/admin/app-keys/{id}``."""
        await self._conn.call("DELETE", "v1", "admin", "app-keys", app_key_id)

    async def create_service(
        self,
        name: str,
        domains: Optional[List[str]] = None,
        allowed_cidrs: Optional[List[str]] = None,
    ) -> Body:
        """``POST /v1/admin/services`` → ``{"id", "name", "token"}`` (a ``kms_`` key)."""
        body = {"name": name, "domains": list(domains or []), "allowed_cidrs": list(allowed_cidrs or [])}
        return await self._conn.call_body("POST", "v1", "admin", "services", json_body=body)

    async def delete_service(self, service_id: str) -> None:
        """``DELETE /v1/admin/services/{id}``."""
        await self._conn.call("DELETE", "v1", "admin", "services", service_id)

    async def audit(self, limit: int = 100, before: Optional[str] = None) -> Body:
        """``GET /v1/admin/audit`` → ``{"entries": [...]}``, newest first."""
        params = _drop_none(limit=limit, before=before)
        return await self._conn.call_body("GET", "v1", "admin", "audit", params=params)


class AsyncDeviceClient(_AsyncClient):
    """:class:`~keymaster_client.DeviceClient` for asyncio. A client application: deposits keys
    with its tenant's ``kma_`` app key, and follows,
    re-codes and revokes each key with the ``holder_token`` its deposit returned."""

    def __init__(
        self,
        url: str,
        app_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        super().__init__(_AsyncConn(url, app_key, timeout=timeout, http=http))

    async def deposit(
        self,
        *,
        public_key: Optional[str] = None,
        jwk: Optional[Mapping[str, Any]] = None,
        secret: Optional[str] = None,
        generate: Optional[str] = None,
        label: Optional[str] = None,
        policy: Optional[Mapping[str, Any]] = None,
        notify: Optional[Mapping[str, Any]] = None,
        code_format: Optional[str] = None,
        proof: Optional[str] = None,
        sas_commitment: Optional[str] = None,
    ) -> Body:
        """``POST /v1/keys`` with exactly one of ``public_key``, ``jwk``, ``secret``,
        ``generate`` → the deposit body (``id``, ``code``, ``code_display``, ``code_uri``,
        ``holder_token``, fingerprints, ``private_key`` for ``generate``)."""
        body = _drop_none(
            public_key=public_key,
            jwk=dict(jwk) if jwk is not None else None,
            secret=secret,
            generate=generate,
            label=label,
            policy=dict(policy) if policy is not None else None,
            notify=dict(notify) if notify is not None else None,
            code_format=code_format,
            proof=proof,
            sas_commitment=sas_commitment,
        )
        return await self._conn.call_body("POST", "v1", "keys", json_body=body)

    async def status(self, key_id: str, holder_token: str) -> Body:
        """``GET /v1/keys/{id}``: status, counters and ``history``."""
        return await self._conn.call_body("GET", "v1", "keys", key_id, token=holder_token)

    async def recode(self, key_id: str, holder_token: str) -> Body:
        """``POST /v1/keys/{id}/code``: a fresh code (and ``code_uri``); the old one dies at once."""
        return await self._conn.call_body("POST", "v1", "keys", key_id, "code", token=holder_token)

    async def reveal_sas(self, key_id: str, holder_token: str, retrieval_id: str, nd: bytes) -> None:
        """``POST /v1/keys/{id}/sas``: reveals the device nonce ``nd`` (the one whose commitment
        went with the deposit) for the retrieval a ``sas.requested`` event named. Before the
        service asked, the answer is ``409 sas_not_requested``."""
        body = {"retrieval_id": retrieval_id, "nonce": _b64url(nd)}
        await self._conn.call("POST", "v1", "keys", key_id, "sas", json_body=body, token=holder_token)

    async def revoke(self, key_id: str, holder_token: str) -> None:
        """``DELETE /v1/keys/{id}``: the key is gone at once."""
        await self._conn.call("DELETE", "v1", "keys", key_id, token=holder_token)

    async def events(
        self,
        key_id: str,
        holder_token: str,
        last_event_id: Optional[str] = None,
        *,
        max_reconnects: int = 5,
    ) -> AsyncIterator[Body]:
        """``GET /v1/keys/{id}/events``: the key's events (``{"id", "type", "timestamp",
        "data"}``) as they happen, after ``last_event_id`` when given.

        A dropped connection is resumed with ``Last-Event-ID`` (after 0.25 s, doubling to at most
        5 s; after ``max_reconnects`` failures in a row the transport error is raised). When the
        server ends the stream, it is asked once more from the last event: an empty answer means
        the key is gone and its last event was sent, and the iterator ends. A refusal
        (401, 404, 429) is raised as the matching error."""
        last = last_event_id
        failures = 0
        timeout = self._conn.stream_timeout()
        while True:
            headers = self._conn.headers(holder_token)
            if last is not None:
                headers["last-event-id"] = last
            received = False
            try:
                async with aconnect_sse(
                    self._conn._http,
                    "GET",
                    self._conn.url("v1", "keys", key_id, "events"),
                    headers=headers,
                    timeout=timeout,
                ) as source:
                    if not source.response.is_success:
                        await source.response.aread()
                        raise from_response(source.response)
                    async for message in source.aiter_sse():
                        try:
                            event = json.loads(message.data)
                        except ValueError:
                            raise KeymasterError("unreadable event from the key master") from None
                        if message.id:
                            last = message.id
                        received = True
                        failures = 0
                        yield event
            except SSEError as err:
                raise KeymasterError(f"the key master did not answer with an event stream: {err}") from None
            except httpx.TransportError as err:
                failures += 1
                if failures > max_reconnects:
                    raise KeymasterError(f"the event stream broke off: {err!r}") from err
                await asyncio.sleep(reconnect_delay(failures))
                continue
            if not received:
                return


class AsyncServiceClient(_AsyncClient):
    """:class:`~keymaster_client.ServiceClient` for asyncio. An outside service: previews and
    retrieves keys by code or code URI with its ``kms_``
    service key, checks the key received against the code URI, confirms and disputes, and
    verifies the handoff's SAS with the device (:meth:`verify_sas`)."""

    def __init__(
        self,
        url: str,
        service_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        super().__init__(_AsyncConn(url, service_key, timeout=timeout, http=http))

    async def retrieve(
        self,
        code: str,
        password: Optional[str] = None,
        context: Optional[Mapping[str, Any]] = None,
    ) -> Body:
        """``POST /v1/retrievals`` → the retrieval body.

        ``code`` is a code as typed or a code URI (``keymaster:<code>?fp=…``, what the QR code
        holds). It is checked offline first: a mistyped code raises :class:`InvalidCode` and
        nothing is sent. When the URI carries ``fp``, SHA-256 over the SPKI of the key received
        (from its PEM, OpenSSH and JWK forms, each) must equal it; otherwise the retrieval is
        disputed (``key_mismatch``) and :class:`KeyMismatch` is raised: the key is never
        returned."""
        uri = parse_code_uri(code)
        body = _drop_none(code=code, password=password, context=dict(context) if context else None)
        retrieved = await self._conn.call_body("POST", "v1", "retrievals", json_body=body)
        if uri.fp is None or retrieval_matches(uri, retrieved):
            return retrieved
        retrieval_id = str(retrieved.get("retrieval_id", ""))
        try:
            await self.dispute(retrieval_id, "key_mismatch")
            disputed = True
        except KeymasterError:
            disputed = False
        raise KeyMismatch(retrieval_id, disputed)

    async def preview(
        self,
        code: str,
        password: Optional[str] = None,
        context: Optional[Mapping[str, Any]] = None,
    ) -> Body:
        """``POST /v1/retrievals/preview`` → ``{"key_id", "label", "kind", "algorithm",
        "fingerprint", "tenant", "deposited_at", "origin", "proven"}``, consuming nothing. It
        fails exactly as the retrieval would and counts against the same failure budget."""
        parse_code_uri(code)
        body = _drop_none(code=code, password=password, context=dict(context) if context else None)
        return await self._conn.call_body("POST", "v1", "retrievals", "preview", json_body=body)

    async def confirm(self, retrieval_id: str) -> None:
        """``POST /v1/retrievals/{id}/confirm``: receipt of a key held for confirmation."""
        await self._conn.call("POST", "v1", "retrievals", retrieval_id, "confirm")

    async def dispute(self, retrieval_id: str, reason: str) -> None:
        """``POST /v1/retrievals/{id}/dispute`` with ``reason`` ``key_mismatch``,
        ``sas_mismatch`` or ``not_requested``: the holder is told with ``key.disputed``."""
        await self._conn.call("POST", "v1", "retrievals", retrieval_id, "dispute", json_body={"reason": reason})

    async def request_sas(self, retrieval_id: str, ns: bytes) -> None:
        """``POST /v1/retrievals/{id}/sas``: asks the device for its SAS nonce, sending the
        service's nonce ``ns`` (32 bytes, :func:`sas_nonce`); the device is told with
        ``sas.requested``."""
        await self._conn.call(
            "POST", "v1", "retrievals", retrieval_id, "sas", json_body={"nonce": _b64url(ns)}
        )

    async def sas_nonces(self, retrieval_id: str) -> Body:
        """``GET /v1/retrievals/{id}/sas`` → ``{"service_nonce", "device_nonce"}`` as far as
        they are known (``device_nonce`` is absent until the device reveals it)."""
        return await self._conn.call_body("GET", "v1", "retrievals", retrieval_id, "sas")

    async def verify_sas(self, retrieved: Mapping[str, Any], timeout: float = 120.0) -> int:
        """:meth:`ServiceClient.verify_sas <keymaster_client.ServiceClient.verify_sas>`, awaited:
        sends a fresh nonce, waits up to ``timeout`` seconds for the device's, checks it against
        the retrieval's ``sas_commitment`` and returns the six digits. No commitment, or a nonce
        that does not open it, disputes the retrieval (``sas_mismatch``) and raises
        :class:`SasMismatch`; no reveal in time raises :class:`SasTimeout`."""
        rid = str(retrieved.get("retrieval_id", ""))
        commitment = decoded_commitment(retrieved.get("sas_commitment"))
        if commitment is None:
            raise await self._refuse_sas(rid, NO_COMMITMENT)
        key = retrieved_key_bytes(retrieved)
        ns = sas_nonce()
        await self.request_sas(rid, ns)
        deadline = time.monotonic() + timeout
        while True:
            revealed = (await self.sas_nonces(rid)).get("device_nonce")
            if revealed:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise SasTimeout(rid)
            await asyncio.sleep(min(POLL_INTERVAL, left))
        nd = opened_nonce(commitment, revealed)
        if nd is None:
            raise await self._refuse_sas(rid, NOT_OPENED)
        return sas(key, nd, ns)

    async def _refuse_sas(self, retrieval_id: str, why: str) -> SasMismatch:
        try:
            await self.dispute(retrieval_id, "sas_mismatch")
            disputed = True
        except KeymasterError:
            disputed = False
        return SasMismatch(retrieval_id, why, disputed)
