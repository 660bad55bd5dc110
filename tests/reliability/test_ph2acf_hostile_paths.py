"""Found by the fuzz campaign: a config_file with a NUL byte made the bridge answer "internal error: embedded
null byte" and log a traceback. It is now a clear refusal, and nothing runs."""

from __future__ import annotations

import json

from ph2acf_bridge.app import Bridge
from ph2acf_bridge.settings import load_settings

from trackerdcs.config import MqttSettings


def test_config_file_with_control_characters_is_refused_clearly(tmp_path):
    (tmp_path / "CMSIT.xml").write_text("<HwDescription/>")
    settings = load_settings(
        {
            "ph2acf": {"workdir": str(tmp_path), "mode": "tcp", "tcp": {"release": "2021-2022"}},
            "storage": {k: str(tmp_path / k) for k in ("archive_dir", "spool_dir", "state_dir")},
        }
    )
    bridge = Bridge(settings, MqttSettings(host="127.0.0.1", port=1, client_id="ph2acf-nul-test"))
    for name in ("CMSIT.xml\x00.txt", "CMSIT.xml\n", "\x1b[2J"):
        payload = {"calibration": "pixelalive", "operator": "fuzz", "config_file": name}
        reply = bridge.svc.execute("start", json.dumps(payload).encode())
        assert reply["ok"] is False and "control characters" in reply["error"], reply
    assert bridge.machine.state == "IDLE" or str(bridge.machine.state).endswith("IDLE")
