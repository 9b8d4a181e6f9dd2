"""Feature spec: which event fields the detector reads and how.

The spec is the inbound event contract. It is inferred from training data when not given
(:func:`detector.spec_inference.infer_spec`), can be overridden by a JSON file, and is saved
inside the model artifact so the worker validates events exactly as the trainer saw them.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from detector.errors import SpecError

SPEC_VERSION = 1


class FeatureSpec(BaseModel):
    """Which fields are features, identifiers or labels.

    Attributes:
        numeric: numeric feature fields (JSON numbers; strings spelled exactly as JSON numbers,
            such as ``"12"``, are accepted too, see :mod:`detector.values`).
        categorical: categorical feature fields (strings, integers or booleans).
        log_scale: numeric fields transformed with ``sign(x) * log1p(|x|)`` before scaling
            (heavy-tailed counts and byte sizes).
        optional: feature fields that may be missing or null. A missing numeric value is imputed
            with the training median and flagged by an extra indicator feature; a missing
            categorical value becomes its own ``<missing>`` category. Any other feature field
            that is missing makes the event invalid.
        id_field: the event id (not a feature), if events carry one.
        timestamp_field: the event time (not a feature): epoch seconds/milliseconds or ISO-8601.
        label_field: the normal-class label in training data (not a feature, never needed online).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_version: int = SPEC_VERSION
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    log_scale: list[str] = Field(default_factory=list)
    optional: list[str] = Field(default_factory=list)
    id_field: str | None = None
    timestamp_field: str | None = None
    label_field: str | None = None

    @model_validator(mode="after")
    def _check_consistent(self) -> FeatureSpec:
        if self.spec_version != SPEC_VERSION:
            raise ValueError(f"unsupported spec_version {self.spec_version} (this build reads {SPEC_VERSION})")
        features = self.numeric + self.categorical
        if not features:
            raise ValueError("the spec names no numeric or categorical feature")
        duplicated = sorted({f for f in features if features.count(f) > 1})
        if duplicated:
            raise ValueError(f"fields listed more than once: {', '.join(duplicated)}")
        not_numeric = sorted(set(self.log_scale) - set(self.numeric))
        if not_numeric:
            raise ValueError(f"log_scale fields must be numeric: {', '.join(not_numeric)}")
        unknown_optional = sorted(set(self.optional) - set(features))
        if unknown_optional:
            raise ValueError(f"optional fields must be features: {', '.join(unknown_optional)}")
        for role in ("id_field", "timestamp_field", "label_field"):
            value = getattr(self, role)
            if value is not None and value in features:
                raise ValueError(f"{role} {value!r} cannot also be a feature")
        return self

    def shared_roles(self) -> list[str]:
        """Roles that name the same field (``"id_field and timestamp_field both name 'ts'"``); empty
        when each field plays one role. Checked where a spec is given for training, not on load:
        models saved before the check stay loadable."""
        roles = [(r, getattr(self, r)) for r in ("id_field", "timestamp_field", "label_field")]
        return [
            f"{first} and {second} both name {value!r}"
            for i, (first, value) in enumerate(roles)
            for second, other in roles[i + 1 :]
            if value is not None and value == other
        ]

    @property
    def features(self) -> list[str]:
        """All feature fields, numeric first, in featurizer column order."""
        return [*self.numeric, *self.categorical]

    def changes_from(self, old: FeatureSpec) -> list[str]:
        """What an event stream that suits ``old`` meets under this spec, one phrase per change
        (empty: the same events are valid and read the same way). A field that becomes required
        sends every event without it to the dead-letter topic."""
        required = set(self.features) - set(self.optional)
        old_required = set(old.features) - set(old.optional)
        changes = []
        newly = sorted(required - old_required)
        if newly:
            changes.append("newly required: " + ", ".join(newly))
        dropped = sorted(set(old.features) - set(self.features))
        if dropped:
            changes.append("no longer features: " + ", ".join(dropped))
        kind = sorted(set(old.numeric) & set(self.categorical) | set(old.categorical) & set(self.numeric))
        if kind:
            changes.append("numeric <-> categorical: " + ", ".join(kind))
        for role in ("id_field", "timestamp_field"):
            if getattr(self, role) != getattr(old, role):
                changes.append(f"{role}: {getattr(old, role)!r} -> {getattr(self, role)!r}")
        return changes

    @classmethod
    def from_json_file(cls, path: Path) -> FeatureSpec:
        """Read a spec file; raise :class:`SpecError` naming the problem."""
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise SpecError(f"spec file not found: {path}") from exc
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec file {path} is not valid JSON: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise SpecError(f"spec file {path} is not UTF-8 text: {exc}") from exc
        except ValidationError as exc:
            raise SpecError(f"spec file {path} is invalid: {_first_error(exc)}") from exc
        except (ValueError, RecursionError) as exc:  # an integer of over 4,300 digits; nesting too deep
            raise SpecError(f"spec file {path} is not valid JSON: {type(exc).__name__}: {exc}") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])
