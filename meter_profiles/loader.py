"""Loading profiles: the shipped ones, overridden or extended by an installer's directory."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from meter_profiles.schema import AnyProfile, Profile

SHIPPED = Path(__file__).parent / "profiles"
PROFILE_ADAPTER: TypeAdapter[AnyProfile] = TypeAdapter(Profile)


class ProfileError(ValueError):
    """A profile file that cannot be used: names the file, the field and the reason."""


def load_file(path: Path) -> AnyProfile:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return PROFILE_ADAPTER.validate_python(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ProfileError(f"{path}: {problems}") from exc


def load_profiles(extra_dir: Path | None = None) -> dict[str, AnyProfile]:
    """Shipped profiles, then ``extra_dir``'s (an installer's file replaces a shipped model)."""
    profiles: dict[str, AnyProfile] = {}
    dirs = [SHIPPED] + ([extra_dir] if extra_dir else [])
    for d in dirs:
        for path in sorted(d.glob("*.yaml")):
            p = load_file(path)
            profiles[p.model] = p
    return profiles
