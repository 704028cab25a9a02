"""ASGI and WSGI apps as functions (issue 17): `asgi: ATTR` / `wsgi: ATTR` on a Python sdk
function, served by the SDK's adapters straight from the ring, through the real orchestrator,
with FastAPI and Flask from the pinned test virtualenv (scripts/test-venv.sh, which
scripts/test.sh runs first and names in AETHER_TEST_VENV_PYTHON)."""

import os
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

VENV_PYTHON = os.environ.get("AETHER_TEST_VENV_PYTHON", "")

FASTAPI_APP = r'''
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

started = []
app = FastAPI()


@app.on_event("startup")
async def startup():
    started.append("yes")


@app.get("/items/{item}")
async def item(item: int, q: str = ""):
    return {"item": item, "q": q, "started": started}


@app.post("/echo")
async def echo(payload: dict):
    return payload


@app.get("/cookies")
async def cookies():
    response = JSONResponse({"ok": True}, status_code=201)
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


@app.get("/boom")
async def boom():
    raise RuntimeError("boom")
'''

FLASK_APP = r'''
from flask import Flask, request

web = Flask(__name__)


@web.route("/hello/<name>", methods=["GET", "PUT"])
def hello(name):
    return {"hello": name, "method": request.method, "q": request.args.get("q", "")}


@web.route("/bytes", methods=["POST"])
def raw():
    return request.get_data(), 200, {"Content-Type": "application/octet-stream"}
'''


@unittest.skipUnless(
    VENV_PYTHON or os.environ.get("AETHER_REQUIRE_FRAMEWORKS"),
    "needs the test virtualenv (scripts/test-venv.sh; scripts/test.sh sets AETHER_TEST_VENV_PYTHON)",
)
class PythonAppTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.assertTrue(os.access(VENV_PYTHON, os.X_OK), f"AETHER_TEST_VENV_PYTHON={VENV_PYTHON!r}")

    def test_fastapi_and_flask_apps_through_aether(self):
        api = self.function("fastapi", self.write_file("api.py", FASTAPI_APP), asgi="app", snapshot=True)
        web = self.function("flask", self.write_file("web.py", FLASK_APP), wsgi="web")
        self.start(self.write_config([api, web], orchestrator={"python": VENV_PYTHON, "restore_timeout_ms": 100}))
        r = self.get(api["trigger_port"], "/items/7?q=x")
        self.assertStatus(r, 200, "FastAPI path and query")
        # Lifespan startup ran before READY, in the template: the restored copy has its state.
        self.assertEqual(r.json(), {"item": 7, "q": "x", "started": ["yes"]})
        r = harness.http_request(api["trigger_port"], "POST", "/echo", body=b'{"a": [1, 2]}',
                         headers={"Content-Type": "application/json"})
        self.assertEqual((r.status, r.json()), (200, {"a": [1, 2]}))
        r = self.get(api["trigger_port"], "/cookies")
        self.assertEqual(r.status, 201)
        cookies = [v for k, v in r.header_list if k.lower() == "set-cookie"]
        self.assertEqual(len(cookies), 2, r.header_list)
        self.assertEqual(self.get(api["trigger_port"], "/items/notanumber").status, 422)
        self.assertEqual(self.get(api["trigger_port"], "/nowhere").status, 404)
        self.assertEqual(harness.http_request(api["trigger_port"], "DELETE", "/echo").status, 405)
        self.assertEqual(self.get(api["trigger_port"], "/boom").status, 500)
        r = harness.http_request(web["trigger_port"], "PUT", "/hello/ada?q=1")
        self.assertEqual((r.status, r.json()), (200, {"hello": "ada", "method": "PUT", "q": "1"}))
        blob = bytes(range(256)) * 4
        r = harness.http_request(web["trigger_port"], "POST", "/bytes", body=blob,
                         headers={"Content-Type": "application/octet-stream"})
        self.assertEqual((r.status, r.body), (200, blob))

    def test_a_missing_app_fails_up_naming_it(self):
        fn = self.function("noapp", self.write_file("api.py", FASTAPI_APP), asgi="application")
        orch = self.start_expect_failure(self.write_config([fn], orchestrator={"python": VENV_PYTHON}))
        self.assertIn("application", orch.stderr())
        self.assertIn("asgi", orch.stderr())
