"""WebRTC ingest: the aiohttp server, the browser page, and WebRTC clients."""
