"""Webhook targets (QUALITY.md 28a): the allowlist at submit, the address check at send time, the
pinned connection, and no redirects. Nothing here is sent anywhere: a recording transport stands
where the network would be, so a refusal is seen to happen before any connection is made."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import httpx
import pytest

from gateway.errors import ApiError
from gateway.store.job_models import Job, JobStatus
from gateway.webhooks.sender import WebhookSender, sign
from gateway.webhooks.targets import CallbackPolicy, CallbackRefused, resolve

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


def fixed(*addresses: str) -> object:
    async def resolver(_host: str, _port: int) -> list[str]:
        return list(addresses)

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
    policy = CallbackPolicy(["Serverpod", ".hooks.example"])
    for url in (
        "http://serverpod:8080/done",
        "https://a.hooks.example/x",
        "https://b.a.hooks.example",
    ):
        assert policy.check_url(url) == url
    assert policy.match("hooks.example") is None  # the suffix itself is not a subdomain


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
        asyncio.run(policy.pin(f"http://{host}:8080/hook"))
    assert deliver(policy, f"http://{host}:8080/hook", transport) is False
    assert transport.requests == []  # refused before any connection


def test_the_system_resolver_reads_numeric_spellings_as_the_address_itself() -> None:
    for spelling in ("127.1", "2130706433", "0x7f000001"):
        assert asyncio.run(resolve(spelling, 80)) == ["127.0.0.1"]


def test_loopback_is_allowed_only_with_the_local_development_opt_in() -> None:
    transport = Recorder()
    policy = CallbackPolicy(["127.0.0.1"], allow_loopback=True)
    assert deliver(policy, "http://127.0.0.1:9/done", transport) is True
    assert str(transport.requests[0].url) == "http://127.0.0.1:9/done"


def test_a_name_listed_exactly_may_be_private_a_suffix_match_may_not() -> None:
    exact = CallbackPolicy(["serverpod"], resolver=fixed("172.18.0.5"))  # type: ignore[arg-type]
    suffix = CallbackPolicy([".hooks.example"], resolver=fixed("10.1.2.3"))  # type: ignore[arg-type]
    assert asyncio.run(exact.pin("http://serverpod:8080/x")).url.host == "172.18.0.5"
    with pytest.raises(CallbackRefused, match="private"):
        asyncio.run(suffix.pin("https://a.hooks.example/x"))


def test_a_name_that_resolves_to_a_forbidden_address_is_refused_dns_rebinding() -> None:
    rebinding = CallbackPolicy(  # type: ignore[arg-type]
        [".hooks.example"], resolver=fixed(PUBLIC, "127.0.0.1")
    )
    transport = Recorder()
    assert deliver(rebinding, "https://a.hooks.example/x", transport) is False
    assert transport.requests == []


def test_the_request_goes_to_the_checked_address_with_the_name_in_host_and_sni() -> None:
    transport = Recorder()
    policy = CallbackPolicy([".hooks.example"], resolver=fixed(PUBLIC))  # type: ignore[arg-type]
    assert deliver(policy, "https://a.hooks.example:8443/done?x=1", transport) is True
    (sent,) = transport.requests
    assert sent.url.host == PUBLIC and sent.url.port == 8443  # no second lookup: pinned
    assert sent.url.raw_path == b"/done?x=1"
    assert sent.headers["Host"] == "a.hooks.example:8443"
    assert sent.extensions["sni_hostname"] == "a.hooks.example"  # TLS checks the name


def test_a_redirect_is_not_followed_nor_retried() -> None:
    transport = Recorder(302)
    policy = CallbackPolicy([".hooks.example"], resolver=fixed(PUBLIC))  # type: ignore[arg-type]
    assert deliver(policy, "https://a.hooks.example/x", transport) is False
    assert len(transport.requests) == 1
    assert all(r.url.host == PUBLIC for r in transport.requests)


def test_a_target_that_fails_is_retried_then_given_up() -> None:
    policy = CallbackPolicy([".hooks.example"], resolver=fixed(PUBLIC))  # type: ignore[arg-type]
    recovering = Recorder(503, 204)
    assert deliver(policy, "https://a.hooks.example/x", recovering) is True
    assert len(recovering.requests) == 2
    down = Recorder(503)
    assert deliver(policy, "https://a.hooks.example/x", down) is False
    assert len(down.requests) == 3  # max_attempts


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
