"""``dcs backup`` / ``dcs restore``: copies of the pod's data with a retention rotation.

What is saved (components): the data volume of ``mosquitto`` (retained messages, persistent sessions),
``influxdb`` (time series), ``grafana`` (users, annotations, UI-made dashboards), ``node-red`` (user dir: flows
credentials, context), ``mongodb`` (calibration run documents), ``ph2acf`` (archive, spool, run state) and
``burnin`` (burn-in journal, archive, spool).
Each component is a directory: the mountpoint of the pod's podman volume ``<prefix>trackerdcs-<name>-data``
(default), or any folder given with ``--dir NAME=PATH`` (an installation without podman).

A backup is a folder ``trackerdcs-<UTC time>`` under ``--dest`` with one ``<component>.tar.gz`` per component
and ``manifest.json`` (sizes, SHA-256, how each was taken). While a component is copied its container is
paused (``podman pause``, a few seconds) so the copy is crash-consistent, like after a power cut: InfluxDB's
WAL and MongoDB's journal recover from it. A backup is written under a ``.partial`` name and renamed when
complete; then only the newest ``--keep`` complete backups are kept.

Restore (``dcs restore BACKUP``) refuses while a container using the volume runs (stop the pod first), checks
the SHA-256 of every file, empties the target directory and unpacks, keeping numeric owners.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

COMPONENTS = ("mosquitto", "influxdb", "grafana", "node-red", "mongodb", "ph2acf", "burnin", "audit")
BACKUP_PREFIX = "trackerdcs-"
PARTIAL = ".partial"
DEFAULT_POD = "trackerdcs"


class BackupError(RuntimeError):
    """A backup or restore step failed; the message says which and why."""


@dataclass
class Target:
    """Where one component's data lives."""

    component: str
    path: Path
    volume: str | None = None  # podman volume name, when it is one
    container: str | None = None  # podman container that writes it (paused while copying)


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise BackupError("podman not found (use --dir NAME=PATH for data outside podman)") from None
    if check and result.returncode != 0:
        raise BackupError(f"podman {' '.join(args)}: {result.stderr.strip()}")
    return result


def volume_name(component: str, prefix: str = "") -> str:
    """The podman volume of a component in pod.yml (``trackerdcs-<component>-data``)."""
    return f"{prefix}trackerdcs-{component}-data"


def container_name(pod: str, component: str) -> str:
    """Podman names a played pod's containers ``<pod>-<container>``; ph2acf's is ``ph2acf-bridge``."""
    return f"{pod}-{'ph2acf-bridge' if component == 'ph2acf' else component}"


def resolve_targets(
    components: Sequence[str], dirs: dict[str, Path], pods: Sequence[str], prefix: str
) -> tuple[list[Target], list[str]]:
    """Targets for ``components``; the second list names components with no data here (skipped)."""
    targets, missing = [], []
    for component in components:
        if component in dirs:
            targets.append(Target(component, dirs[component]))
            continue
        volume = volume_name(component, prefix)
        result = _podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume, check=False)
        if result.returncode != 0:
            missing.append(component)
            continue
        container = None
        for pod in pods:
            name = container_name(pod, component)
            if _podman("container", "exists", name, check=False).returncode == 0:
                container = name
                break
        targets.append(Target(component, Path(result.stdout.strip()), volume, container))
    return targets, missing


def _running(container: str | None) -> bool:
    if not container:
        return False
    result = _podman("inspect", "--format", "{{.State.Status}}", container, check=False)
    return result.returncode == 0 and result.stdout.strip() in ("running", "paused")


@contextlib.contextmanager
def paused(container: str | None, enabled: bool = True) -> Iterator[bool]:
    """Pause ``container`` (if running) for the duration; yields whether it was paused."""
    if not (enabled and container and _running(container)):
        yield False
        return
    result = _podman("pause", container, check=False)
    try:
        yield result.returncode == 0
    finally:
        if result.returncode == 0:
            _podman("unpause", container, check=False)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_dir(source: Path, out: Path) -> int:
    """tar.gz of the contents of ``source`` (numeric owners kept); returns the number of entries."""
    if not source.is_dir():
        raise BackupError(f"{source} is not a directory")
    count = 0
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        for child in sorted(source.iterdir()):
            tar.add(child, arcname=child.name)
            count += 1
    return count


def list_backups(dest: Path) -> list[Path]:
    """Complete backups under ``dest``, oldest first."""
    if not dest.is_dir():
        return []
    found = [
        p
        for p in dest.iterdir()
        if p.is_dir()
        and p.name.startswith(BACKUP_PREFIX)
        and not p.name.endswith(PARTIAL)
        and (p / "manifest.json").is_file()
    ]
    return sorted(found, key=lambda p: p.name)


def rotate(dest: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete backups (and stale partial ones); returns what was deleted."""
    removed = []
    backups = list_backups(dest)
    for old in backups[: max(0, len(backups) - keep)]:
        shutil.rmtree(old)
        removed.append(old)
    for partial in dest.glob(f"{BACKUP_PREFIX}*{PARTIAL}"):
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
    return removed


def backup(
    dest: Path,
    targets: Sequence[Target],
    keep: int,
    pause: bool = True,
    now: dt.datetime | None = None,
    log=print,
) -> Path:
    """Write one backup of ``targets`` under ``dest``, then rotate; returns the backup folder."""
    if keep < 1:
        raise BackupError("--keep must be at least 1")
    if not targets:
        raise BackupError("nothing to back up")
    now = now or dt.datetime.now(dt.UTC)
    name = BACKUP_PREFIX + now.strftime("%Y%m%dT%H%M%S.%fZ")
    dest.mkdir(parents=True, exist_ok=True)
    work = dest / (name + PARTIAL)
    work.mkdir()
    manifest: dict[str, object] = {
        "format": 1,
        "created": now.isoformat(),
        "host": socket.gethostname(),
        "components": {},
    }
    try:
        for target in targets:
            out = work / f"{target.component}.tar.gz"
            with paused(target.container, pause) as was_paused:
                entries = archive_dir(target.path, out)
            manifest["components"][target.component] = {  # type: ignore[index]
                "file": out.name,
                "bytes": out.stat().st_size,
                "sha256": sha256_of(out),
                "entries": entries,
                "source": target.volume or str(target.path),
                "kind": "podman-volume" if target.volume else "directory",
                "paused": was_paused,
            }
            log(f"backup: {target.component} ({target.volume or target.path}) -> {out.name}, {out.stat().st_size} B")
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        final = dest / name
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for old in rotate(dest, keep):
        log(f"backup: rotated out {old.name}")
    return final


def _safe_extract(tar: tarfile.TarFile, into: Path) -> None:
    root = into.resolve()
    for member in tar.getmembers():
        target = (into / member.name).resolve()
        if target != root and root not in target.parents:
            raise BackupError(f"refusing archive member outside the target: {member.name}")
    if hasattr(tarfile, "tar_filter"):  # keeps owners (the services' uids), strips absolute paths and setuid bits
        tar.extractall(into, numeric_owner=True, filter="tar")
    else:  # pragma: no cover - Python without extraction filters
        tar.extractall(into, numeric_owner=True)


def restore(backup_dir: Path, targets: Sequence[Target], log=print) -> None:
    """Replace each target's contents by the backup's copy (targets must not be in use)."""
    manifest_path = backup_dir / "manifest.json"
    if not manifest_path.is_file():
        raise BackupError(f"{backup_dir} is not a trackerdcs backup (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    saved = manifest.get("components", {})
    for target in targets:
        if target.component not in saved:
            raise BackupError(f"{target.component} is not in {backup_dir.name} (has: {', '.join(saved)})")
        if _running(target.container):
            raise BackupError(
                f"{target.component}: container {target.container} is running; stop the pod first "
                "(systemctl stop trackerdcs, or podman pod stop <pod>)"
            )
        entry = saved[target.component]
        archive = backup_dir / entry["file"]
        if sha256_of(archive) != entry["sha256"]:
            raise BackupError(f"{archive} is corrupt (SHA-256 differs from the manifest)")
    for target in targets:
        entry = saved[target.component]
        target.path.mkdir(parents=True, exist_ok=True)
        for child in target.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        with tarfile.open(backup_dir / entry["file"], "r:gz") as tar:
            _safe_extract(tar, target.path)
        log(f"restore: {target.component} <- {backup_dir.name}/{entry['file']} ({target.volume or target.path})")


# ---------------------------------------------------------------------------------------------- CLI
def _components(text: str | None) -> list[str]:
    if not text:
        return list(COMPONENTS)
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in COMPONENTS]
    if unknown:
        raise BackupError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}")
    return chosen


def _dirs(items: Sequence[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in COMPONENTS:
            raise BackupError(f"--dir expects NAME=PATH with NAME one of {', '.join(COMPONENTS)}, got {item!r}")
        out[name] = Path(path)
    return out


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--components", help=f"comma-separated subset of {','.join(COMPONENTS)} (default: all)")
    parser.add_argument("--dir", action="append", default=[], metavar="NAME=PATH", help="component data in a folder")
    parser.add_argument("--pod", action="append", default=[], help="pod name(s) (default: trackerdcs, trackerdcs-sim)")
    parser.add_argument("--prefix", default="", help="volume name prefix (test pods)")


def backup_parser(parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """The options of ``dcs backup`` (``parents``: the options every ``dcs`` subcommand takes)."""
    parser = argparse.ArgumentParser(
        prog="dcs backup", description="Back up the trackerdcs data (see docs/operations.md).", parents=parents
    )
    parser.add_argument("--dest", default=os.environ.get("DCS_BACKUP_DIR", "/var/backups/trackerdcs"), type=Path)
    parser.add_argument("--keep", type=int, default=14, help="complete backups to keep (default 14)")
    parser.add_argument("--no-pause", action="store_true", help="do not pause containers while copying")
    _common(parser)
    return parser


def run_backup(ns: argparse.Namespace, json_output: bool = False) -> int:
    """Carry out ``dcs backup`` as parsed by :func:`backup_parser`; print the backup folder (or, with
    ``json_output``, ``{"backup": folder, "components": [...]}``)."""
    try:
        components = _components(ns.components)
        targets, missing = resolve_targets(
            components, _dirs(ns.dir), ns.pod or [DEFAULT_POD, "trackerdcs-sim"], ns.prefix
        )
        for name in missing:
            print(f"backup: {name}: no volume {volume_name(name, ns.prefix)} here, skipped", file=sys.stderr)
        if ns.components and missing:
            raise BackupError(f"requested component(s) without data: {', '.join(missing)}")
        final = backup(ns.dest, targets, ns.keep, pause=not ns.no_pause, log=lambda m: print(m, file=sys.stderr))
    except BackupError as exc:
        if json_output:
            print(json.dumps({"ok": False, "error": str(exc)}))
        print(f"dcs backup: {exc}", file=sys.stderr)
        return 1
    if json_output:
        print(json.dumps({"ok": True, "backup": str(final), "components": [t.component for t in targets]}))
    else:
        print(final)
    return 0


def main_backup(argv: Sequence[str] | None = None) -> int:
    """``dcs backup --dest DIR [--keep N] [--components a,b] [--dir NAME=PATH] [--no-pause]``."""
    return run_backup(backup_parser().parse_args(argv))


def restore_parser(parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """The options of ``dcs restore`` (``parents``: the options every ``dcs`` subcommand takes)."""
    parser = argparse.ArgumentParser(
        prog="dcs restore", description="Restore trackerdcs data from a backup (pod stopped).", parents=parents
    )
    parser.add_argument("backup", help="backup folder, or 'latest' (newest under --dest)")
    parser.add_argument("--dest", default=os.environ.get("DCS_BACKUP_DIR", "/var/backups/trackerdcs"), type=Path)
    _common(parser)
    return parser


def run_restore(ns: argparse.Namespace, json_output: bool = False) -> int:
    """Carry out ``dcs restore`` as parsed by :func:`restore_parser` (with ``json_output``, print
    ``{"restored": folder, "components": [...]}``)."""
    try:
        if ns.backup == "latest":
            backups = list_backups(ns.dest)
            if not backups:
                raise BackupError(f"no backups under {ns.dest}")
            folder = backups[-1]
        else:
            folder = Path(ns.backup)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            raise BackupError(f"{folder} is not a trackerdcs backup (no manifest.json)")
        saved = list(json.loads(manifest.read_text()).get("components", {}))
        components = _components(ns.components) if ns.components else [c for c in COMPONENTS if c in saved]
        dirs = _dirs(ns.dir)
        pods = ns.pod or [DEFAULT_POD, "trackerdcs-sim"]
        targets, missing = resolve_targets(components, dirs, pods, ns.prefix)
        for name in missing:  # volume gone (new machine): create it, podman names it as pod.yml does
            _podman("volume", "create", volume_name(name, ns.prefix))
        if missing:
            more, _ = resolve_targets(missing, {}, pods, ns.prefix)
            targets += more
        restore(folder, targets, log=lambda m: print(m, file=sys.stderr))
    except BackupError as exc:
        if json_output:
            print(json.dumps({"ok": False, "error": str(exc)}))
        print(f"dcs restore: {exc}", file=sys.stderr)
        return 1
    if json_output:
        print(json.dumps({"ok": True, "restored": str(folder), "components": [t.component for t in targets]}))
    return 0


def main_restore(argv: Sequence[str] | None = None) -> int:
    """``dcs restore BACKUP [--components a,b] [--dir NAME=PATH]`` (BACKUP: a folder, or ``latest`` in --dest)."""
    return run_restore(restore_parser().parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trackerdcs_ops.backup backup|restore ...`` (the same as ``dcs backup`` / ``dcs restore``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("backup", "restore"):
        print("usage: python -m trackerdcs_ops.backup backup|restore [options]", file=sys.stderr)
        return 64
    return (main_backup if argv[0] == "backup" else main_restore)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
