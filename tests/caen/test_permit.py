"""The interlock permit caen-fsm holds itself: power-on only while interlock/status is present, fresh and OK."""

import json

from caen_fsm.permit import InterlockSettings, Permit, PermitState

T0 = 1_800_000_000.0  # wall clock of the tests (seconds since the epoch)


def status(state="OK", ts=T0, **reasons):
    details = [{"reason": r.replace("__", ":"), "action": a} for r, a in reasons.items()]
    return json.dumps({"state": state, "active": [d["reason"] for d in details], "details": details, "ts": ts}).encode()


def test_nothing_heard_is_no_permit():
    view = Permit().view(0.0, T0)
    assert view.state == PermitState.MISSING and not view.granted and view.silent
    assert (
        view.refusal("lv_on")
        == "lv_on refused: interlock MISSING; no message on interlock/status (is the interlock running?)"
    )


def test_a_fresh_ok_status_is_the_permit_and_it_expires():
    permit = Permit(InterlockSettings(stale_s=90))
    permit.on_status(status(), now_mono=100.0)
    assert permit.view(100.0, T0).granted
    assert permit.view(189.0, T0 + 89).granted
    stale = permit.view(191.0, T0 + 91)
    assert stale.state == PermitState.STALE and not stale.granted and "91 s old" in stale.detail


def test_an_old_retained_status_is_stale_at_once_even_when_just_received():
    permit = Permit(InterlockSettings(stale_s=90))
    permit.on_status(status(ts=T0 - 600), now_mono=5.0)
    assert permit.view(5.0, T0).state == PermitState.STALE


def test_a_status_from_a_clock_in_the_future_still_ages_by_its_arrival():
    permit = Permit(InterlockSettings(stale_s=90))
    permit.on_status(status(ts=T0 + 3600), now_mono=0.0)
    assert permit.view(0.0, T0).granted
    assert permit.view(100.0, T0 + 100).state == PermitState.STALE


def test_offline_and_unreadable_status_withhold_the_permit():
    permit = Permit()
    permit.on_status(status(), 0.0)
    permit.on_availability(b"offline")
    assert permit.view(0.0, T0).state == PermitState.OFFLINE
    permit.on_availability(b"online")
    assert permit.view(0.0, T0).granted
    for bad in (b"{not json", b"[]", b'{"state": "OK"}', b'{"state": "OK", "ts": "now"}', b'{"ts": 1}'):
        permit.on_status(bad, 0.0)
        assert permit.view(0.0, T0).state == PermitState.INVALID, bad
    permit.on_status(b"", 0.0)  # retained status deleted
    assert permit.view(0.0, T0).state == PermitState.MISSING


def test_latched_reasons_are_named_and_chiller_reasons_demand_lv_off():
    permit = Permit()
    permit.on_status(status("TRIPPED", chiller_not_running="hv_off+lv_off", dewpoint__box="hv_off"), 0.0)
    view = permit.view(0.0, T0)
    assert view.state == PermitState.TRIPPED and view.demands_off and not view.granted
    assert view.reasons == ("chiller_not_running", "dewpoint:box") and view.lv_reasons == ("chiller_not_running",)
    assert "latched: chiller_not_running, dewpoint:box" in view.refusal("hv_on")
    permit.on_status(status("ACK_PENDING", dewpoint__box="hv_off"), 0.0)
    assert permit.view(0.0, T0).lv_reasons == () and permit.view(0.0, T0).demands_off


def test_reasons_without_details_fall_back_on_their_names_and_unknown_states_count_as_tripped():
    permit = Permit()
    doc = {"state": "WEIRD", "active": ["bath_temp_high", "env_stale:room"], "ts": T0}
    permit.on_status(json.dumps(doc).encode(), 0.0)
    view = permit.view(0.0, T0)
    assert view.state == PermitState.TRIPPED and view.lv_reasons == ("bath_temp_high",)


def test_a_bench_without_interlock_is_an_explicit_switch():
    view = Permit(InterlockSettings(required=False)).view(0.0, T0)
    assert view.state == PermitState.NOT_REQUIRED and view.granted and not view.silent


# ------------------------------------------------------------------ the chiller's own status, followed directly
def chiller(state="RUNNING", ts=T0, connected=True):
    return json.dumps({"state": state, "connected": connected, "bath_temp": -20.0, "ts": ts}).encode()


def test_a_fresh_chiller_status_that_is_not_running_demands_hv_and_lv_off_before_the_interlock_says_so():
    permit = Permit()
    permit.on_status(status(), 0.0)
    permit.on_chiller(chiller("STOPPED"), 0.0)
    view = permit.view(0.0, T0)
    assert view.state == PermitState.OK  # the interlock has not relayed it yet ...
    assert view.demands_off and not view.granted  # ... caen-fsm acts on what the chiller itself says
    assert view.reasons == ("chiller_not_running",) and view.lv_reasons == ("chiller_not_running",)
    assert "chiller not running (julabo/status: state STOPPED, seen by caen-fsm)" in view.refusal("lv_on")
    permit.on_status(status("TRIPPED", chiller_not_running="hv_off+lv_off"), 0.0)  # the interlock follows
    assert permit.view(0.0, T0).reasons == ("chiller_not_running",)  # one reason, not two
    permit.on_chiller(chiller("RUNNING"), 0.0)
    still = permit.view(0.0, T0)  # running again: the interlock's latch (acknowledgement) decides now
    assert still.state == PermitState.TRIPPED and not still.chiller_fault and not still.granted


def test_every_chiller_state_but_running_and_a_lost_link_count_as_not_running():
    permit = Permit()
    permit.on_status(status(), 0.0)
    for state, connected in (("ALARM", True), ("ERROR", True), ("DISCONNECTED", False), ("RUNNING", False)):
        permit.on_chiller(chiller(state, connected=connected), 0.0)
        assert permit.view(0.0, T0).chiller_fault, (state, connected)
    permit.on_chiller(chiller("RUNNING"), 0.0)
    assert permit.view(0.0, T0).granted


def test_a_stale_unreadable_or_deleted_chiller_status_is_left_to_the_interlock():
    permit = Permit(InterlockSettings(stale_s=90))
    permit.on_status(status(), 0.0)
    permit.on_chiller(chiller("STOPPED", ts=T0 - 600), 0.0)  # yesterday's retained status
    assert permit.view(0.0, T0).granted
    for bad in (b"{not json", b"[]", b'{"state": "STOPPED"}', b""):
        permit.on_chiller(chiller("STOPPED"), 0.0)
        permit.on_chiller(bad, 0.0)
        assert permit.view(0.0, T0).granted, bad


def test_a_bench_without_interlock_does_not_follow_the_chiller_either():
    permit = Permit(InterlockSettings(required=False))
    permit.on_chiller(chiller("STOPPED"), 0.0)
    assert permit.view(0.0, T0).granted
