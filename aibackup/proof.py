"""One line of a restore's proof: a named check, whether it passed, what it found (aibackup.checks runs
them; aibackup.search_check and the restore-test drill make some)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    #: What the check measured, as numbers (the search checks: both recalls, the rule, the indexes).
    measures: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"name": self.name, "ok": self.ok, "detail": self.detail}
        if self.measures:
            doc["measures"] = dict(self.measures)
        return doc
