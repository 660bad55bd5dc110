"""The Status word is decoded bit by bit; the channel state follows the bits an operator cares about."""

from caen_fsm.states import ChannelState
from caen_fsm.status_bits import channel_state, decode


def test_flags_name_every_set_bit_lowest_first():
    assert decode(0) == []
    assert decode(1 | 2) == ["ON", "RUP"]
    assert decode((1 << 3) | (1 << 9)) == ["OVC", "INTTRIP"]
    assert decode(1 << 12) == ["BIT12"]  # undocumented bit shown, not hidden
    assert decode(None) == []


def test_ramping_channel_reads_ramp_up_even_though_on_bit_is_set():
    assert channel_state(0b011, True) == ChannelState.RAMP_UP
    assert channel_state(0b101, True) == ChannelState.RAMP_DOWN
    assert channel_state(0b100, True) == ChannelState.RAMP_DOWN  # switched off, still coming down
    assert channel_state(0b001, True) == ChannelState.ON
    assert channel_state(0, True) == ChannelState.OFF


def test_trip_dominates_everything_but_unplugged_and_connection():
    assert channel_state((1 << 9) | 1 | 2, True) == ChannelState.TRIPPED
    assert channel_state(1 << 6, True) == ChannelState.TRIPPED  # external trip
    assert channel_state((1 << 11) | (1 << 9), True) == ChannelState.UNPLUGGED
    assert channel_state(1 << 9, False) == ChannelState.DISCONNECTED
    assert channel_state(None, True) == ChannelState.DISCONNECTED


def test_over_current_alone_is_not_a_trip_yet():
    assert channel_state(1 | (1 << 3), True) == ChannelState.ON


def test_hardware_faults_are_errors():
    for bit in (10, 13, 14, 15):
        assert channel_state(1 << bit, True) == ChannelState.ERROR
