"""Webhook targets (QUALITY.md 28a): the allowlist of hosts and ports at submit, the address check
at send time (the IPv4 address inside an IPv6 one, the gateway's own backends), the pinned
connection, and no redirects. Nothing here is sent anywhere: a recording transport stands where
the network would be and fake resolvers stand for DNS, so a refusal is seen to happen before any
connection is made."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time

import httpx
import pytest

from gateway.app import _webhooks
from gateway.errors import ApiError
from gateway.settings import Settings
from gateway.store.job_models import Job, JobStatus
from gateway.webhooks.sender import WebhookSender, sign
from gateway.webhooks.targets import CallbackPolicy, CallbackRefused, Resolver, resolve

PUBLIC = "93.184.216.34"


class Recorder(httpx.AsyncBaseTransport):
    """Answers every request itself with the given statuses, and remembers what it was asked."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses) or [204]
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        headers = {"Location": "http://169.254.169.254/"} if 300 <= status < 400 else {}
        return httpx.Response(status, headers=headers)


def fixed(*addresses: str) -> Resolver:
    """Every name resolves to these addresses."""

    async def resolver(_host: str, _port: int) -> list[str]:
        return list(addresses)

    return resolver


def zone(**records: list[str]) -> Resolver:
    """Each name resolves to its record; any other does not resolve, as resolve() says."""

    async def resolver(host: str, _port: int) -> list[str]:
        if host not in records:
            raise CallbackRefused(f"the callback host {host!r} does not resolve")
        return records[host]

    return resolver


def job(url: str) -> Job:
    return Job(
        id="j" * 32,
        owner="o",
        model="classic_edit",
        status=JobStatus.COMPLETED,
        request_id="r",
        replica="x",
        created_at=time.time(),
        callback_url=url,
    )


def deliver(policy: CallbackPolicy, url: str, transport: Recorder) -> bool:
    async def send() -> bool:
        sender = WebhookSender("s3cret", policy, max_attempts=3, backoff_s=0, transport=transport)
        try:
            return await sender.deliver(job(url))
        finally:
            await sender.close()

    return asyncio.run(send())


# --- at submit ---------------------------------------------------------------------------------


def test_without_an_allowlist_a_callback_is_422_saying_how_to_allow_it() -> None:
    with pytest.raises(ApiError) as refused:
        CallbackPolicy().check_url("https://serverpod/hooks/edit")
    assert (refused.value.status, refused.value.code) == (422, "callback_not_allowed")
    assert "WEBHOOK_ALLOWED_HOSTS" in refused.value.message
    assert refused.value.detail == {"field": "callback_url"}


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example/x",
        "http://serverpod.evil.example/x",
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://127.1/x",
        "http://2130706433/x",
        "http://0x7f000001/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_a_host_not_on_the_allowlist_is_422(url: str) -> None:
    policy = CallbackPolicy(["serverpod", ".hooks.example"])
    with pytest.raises(ApiError) as refused:
        policy.check_url(url)
    assert refused.value.code == "callback_not_allowed"
    assert "WEBHOOK_ALLOWED_HOSTS" in refused.value.message


def test_listed_hosts_and_subdomains_of_a_suffix_entry_are_accepted() -> None:
    policy = CallbackPolicy(["Serverpod:8080", ".hooks.example"])
    for url in (
        "http://serverpod:8080/done",
        "https://a.hooks.example/x",
        "https://b.a.hooks.example",
    ):
        assert policy.check_url(url) == url
    assert policy.match("hooks.example", 443) is None  # the suffix itself is not a subdomain


def test_without_a_port_an_entry_allows_80_and_443_only_and_the_422_says_how_to_allow_more() -> (
    None
):
    policy = CallbackPolicy(["serverpod", ".hooks.example"])
    for url in ("http://serverpod/x", "https://serverpod/x", "http://serverpod:443/x"):
        assert policy.check_url(url) == url
    for url, entry in (
        ("http://serverpod:8080/x", "serverpod:80|443|8080"),
        ("https://a.hooks.example:8443/x", ".hooks.example:80|443|8443"),
        ("http://serverpod:22/x", "serverpod:22|80|443"),
    ):
        with pytest.raises(ApiError) as refused:
            policy.check_url(url)
        assert (refused.value.status, refused.value.code) == (422, "callback_not_allowed")
        assert f"WEBHOOK_ALLOWED_HOSTS={entry}" in refused.value.message
        assert refused.value.detail == {"field": "callback_url"}


def test_an_entry_with_ports_allows_those_ports_only() -> None:
    policy = CallbackPolicy(["serverpod:8080|8081", ".hooks.example:8443", "[fd00::5]:9000"])
    for url in (
        "http://serverpod:8080/done",
        "https://serverpod:8081/done",
        "https://a.hooks.example:8443/x",
        "http://[fd00::5]:9000/x",
    ):
        assert policy.check_url(url) == url
    for url in (
        "http://serverpod/done",  # 80: not listed, so not allowed
        "http://serverpod:8082/done",
        "https://a.hooks.example/x",
        "http://[fd00::5]/x",
    ):
        with pytest.raises(ApiError) as refused:
            policy.check_url(url)
        assert refused.value.code == "callback_not_allowed"
        assert "WEBHOOK_ALLOWED_HOSTS=" in refused.value.message


@pytest.mark.parametrize(
    "entry",
    [
        "serverpod:",
        "serverpod:http",
        "serverpod:0",
        "serverpod:65536",
        "serverpod:80|x",
        "serverpod:80,81",
        "[fd00::5]x",
        ".",
        "*.",
        ":8080",
    ],
)
def test_a_malformed_entry_stops_the_gateway_with_the_syntax(entry: str) -> None:
    with pytest.raises(ValueError, match=r"WEBHOOK_ALLOWED_HOSTS .*<host>\[:<port>"):
        CallbackPolicy([entry])


def test_each_entry_spells_the_urls_it_allows_as_a_pattern() -> None:
    """For the OpenAPI document: the same hosts and ports the gateway allows, no more."""
    entries = ["serverpod:8080|8081", ".hooks.example", "[fd00::5]:9000"]
    pattern = "|".join(e.url_pattern() for e in CallbackPolicy(entries).allowed)
    allowed = [
        "http://serverpod:8080",
        "https://serverpod:8081",
        "http://a.hooks.example",
        "https://a.b.hooks.example:443",
        "http://[fd00::5]:9000",
    ]
    refused = [
        "http://serverpod",
        "http://serverpod:8082",
        "http://hooks.example",
        "http://a.hooks.example:8080",
        "http://[fd00::5]",
    ]
    assert all(re.fullmatch(pattern, url) for url in allowed)
    assert not any(re.fullmatch(pattern, url) for url in refused)


# --- at send time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "0.0.0.0",
        "[::]",
        "169.254.169.254",
        "[fd00:ec2::254]",
        "[fe80::1]",
        "224.0.0.1",
        "240.0.0.1",
        "[::ffff:169.254.169.254]",
    ],
)
def test_loopback_link_local_metadata_and_reserved_are_refused_in_every_spelling(host: str) -> None:
    """Even when the operator lists the very spelling: the system resolver decides what it is."""
    name = host.strip("[]")
    policy = CallbackPolicy([name])
    transport = Recorder()

    with pytest.raises(CallbackRefused, match="resolves to"):
        asyncio.run(policy.pin(f"http://{host}/hook"))
    assert deliver(policy, f"http://{host}/hook", transport) is False
    assert transport.requests == []  # refused before any connection


def test_the_system_resolver_reads_numeric_spellings_as_the_address_itself() -> None:
    for spelling in ("127.1", "2130706433", "0x7f000001"):
        assert asyncio.run(resolve(spelling, 80)) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("entry", "url"),
    [("127.0.0.1:9", "http://127.0.0.1:9/done"), ("[::1]:9", "http://[::1]:9/done")],
    ids=["ipv4", "ipv6"],
)
def test_loopback_is_allowed_only_with_the_local_development_opt_in(entry: str, url: str) -> None:
    transport = Recorder()
    assert deliver(CallbackPolicy([entry]), url, transport) is False
    assert deliver(CallbackPolicy([entry], allow_loopback=True), url, transport) is True
    assert str(transport.requests[0].url) == url


def test_a_name_listed_exactly_may_be_private_a_suffix_match_may_not() -> None:
    exact = CallbackPolicy(["serverpod:8080"], resolver=fixed("172.18.0.5"))
    suffix = CallbackPolicy([".hooks.example"], resolver=fixed("10.1.2.3"))
    assert asyncio.run(exact.pin("http://serverpod:8080/x")).url.host == "172.18.0.5"
    with pytest.raises(CallbackRefused, match="private"):
        asyncio.run(suffix.pin("https://a.hooks.example/x"))


def test_a_name_that_resolves_to_a_forbidden_address_is_refused_dns_rebinding() -> None:
    rebinding = CallbackPolicy([".hooks.example"], resolver=fixed(PUBLIC, "127.0.0.1"))
    transport = Recorder()
    assert deliver(rebinding, "https://a.hooks.example/x", transport) is False
    assert transport.requests == []


def test_the_request_goes_to_the_checked_address_with_the_name_in_host_and_sni() -> None:
    transport = Recorder()
    policy = CallbackPolicy([".hooks.example:8443"], resolver=fixed(PUBLIC))
    assert deliver(policy, "https://a.hooks.example:8443/done?x=1", transport) is True
    (sent,) = transport.requests
    assert sent.url.host == PUBLIC and sent.url.port == 8443  # no second lookup: pinned
    assert sent.url.raw_path == b"/done?x=1"
    assert sent.headers["Host"] == "a.hooks.example:8443"
    assert sent.extensions["sni_hostname"] == "a.hooks.example"  # TLS checks the name


def test_a_redirect_is_not_followed_nor_retried() -> None:
    transport = Recorder(302)
    policy = CallbackPolicy([".hooks.example"], resolver=fixed(PUBLIC))
    assert deliver(policy, "https://a.hooks.example/x", transport) is False
    assert len(transport.requests) == 1
    assert all(r.url.host == PUBLIC for r in transport.requests)


def test_a_target_that_fails_is_retried_then_given_up() -> None:
    policy = CallbackPolicy([".hooks.example"], resolver=fixed(PUBLIC))
    recovering = Recorder(503, 204)
    assert deliver(policy, "https://a.hooks.example/x", recovering) is True
    assert len(recovering.requests) == 2
    down = Recorder(503)
    assert deliver(policy, "https://a.hooks.example/x", down) is False
    assert len(down.requests) == 3  # max_attempts


def test_a_port_the_allowlist_no_longer_names_is_refused_at_send_time_too() -> None:
    """A job submitted before the operator narrowed the list keeps its URL until it is sent."""
    policy = CallbackPolicy(["serverpod"], resolver=fixed("172.18.0.5"))
    transport = Recorder()
    with pytest.raises(CallbackRefused, match="not allowed on port 8080"):
        asyncio.run(policy.pin("http://serverpod:8080/x"))
    assert deliver(policy, "http://serverpod:8080/x", transport) is False
    assert transport.requests == []


BACKENDS = zone(
    triton=["172.18.0.3"],
    redis=["172.18.0.4", "fd00:18::4"],
    serverpod=["172.18.0.5"],
    alias=["172.18.0.3"],  # a name an attacker pointed at Triton's address
    mapped=["::ffff:172.18.0.4"],
)


def backends_policy(*allowed: str) -> CallbackPolicy:
    return CallbackPolicy(
        allowed, backend_hosts=["triton", "redis", "triton-3.triton"], resolver=BACKENDS
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://triton:8003/v2/repository/models/qwen_image_edit/unload",
        "http://triton:8000/v2/repository/models/qwen_image_edit/unload",
        "http://redis:6379/",
        "http://alias:8000/v2/repository/models/qwen_image_edit/unload",
        "http://mapped:6379/",
    ],
)
def test_the_gateways_own_backends_are_refused_even_when_allowlisted(url: str) -> None:
    policy = backends_policy("triton:8000|8003", "redis:6379", "alias:8000", "mapped:6379")
    transport = Recorder()

    assert policy.check_url(url) == url  # the operator listed it
    with pytest.raises(CallbackRefused, match="the gateway's own backends"):
        asyncio.run(policy.pin(url))
    assert deliver(policy, url, transport) is False
    assert transport.requests == []


def test_a_receiver_beside_the_backends_still_gets_its_callback() -> None:
    """Only the backends' own addresses are refused; a backend name that does not resolve now
    (a Triton pod scaled away: triton-3.triton) leaves nothing to refuse and blocks nothing."""
    transport = Recorder()
    assert deliver(backends_policy("serverpod:8080"), "http://serverpod:8080/done", transport)
    assert [r.url.host for r in transport.requests] == ["172.18.0.5"]


def test_the_app_hands_the_policy_the_hosts_of_triton_urls_and_redis_url() -> None:
    settings = Settings.model_validate(
        {
            "TRITON_URLS": "triton-0.triton:8001,10.0.0.7:8001,[fd00::3]:8001",
            "REDIS_URL": "redis://:secret@redis:6379/0",
            "WEBHOOK_ALLOWED_HOSTS": "serverpod:8080",
            "GATEWAY_API_KEYS": "k",
        }
    )
    policy, sender = _webhooks(settings)
    asyncio.run(sender.close())
    assert policy.backend_hosts == ("triton-0.triton", "10.0.0.7", "fd00::3", "redis")


# An IPv4 address carried inside an IPv6 one, spelled out by hand. Python reads the same IPv4
# address out of the 6to4 and Teredo spellings (.sixtofour, .teredo); NAT64 has it last.
CARRIED = {
    "127.0.0.1": ("a loopback address", "serverpod"),
    "10.0.0.1": ("a private address", ".hooks.example"),  # a suffix entry must be public
    "169.254.169.254": ("a cloud metadata address", "serverpod"),
}


@pytest.mark.parametrize(
    ("address", "ipv4"),
    [
        ("2002:7f00:1::1", "127.0.0.1"),  # 6to4
        ("2002:a00:1::1", "10.0.0.1"),
        ("2002:a9fe:a9fe::1", "169.254.169.254"),
        ("64:ff9b:1::7f00:1", "127.0.0.1"),  # NAT64, local-use prefix
        ("64:ff9b:1::a00:1", "10.0.0.1"),
        ("64:ff9b:1::a9fe:a9fe", "169.254.169.254"),
        ("2001:0:5db8:d822::80ff:fffe", "127.0.0.1"),  # Teredo client (inverted)
        ("2001:0:5db8:d822::f5ff:fffe", "10.0.0.1"),
        ("2001:0:5db8:d822::5601:5601", "169.254.169.254"),
        ("2001:0:7f00:1::a247:27dd", "127.0.0.1"),  # Teredo server
        ("2001:0:a00:1::a247:27dd", "10.0.0.1"),
        ("2001:0:a9fe:a9fe::a247:27dd", "169.254.169.254"),
    ],
)
def test_an_ipv4_address_inside_an_ipv6_one_is_judged_as_itself(address: str, ipv4: str) -> None:
    why, entry = CARRIED[ipv4]
    policy = CallbackPolicy([entry], resolver=fixed(address))
    host = "serverpod" if entry == "serverpod" else "a.hooks.example"
    transport = Recorder()

    with pytest.raises(CallbackRefused, match=rf"resolves to {why}.*\({ipv4}, inside {address}\)"):
        asyncio.run(policy.pin(f"http://{host}/x"))
    assert deliver(policy, f"http://{host}/x", transport) is False
    assert transport.requests == []
    carrier = ipaddress.IPv6Address(address)
    last = ipaddress.IPv4Address(int(carrier) & 0xFFFFFFFF)
    assert ipaddress.IPv4Address(ipv4) in {carrier.sixtofour, *(carrier.teredo or ()), last}


def test_an_ipv6_address_that_carries_a_public_ipv4_one_may_be_called() -> None:
    """A suffix entry must resolve to public addresses: judged by the IPv4 address inside."""
    for address in ("64:ff9b:1::5db8:d822", "2001:0:5db8:d822::a247:27dd", "2002:5db8:d822::1"):
        policy = CallbackPolicy([".hooks.example"], resolver=fixed(address))
        assert asyncio.run(policy.pin("https://a.hooks.example/x")).url.host == address


def test_azures_wire_server_is_a_metadata_address() -> None:
    policy = CallbackPolicy(["serverpod"], resolver=fixed("168.63.129.16"))
    transport = Recorder()

    assert policy.refusal(ipaddress.ip_address("168.63.129.16"), exact=True) == (
        "a cloud metadata address"
    )
    assert deliver(policy, "http://serverpod/x", transport) is False
    assert transport.requests == []


def test_metadata_addresses_are_link_local_or_listed() -> None:
    policy = CallbackPolicy(["x"], allow_loopback=True)
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"):
        assert policy.refusal(ipaddress.ip_address(address), exact=True) is not None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/y",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "/relative",
        "http://x:99999/",
    ],
)
def test_callback_urls_must_be_absolute_http(url: str) -> None:
    with pytest.raises(ApiError) as refused:
        CallbackPolicy(["x"]).check_url(url)
    assert (refused.value.status, refused.value.code) == (422, "invalid_callback_url")


def test_webhook_signature_covers_timestamp_and_body() -> None:
    signature = sign("k", "1700000000", b'{"a":1}')
    assert signature.startswith("sha256=")
    assert signature != sign("k", "1700000001", b'{"a":1}')
    assert signature != sign("k", "1700000000", b'{"a":2}')
