"""The OpenRouter client loads the CA bundle once per process, not once per event loop.

Every recording runs its chunks in its own event loop, hence its own httpx client; building
a TLS context reads and parses the whole CA bundle (≈ 50 ms of CPU, under the client's lock).
"""

from __future__ import annotations

import asyncio
import ssl

from voxflow.engines.openrouter.client import OpenRouterClient
from voxflow.settings import load_settings


def test_clients_of_many_event_loops_share_one_tls_context(monkeypatch) -> None:
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    client = OpenRouterClient(load_settings())

    async def one_recording() -> None:
        client._client()
        await client.aclose()

    for _ in range(5):
        asyncio.run(one_recording())
    assert len(loads) <= 1, f"the CA bundle was loaded {len(loads)} times for 5 event loops"
