"""A burn-in that ran on the test stand and left only its journal behind (as after a crash or a power cut)."""

from __future__ import annotations

from collections.abc import Callable

from burnin.engine import Engine
from burnin.journal import Journal
from burnin.recipe import load_recipe
from burnin.settings import BurninSettings

from .stand import Stand, pump


def journal_until(
    settings: BurninSettings,
    recipe_text: str,
    uid: str,
    until: Callable[[Engine, Stand], bool],
    stand: Stand | None = None,
) -> tuple[Engine, Stand]:
    """Run ``recipe_text`` on ``stand`` with the real engine, journaling into ``settings.state_dir`` as the
    service does, until ``until(engine, stand)``; then stop as if the process had died."""
    stand = stand or Stand()
    engine, journal = Engine(settings), Journal(settings.state_dir)
    engine.start(load_recipe(recipe_text, settings), uid, "alice", "night shift", stand.now, stand.world())
    start = stand.now
    while not until(engine, stand):
        stand.advance(0.25)
        engine.tick(stand.now, stand.world())
        for rec in engine.out.journal:
            journal.append(rec)
        engine.out.journal.clear()
        pump(engine, stand)
        assert stand.now - start < 3600, engine.status()
    journal.close()
    return engine, stand
