"""Turn pydantic validation errors into `file: key: problem` lines a person can act on."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at the table that holds ``loc``'s last element."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        # Unwrap list[X] / X | None to the model inside, if any.
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
        else:
            return []
    fields = getattr(current, "model_fields", {})
    return [f.alias or name for name, f in fields.items()]


def problems(model: type[BaseModel], exc: ValidationError) -> list[tuple[str, str]]:
    """(dotted key, problem) pairs for every error, in document order."""
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ""
        for part in loc:
            if isinstance(part, int):
                key += f"[{part}]"
            else:
                key += ("." if key else "") + str(part)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            msg = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            if "input" in err and kind not in ("model_type", "dict_type"):
                shown = repr(err["input"])
                if len(shown) > 60:
                    shown = shown[:57] + "..."
                msg += f" (got {shown})"
        out.append((key, msg))
    return out
