"""A function with a heavy dependency: it imports numpy (from its own virtualenv, built from
requirements.txt) and fits a small model at import, the kind of init a snapshot skips. With
`snapshot: true` its instances are restores of a process that already did all that
(BENCHMARKS.md, "A heavy import": cold start vs snapshot start).

    curl 'http://127.0.0.1:8085/?x=1.5'
"""

import numpy as np

import aetherless

# "Training" at import: a least-squares fit of a cubic to noisy samples of sin(x).
_rng = np.random.default_rng(17)
_xs = np.linspace(-3.0, 3.0, 2000)
_ys = np.sin(_xs) + _rng.normal(0.0, 0.05, _xs.size)
COEFFICIENTS = np.polyfit(_xs, _ys, 3)


@aetherless.handler
def handle(req):
    x = float(req.query.get("x", "1.0"))
    return {
        "x": x,
        "prediction": float(np.polyval(COEFFICIENTS, x)),
        "sin": float(np.sin(x)),
        "numpy": np.__version__,
    }
