"""What both OpenRouter engines share: the client, the limiter hand-over, the check before a
batch, the model's pricing, and a ``repr`` without the key."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from voxflow.engines.base import Engine
from voxflow.engines.openrouter.client import OpenRouterClient, Sleep
from voxflow.engines.openrouter.models import Kind, model_pricing, validate_model

if TYPE_CHECKING:
    from voxflow.limits import RequestLimiter
    from voxflow.settings import Settings


class OpenRouterEngine(Engine):
    """An engine that sends each request through its own :class:`OpenRouterClient`."""

    kind: ClassVar[Kind]
    voice: str | None = None  # checked against the model's voices by prepare()

    def __init__(
        self,
        model: str,
        settings: Settings,
        *,
        limiter: RequestLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        provider: Mapping[str, Any] | None = None,
        pricing: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.provider = dict(provider) if provider else None
        self.pricing: dict[str, Any] | None = dict(pricing) if pricing else None
        self._pricing_tried = pricing is not None
        self.listing: dict[str, Any] = {}  # the model's GET /models entry, once prepare() has run
        self.client = OpenRouterClient(settings, limiter=limiter, transport=transport, sleep=sleep)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.client.base_url!r})"

    @property
    def limiter(self) -> RequestLimiter | None:
        return self.client.limiter

    @limiter.setter
    def limiter(self, value: RequestLimiter | None) -> None:
        self.client.limiter = value

    def use_limiter(self, limiter: RequestLimiter) -> bool:
        """Every attempt (first try or retry) holds one slot of ``limiter`` while it is on the wire."""
        self.client.limiter = limiter
        return True

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent by this engine so far (first tries and retries)."""
        return self.client.requests_sent

    async def prepare(self) -> None:
        """Check key, model (and voice) before a batch; keeps the model's pricing for estimates."""
        info = await validate_model(
            self.settings,
            self.model,
            self.kind,
            self.voice,
            transport=self.client.transport,
            sleep=self.client.sleep,
        )
        self.pricing = info.get("pricing") or None
        self.listing = info
        self._pricing_tried = True

    async def load_pricing(self) -> dict[str, Any] | None:
        """The model's pricing from ``/models`` (once; None if unlisted or unreachable)."""
        if not self._pricing_tried:
            self._pricing_tried = True
            client = self.client
            self.pricing = await model_pricing(self.settings, self.model, self.kind, client.transport, client.sleep)
        return self.pricing

    async def aclose(self) -> None:
        """Close this event loop's connection pool."""
        await self.client.aclose()
