"""``dcs backup`` / ``dcs restore`` on folders (the podman-volume path is exercised in test_pod.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from trackerdcs.cli import main as dcs_main
from trackerdcs_ops import backup


def make_data(root: Path) -> dict[str, Path]:
    """Two components' data as the containers leave it: nested files, owners of the service users, modes."""
    mosq = root / "mosquitto"
    (mosq).mkdir(parents=True)
    (mosq / "mosquitto.db").write_bytes(os.urandom(4096))
    influx = root / "influxdb"
    (influx / "data" / "trackerdcs" / "autogen").mkdir(parents=True)
    (influx / "data" / "trackerdcs" / "autogen" / "000001.tsm").write_bytes(os.urandom(10000))
    (influx / "meta").mkdir()
    (influx / "meta" / "meta.db").write_text("meta")
    os.chmod(influx / "meta" / "meta.db", 0o600)
    if os.geteuid() == 0:
        os.chown(mosq / "mosquitto.db", 10001, 10001)
    return {"mosquitto": mosq, "influxdb": influx}


def snapshot(path: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode, p.stat().st_uid)
        for p in sorted(path.rglob("*"))
    }


def targets(dirs: dict[str, Path]) -> list[backup.Target]:
    return [backup.Target(name, path) for name, path in dirs.items()]


def test_restore_brings_back_exactly_what_was_saved(tmp_path: Path) -> None:
    dirs = make_data(tmp_path / "live")
    before = {name: snapshot(path) for name, path in dirs.items()}
    folder = backup.backup(tmp_path / "backups", targets(dirs), keep=3, log=lambda _m: None)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["components"]) == {"mosquitto", "influxdb"}
    assert manifest["components"]["influxdb"]["kind"] == "directory"
    # the operator breaks things after the backup
    (dirs["mosquitto"] / "mosquitto.db").write_bytes(b"corrupted")
    (dirs["influxdb"] / "stray.tmp").write_text("left over")
    backup.restore(folder, targets(dirs), log=lambda _m: None)
    assert {name: snapshot(path) for name, path in dirs.items()} == before


def test_only_the_newest_backups_are_kept(tmp_path: Path) -> None:
    dirs = make_data(tmp_path / "live")
    dest = tmp_path / "backups"
    start = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)
    made = [
        backup.backup(dest, targets(dirs), keep=3, now=start + dt.timedelta(hours=h), log=lambda _m: None)
        for h in range(5)
    ]
    (dest / "trackerdcs-20261101T000000.000000Z.partial").mkdir()  # a backup interrupted by a power cut
    backup.backup(dest, targets(dirs), keep=3, now=start + dt.timedelta(hours=5), log=lambda _m: None)
    kept = backup.list_backups(dest)
    assert [p.name for p in kept] == [made[3].name, made[4].name, kept[-1].name]
    assert not list(dest.glob("*.partial"))


def test_a_corrupt_backup_is_refused_and_the_data_left_alone(tmp_path: Path) -> None:
    dirs = make_data(tmp_path / "live")
    folder = backup.backup(tmp_path / "b", targets(dirs), keep=2, log=lambda _m: None)
    with (folder / "influxdb.tar.gz").open("r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    before = snapshot(dirs["influxdb"])
    with pytest.raises(backup.BackupError, match="corrupt"):
        backup.restore(folder, targets(dirs), log=lambda _m: None)
    assert snapshot(dirs["influxdb"]) == before


def test_an_archive_escaping_its_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "trackerdcs-evil"
    folder.mkdir()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../outside")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    (folder / "mosquitto.tar.gz").write_bytes(data.getvalue())
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "components": {
                    "mosquitto": {"file": "mosquitto.tar.gz", "sha256": backup.sha256_of(folder / "mosquitto.tar.gz")}
                }
            }
        )
    )
    target = tmp_path / "restore-here" / "mosquitto"
    with pytest.raises(backup.BackupError, match="outside"):
        backup.restore(folder, [backup.Target("mosquitto", target)], log=lambda _m: None)
    assert not (tmp_path / "outside").exists()


def test_dcs_backup_and_restore_commands_on_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = make_data(tmp_path / "live")
    before = snapshot(dirs["influxdb"])
    dest = tmp_path / "backups"
    args = ["--dir", f"mosquitto={dirs['mosquitto']}", "--dir", f"influxdb={dirs['influxdb']}"]
    assert dcs_main(["backup", "--dest", str(dest), "--keep", "2", "--components", "mosquitto,influxdb", *args]) == 0
    printed = capsys.readouterr().out.strip()
    assert Path(printed).parent == dest
    (dirs["influxdb"] / "meta" / "meta.db").write_text("damaged")
    assert dcs_main(["restore", "latest", "--dest", str(dest), "--components", "influxdb", *args]) == 0
    assert snapshot(dirs["influxdb"]) == before


def test_bad_backup_arguments_get_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert backup.main_backup(["--dest", str(tmp_path), "--components", "influxdb,postgres"]) == 1
    assert "unknown component(s) postgres" in capsys.readouterr().err
    assert backup.main_backup(["--dest", str(tmp_path), "--dir", "nonsense"]) == 1
    assert "--dir expects NAME=PATH" in capsys.readouterr().err
    assert backup.main_restore(["latest", "--dest", str(tmp_path / "empty")]) == 1
    assert "no backups under" in capsys.readouterr().err
    assert backup.main_restore([str(tmp_path)]) == 1
    assert "not a trackerdcs backup" in capsys.readouterr().err
