"""Device keys for a simulated fleet, from the gateway's store: what signs its frames."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fieldtrack.tools.simulate.errors import SimulateError


def register_devices(store_path: str | Path, ids: Sequence[str], group: str = "sim"
                     ) -> tuple[dict[str, bytes | None], int]:
    """Keys of ``ids`` from the store, registering (in one transaction) those it lacks.

    Returns the keys and how many devices were new. A device registered without a key
    sends unsigned frames, as a real one would.
    """
    from fieldtrack.gateway.store import registry
    from fieldtrack.gateway.store.sqlite import Store, StoreError

    try:
        store = Store(store_path)
    except StoreError as exc:
        raise SimulateError(str(exc)) from None
    try:
        known = store.devices()
        keys: dict[str, bytes | None] = {i: known[i].key for i in ids if i in known}
        missing = [i for i in ids if i not in known]
        if missing:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "devices.csv"
                with open(path, "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["id", "group", "name"])
                    writer.writerows([i, group, "simulated van"] for i in missing)
                result = registry.import_file(store, path, generate_keys=True)
            keys.update(result.keys)
    except registry.RegistryError as exc:
        raise SimulateError("%s: %s" % (store_path, exc)) from None
    finally:
        store.close()
    return keys, len(missing)
