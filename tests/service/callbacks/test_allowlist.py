"""Which callback hosts GRADWATCH_CALLBACK_ALLOWED_HOSTS admits."""

from __future__ import annotations

from service.callbacks.allowlist import host_allowed
from service.config import Settings

LOOPBACK = Settings().callback_host_list


def test_the_default_admits_loopback_only() -> None:
    assert LOOPBACK == ["127.0.0.1", "localhost", "::1"]
    for url in ("http://127.0.0.1:9000/hook", "http://localhost/x", "http://[::1]:8080/", "https://LOCALHOST./"):
        assert host_allowed(url, LOOPBACK), url
    for url in ("http://10.0.0.1/", "http://169.254.169.254/latest/meta-data", "http://127.0.0.1.nip.io/",
                "http://localhost.evil.example/", "http://evil.example/?h=127.0.0.1"):
        assert not host_allowed(url, LOOPBACK), url


def test_a_leading_dot_admits_subdomains_only() -> None:
    allowed = Settings(callback_allowed_hosts=" .lab.example , hooks.ci.example").callback_host_list
    assert host_allowed("https://airflow.lab.example/cb", allowed)
    assert host_allowed("https://a.b.lab.example/cb", allowed)
    assert host_allowed("https://hooks.ci.example/cb", allowed)
    assert not host_allowed("https://evillab.example/cb", allowed)
    assert not host_allowed("https://lab.example.evil/cb", allowed)
    assert not host_allowed("https://x.hooks.ci.example/cb", allowed)
    assert not host_allowed("http://127.0.0.1/", allowed)
