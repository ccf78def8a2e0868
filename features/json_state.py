"""Per-key feature state kept in Flink as one JSON string (a declared STRING type, not a pickled object)."""
from __future__ import annotations

import json
from typing import ClassVar


class JsonState:
    """For a dataclass made as ``cls(user_id, settings)`` whose ``STATE_FIELDS`` hold JSON-ready values."""

    STATE_FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> str:
        return json.dumps({name: getattr(self, name) for name in self.STATE_FIELDS})

    @classmethod
    def from_json(cls, user_id: str, settings, text: str | None):
        state = cls(user_id, settings)
        if text:
            for name, value in json.loads(text).items():
                setattr(state, name, value)
        return state
