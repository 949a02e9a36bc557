"""A TOML or JSON document read for a person: a file that cannot be read or
parsed is one line naming the file and what is wrong (Relay's graphs and
the CI stage's pipelines are such files)."""

from .errors import EmergenceError


def load(path, fmt, error=EmergenceError, prefix=""):
    """The document at PATH in FMT ("toml" or "json"); ERROR(PREFIX + why) if
    it cannot be had."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise error(f"{prefix}cannot read {path}: {e.strerror}") from None
    if fmt == "json":
        import json
        try:
            return json.loads(data)
        except ValueError as e:
            raise error(f"{prefix}{path}: not valid JSON: {e}") from None
    import tomllib
    try:
        return tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise error(f"{prefix}{path}: not valid TOML: {e}") from None
