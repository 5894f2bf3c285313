"""The base of every model the gateway agent loads: msgspec Structs with the few
pydantic-style methods the project calls (``model_validate_json``, ``model_validate``,
``model_dump_json``, ``model_dump``, ``model_copy``), and validation errors that name the
field and the reason.

msgspec, not pydantic: the agent runs on small boards, and pydantic (with pydantic-core's
shared library and its schema machinery) was about 12 MB of the agent's resident memory.
Nothing here imports pydantic; ``tests/integration/test_agent_imports.py`` keeps it so.

A validator (``__post_init__``) that blames one field raises :func:`field_error`, so the
error names that field (``quantities.voltage.scale: …``), as a field's own check would.
"""

from __future__ import annotations

import copy
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import msgspec

_FIELD_MARK = "\x00field:"  # prefix of a field_error's message, until it is placed
_AT = re.compile(r"^(?P<msg>.*) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$", re.DOTALL)
_SEGMENT = re.compile(r"\.(?P<name>[^.\[]+)|\[(?P<index>\d+)\]|\[(?P<key>\.\.\.)\]")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")


class ContractError(ValueError):
    """A payload or document that does not fit its model: ``loc`` is the path to the
    offending field (names and list indexes), ``reason`` says what is wrong. ``str()`` is
    ``"loc: reason"``."""

    def __init__(self, loc: tuple[str | int, ...], reason: str) -> None:
        self.loc = loc
        self.reason = reason
        where = ".".join(str(p) for p in loc)
        super().__init__(f"{where}: {reason}" if where else reason)

    def errors(self) -> list[dict[str, Any]]:
        """The first problem as pydantic's ``ValidationError.errors()`` gives it (msgspec
        stops at the first one)."""
        return [{"loc": self.loc, "msg": self.reason}]


def field_error(field: str, reason: str) -> ValueError:
    """For ``__post_init__``: an error that names ``field`` of the struct being checked."""
    return ValueError(f"{_FIELD_MARK}{field}\x00{reason}")


def _dec_hook(tp: Any, obj: Any) -> Any:
    if tp is Path and isinstance(obj, str | Path):
        return Path(obj)
    raise NotImplementedError(f"no decoder for {tp!r}")


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


#: One encoder for every payload (``contract.mqtt.dump``).
encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


#: The largest payload any model is decoded from (a telemetry batch of 5,000 readings is
#: about 1.3 MB); anything bigger is refused before it is parsed.
MAX_JSON_BYTES = 4 * 1024 * 1024


def decode_json(raw: bytes | str, tp: Any) -> Any:
    """Decode and validate JSON as ``tp`` (strict types, as on the wire). Whatever ``raw``
    holds — too big, invalid UTF-8 inside a string, nesting deep enough to exhaust the
    stack — the only error is a :class:`ContractError`."""
    if len(raw) > MAX_JSON_BYTES:
        raise ContractError((), f"payload too large ({len(raw)} bytes, at most {MAX_JSON_BYTES})")
    try:
        return msgspec.json.decode(raw, type=tp, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _explain(exc, tp, None) from None
    except msgspec.DecodeError as exc:
        raise ContractError((), f"not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ContractError((), f"not valid UTF-8 at byte {exc.start}") from None
    except RecursionError:
        raise ContractError((), "nested too deeply") from None


def convert(doc: Any, tp: Any) -> Any:
    """Validate a loaded document (YAML, JSON, a dict built in code) as ``tp``. As lax as
    pydantic was with documents: ``"5"`` is accepted for an int, ``"0.01"`` for a Decimal."""
    try:
        return msgspec.convert(doc, tp, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _explain(exc, tp, doc) from None


class Model(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Frozen, unknown fields refused, keyword-only construction (pydantic's
    ``extra="forbid", frozen=True``). Construction does not validate: what comes from
    outside goes through ``model_validate`` / ``model_validate_json``."""

    @classmethod
    def model_validate_json(cls, raw: bytes | str) -> Self:
        result: Self = decode_json(raw, cls)
        return result

    @classmethod
    def model_validate(cls, doc: Any) -> Self:
        if isinstance(doc, cls):
            return doc
        result: Self = convert(doc, cls)
        return result

    def model_dump_json(self) -> str:
        return encoder.encode(self).decode()

    def model_dump(
        self,
        mode: Literal["python", "json"] = "python",
        exclude_defaults: bool = False,
        exclude: set[str] | None = None,
    ) -> dict[str, Any]:
        """The document form (field names as in the files and payloads; in ``json`` mode
        only JSON types, in ``python`` mode Decimal, datetime and UUID kept; a Path is a str
        and an enum its value in both)."""
        keep: tuple[type, ...] = () if mode == "json" else _PYTHON_TYPES
        out: dict[str, Any] = {}
        for f in msgspec.structs.fields(self):
            value = getattr(self, f.name)
            if exclude and f.name in exclude:
                continue
            if exclude_defaults and _is_default(f, value):
                continue
            if isinstance(value, Model):
                out[f.encode_name] = value.model_dump(mode, exclude_defaults)
            else:
                out[f.encode_name] = msgspec.to_builtins(
                    value, builtin_types=keep, enc_hook=_enc_hook
                )
        return out

    def model_copy(self, update: dict[str, Any] | None = None) -> Self:
        """A copy with ``update`` (attribute names) applied, not validated (as pydantic's)."""
        new = copy.copy(self)
        for name, value in (update or {}).items():
            msgspec.structs.force_setattr(new, name, value)
        return new


def _python_types() -> tuple[type, ...]:
    from datetime import date, datetime, time
    from decimal import Decimal
    from uuid import UUID

    return (datetime, date, time, Decimal, UUID)


_PYTHON_TYPES = _python_types()


def _is_default(f: msgspec.structs.FieldInfo, value: Any) -> bool:
    if f.default is not msgspec.NODEFAULT:
        return bool(value == f.default)
    if f.default_factory is not msgspec.NODEFAULT:
        return bool(value == f.default_factory())
    return False


# -- error messages ----------------------------------------------------------------------


def _explain(exc: msgspec.ValidationError, tp: Any, doc: Any) -> ContractError:
    """msgspec's ``Expected `int` >= 1 - at `$.buses[0].port``` as a ContractError with a
    loc like pydantic's (``buses.0.port``): dict keys named (msgspec says ``[...]``), a
    missing or unknown field named in the loc, the choices of a literal or tag listed."""
    text = str(exc)
    m = _AT.match(text)
    msg, path = (m["msg"], m["path"]) if m else (text, "")
    in_key = bool(m and m["key"])
    loc: list[str | int] = []
    node: Any = doc
    for seg in _SEGMENT.finditer(path):
        tp = _strip(tp, node)
        if seg["name"] is not None:
            name = seg["name"]
            loc.append(name)
            tags = _tags(tp, name)
            tp = Literal[tags] if tags else _field_type(tp, name)
            node = node.get(name) if isinstance(node, dict) else None
        elif seg["index"] is not None:
            i = int(seg["index"])
            loc.append(i)
            tp = _item_type(tp)
            node = node[i] if isinstance(node, list | tuple) and i < len(node) else None
        else:
            key, node = _failing_item(node, _value_type(tp))
            loc.append(key)
            tp = _value_type(tp)
    if (mk := _MISSING.match(msg)) is not None:
        return ContractError((*loc, mk["field"]), "field required")
    if (mk := _UNKNOWN.match(msg)) is not None:
        return ContractError((*loc, mk["field"]), "unknown field (extra fields are not permitted)")
    if msg.startswith(_FIELD_MARK):
        field, _, reason = msg[len(_FIELD_MARK) :].partition("\x00")
        return ContractError((*loc, field), reason)
    if in_key:  # the key of a mapping, not its value
        tp = _strip(tp, node)
        tp, msg = _item_type(tp), f"{msg} (a key)"
    return ContractError(tuple(loc), _with_choices(msg, tp))


def _strip(tp: Any, node: Any) -> Any:
    """``Annotated[X, …]`` → X; ``X | None`` → X; a tagged union → the member ``node``'s
    tag picks (or the union itself when it names none)."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if _is_union(tp):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0], node)
        tag = _tag_field(members)
        if tag and isinstance(node, dict):
            for cls in members:
                if cls.__struct_config__.tag == node.get(tag):
                    return cls
    return tp


def _tags(tp: Any, name: str) -> tuple[str, ...]:
    """The tags of a tagged union whose tag field is ``name`` (else none)."""
    if not _is_union(tp):
        return ()
    members = [a for a in get_args(tp) if a is not type(None)]
    if _tag_field(members) != name:
        return ()
    return tuple(c.__struct_config__.tag for c in members)


def _is_union(tp: Any) -> bool:
    import types

    return get_origin(tp) in (Union, types.UnionType)


def _tag_field(members: list[Any]) -> str | None:
    fields = {getattr(getattr(c, "__struct_config__", None), "tag_field", None) for c in members}
    return fields.pop() if len(fields) == 1 else None


def _field_type(tp: Any, name: str) -> Any:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        for f in msgspec.structs.fields(tp):
            if f.encode_name == name:
                return f.type
    return None


def _item_type(tp: Any) -> Any:
    args = get_args(tp)
    return args[0] if args else None


def _value_type(tp: Any) -> Any:
    args = get_args(tp)
    return args[1] if len(args) == 2 else None


def _failing_item(node: Any, value_type: Any) -> tuple[str, Any]:
    """Which entry of a mapping fails (msgspec does not say): the first that does not
    convert on its own."""
    if isinstance(node, dict) and value_type is not None:
        for key, value in node.items():
            try:
                msgspec.convert(value, value_type, strict=False, dec_hook=_dec_hook)
            except msgspec.ValidationError:
                return str(key), value
            except Exception:  # noqa: S112 - a key we cannot place is shown as [...]
                continue
    return "[...]", None


def _with_choices(msg: str, tp: Any) -> str:
    """Add what a literal field accepts, or which tags a tagged union knows."""
    tp_stripped = tp
    while get_origin(tp_stripped) is Annotated:
        tp_stripped = get_args(tp_stripped)[0]
    if _is_union(tp_stripped):
        members = [a for a in get_args(tp_stripped) if a is not type(None)]
        if len(members) == 1:
            tp_stripped = members[0]
    if get_origin(tp_stripped) is Literal:
        choices = ", ".join(repr(c) for c in get_args(tp_stripped))
        return f"{msg}; expected {choices}"
    if isinstance(tp_stripped, type) and issubclass(tp_stripped, Enum):
        choices = ", ".join(repr(c.value) for c in tp_stripped)
        return f"{msg}; expected {choices}"
    return msg
