"""A minimal service used by the foundation tests: a 'lamp' with a brightness, built only on trackerdcs.

Run as ``python demo_service.py ROOT`` with ``DCS_MQTT_*`` in the environment. It counts every action it
carries out in its status, so tests can prove what was (and was not) acted on.
"""

from __future__ import annotations

import signal
import sys
import threading

from trackerdcs.commands import Arg, CommandError
from trackerdcs.config import MqttSettings
from trackerdcs.logsetup import setup_logging
from trackerdcs.service import Service


def main() -> None:
    setup_logging(name="demo")
    root = sys.argv[1]
    svc = Service(root, MqttSettings.from_config({}), heartbeat_s=2, health_interval_s=1)
    lamp = {"state": "OFF", "brightness": 0.0, "actions": 0}

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

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    svc.start()
    publish()
    stop.wait()
    svc.stop()


if __name__ == "__main__":
    main()
