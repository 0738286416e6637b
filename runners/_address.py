"""Fail fast on a Ray cluster address that no Ray cluster answers at: `ray.init(address=...)` would retry
"Failed to connect to GCS" for minutes instead. Nothing here joins the cluster; Ray is imported only to
look up `auto` (a cluster started on this machine)."""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit

from toast.errors import RayAddressError

CONNECT_TIMEOUT_S = 3.0  # a running GCS answers in milliseconds; a firewalled host drops the packets
RAY_CLIENT_PORT = 10001  # `ray://host` without a port
GCS_PROBE = (
    "/ray.rpc.NodeInfoGcsService/GetClusterId"  # an RPC every GCS serves (empty request), as `ray.init` asks first
)
FIX = "start it with `ray start --head`, or give its address as `ray start --head` prints it (`ray_address` or $RAY_ADDRESS)"


def ray_address(address: str | None) -> str | None:
    """The address the Ray runner joins: `address`, else `$RAY_ADDRESS`, else None (a local Ray instance starts)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _host_port(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `scheme://host[:port]` as (host, port)."""
    scheme = address.split("://", 1)[0] if "://" in address else ""
    try:
        parts = urlsplit(address if scheme else f"//{address}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if port is None and scheme == "ray":
        port = RAY_CLIENT_PORT
    if not host or port is None:
        raise RayAddressError(
            f"Ray address {address!r} is not host:port (as `ray start --head` prints it, e.g. 10.0.0.1:6379)"
        )
    return host, port


def _lookup_local(address: str) -> str:
    """`auto`: the cluster this machine last started with `ray start` (or the one running here), as Ray finds it."""
    from .._compat import local_ray_address

    try:
        return local_ray_address()
    except (ConnectionError, ValueError) as exc:
        raise RayAddressError(
            f"Ray address {address!r}: no running Ray cluster found on this machine ({exc}); {FIX}"
        ) from None


def _probe_gcs(host: str, port: int, timeout: float, shown: str, *, left: float | None = None) -> None:
    """One RPC to the GCS at host:port within `left` seconds (default `timeout`, the limit the message names), so
    that something that accepts connections but is no Ray GCS (the dashboard's port, a proxy) fails here too.
    Without grpcio (it comes with `ray[default]`) the TCP connect is all there is."""
    try:
        import grpc
    except ImportError:
        return
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:  # as Ray connects: no proxy
        try:
            channel.unary_unary(GCS_PROBE)(b"", timeout=timeout if left is None else left, wait_for_ready=True)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return  # a GCS with token authentication: `ray.init` says what it needs
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                why = f"no answer from a Ray GCS within {timeout:g} s (is it the GCS port, 6379 by default, not the dashboard's?)"
            else:
                why = f"it answers, but not as a Ray GCS ({code.name}: {exc.details()})"
            raise RayAddressError(f"cannot reach the Ray cluster at {shown}: {why}; {FIX}") from None


def check_ray_address(address: str | None, *, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Check, within about `timeout` seconds, that a Ray cluster answers at `address` (default `$RAY_ADDRESS`),
    without joining it (no `ray.init`); returns the address checked, or None when there is none to check (no
    address, or `local`: a local Ray instance will start). `auto` looks up a cluster running on this machine.
    Raises `RayAddressError`, a one-line message naming the address."""
    given = ray_address(address)
    if given is None or given == "local":
        return None
    checked = _lookup_local(given) if given == "auto" else given
    host, port = _host_port(checked)
    shown = given if checked == given else f"{given} ({checked})"
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        raise RayAddressError(
            f"cannot reach the Ray cluster at {shown}: no answer within {timeout:g} s; {FIX}"
        ) from None
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise RayAddressError(f"cannot reach the Ray cluster at {shown}: {why}; {FIX}") from None
    if "://" not in checked:  # a GCS address (`ray://` is the Ray Client server, other schemes are Ray's plugins)
        _probe_gcs(host, port, timeout, shown, left=max(0.5, timeout - (time.monotonic() - start)))
    return checked
