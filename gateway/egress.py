"""How the gateway reaches an upstream: directly or through an HTTP proxy, and with which TLS trust.

Decided once per upstream origin (scheme, host, port), when the upstream client first meets it,
never per request. The sources, highest first:
- the provider's own `proxy:` (a URL, or `direct` for none), `ca_file`, `tls_cert` and `tls_key`;
- the environment: `https_proxy` / `HTTPS_PROXY` for https upstreams, `http_proxy` / `HTTP_PROXY`
  for http ones, `all_proxy` / `ALL_PROXY` for both (lower case first, as curl reads them), and
  `no_proxy` / `NO_PROXY`, which exempts hosts from the environment's proxies only.

`NO_PROXY` follows curl: comma-separated entries, `*` for every host, a name matching itself and
its subdomains (`example.com` and `.example.com` both match `api.example.com`), an IP address or
CIDR range (`10.0.0.0/8`), optionally with `:port`. Loopback is not exempt unless listed, so a
proxy test on 127.0.0.1 really goes through the proxy.

Proxies are `http://[user:password@]host:port` (a URL without a scheme is taken as http): https
upstreams are reached through an HTTP CONNECT tunnel, http ones by sending the request in absolute
form to the proxy. The credentials travel as `Proxy-Authorization: Basic`; whatever names a proxy
in a message or a log (`Proxy.shown`) leaves them out.
"""
from __future__ import annotations

import base64
import ipaddress
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from policies.catalog import CatalogError, ProviderInfo

_ENV_NAMES = {True: ("https_proxy", "HTTPS_PROXY"), False: ("http_proxy", "HTTP_PROXY")}
_ALL_NAMES = ("all_proxy", "ALL_PROXY")
_NO_PROXY_NAMES = ("no_proxy", "NO_PROXY")


class EgressError(CatalogError):
    """A proxy setting or TLS file that cannot be used; the message names where it came from."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # "Basic ...", from the URL's credentials

    @property
    def shown(self) -> str:
        """The proxy as messages and logs name it: never with its credentials."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{name}:{self.port}"


def parse_proxy(url: str, where: str) -> Proxy:
    """`http://[user:password@]host[:port]`; `where` names the setting in an error."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text  # curl's reading of `proxy.corp:3128`
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise EgressError(f"{where}: not a proxy URL") from None
    if parts.scheme != "http" or not parts.hostname:
        raise EgressError(f"{where}: only http:// proxies are supported, got '{parts.scheme}://"
                          f"{parts.hostname or ''}'")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(parts.hostname.lower(), port or 80, authorization)


@dataclass(frozen=True)
class _NoProxyEntry:
    name: str | None = None                       # a host name, lower case, without a leading dot
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def matches(self, host: str, address, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address is not None and address.version == self.network.version and address in self.network
        return host == self.name or host.endswith("." + self.name)


def parse_no_proxy(value: str) -> tuple[bool, tuple[_NoProxyEntry, ...]]:
    """(every host is exempt, the entries)."""
    entries: list[_NoProxyEntry] = []
    for raw in value.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "*":
            return True, ()
        port = None
        if item.startswith("["):  # [::1] or [::1]:8080
            host, _, rest = item[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
            item = host
        elif item.count(":") == 1:
            host, _, tail = item.partition(":")
            if tail.isdigit():
                item, port = host, int(tail)
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            entries.append(_NoProxyEntry(name=item.lstrip("."), port=port))
        else:
            entries.append(_NoProxyEntry(network=network, port=port))
    return False, tuple(entries)


@dataclass(frozen=True)
class ProxyEnvironment:
    """The environment's proxy variables, read once."""
    https: Proxy | None = None
    http: Proxy | None = None
    bypass_all: bool = False
    no_proxy: tuple[_NoProxyEntry, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyEnvironment:
        def first(names: Iterable[str]) -> tuple[str, str] | None:
            for name in names:
                value = environ.get(name, "").strip()
                if value:
                    return name, value
            return None

        proxies = {}
        for tls in (True, False):
            found = first(_ENV_NAMES[tls]) or first(_ALL_NAMES)
            proxies[tls] = parse_proxy(found[1], found[0]) if found else None
        exempt = first(_NO_PROXY_NAMES)
        bypass_all, entries = parse_no_proxy(exempt[1]) if exempt else (False, ())
        return cls(https=proxies[True], http=proxies[False], bypass_all=bypass_all, no_proxy=entries)

    def proxy_for(self, tls: bool, host: str, port: int) -> Proxy | None:
        proxy = self.https if tls else self.http
        if proxy is None or self.bypass_all:
            return None
        name = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            address = None
        if any(entry.matches(name, address, port) for entry in self.no_proxy):
            return None
        return proxy


@dataclass(frozen=True)
class ProviderEgress:
    """A provider's own way out: its proxy ("direct" for none) and its TLS context, if it has either."""
    proxy: Proxy | str | None = None
    ssl: ssl.SSLContext | None = field(default=None, compare=False)
    # (path, version) of ca_file, tls_cert, tls_key: what two providers, or two reloads, compare by.
    files: tuple[tuple[str, tuple[int, int] | None], ...] = ()


def provider_egress(provider: ProviderInfo) -> ProviderEgress | None:
    """The provider's `proxy`, `ca_file`, `tls_cert` and `tls_key`, checked now (a file that cannot be
    read stops startup or a reload naming it); None when it sets none of them."""
    label = f"provider '{provider.name}'"
    proxy: Proxy | str | None = None
    if provider.proxy == "direct":
        proxy = "direct"
    elif provider.proxy is not None:
        proxy = parse_proxy(provider.proxy, f"{label}: field 'proxy'")
    context = None
    if provider.ca_file or provider.tls_cert:
        context = ssl.create_default_context()  # the system's trust, plus the private CA
        context.set_alpn_protocols(["http/1.1"])
        if provider.ca_file:
            try:
                context.load_verify_locations(cafile=provider.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise EgressError(f"{label}: field 'ca_file' ({provider.ca_file}): {_reason(exc)}") from None
        if provider.tls_cert:
            try:
                context.load_cert_chain(provider.tls_cert, provider.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise EgressError(f"{label}: fields 'tls_cert'/'tls_key' ({provider.tls_cert}): "
                                  f"{_reason(exc)}") from None
    if proxy is None and context is None:
        return None
    return ProviderEgress(proxy=proxy, ssl=context, files=tuple(
        (path, _version(path)) for path in (provider.ca_file, provider.tls_cert, provider.tls_key) if path))


def _version(path: str) -> tuple[int, int] | None:
    """When and how big: a file rewritten in place (a rotated certificate) counts as changed."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)


@dataclass(frozen=True)
class EgressPlan:
    """Every provider's way out, by the origin of its base URL, and the environment's proxies."""
    environment: ProxyEnvironment = field(default_factory=ProxyEnvironment)
    by_origin: Mapping[tuple[bool, str, int], ProviderEgress] = field(default_factory=dict)

    def route(self, tls: bool, host: str, port: int) -> tuple[Proxy | None, ssl.SSLContext | None]:
        own = self.by_origin.get((tls, host.lower(), port))
        if own is not None and own.proxy is not None:
            proxy = None if own.proxy == "direct" else own.proxy
        else:
            proxy = self.environment.proxy_for(tls, host, port)
        return proxy, own.ssl if own is not None else None


def egress_plan(providers: Iterable[ProviderInfo], environ: Mapping[str, str]) -> EgressPlan:
    """Raises EgressError for an unusable setting, or two providers on one origin that disagree."""
    environment = ProxyEnvironment.from_environ(environ)
    by_origin: dict[tuple[bool, str, int], tuple[str, ProviderEgress]] = {}
    for provider in providers:
        if provider.protocol == "mock":
            continue
        own = provider_egress(provider)
        if own is None:
            continue
        parts = urlsplit(provider.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        tls = parts.scheme == "https"
        origin = (tls, parts.hostname.lower(), parts.port or (443 if tls else 80))
        seen = by_origin.get(origin)
        if seen is not None and seen[1] != own:
            raise EgressError(f"providers '{seen[0]}' and '{provider.name}' share the origin "
                              f"{provider.base_url} but set different proxy or TLS settings")
        by_origin[origin] = (provider.name, own)
    return EgressPlan(environment, {origin: own for origin, (_, own) in by_origin.items()})
