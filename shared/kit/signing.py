"""Authenticated internal events (docs/security.md): every entry a service publishes on an internal stream carries
`__sig__ = v1:<service>:<key id>:<hex HMAC-SHA256>` over the stream's name and the payload; a consumer accepts it
only when it verifies with a key of the stream's producer (or its own: an operator's replay of its own dead letter)
and dead-letters it otherwise (kind `signature`, the reason named). The external intake stream stays unsigned:
it is client input, validated like a POST.

Keys: `SAFE_EVENT_KEYS`, comma-separated `service:key_id:secret` (secrets of 32+ characters). A service signs with
its `<SERVICE>_EVENT_KEY_ID`, by default the first key listed for it, and accepts every key listed. Rotation
without downtime: (1) add the new key after the old one everywhere (all accept both, all sign with the old);
(2) put it first, or set the key id (services sign with the new one as they restart); (3) once no entry signed
with the old key is left unprocessed, remove it. Outside SAFE_ENV=dev a service refuses to start without keys;
in dev without keys, entries are signed with a fixed, public dev key and not verified."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import wire

VERSION = "v1"
FIELD = wire.SIGNATURE_KEY
MIN_SECRET = 32
DEV_SECRET = "dev-only-event-key-public-never-use-in-production"
# client input, validated like HTTP: not signed
UNSIGNED = frozenset({streams.SUBMIT_PROCUREMENT})
# streams every service publishes on (each its own audit chain's head): any service's valid key signs them
ANY_SERVICE = frozenset({streams.AUDIT_ANCHORS})


class KeyringError(ValueError):
    pass


class SignatureError(Exception):
    """An entry on an internal stream that does not verify; the message names why."""


def producer_of(stream: str) -> str:
    """The service that publishes on `stream` (`<producer>.<event>`, kebab-case); for a stream every service
    publishes on (ANY_SERVICE), the first of them."""
    if stream in ANY_SERVICE:
        return "applications"
    return stream.partition(".")[0].replace("-", "_")


class Keyring:
    """This service's signing key and the keys it accepts."""

    def __init__(self, spec: str | None, *, service: str, key_id: str | None = None, dev: bool) -> None:
        self.service = service
        self._keys: dict[tuple[str, str], bytes] = {}
        order: dict[str, list[str]] = {}
        if spec:
            for i, item in enumerate(p.strip() for p in spec.split(",")):
                if not item:
                    continue
                parts = item.split(":", 2)
                if len(parts) != 3 or not all(p.strip() for p in parts):
                    raise KeyringError(f"SAFE_EVENT_KEYS entry {i + 1} is not service:key_id:secret")
                owner, kid, secret = (p.strip() for p in parts)
                if len(secret) < MIN_SECRET:
                    raise KeyringError(f"SAFE_EVENT_KEYS entry {i + 1} ({owner}:{kid}): the secret is shorter than "
                                    f"{MIN_SECRET} characters")
                self._keys[(owner, kid)] = secret.encode()
                order.setdefault(owner, []).append(kid)
            self.verifying = True
        elif dev:
            self._keys[(service, "dev")] = DEV_SECRET.encode()
            order[service] = ["dev"]
            self.verifying = False
        else:
            raise KeyringError("SAFE_EVENT_KEYS is required outside SAFE_ENV=dev")
        kid = key_id or (order.get(service) or [None])[0]
        if kid is None or (service, kid) not in self._keys:
            raise KeyringError(f"SAFE_EVENT_KEYS has no key {key_id or ''} for {service}: it could not sign its events")
        self.key_id = kid

    def __repr__(self) -> str:  # never show the secrets
        return f"Keyring({self.service}, {len(self._keys)} keys, signs with {self.key_id})"

    def sign(self, stream: str, payload: str | bytes) -> str:
        """The `__sig__` value of an entry with `payload` on `stream` (unprefixed name)."""
        mac = _mac(self._keys[(self.service, self.key_id)], stream, payload)
        return f"{VERSION}:{self.service}:{self.key_id}:{mac}"

    def verify(self, stream: str, fields: Mapping[bytes, bytes]) -> None:
        """Raises SignatureError unless the entry's signature is valid for `stream` (unprefixed name)."""
        if not self.verifying or stream in UNSIGNED:
            return
        raw = fields.get(FIELD)
        if raw is None:
            raise SignatureError("unsigned entry on an internal stream")
        try:
            version, signer, kid, mac = raw.decode("ascii").split(":")
        except (UnicodeDecodeError, ValueError):
            raise SignatureError("malformed signature") from None
        if version != VERSION:
            raise SignatureError(f"unknown signature version {version!r}")
        if signer not in (producer_of(stream), self.service) and stream not in ANY_SERVICE:
            raise SignatureError(f"signed by {signer}, which does not publish on {stream}")
        key = self._keys.get((signer, kid))
        if key is None:
            raise SignatureError(f"unknown key {signer}:{kid}")
        payload = fields.get(wire.DATA_KEY, b"")
        if not hmac.compare_digest(_mac(key, stream, payload), mac):
            raise SignatureError("signature does not match the payload")


def _mac(key: bytes, stream: str, payload: str | bytes) -> str:
    data = payload.encode() if isinstance(payload, str) else payload
    return hmac.new(key, VERSION.encode() + b"\n" + stream.encode() + b"\n" + data, hashlib.sha256).hexdigest()
