"""Turn pydantic validation errors into `file: key: problem` lines a person can act on."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import tomli
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
            near = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.75)
            msg = "unknown key" + (f", did you mean {near[0]!r}?" if near else "")
            msg += f" (allowed: {', '.join(allowed)})" if allowed else ""
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


class TomlError(ValueError):
    """A TOML file that cannot be read as TOML; the message says why, without the path."""


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file (digest.toml, a profile) parsed, or TomlError with one line of why. A
    missing file is left as FileNotFoundError: the config says how to make one."""
    try:
        return tomli.loads(read_toml_text(path))
    except tomli.TOMLDecodeError as exc:
        raise TomlError(f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise TomlError(str(exc.reason)) from exc
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TomlError(f"cannot read: {exc.strerror or exc}") from exc


def read_toml_text(path: Path) -> str:
    """A TOML file's text, as `Path.read_text` gives it (any line ends read as newlines), but
    with the byte-order mark some Windows editors write first skipped; text in another
    encoding is a UnicodeDecodeError whose reason says which line and what to do."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # The decoder's offsets start after a byte-order mark.
        start = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        exc.reason = f"line {line} is not UTF-8 text: save the file as UTF-8"
        raise
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


# Mistakes of one file named in its error line; the rest are counted.
SHOWN_PROBLEMS = 4


def first_and_rest(found: list[tuple[str, str]]) -> tuple[str, str]:
    """The first mistake's key, and one message with every mistake in it, so that one edit
    fixes them all (a few at most: a file with dozens is the wrong file, as the first say)."""
    key, msg = found[0]
    msg += "".join(f"; also {k}: {m}" for k, m in found[1:SHOWN_PROBLEMS])
    if len(found) > SHOWN_PROBLEMS:
        msg += f" (and {len(found) - SHOWN_PROBLEMS} more)"
    return key, msg
