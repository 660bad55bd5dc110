"""The start-up self-check against a real IOC: what caen-fsm learnt is in its health, and a config that does not
match the IOC (a PV it does not have) refuses the start with one clear message and exit status 3."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from conftest import CONFIG, CaenProcess

pytestmark = pytest.mark.timeout(60)


def test_what_was_learnt_from_the_ioc_is_published_in_health(caen, operator, crate, flavour):
    health = operator.wait_for(
        "caen/health", lambda m: (m.json() or {}).get("selfcheck") is not None, timeout=15
    ).json()
    check = health["selfcheck"]
    assert check["ok"] is True and check["problems"] == []
    assert health["flavour"].startswith(flavour) and check["status_form"] == crate.look.status
    hv = next(g for g in check["learned"] if g["kind"] == "hv")
    assert sorted(hv["channels"]) == ["M0_hv", "M1_hv", "M2_hv"]
    assert [w.lower() for w in hv["labels"]["Pw"]] in (
        [w.lower() for w in crate.look.words()["Pw"]],
        [w.lower() for w in reversed(crate.look.words()["Pw"])],
    )
    assert hv["egu"] == {"VMon": "V", "IMon": "uA"}
    assert hv["readbacks"]["read"]["VMon"] == crate.pv("12:000:VMon")
    assert ("highest-bit" in json.dumps(check["warnings"])) == (crate.look.status == "highest")
    assert "IOC self-check: flavour" in caen.log()
    assert operator.status("caen")["status_form"] == crate.look.status  # said in the crate's status too


@pytest.mark.flavours("trackerdcs")
def test_a_pv_the_ioc_does_not_have_refuses_the_start_naming_it(broker, crate, tmp_path, operator, interlock):
    config = {
        **CONFIG,
        "flavour": {"base": "trackerdcs", "names": {"Temp": "Temperature"}},
        "service": {**CONFIG["service"], "connect_timeout_s": 1.0},
    }
    path = tmp_path / "wrong.yml"
    path.write_text(yaml.safe_dump(config))
    events: list[dict] = []
    operator.watch("caen/event", lambda m: events.append(m.json()))
    svc = CaenProcess(broker, path, tmp_path / "caen-fsm.log")
    svc.start()
    try:
        assert svc.proc.wait(timeout=30) == 3
    finally:
        svc.stop()
    log = svc.log()
    assert "IOC self-check failed (flavour trackerdcs+site): teststand:00:000:Temperature: no such PV" in log
    assert "refusing to run" in log
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not any(e["kind"] == "selfcheck_failed" for e in events):
        time.sleep(0.05)
    failed = [e for e in events if e["kind"] == "selfcheck_failed"]
    assert failed and failed[0]["severity"] == "alarm" and "Temperature" in failed[0]["message"]
    assert crate.get("SIM:PwOnPuts") == 0
