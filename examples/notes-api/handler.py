"""A small JSON REST API (notes) with a deliberately heavier start-up.

Init imports a handful of larger standard-library packages and builds an in-memory SQLite
database, the way real functions load frameworks, models or connection pools before their
first request. That start-up is what a cold start pays and what a CRIU snapshot skips.

    GET    /notes            list notes (optional ?q=word filters by text)
    POST   /notes            {"text": "..."} -> 201 with the new note
    GET    /notes/<id>       one note, 404 if there is none
    DELETE /notes/<id>       204, 404 if there is none
    GET    /health           init figures

State lives in the instance: each instance has its own database.
"""

import time

_started = time.perf_counter()

import asyncio  # noqa: E402,F401  (imported for its start-up cost, as a framework would be)
import decimal  # noqa: E402,F401
import email.mime.multipart  # noqa: E402,F401
import http.cookiejar  # noqa: E402,F401
import sqlite3  # noqa: E402
import statistics  # noqa: E402,F401
import xml.dom.minidom  # noqa: E402,F401

import aetherless  # noqa: E402

_db = sqlite3.connect(":memory:", check_same_thread=False)
_db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL, created REAL NOT NULL)")
_db.executemany(
    "INSERT INTO notes (text, created) VALUES (?, ?)",
    [(f"seed note {i}", time.time()) for i in range(2000)],
)
_db.execute("CREATE INDEX notes_text ON notes (text)")
_INIT_MS = (time.perf_counter() - _started) * 1000


def _note(row):
    return {"id": row[0], "text": row[1], "created": row[2]}


@aetherless.handler
def handle(req):
    parts = [p for p in req.path.split("/") if p]
    if parts == ["health"]:
        return {"status": "ok", "init_ms": round(_INIT_MS, 1)}
    if not parts or parts[0] != "notes" or len(parts) > 2:
        raise aetherless.HTTPError(404, f"no route for {req.method} {req.path}")

    if len(parts) == 1:
        if req.method == "GET":
            word = req.query.get("q")
            if word:
                rows = _db.execute(
                    "SELECT id, text, created FROM notes WHERE text LIKE ? ORDER BY id LIMIT 100", (f"%{word}%",)
                )
            else:
                rows = _db.execute("SELECT id, text, created FROM notes ORDER BY id DESC LIMIT 100")
            return [_note(row) for row in rows]
        if req.method == "POST":
            payload = req.json()
            text = payload.get("text") if isinstance(payload, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise aetherless.HTTPError(400, 'expected a JSON object {"text": "..."} with non-empty text')
            cursor = _db.execute("INSERT INTO notes (text, created) VALUES (?, ?)", (text, time.time()))
            row = _db.execute("SELECT id, text, created FROM notes WHERE id = ?", (cursor.lastrowid,)).fetchone()
            return aetherless.Response(201, {"location": f"/notes/{row[0]}"}, _note(row))
        raise aetherless.HTTPError(405, f"{req.method} is not allowed on /notes")

    try:
        note_id = int(parts[1])
    except ValueError:
        raise aetherless.HTTPError(400, f"note id must be an integer, not {parts[1]!r}")
    if req.method == "GET":
        row = _db.execute("SELECT id, text, created FROM notes WHERE id = ?", (note_id,)).fetchone()
        if row is None:
            raise aetherless.HTTPError(404, f"no note {note_id}")
        return _note(row)
    if req.method == "DELETE":
        if _db.execute("DELETE FROM notes WHERE id = ?", (note_id,)).rowcount == 0:
            raise aetherless.HTTPError(404, f"no note {note_id}")
        return None
    raise aetherless.HTTPError(405, f"{req.method} is not allowed on /notes/<id>")
