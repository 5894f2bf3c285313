"""Loading profiles: the shipped ones, overridden or extended by an installer's directory."""

from __future__ import annotations

from pathlib import Path

import yaml

from contract.structs import ContractError, convert
from meter_profiles.schema import AnyProfile, Profile

SHIPPED = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    """A profile file that cannot be used: names the file, the field and the reason."""


def load_file(path: Path) -> AnyProfile:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse_profile(doc)
    except ContractError as exc:
        where = ".".join(str(p) for p in exc.loc) or "(file)"
        raise ProfileError(f"{path}: {where}: {exc.reason}") from exc


def parse_profile(doc: object) -> AnyProfile:
    """A profile document (as loaded from YAML or pushed by the cloud), validated: raises
    ContractError naming the field and the reason."""
    profile: AnyProfile = convert(doc, Profile)
    return profile


def load_profiles(extra_dir: Path | None = None) -> dict[str, AnyProfile]:
    """Shipped profiles, then ``extra_dir``'s (an installer's file replaces a shipped model)."""
    profiles: dict[str, AnyProfile] = {}
    dirs = [SHIPPED] + ([extra_dir] if extra_dir else [])
    for d in dirs:
        for path in sorted(d.glob("*.yaml")):
            p = load_file(path)
            profiles[p.model] = p
    return profiles
