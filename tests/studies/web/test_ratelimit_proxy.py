"""Rate limits behind proxies: the client address from trusted hops, per-study entry counters.

The client address is the ``XAISTUDY_TRUSTED_PROXY_HOPS``-th entry from the right of
``X-Forwarded-For`` (each trusted proxy appends the address it saw), so what a client writes in
its own header never changes its key; entry counters are per (study, client address), unknown
slugs count apart, and ``Study.entry_rate_limit`` overrides the site's limit for one study.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory
from django.urls import reverse

from studies.fixtures.builders import make_worker_study
from studies.models import Study
from studies.web.ratelimit import client_address

ROOT = Path(__file__).resolve().parents[3]
PROXY = "10.0.0.2"  # the address gunicorn sees: the (innermost) proxy
OUTER_PROXY = "10.0.0.1"
CLIENT = "198.51.100.7"
OTHER_CLIENT = "198.51.100.8"


def _address(settings, hops: int, remote: str = PROXY, forwarded: str | None = None) -> str:
    settings.XAISTUDY_TRUSTED_PROXY_HOPS = hops
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_address(RequestFactory().get("/", **extra))


# --- the client address -------------------------------------------------------------------


def test_without_trusted_proxies_the_key_is_the_peer_and_the_header_is_ignored(settings):
    assert _address(settings, 0, remote=CLIENT) == CLIENT
    assert _address(settings, 0, remote=CLIENT, forwarded="203.0.113.1") == CLIENT


@pytest.mark.parametrize("spoofed", [None, "1.2.3.4", "1.2.3.4, 5.6.7.8", "garbage, ::1", "unknown"])
def test_behind_one_proxy_the_key_is_what_the_proxy_saw_whatever_the_client_wrote(settings, spoofed):
    # The proxy appends the peer it saw (the client) to whatever header the client sent.
    header = CLIENT if spoofed is None else f"{spoofed}, {CLIENT}"
    assert _address(settings, 1, forwarded=header) == CLIENT


@pytest.mark.parametrize("spoofed", [None, "1.2.3.4", "9.9.9.9, 8.8.8.8"])
def test_behind_two_proxies_the_key_is_what_the_outer_proxy_saw(settings, spoofed):
    # client -> outer proxy (appends CLIENT) -> inner proxy (appends OUTER_PROXY) -> gunicorn (peer PROXY)
    header = f"{CLIENT}, {OUTER_PROXY}" if spoofed is None else f"{spoofed}, {CLIENT}, {OUTER_PROXY}"
    assert _address(settings, 2, forwarded=header) == CLIENT


def test_a_header_shorter_than_the_trusted_hops_falls_back_to_the_peer(settings):
    # Reached gunicorn without passing every proxy: the peer is real, the header is not ours.
    assert _address(settings, 2, remote=CLIENT, forwarded="1.2.3.4") == CLIENT
    assert _address(settings, 1, remote=CLIENT) == CLIENT
    assert _address(settings, 1, remote=CLIENT, forwarded=" , ") == CLIENT


def test_addresses_are_normalised_and_ipv6_is_keyed_by_its_64(settings):
    assert _address(settings, 1, forwarded="2001:db8:1:2:aaaa::1") == "2001:db8:1:2::"
    assert _address(settings, 1, forwarded="2001:db8:1:2:bbbb::9") == "2001:db8:1:2::"  # same /64, same counter
    assert _address(settings, 1, forwarded="2001:db8:1:3::1") == "2001:db8:1:3::"
    assert _address(settings, 1, forwarded="[2001:db8:1:2::5]:443") == "2001:db8:1:2::"
    assert _address(settings, 1, forwarded="::ffff:198.51.100.7") == CLIENT
    assert _address(settings, 1, forwarded="198.51.100.7:50123") == CLIENT
    assert _address(settings, 0, remote="2001:db8:1:2::77") == "2001:db8:1:2::"
    assert len(_address(settings, 1, forwarded="x" * 5000)) == 100


def test_the_removed_first_hop_setting_is_refused(settings):
    settings.XAISTUDY_TRUST_X_FORWARDED_FOR = True
    with pytest.raises(ImproperlyConfigured, match="XAISTUDY_TRUSTED_PROXY_HOPS"):
        client_address(RequestFactory().get("/", HTTP_X_FORWARDED_FOR="1.2.3.4"))


@pytest.mark.parametrize(
    ("env", "refused"),
    [({"XAISTUDY_TRUST_X_FORWARDED_FOR": "true"}, True), ({"XAISTUDY_TRUST_X_FORWARDED_FOR": "false"}, False),
     ({"XAISTUDY_TRUSTED_PROXY_HOPS": "-1"}, True), ({"XAISTUDY_TRUSTED_PROXY_HOPS": "2"}, False)],
)  # fmt: skip
def test_settings_refuse_to_start_with_the_removed_setting(tmp_path, env, refused):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_", "XAISTUDY_"))}
    code = "import xaistudy.settings as s; print('hops', s.XAISTUDY_TRUSTED_PROXY_HOPS)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**clean, "XAISTUDY_VAR_DIR": str(tmp_path), **env})  # fmt: skip
    assert (result.returncode != 0) == refused, result.stderr
    if refused:
        assert "XAISTUDY_TRUSTED_PROXY_HOPS" in result.stderr
    else:
        assert result.stdout.startswith("hops ")


# --- entry counters over HTTP ---------------------------------------------------------------


def _study(**changes) -> Study:
    study = make_worker_study(n_main=4, with_files=False)
    Study.objects.filter(pk=study.pk).update(entries_per_client=0, **changes)  # the per-client cap is not under test
    study.refresh_from_db()
    return study


def _enter(study_or_slug: Study | str, client_ip: str, *, spoof: str = "", hops: int = 1) -> int:
    """One link entry from a fresh browser at ``client_ip``, through ``hops`` appending proxies."""
    slug = study_or_slug if isinstance(study_or_slug, str) else study_or_slug.slug
    chain = [spoof] if spoof else []
    chain.append(client_ip)
    chain += [OUTER_PROXY][: hops - 1]
    return Client().get(reverse("studies:worker-entry", args=[slug]), REMOTE_ADDR=PROXY,
                        HTTP_X_FORWARDED_FOR=", ".join(chain)).status_code  # fmt: skip


def _enter_api(study: Study, client_ip: str, *, spoof: str = "") -> int:
    header = f"{spoof}, {client_ip}" if spoof else client_ip
    return Client().post(f"/api/v1/studies/{study.slug}/enter", "{}", content_type="application/json",
                         REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=header).status_code  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("hops", [1, 2])
def test_entry_limit_is_per_client_behind_proxies_and_spoofing_does_not_reset_it(settings, hops):
    settings.XAISTUDY_TRUSTED_PROXY_HOPS = hops
    settings.XAISTUDY_RATE_LIMITS = {"entry": (2, 60)}
    study = _study()
    codes = [_enter(study, CLIENT, spoof=f"203.0.113.{i}", hops=hops) for i in range(4)]
    assert codes[:2] == [302, 302]
    assert codes[2:] == [429, 429], "a new spoofed first hop must not buy a new counter"
    # Another client behind the same proxies keeps its own budget (one proxy address, many counters).
    assert _enter(study, OTHER_CLIENT, hops=hops) == 302


@pytest.mark.django_db
def test_entry_counters_are_per_study(settings):
    settings.XAISTUDY_TRUSTED_PROXY_HOPS = 1
    settings.XAISTUDY_RATE_LIMITS = {"entry": (2, 60)}
    first, second = _study(), _study()
    assert [_enter(first, CLIENT) for _ in range(3)] == [302, 302, 429]
    assert [_enter(second, CLIENT) for _ in range(3)] == [302, 302, 429]


@pytest.mark.django_db
def test_unknown_slugs_do_not_spend_a_studys_budget(settings):
    settings.XAISTUDY_TRUSTED_PROXY_HOPS = 1
    settings.XAISTUDY_RATE_LIMITS = {"entry": (2, 60), "entry-unknown": (3, 60)}
    study = _study()
    assert [_enter("no-such-study", CLIENT) for _ in range(4)] == [404, 404, 404, 429]  # limited apart
    assert [_enter(study, CLIENT) for _ in range(3)] == [302, 302, 429]  # the full budget is left


@pytest.mark.django_db
def test_a_study_can_raise_or_lower_its_entry_limit(settings):
    settings.XAISTUDY_TRUSTED_PROXY_HOPS = 1
    settings.XAISTUDY_RATE_LIMITS = {"entry": (2, 60)}
    lab = _study(entry_rate_limit=5)  # a lab whose participants share one address
    strict = _study(entry_rate_limit=1)
    default = _study()
    assert [_enter(lab, CLIENT) for _ in range(6)] == [302] * 5 + [429]
    assert [_enter(strict, CLIENT) for _ in range(2)] == [302, 429]
    assert [_enter(default, CLIENT) for _ in range(3)] == [302, 302, 429]


@pytest.mark.django_db
def test_api_entry_shares_the_per_study_counter_and_the_override(settings):
    settings.XAISTUDY_TRUSTED_PROXY_HOPS = 1
    settings.XAISTUDY_RATE_LIMITS = {"entry": (2, 60)}
    study, lab = _study(), _study(entry_rate_limit=4)
    assert _enter(study, CLIENT) == 302  # the HTML entry and the API count in one budget
    assert [_enter_api(study, CLIENT, spoof=f"203.0.113.{i}") for i in range(2)] == [201, 429]
    assert _enter_api(study, OTHER_CLIENT) == 201
    assert [_enter_api(lab, CLIENT) for _ in range(5)] == [201] * 4 + [429]
    unknown = Client().post("/api/v1/studies/no-such-study/enter", "{}", content_type="application/json",
                            REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=CLIENT)  # fmt: skip
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "not_found"
