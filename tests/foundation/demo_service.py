"""A minimal service used by the foundation tests: a 'lamp' with a brightness, built only on trackerdcs.

Run as ``python demo_service.py ROOT`` with ``DCS_MQTT_*`` in the environment. It counts every action it
carries out in its status, so tests can prove what was (and was not) acted on.
"""

from __future__ import annotations

import signal
import sys
import threading

from trackerdcs.commands import Arg, CommandError
from trackerdcs.completion import Completion
from trackerdcs.config import MqttSettings
from trackerdcs.logsetup import setup_logging
from trackerdcs.service import Service


def main() -> None:
    setup_logging(name="demo")
    root = sys.argv[1]
    svc = Service(root, MqttSettings.from_config({}), heartbeat_s=2, health_interval_s=1)
    lamp = {"state": "OFF", "brightness": 0.0, "actions": 0}
    stop = threading.Event()

    def publish() -> None:
        svc.publish_status(lamp)

    @svc.command("on", Arg("brightness", float, required=False, default=50.0, minimum=0, maximum=100))
    def on(args):
        lamp.update(state="ON", brightness=args["brightness"], actions=lamp["actions"] + 1)
        publish()
        return {"brightness": lamp["brightness"]}

    @svc.command("off")
    def off(args):
        lamp.update(state="OFF", brightness=0.0, actions=lamp["actions"] + 1)
        publish()

    @svc.command("fail")
    def fail(args):
        raise CommandError("the lamp refuses")

    ramps = [0]  # the generation of the ramp in progress: a newer ramp or a new lamp ends an older one

    def ramp_to(target: float, rate: float, generation: int) -> None:
        """Move the brightness to ``target`` at ``rate`` per second; a lamp driven to 95 or more blows."""
        while lamp["brightness"] != target and not stop.is_set():
            if generation != ramps[0]:
                return
            step = min(abs(target - lamp["brightness"]), rate * 0.1)
            lamp["brightness"] += step if target > lamp["brightness"] else -step
            if lamp["brightness"] >= 95:
                lamp.update(state="BLOWN")
                publish()
                return
            publish()
            stop.wait(0.1)
        lamp.update(state="ON" if target else "OFF")
        publish()

    @svc.command(
        "ramp",
        Arg("target", float, minimum=0, maximum=100, help="brightness to reach"),
        Arg("rate", float, required=False, default=50.0, minimum=0.1, help="per second"),
        help="ramp the brightness (the reply comes at once, the ramp takes a while)",
        completion=Completion(
            done=("ON", "OFF"), failed=("BLOWN",), timeout_s=20.0, show=("brightness",), description="ramp ended"
        ),
    )
    def ramp(args):
        if lamp["state"] == "BLOWN":
            raise CommandError("the lamp is blown")
        lamp.update(state="RAMPING", actions=lamp["actions"] + 1)
        publish()
        ramps[0] += 1
        threading.Thread(target=ramp_to, args=(args["target"], args["rate"], ramps[0]), daemon=True).start()
        return {"target": args["target"]}

    @svc.command("replace", help="a new lamp")
    def replace(args):
        ramps[0] += 1
        lamp.update(state="OFF", brightness=0.0)
        publish()

    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    svc.start()
    publish()
    stop.wait()
    svc.stop()


if __name__ == "__main__":
    main()
