"""Which IP addresses an outgoing request may reach: only globally routable ones.

Several IPv6 forms carry an IPv4 address inside them (IPv4-mapped, IPv4-compatible, IPv4-translated,
6to4, NAT64, Teredo). A dual-stack socket, a relay or a NAT64 gateway may deliver such an address to
the IPv4 address it embeds, so every embedded address is checked as if it had been given directly:
`2002:7f00:1::` (6to4 of 127.0.0.1) is refused like `127.0.0.1`. IPv4-mapped and well-known-prefix
NAT64 forms of a public IPv4 address are allowed (that is how IPv6-only hosts reach the IPv4
internet); the local-use NAT64 prefix, IPv4-compatible and -translated forms and Teredo are not
globally routable and stay refused.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # ::ffff:a.b.c.d (RFC 4291)
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d, deprecated (RFC 4291)
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # ::ffff:0:a.b.c.d, SIIT (RFC 2765)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use NAT64 prefix (RFC 8215)
_LOW32 = 0xFFFFFFFF
_CARRIERS = frozenset({"IPv4-mapped", "NAT64"})  # forms that stand for their IPv4 address on the wire


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """(form, address) for every IPv4 address that `ip` carries."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    low = ipaddress.IPv4Address(int(ip) & _LOW32)
    if ip in _MAPPED:
        found.append(("IPv4-mapped", low))
    elif ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are the unspecified and loopback addresses
        found.append(("IPv4-compatible", low))
    elif ip in _TRANSLATED:
        found.append(("IPv4-translated", low))
    elif ip in _NAT64 or ip in _NAT64_LOCAL:
        found.append(("NAT64", low))
    if ip.sixtofour is not None:
        found.append(("6to4", ip.sixtofour))
    if ip.teredo is not None:
        server, client = ip.teredo
        found += [("Teredo server", server), ("Teredo client", client)]
    return found


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why `ip` may not be reached without an allow-list entry, as "a <kind> address" (None: public)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        for form, inner in embedded:
            inner_reason = forbidden_reason(inner)
            if inner_reason is not None:
                return f"the {form} form of {inner}, {inner_reason}"
        if ip in _NAT64_LOCAL:
            return "a local-use NAT64 address"
        if ip.is_site_local:
            return "a site-local address"
        if embedded and embedded[0][0] in _CARRIERS:
            return None  # reaches exactly the public IPv4 address it carries (dual-stack socket, DNS64)
    checks = (
        ("loopback", ip.is_loopback),
        ("private", ip.is_private),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("unspecified", ip.is_unspecified),
    )
    for name, hit in checks:
        if hit:
            return f"a {name} address"
    if not ip.is_global:
        return "an address that is not globally routable"
    return None


def parse_address(text: str) -> IPAddress | None:
    """An IP literal as found in a URL host (brackets and an IPv6 zone allowed), else None."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
