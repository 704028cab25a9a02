"""The smallest SDK function: answers `GET /?name=x` with JSON.

`aether up` runs it with the Python handler runtime (as `python3 -m aetherless handler.py`): the
module is imported once, then every request arrives through shared memory.
"""

import aetherless


@aetherless.handler
def handle(req):
    return {"hello": req.query.get("name", "world")}
