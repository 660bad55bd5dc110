"""Hostile and malformed commands over MQTT to every command topic of the real services.

Hypothesis generates well over 10,000 payloads: garbage bytes, invalid UTF-8, JSON that is not an object,
objects with unknown or wrongly typed arguments, out-of-range, huge and infinite numbers, unicode, path
traversal, bad ids and deadlines, deeply nested JSON, 1 MB payloads and unknown commands. Each is published
with an MQTT v5 correlation id so its reply can be matched. What the operator gets: one clear error reply
for each, no service crashes or logs a traceback, and the simulated devices were told nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from trackerdcs.client import DcsClient

from .conftest import record

pytestmark = pytest.mark.timeout(240)

EXAMPLES = 10_500
MAX_OUTSTANDING = 300

COMMANDS = {
    "caen": ["lv_on", "lv_off", "hv_on", "hv_off", "set", "clear_alarms", "refresh", "reconnect"],
    "julabo": ["start", "stop", "set_setpoint", "select_setpoint", "control_sensor", "pump_stage", "refresh",
               "reconnect"],
    "ph2acf": ["start", "abort", "status", "runs", "show"],
}  # fmt: skip
ARGS = {
    "lv_on": {"modules"}, "lv_off": {"modules"}, "hv_on": {"modules"}, "hv_off": {"modules"},
    "set": {"channel", "module", "kind", "param", "value"},
    "set_setpoint": {"index", "value"}, "select_setpoint": {"index"}, "control_sensor": {"sensor"},
    "pump_stage": {"stage"},
    "start": {"calibration", "config_file", "modules", "operator", "comment"},
    "runs": {"limit"}, "show": {"run"},
}  # fmt: skip
RESERVED = {"id", "deadline"}
MODULES = ["M0000", "M0001", "M0002"]
CHANNELS = [f"{m}_{k}" for m in MODULES for k in ("lv", "hv")]

# ---------------------------------------------------------------------------------------------- strategies
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
)  # fmt: skip
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
#: numbers JSON can carry that no command accepts where a bounded number is expected
huge_numbers = st.sampled_from(["1e999", "-1e999", "1e308", "-1e308", "123456789012345678901234567890"])
not_a_list = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
                       st.dictionaries(st.text(max_size=5), scalars, max_size=3))  # fmt: skip
not_a_string = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), st.lists(scalars, max_size=3),
                         st.dictionaries(st.text(max_size=5), scalars, max_size=3))  # fmt: skip
unknown_name = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() not in MODULES + CHANNELS)


class Raw(str):
    """A JSON fragment inserted verbatim (numbers JSON can spell but Python cannot produce, e.g. 1e999)."""


def encode(obj: dict) -> bytes:
    """JSON with :class:`Raw` values spliced in verbatim."""
    raws: dict[str, str] = {}

    def swap(value):
        if isinstance(value, Raw):
            key = f"\x00raw{len(raws)}\x00"
            raws[key] = str(value)
            return key
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(obj), ensure_ascii=False)
    for key, raw in raws.items():
        text = text.replace(json.dumps(key, ensure_ascii=False), raw)
    return text.encode("utf-8", errors="surrogatepass")


def bad_number(lo: float, hi: float, integer: bool = False) -> st.SearchStrategy:
    """Anything but a number in [lo, hi] (an integer there when ``integer``)."""
    out_of_range = st.one_of(st.floats(max_value=lo, exclude_max=True, allow_nan=False),
                             st.floats(min_value=hi, exclude_min=True, allow_nan=False),
                             huge_numbers.map(Raw))  # fmt: skip
    wrong = [out_of_range, not_a_string.filter(lambda v: not isinstance(v, (int, float)) or isinstance(v, bool)),
             st.text(max_size=10)]  # fmt: skip
    if integer:
        wrong.append(st.floats(min_value=lo, max_value=hi).filter(lambda v: v != int(v)))
    return st.one_of(*wrong)


@st.composite
def bad_args(draw, service: str, command: str) -> dict:
    """Arguments that this command must refuse (each draw contains at least one invalid argument)."""
    if command in ("lv_on", "lv_off", "hv_on", "hv_off"):
        modules = draw(st.one_of(not_a_list, st.lists(not_a_string, min_size=1, max_size=3),
                                 st.lists(unknown_name, min_size=1, max_size=3), st.just([])))  # fmt: skip
        return {"modules": modules}
    if command == "set":
        channel = draw(st.sampled_from(CHANNELS))
        lv = channel.endswith("_lv")
        choice = draw(st.integers(0, 4))
        if choice == 0:  # a real channel and a real parameter, a hostile value
            param = draw(st.sampled_from(["V0Set", "I0Set", "Trip", "RUpTime" if lv else "RUp", "TripInt"]))
            limit = {"V0Set": 14.0 if lv else 600.0, "I0Set": 5.0 if lv else 20.0, "Trip": 1000.0}.get(param)
            number = bad_number(0.0, limit) if limit else st.floats(max_value=0, exclude_max=True, allow_nan=False)
            value = draw(st.one_of(number, st.booleans(), st.lists(scalars, max_size=2),
                                   st.dictionaries(st.text(max_size=3), scalars)))  # fmt: skip
            return {"channel": channel, "param": param, "value": value}
        if choice == 1:  # enum parameter with a label that does not exist
            label = draw(st.text(max_size=12).filter(lambda s: s.lower() not in ("kill", "ramp", "high", "low")))
            return {"channel": CHANNELS[1], "param": draw(st.sampled_from(["PDwn", "ImRange"])), "value": label}
        if choice == 2:  # Pw may only change through lv_on/hv_on...
            return {"channel": channel, "param": "Pw", "value": draw(st.sampled_from([1, "On", 1.0]))}
        if choice == 3:  # unknown channel / module, or a bad kind
            if draw(st.booleans()):
                return {"channel": draw(unknown_name), "param": "V0Set", "value": 1.0}
            return {"module": MODULES[0], "kind": draw(st.text(max_size=5).filter(lambda s: s not in ("lv", "hv"))),
                    "param": "V0Set", "value": 1.0}  # fmt: skip
        return {"channel": channel, "param": draw(st.text(max_size=12)), "value": 1.0}  # unknown parameter
    if command == "set_setpoint":
        index, value = draw(st.integers(1, 3)), draw(st.floats(-30.0, 40.0))
        if draw(st.booleans()):
            index = draw(bad_number(1, 3, integer=True))
        else:
            value = draw(bad_number(-30.0, 40.0))
        return {"index": index, "value": value}
    if command in ("select_setpoint", "pump_stage"):
        hi = 3 if command == "select_setpoint" else 4
        return {"index" if command == "select_setpoint" else "stage": draw(bad_number(1, hi, integer=True))}
    if command == "control_sensor":
        return {"sensor": draw(st.one_of(not_a_string, st.text(max_size=12).filter(
            lambda s: s not in ("internal", "external"))))}  # fmt: skip
    if command == "start":
        args = {"calibration": "pixelalive", "operator": "fuzz"}
        choice = draw(st.integers(0, 3))
        if choice == 0:
            args["calibration"] = draw(st.one_of(not_a_string, st.text(max_size=15)).filter(
                lambda s: s not in ("pixelalive", "noise", "scurve", "gain", "threqu", "gainopt", "thrmin", "thradj",
                                    "latency", "injdelay", "clkdelay", "physics")))  # fmt: skip
        elif choice == 1:
            args["operator"] = draw(st.one_of(not_a_string, st.text(" \t\n\r", max_size=5)))
        elif choice == 2:
            args["config_file"] = draw(st.sampled_from(["/etc/passwd", "../../../etc/shadow", "CMSIT.xml\x00.txt",
                                                        "/proc/self/environ", "..", "no-such.xml", "/"]))  # fmt: skip
        else:
            args["modules"] = draw(st.one_of(not_a_list, st.lists(not_a_string, min_size=1, max_size=3)))
        return args
    if command == "runs":
        return {"limit": draw(bad_number(1, 500, integer=True))}
    if command == "show":
        return {"run": draw(bad_number(0, 1e18, integer=True))}
    return {}  # commands without arguments: only a poison makes them invalid


@st.composite
def poison(draw, command: str) -> dict:
    """One thing that makes any payload of ``command`` invalid."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        key = draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in ARGS.get(command, set()) | RESERVED))
        return {key: draw(json_values)}
    if kind == 1:
        return {"id": draw(st.one_of(st.floats(allow_nan=False), st.booleans(), st.lists(scalars, max_size=2),
                                     st.dictionaries(st.text(max_size=3), scalars, max_size=2),
                                     st.text(min_size=201, max_size=300)))}  # fmt: skip
    return {"deadline": draw(st.one_of(st.text(max_size=10), st.booleans(), st.lists(scalars, max_size=2),
                                       st.just(Raw("1e999")), st.floats(0, 1.7e9)))}  # fmt: skip


def is_json_object(data: bytes) -> bool:
    """True for a JSON object or an empty payload (JSON whitespace only: "no arguments", which is valid)."""
    if not data.strip(b" \t\r\n"):
        return True
    try:
        return isinstance(json.loads(data), dict)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False


@st.composite
def hostile(draw) -> tuple[str, str, bytes]:
    """(service, command topic level, payload) that the service must refuse."""
    service = draw(st.sampled_from(sorted(COMMANDS)))
    command = draw(st.sampled_from(COMMANDS[service]))
    shape = draw(st.integers(0, 9))
    if shape == 0:  # bytes that are not a JSON object (garbage, invalid UTF-8, NUL, ...)
        return service, command, draw(st.binary(min_size=1, max_size=200).filter(lambda b: not is_json_object(b)))
    if shape == 1:  # valid JSON, not an object
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return service, command, json.dumps(value).encode()
    if shape == 2:  # nested deeper than allowed
        depth = draw(st.integers(17, 3000))
        inner = draw(st.sampled_from(['"x"', "1", "{}", "[]"]))
        return service, command, ('{"a":' * depth + inner + "}" * depth).encode()
    if shape == 3:  # an unknown command (any payload)
        name = draw(st.text(min_size=1, max_size=40).filter(
            lambda s: s not in COMMANDS[service] and not set(s) & set("/+#\x00") and s.isprintable()))  # fmt: skip
        return service, name, encode(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    if shape == 4:  # NaN / Infinity literals somewhere
        arg = draw(st.sampled_from(sorted(ARGS.get(command, {"value"}))))
        return service, command, f'{{"{arg}": {draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))}}}'.encode()
    args = draw(bad_args(service, command)) if command in ARGS and shape < 9 else {}
    if not args or draw(st.integers(0, 3)) == 0:
        args = {**args, **draw(poison(command))}
    if draw(st.booleans()):
        args.setdefault("id", draw(st.one_of(st.integers(0, 2**40), st.text(max_size=30))))
    return service, command, encode(args)


# ---------------------------------------------------------------------------------------------- the campaign
class Campaign:
    """Publishes payloads with correlation ids and collects the matching replies."""

    def __init__(self, client: DcsClient) -> None:
        self.client = client
        self.sent: dict[bytes, tuple[str, str, bytes]] = {}
        self.replies: dict[bytes, dict] = {}
        self.cond = threading.Condition()
        client.client.message_callback_add(client.reply_topic, self._on_reply)

    def _on_reply(self, _client, _userdata, msg) -> None:
        corr = bytes(msg.properties.CorrelationData)
        with self.cond:
            self.replies[corr] = json.loads(msg.payload)
            self.cond.notify_all()

    def send(self, service: str, command: str, payload: bytes) -> None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.sent) - len(self.replies) < MAX_OUTSTANDING, timeout=30)
        corr = f"fuzz-{len(self.sent)}".encode()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.client.reply_topic
        props.CorrelationData = corr
        self.sent[corr] = (service, command, payload)
        self.client.client.publish(f"{service}/cmd/{command}", payload, qos=1, properties=props)

    def wait_all(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.replies) >= len(self.sent), timeout=timeout)


def device_truth(stand) -> dict:
    """What the simulated devices hold: every settable crate PV, the chiller's settings, Ph2_ACF's runs."""
    chiller = stand.julabo_state()
    return {
        "crate": stand.ca_read(stand.crate_settings_pvs()),
        "chiller": {k: chiller[k] for k in ("setpoints", "active", "external_control", "running", "pump_stage")},
        "ph2acf_runs": stand.ph2acf_runs_on_device(),
    }


def test_ten_thousand_hostile_payloads_get_clear_errors_crash_nothing_and_move_no_device(stand, broker):
    before = device_truth(stand)
    with DcsClient(broker.settings("operator")) as client:
        campaign = Campaign(client)
        started = time.monotonic()

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(hostile())
        def publish(case: tuple[str, str, bytes]) -> None:
            campaign.send(*case)

        publish()
        for service in COMMANDS:  # the big ones, a few of each per service
            campaign.send(service, "set" if service == "caen" else "start", b'{"value": "' + b"x" * 1_048_576 + b'"}')
            campaign.send(service, "refresh" if service != "ph2acf" else "status", b"[" * 100_000 + b"]" * 100_000)
            campaign.send(
                service, "stop" if service == "julabo" else "lv_on", "\u202e\ud800".encode(errors="surrogatepass")
            )
        campaign.wait_all(timeout=60)
        elapsed = time.monotonic() - started
    time.sleep(1.0)
    after = device_truth(stand)

    per_service = Counter(s for s, _, _ in campaign.sent.values())
    missing = [campaign.sent[c] for c in campaign.sent if c not in campaign.replies]
    accepted = [(campaign.sent[c], r) for c, r in campaign.replies.items() if r.get("ok")]
    unclear = [(campaign.sent[c][:2], r) for c, r in campaign.replies.items() if not r.get("error")]
    internal = [(campaign.sent[c][:2], r["error"]) for c, r in campaign.replies.items()
                if str(r.get("error")).startswith(("internal error", "service busy"))]  # fmt: skip
    errors = Counter(str(r.get("error")).split(":")[0][:40] for r in campaign.replies.values())
    figures = {
        "payloads": len(campaign.sent),
        "per_service": dict(per_service),
        "replies": len(campaign.replies),
        "seconds": round(elapsed, 1),
        "accepted": len(accepted),
        "internal_errors": len(internal),
        "crashed": [n for n, ok in stand.alive().items() if not ok],
        "tracebacks": stand.tracebacks(),
        "device_changed": before != after,
        "top_error_kinds": dict(errors.most_common(15)),
    }
    record("fuzz", figures)
    print({k: v for k, v in figures.items() if k != "top_error_kinds"})
    assert len(campaign.sent) >= 10_000 and min(per_service.values()) >= 3_000
    assert missing == [], f"{len(missing)} payloads never answered, e.g. {missing[:3]}"
    assert accepted == [], f"{len(accepted)} hostile payloads accepted: {[a[0] for a in accepted[:8]]}"
    assert unclear == [] and internal == [], (unclear[:5], internal[:5])
    assert all(stand.alive().values()) and stand.tracebacks() == dict.fromkeys(stand.procs, 0)
    assert after == before, "a simulated device was told to do something"
