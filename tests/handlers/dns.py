"""A real DNS server for the resolver tests: UDP on port 53 of a loopback address of its own, answering
each name as the test says (an address, SERVFAIL or NXDOMAIN) and counting the queries it gets."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Self

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord

SERVFAIL = "servfail"
NXDOMAIN = "nxdomain"


class DnsServer(asyncio.DatagramProtocol):
    """`answers` maps a name (no trailing dot) to an IPv4/IPv6 address, SERVFAIL or NXDOMAIN; names
    not listed get NXDOMAIN."""

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.queries: Counter[str] = Counter()
        self.address = ""
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self) -> Self:
        """Bind port 53 (resolv.conf cannot name another port) on a random 127.x.y.z, so copies of the
        suite running side by side each get their own server."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            self.address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.address, 53))
            except OSError:
                continue
            self.transport = transport  # type: ignore[assignment]
            return self
        raise OSError("no free loopback address for a DNS server on port 53")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        request = DNSRecord.parse(data)
        name = str(request.q.qname).rstrip(".").lower()
        self.queries[name] += 1
        reply = request.reply()
        answer = self.answers.get(name, NXDOMAIN)
        if answer == SERVFAIL:
            reply.header.rcode = RCODE.SERVFAIL
        elif answer == NXDOMAIN:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A and ":" not in answer:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(answer), ttl=0))
        elif request.q.qtype == QTYPE.AAAA and ":" in answer:
            reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(answer), ttl=0))
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)
