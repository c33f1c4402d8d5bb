"""What a run does on a stage folder that another run is writing (see :mod:`pipeline.core.lock`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LockConfig:
    """How a run treats a stage folder that another run is writing.

    Attributes:
        wait: Wait for the other run to finish the stage (then skip or redo it as
            its outputs say); ``false`` fails at once with a message naming the holder.
        stale_minutes: A holder whose heartbeat is older than this is taken for dead
            and its lock broken (holders on this host are checked by pid at once).
            Every run sharing an output root must use the same value.
        enabled: Take stage locks at all (off only for a filesystem that cannot
            create files exclusively).
    """

    wait: bool = True
    stale_minutes: float = 10.0
    enabled: bool = True
