"""JSON for the tools' reports: NaN/±Inf become null (Python's json writes bare NaN, which is not JSON)."""
import json
import math


def finite_json(value, **kwargs):
    """json.dumps that writes NaN/±Inf as null."""
    def clean(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
            return clean(v.item())
        return v
    return json.dumps(clean(value), allow_nan=False, **kwargs)
