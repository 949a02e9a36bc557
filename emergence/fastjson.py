"""JSON through the stdlib's C accelerator, without importing `json`.

`import json` pulls in `re` and `enum`, which costs ~16 ms per command on
the target machines — more than the rest of `state` or `kill`.  The C
scanner and string encoder of `_json` do the same work; errors fall back to
the `json` module so messages stay exact.
"""

import _json


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = {}

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not valid JSON")


_scan = _json.make_scanner(_Context())
_WS = " \t\n\r"


def loads(data):
    """Parse a JSON document (str or UTF-8 bytes); ValueError on bad input."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8")
    start = len(data) - len(data.lstrip(_WS))
    try:
        obj, end = _scan(data, start)
    except Exception:  # StopIteration, or an error the scanner cannot word without `json`
        import json  # raises the precise JSONDecodeError
        return json.loads(data, parse_constant=_Context.parse_constant)
    finally:
        _Context.memo.clear()
    if data[end:].strip(_WS):
        import json
        return json.loads(data, parse_constant=_Context.parse_constant)
    return obj


_str = _json.encode_basestring_ascii


def dumps(obj, indent=None, _level=0):
    """Serialise dicts, lists, strings, numbers, booleans and None."""
    if isinstance(obj, str):
        return _str(obj)
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if obj is None:
        return "null"
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        return float.__repr__(obj)
    if indent is None:
        if isinstance(obj, dict):
            return "{" + ", ".join(f"{_str(str(k))}: {dumps(v)}" for k, v in obj.items()) + "}"
        return "[" + ", ".join(dumps(v) for v in obj) + "]"
    pad = "\n" + " " * (indent * (_level + 1))
    end = "\n" + " " * (indent * _level)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        return "{" + ",".join(f"{pad}{_str(str(k))}: {dumps(v, indent, _level + 1)}"
                              for k, v in obj.items()) + end + "}"
    if not obj:
        return "[]"
    return "[" + ",".join(pad + dumps(v, indent, _level + 1) for v in obj) + end + "]"
