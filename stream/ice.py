"""ICE set-up shared by the server and the clients: which ICE servers, and loopback candidates.

Loopback: aioice leaves 127.0.0.1 out of its host candidates, so on a machine whose only
interface is `lo` (a container, a private network namespace, a CI sandbox) a client and a server
cannot connect. A server bound to a loopback address, and a client of a loopback URL (or one told
`loopback=True`), add 127.0.0.1 to the candidates (`use_loopback_candidates`, process-wide).
Against a remote server nothing is changed.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

__all__ = [
    "ice_configuration",
    "is_loopback_host",
    "is_loopback_url",
    "use_loopback_candidates",
]


def ice_configuration(urls: tuple[str, ...] | list[str]) -> RTCConfiguration:
    """ICE servers from settings. Empty means none at all: aiortc's default would ask a public
    STUN server, which stalls offline (aiortc #524)."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in urls])


_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses_with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    if use_ipv4 and "127.0.0.1" not in addresses:
        addresses.append("127.0.0.1")
    return addresses


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1): whether peers on this
    host need loopback ICE candidates, and whether a server bound there may skip auth."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """Whether the host of `url` is a loopback one (`is_loopback_host`)."""
    return is_loopback_host(urlsplit(url).hostname or "")


def use_loopback_candidates() -> None:
    """Make aioice offer 127.0.0.1 as a host candidate (process-wide, idempotent).

    aioice deliberately leaves loopback out of its host candidates, so two peers on a machine
    whose only interface is `lo` (a container, a private network namespace, a CI sandbox)
    gather no usable candidate and never connect. There is no per-connection option, so we wrap
    `aioice.ice.get_host_addresses`, which aioice looks up at gathering time. The real
    interfaces are still offered; loopback is only added.
    """
    aioice.ice.get_host_addresses = _get_host_addresses_with_loopback
