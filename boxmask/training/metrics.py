"""Training metrics as JSON lines (``metrics.jsonl`` in the output folder), one object a line.

Two kinds of record, told apart by ``"kind"``:

- ``"iter"``: ``iteration`` (1-based, counted over the whole run), ``epoch`` (1-based), ``lr``,
  ``loss`` (the total) and every named loss, averaged over the iterations since the previous
  record and over processes, ``time_per_iter`` and ``data_time`` in seconds;
- ``"epoch"``: the epoch's mean losses, its wall time and the checkpoint written.

Only rank 0 writes. Lines are flushed as they are written, so `tail -f` follows a run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11


class MetricsWriter:
    """Append JSON lines to ``path``; a no-op when ``enabled`` is False (ranks other than 0)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Append: a resumed run continues the same file.
            self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        self._file.write(json.dumps(clean, sort_keys=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: Path, kind: str | None = "iter") -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (of one ``kind``, or all with ``kind=None``)."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]


class RunningMean:
    """Mean of named scalars since the last :meth:`reset` (the window between two log lines)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def update(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def mean(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def reset(self) -> None:
        self.sums.clear()
        self.count = 0
