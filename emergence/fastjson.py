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
    """Parse a JSON document (str or UTF-8 bytes); ValueError on bad input,
    including a document nested deeper than the interpreter's stack allows."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8")
    start = len(data) - len(data.lstrip(_WS))
    try:
        obj, end = _scan(data, start)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
    except Exception:  # StopIteration, or an error the scanner cannot word without `json`
        return _precise(data)
    finally:
        _Context.memo.clear()
    if data[end:].strip(_WS):
        return _precise(data)
    return obj


TOO_DEEP = "nested too deeply"


def _precise(data):
    """Parse again with `json`, which raises the precise JSONDecodeError."""
    import json
    try:
        return json.loads(data, parse_constant=_Context.parse_constant)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


def too_deep(obj, limit):
    """The path (a list of keys and indices) to a value nested more than LIMIT
    containers deep in OBJ, or None; iterative, so any depth is safe to walk."""
    stack = [(obj, 0, [])]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        if depth >= limit:
            return path
        for k, v in items:
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1, path + [k]))
    return None


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
