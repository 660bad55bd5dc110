"""The simulated crate behaves like the manual says (pure model, ticked by hand).

Expected Status words are literal numbers from the CAEN manual's channel Status bits (bit 0 ON, 1 RUp,
2 RDw, 3 OvC, 4 OvV, 5 UnV, 6 ExtTrip, 7 MaxV, 8 ExtDis, 9 IntTrip, 10 CalErr, 11 Unplugged, 13 OvP,
14 PwFail, 15 TempErr), never the simulator's own constants: a wrong bit in the simulator must fail here.
"""

from caen_sim.model import Crate, SimChannel, parse_slots

ON = 1  # bit 0
RUP = 2  # bit 1
RDW = 4  # bit 2
OVC = 8  # bit 3
INTTRIP = 512  # bit 9
UNPLUGGED = 2048  # bit 11


def run(ch: SimChannel, seconds: float, dt: float = 0.01) -> None:
    for _ in range(round(seconds / dt)):
        ch.tick(dt)


def test_hv_ramps_at_rup_and_rdwn():
    ch = SimChannel("hv", V0Set=100.0, I0Set=10.0, RUp=50.0, RDWn=25.0)
    ch.write("Pw", 1)
    assert ch.Status == ON | RUP
    run(ch, 1.0)
    assert 49 < ch.VMon < 51
    run(ch, 1.1)
    assert ch.VMon == 100.0 and ch.Status == ON
    ch.write("Pw", 0)
    run(ch, 1.0)
    assert 74 < ch.VMon < 76 and ch.Status == RDW


def test_over_current_trips_after_trip_seconds_and_latches():
    ch = SimChannel("hv", V0Set=100.0, I0Set=1.0, RUp=1000.0, Trip=0.5, load=10.0)  # 10 uA wanted
    ch.write("Pw", 1)
    run(ch, 0.3)
    assert ch.Status == ON | OVC and ch.IMon == 1.0 and ch.VMon <= 10.0  # constant current, voltage sags
    run(ch, 0.3)
    assert ch.Status == INTTRIP and not ch.Pw and ch.VMon == 0.0  # PDwn Kill
    assert not ch.write("Pw", 1)  # refused until ClearAlarm
    ch.clear_alarm()
    assert ch.write("Pw", 1)


def test_trip_with_pdwn_ramp_ramps_down_at_rdwn():
    ch = SimChannel("hv", V0Set=100.0, I0Set=10.0, RUp=1000.0, RDWn=50.0, Trip=0.1, PDwn=1)
    ch.write("Pw", 1)
    run(ch, 0.2)
    ch.force_trip = True
    run(ch, 0.2)
    assert ch.tripped and ch.Status == INTTRIP | RDW and 80 < ch.VMon < 100


def test_trip_1000_means_never():
    ch = SimChannel("hv", V0Set=100.0, I0Set=0.01, RUp=1000.0, Trip=1000.0)
    ch.write("Pw", 1)
    run(ch, 3.0)
    assert not ch.tripped and ch.Status == ON | OVC


def test_unplugged_reads_zero_and_refuses_power():
    ch = SimChannel("lv")
    ch.unplugged = True
    assert not ch.write("Pw", 1)
    run(ch, 0.1)
    assert ch.Status == UNPLUGGED and ch.VMon == 0


def test_lv_ramp_time_and_load_current():
    ch = SimChannel("lv", V0Set=12.0, I0Set=5.0, RUpTime=0.5, load=6.0)
    ch.write("Pw", 1)
    run(ch, 0.25)
    assert 5.5 < ch.VMon < 6.5
    run(ch, 0.3)
    assert ch.VMon == 12.0 and abs(ch.IMon - 2.0) < 1e-9


def test_crate_layout_and_pw_on_counter():
    crate = Crate("x", parse_slots("0-1:lv:8,12:hv:12"))
    assert len(crate.channels) == 28
    crate.write(12, 3, "Pw", 1)
    crate.write(12, 3, "Pw", 0)
    assert crate.pw_on_puts == 1
