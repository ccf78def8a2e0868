"""Batched pushes of computed features to Feast: Redis for serving, parquet for point-in-time queries.

The job hands every updated row to a ``FeaturePusher``; rows wait (the latest per user and view, so a
busy child's hundred updates in a batch are one row) until ``push_batch_rows`` are waiting or
``push_interval_ms`` has passed since the first, then go to Feast in one push per view
(``PushMode.ONLINE_AND_OFFLINE``). A failed push keeps its rows for the next attempt (bounded), and is
counted; the job never fails for Feast. The rows waiting are also what a checkpoint must hold (the inputs
that made them are already behind it): ``pending_entries`` and ``restore`` give them as strings for state.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, get_type_hints

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.definitions import CHILD_DAILY_PARQUET, USER_BEHAVIOUR_PARQUET
from features.behaviour import BehaviourRow
from features.child_day import DayTotals

_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64()}


@dataclass(frozen=True)
class PushView:
    view: str
    push_source: str
    parquet: str
    row_type: type

    def arrow_schema(self) -> pa.Schema:
        fields = [(name, _ARROW[kind]) for name, kind in get_type_hints(self.row_type).items() if name != "event_ts"]
        return pa.schema(fields + [("event_timestamp", pa.timestamp("us", tz="UTC"))])

    def frame(self, rows: list) -> pd.DataFrame:
        records = []
        for row in rows:
            values = asdict(row)
            values["event_timestamp"] = pd.Timestamp(values.pop("event_ts"), unit="ms", tz="UTC")
            records.append(values)
        return pd.DataFrame(records, columns=self.arrow_schema().names)


CHILD_DAILY = PushView("child_daily", "child_daily_push", CHILD_DAILY_PARQUET, DayTotals)
USER_BEHAVIOUR = PushView("user_behaviour", "user_behaviour_push", USER_BEHAVIOUR_PARQUET, BehaviourRow)
PUSH_VIEWS = {v.view: v for v in (CHILD_DAILY, USER_BEHAVIOUR)}


def ensure_push_files(data_dir: Path) -> None:
    """Feast's file offline store appends to an existing parquet file: start each with the right columns."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for view in PUSH_VIEWS.values():
        path = data_dir / view.parquet
        if not path.exists():
            pq.write_table(view.arrow_schema().empty_table(), path)


class FeaturePusher:
    def __init__(self, store, batch_rows: int, interval_ms: int, max_waiting_rows: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._batch_rows = batch_rows
        self._interval_s = interval_ms / 1000
        self._max_waiting = max_waiting_rows
        self._clock = clock
        # (view, user_id, day) -> the latest row: a child's day is one row, and yesterday's last update is
        # not lost to today's first when both wait in the same batch.
        self._waiting: dict[tuple[str, str, str], object] = {}
        self._since: float | None = None
        self.pushes = 0
        self.rows_pushed = 0
        self.failures = 0
        self.rows_dropped = 0

    def add(self, view: str, row) -> str:
        """Queues `row` of `view`; the key it waits under (see ``pending_entries``)."""
        key = (view, row.user_id, getattr(row, "day", ""))
        previous = self._waiting.get(key)
        if previous is None or previous.event_ts <= row.event_ts:
            self._waiting[key] = row
        if self._since is None:
            self._since = self._clock()
        return _entry_key(key)

    def pending_entries(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """The rows waiting (only those of `keys`, if given), as key -> JSON: what a checkpoint keeps."""
        chosen = self._waiting if keys is None else {
            key: self._waiting[key] for key in (tuple(json.loads(k)) for k in keys) if key in self._waiting}
        return {_entry_key(key): json.dumps({"view": key[0], "row": asdict(row)}) for key, row in chosen.items()}

    def pending_keys(self) -> set[str]:
        """The keys of the rows waiting, as ``add`` and ``pending_entries`` give them."""
        return {_entry_key(key) for key in self._waiting}

    def restore(self, entries: Iterable[str]) -> None:
        """Queues again the rows of ``pending_entries`` values (after a restart from a checkpoint)."""
        for entry in entries:
            value = json.loads(entry)
            view = PUSH_VIEWS[value["view"]]
            self.add(view.view, view.row_type(**value["row"]))

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def due(self) -> bool:
        return bool(self._waiting) and (len(self._waiting) >= self._batch_rows
                                        or self._clock() - self._since >= self._interval_s)

    def flush(self) -> int:
        """Pushes everything waiting, one push per view; returns the rows pushed."""
        from feast.data_source import PushMode

        pushed = 0
        for name, view in PUSH_VIEWS.items():
            keys = [key for key in self._waiting if key[0] == name]
            if not keys:
                continue
            # Oldest first: the online store keeps the row with the latest event time per user.
            rows = sorted((self._waiting[key] for key in keys), key=lambda row: row.event_ts)
            try:
                self._store.push(view.push_source, view.frame(rows), to=PushMode.ONLINE_AND_OFFLINE)
            except Exception:  # Feast or Redis down: keep the rows (bounded) and try again at the next flush
                self.failures += 1
                continue
            for key in keys:
                del self._waiting[key]
            pushed += len(rows)
            self.pushes += 1
        self.rows_pushed += pushed
        self._since = self._clock() if self._waiting else None
        while len(self._waiting) > self._max_waiting:
            del self._waiting[next(iter(self._waiting))]
            self.rows_dropped += 1
        return pushed


def _entry_key(key: tuple[str, str, str]) -> str:
    return json.dumps(key)  # any user id, whatever characters it holds, reads back as itself
