"""Raw Kafka record -> validated event, or a dead letter carrying the original bytes and the reason."""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Mapping

from pydantic import BaseModel, ValidationError

from lifeguard.schemas import INPUT_SCHEMAS, SCHEMA_VERSION, DeadLetter


@dataclass(frozen=True)
class SourceRef:
    """Where a record came from: enough to find it again, and its Kafka timestamp for latency."""

    topic: str
    partition: int
    offset: int
    kafka_ts: int


class Rejected(Exception):
    def __init__(self, error_kind: str, reason: str, event_id: str | None = None):
        super().__init__(reason)
        self.error_kind = error_kind
        self.reason = reason
        self.event_id = event_id


def explain(error: ValidationError) -> str:
    problems = [f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in error.errors()[:5]]
    return "; ".join(problems)


def parse_record(schemas: Mapping[str, type[BaseModel]], schema_name: str, value: bytes | None,
                 max_bytes: int):
    """Validates one record against ``schemas[schema_name]``; raises ``Rejected`` with the reason."""
    if value is None or len(value) == 0:
        raise Rejected("invalid", "empty record")
    if len(value) > max_bytes:
        raise Rejected("oversize", f"record of {len(value)} bytes exceeds the {max_bytes}-byte limit")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("not_utf8", f"not valid UTF-8: {exc}") from None
    try:
        obj = json.loads(text)
    # RecursionError: deep nesting ("[" * 100000); ValueError: also a number past Python's 4,300-digit limit.
    except (ValueError, RecursionError) as exc:
        raise Rejected("not_json", f"not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        raise Rejected("not_utf8", "a string holds a lone surrogate escape (\\ud800-\\udfff), which is not text")
    if not isinstance(obj, dict):
        raise Rejected("invalid", f"expected a JSON object, got {type(obj).__name__}")
    event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise Rejected("unknown_version", f"unknown schema_version {obj.get('schema_version')!r}; "
                                          f"this job reads version {SCHEMA_VERSION}", event_id)
    try:
        return schemas[schema_name].model_validate(obj)
    except ValidationError as exc:
        raise Rejected("invalid", explain(exc), event_id) from None
    except Exception as exc:  # whatever else a hostile record finds: a dead letter, never a failed task
        raise Rejected("invalid", f"not processable: {type(exc).__name__}: {str(exc)[:200]}", event_id) from None


# A surrogate can only arrive as a JSON escape (raw UTF-8 cannot hold one); a valid pair decodes to one
# character, a lone one stays a surrogate that every later encode fails on.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(obj: object) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_event(schema_name: str, value: bytes | None, max_bytes: int):
    """Validates one input record (chat, uploads, sessions) against its topic's schema."""
    return parse_record(INPUT_SCHEMAS, schema_name, value, max_bytes)


def dead_letter(source: SourceRef, value: bytes | None, rejected: Rejected, now_ms: int) -> DeadLetter:
    return DeadLetter(
        source_topic=source.topic, source_partition=source.partition, source_offset=source.offset,
        reason=rejected.reason, error_kind=rejected.error_kind,
        original_b64=base64.b64encode(value or b"").decode("ascii"),
        event_id=rejected.event_id, created_ts=now_ms)
