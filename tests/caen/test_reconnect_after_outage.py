"""Issue 18.6: a crate that was down for long is found again within seconds of answering.

The crate IOC is killed, left down, and started again on the same port. libca alone searches lost channels
with a period that backs off to EPICS_CA_MAX_SEARCH_PERIOD and is only reset by beacons heard through a CA
repeater, which no deployment runs: caen-fsm was connected again 6.9 s after a 10 s outage and 216.6 s after
a 300 s one. CI runs a 10 s outage on the default flavour and on the one with the most PVs (one per Status
bit), and a 75 s outage (past the 60 s search-period ceiling of this test environment) on the default flavour:
the search back-off is libca's, the same for every flavour; longer ones on demand:
``CAEN_OUTAGES_S=120,600 pytest tests/caen/test_reconnect_after_outage.py``.
"""

from __future__ import annotations

import os
import time

import pytest

TARGET_S = 5.0
LONG_OUTAGES_S = [75.0] + [float(s) for s in os.environ.get("CAEN_OUTAGES_S", "").split(",") if s.strip()]
OUTAGES_S = [10.0, *LONG_OUTAGES_S]

pytestmark = pytest.mark.timeout(int(max(OUTAGES_S)) + 120)


@pytest.mark.parametrize("enum_labels", ["default"])
@pytest.mark.flavours("trackerdcs", "slac-caenhvasyn")  # the default and the most PVs (one per Status bit)
def test_connected_within_5_s_of_the_crate_answering_after_a_short_outage(caen, operator, crate, interlock):
    reconnect_after(10.0, operator, crate, interlock)


@pytest.mark.parametrize("enum_labels", ["default"])
@pytest.mark.flavours("trackerdcs")
@pytest.mark.parametrize("outage_s", LONG_OUTAGES_S, ids=lambda s: f"{s:g}s")
def test_connected_within_5_s_of_the_crate_answering_after_a_long_outage(caen, operator, crate, interlock, outage_s):
    reconnect_after(outage_s, operator, crate, interlock)


def reconnect_after(outage_s: float, operator, crate, interlock) -> None:
    """Kill the crate's IOC, leave it down ``outage_s``, start it again: caen-fsm must be back within 5 s."""
    crate.kill()
    operator.wait_for("caen/status", lambda m: m.json()["state"] == "DISCONNECTED", timeout=15)
    time.sleep(outage_s)
    interlock.ok()  # keep the interlock's status fresh across a long outage
    crate.start()  # returns once the IOC prints that it is serving
    answered = time.time()
    status = operator.wait_for(
        "caen/status",
        lambda m: m.received >= answered and m.json()["connected"] and m.json()["state"] == "OFF",
        timeout=TARGET_S + 60,
    )
    took = status.received - answered
    print(f"outage {outage_s:g} s: connected {took:.2f} s after the IOC answered")
    assert took < TARGET_S, f"connected {took:.1f} s after the IOC answered (outage {outage_s:g} s)"
