"""Boot epochs: which boot of a device the gateway takes, and as what (pure logic).

A device's records are keyed (device, boot, seq), so everything rests on the boot
counter going forward. It can go back: a device that lost its state file starts a
new *era* at a random boot >= ``ERA_BASE``; an older firmware starts again at a small
boot. ``judge`` tells such cases apart from late frames of earlier boots using the
device's *reference* boot (the newest boot of its current era) and whether the
store already holds records of the boot. The rule is protocol/SPEC.md §8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

ERA_BASE = 1 << 24  # a device without a usable counter starts at a random boot >= this
BOOT_LIMIT = 1 << 31  # boots from here up are not a counter: the frame is rejected
MAX_RECENT = 32  # boots remembered in memory per device; the store knows the rest

# Verdicts: what a frame's boot is for its device.
FIRST = "first"  # the first boot the gateway sees of this device: the reference
KNOWN = "known"  # a boot with stored (or just taken) records: taken as it is
AHEAD = "ahead"  # a new boot after the reference: the new reference
LAGGING = "lagging"  # a new boot at most max_boot_lag behind: a late frame, taken
ERA = "era"  # a new boot >= ERA_BASE far behind, or the first one: a new era, the reference
RESET = "reset"  # a new boot after the operator's reset-epochs: the new reference
BEHIND = "behind"  # a new small boot far behind: rejected until the operator resets
INVALID = "invalid"  # >= BOOT_LIMIT: rejected


@dataclass(slots=True)
class DeviceEpochs:
    """What the gateway keeps per device; ``reference`` and the resets are stored."""

    reference: int  # the newest boot of the device's current era
    recent: set[int] = field(default_factory=set)  # boots taken lately (a cache)
    reset: int = 0  # a pending operator reset: its request time (Unix ms); 0 = none
    reset_taken: int = 0  # the request time of the last reset honoured


def judge(epochs: DeviceEpochs | None, boot: int, max_lag: int,
          stored: Callable[[int], bool]) -> str:
    """The verdict on ``boot`` for a device; ``stored(boot)`` asks the store."""
    if boot >= BOOT_LIMIT:
        return INVALID
    if epochs is None:
        return FIRST
    if boot == epochs.reference or boot in epochs.recent:
        return KNOWN
    if stored(boot):
        return KNOWN
    if epochs.reset:  # taken by a new boot: a late frame of a stored one keeps it pending
        return RESET
    if boot > epochs.reference:
        # Counting never gets from below ERA_BASE to above it: that jump is a new era.
        return ERA if boot >= ERA_BASE > epochs.reference else AHEAD
    if epochs.reference - boot <= max_lag:
        return LAGGING
    if boot >= ERA_BASE:
        return ERA
    return BEHIND


def take(epochs: DeviceEpochs | None, verdict: str, boot: int) -> DeviceEpochs:
    """The device's epochs after a frame of ``boot`` was taken with ``verdict``."""
    if epochs is None:
        return DeviceEpochs(boot, {boot})
    if len(epochs.recent) >= MAX_RECENT:
        epochs.recent = {epochs.reference}
    epochs.recent.add(boot)
    if verdict in (AHEAD, ERA, RESET, FIRST):
        epochs.reference = boot
    if verdict == RESET:
        epochs.reset_taken, epochs.reset = epochs.reset, 0
    return epochs


def moves_reference(verdict: str) -> bool:
    """Whether a verdict changes what the store keeps for the device."""
    return verdict in (FIRST, AHEAD, ERA, RESET)
