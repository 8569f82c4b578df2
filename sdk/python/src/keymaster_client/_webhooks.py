"""Verifying the key master's webhooks: Standard Webhooks signatures (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``) under the tenant's ``whsec_`` secret, through the
``standardwebhooks`` package, so that the HMAC, the constant-time comparison and the timestamp
tolerance (5 minutes) are the specification's reference code rather than ours."""

from __future__ import annotations

import binascii
from typing import Any, Dict, Mapping, Union

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ._errors import InvalidSignature

__all__ = ["verify_webhook"]


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: Union[bytes, str]
) -> Dict[str, Any]:
    """The event a webhook delivered, after checking its signature with the tenant's
    ``webhook_secret`` (``whsec_…``). ``headers`` is any mapping of the request's headers
    (names in any case); ``body`` is the raw body exactly as received. Raises
    :class:`InvalidSignature` when a header is missing, the timestamp is more than 5 minutes
    off, or no signature matches."""
    try:
        webhook = Webhook(secret)
    except Exception as err:  # the package raises several types for an unusable secret
        raise InvalidSignature(f"the webhook secret is not usable: {err}") from None
    try:
        event = webhook.verify(body, dict(headers.items()))
    except WebhookVerificationError as err:
        raise InvalidSignature(f"webhook signature not verified: {err}") from None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        # A malformed signature header (no `v1,` prefix, bad base64) or a body that is not text.
        raise InvalidSignature("webhook signature not verified: malformed headers or body") from None
    if not isinstance(event, dict):
        raise InvalidSignature("webhook body is not an event object")
    return event
