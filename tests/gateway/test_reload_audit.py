"""Every config reload is in the audit log: through the admin API (by the admin) and by SIGHUP (by
the operator), accepted or refused with its reason."""
from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.fakes.openai import OpenAIFake
from tests.gateway.test_reload import config, write
from tests.served_process import ServedProcess

ADMIN = {"x-api-key": ADMIN_KEY}


@pytest.fixture(scope="module")
def upstream():
    with OpenAIFake(prompt_tokens=1000) as fake:
        yield fake


def reloads(url: str, count: int, timeout: float = 5.0) -> list[dict]:
    """The audit log's config reloads, oldest first, once there are `count`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(url + "/admin/audit", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        found = [e for e in answer.json()["data"] if e["action"] == "config.reload"]
        if len(found) >= count or time.monotonic() > deadline:
            return list(reversed(found))
        time.sleep(0.05)


def test_reloads_by_the_admin_api_and_by_sighup_are_audited_with_who_and_the_outcome(upstream, tmp_path):
    path = tmp_path / "gateway.yaml"
    write(path, config(upstream.url, price=1.0))
    with ServedProcess(["--config", str(path)], {"GATEWAY_DATA_DIR": str(tmp_path / "data")}) as served:
        assert httpx.post(served.url + "/admin/reload", headers=ADMIN).status_code == 200
        write(path, config(upstream.url, price=2.0))
        served.proc.send_signal(signal.SIGHUP)
        assert len(reloads(served.url, 2)) == 2  # the log's "config reloaded" may be the API's
        write(path, config(upstream.url, price=-1.0))
        served.proc.send_signal(signal.SIGHUP)
        served.wait_for("reload refused, the previous config keeps serving")

        api, by_signal, refused = reloads(served.url, 3)
    assert (api["actor"], api["via"], api["outcome"]) == ("admin", "api", "ok")
    assert (by_signal["actor"], by_signal["via"], by_signal["outcome"]) == ("operator", "signal", "ok")
    assert (refused["actor"], refused["via"], refused["outcome"]) == ("operator", "signal", "refused")
    assert "must not be negative" in refused["details"]["reason"]
