"""The deployed state is durable: `aether up` without a file resumes what `up -c`, `deploy` and `rm`
left, deploys are all or nothing and notice edited handler files, and the state file is written
atomically into state_dir (each test's own, see harness.write_config)."""

import hashlib
import json
import os
import signal
import socket
import subprocess

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

VERSIONED_HANDLER = r'''
import os
import aetherless
''' + harness.IDENTITY_CODE + r'''

@aetherless.handler
def handle(req):
    return {"version": VERSION, **_identity(), "function": os.environ.get("AETHER_FUNCTION_ID")}
'''

#: Fails before it could ever report READY.
BROKEN_HANDLER = r'''
import sys
sys.stderr.write("deliberately broken at import\n")
sys.exit(3)
'''

PROCESS_HANDLER = r'''
import http.server, json, os, socket
''' + harness.IDENTITY_CODE + r'''

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"value": os.environ.get("VALUE"), **_identity()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["AETHER_LISTEN_PORT"])), Handler)
control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
control.connect(os.environ["AETHER_SOCKET"])
control.sendall(b"READY\n")
server.serve_forever()
'''

RECORD_PREFIX = "# aether-record: "


def connect_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


class DurableStateTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()

    # -- helpers

    @property
    def state_file(self) -> str:
        return os.path.join(self.state_dir, "desired.yaml")

    def record(self) -> dict:
        with open(self.state_file) as f:
            for line in f:
                if line.startswith(RECORD_PREFIX):
                    return json.loads(line[len(RECORD_PREFIX):])
        self.fail(f"no record line in {self.state_file}")

    def state_bytes(self) -> bytes:
        with open(self.state_file, "rb") as f:
            return f.read()

    def deploy(self, *args, check=True):
        return self.aether("deploy", *args, check=check, timeout=30)

    def deploy_rows(self, stdout: str) -> dict:
        lines = stdout.strip().splitlines()
        self.assertEqual(lines[0].split(), ["FUNCTION", "RESULT"], stdout)
        return {line.split(None, 1)[0]: line.split(None, 1)[1].strip() for line in lines[1:]}

    def listed(self) -> dict:
        return {f["id"]: f for f in self.status()["functions"]}

    def resume(self) -> harness.Orchestrator:
        return self.start(None, "--state-dir", self.state_dir)

    def kill_9(self, orch: harness.Orchestrator):
        pids = [i["pid"] for f in self.status()["functions"] for i in f["instances"]]
        os.kill(orch.pid, signal.SIGKILL)
        orch.wait_exit(5)
        gone = harness.wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), 10.0, 0.1)
        self.assertTrue(gone, f"handlers still running after the orchestrator was killed: {pids}")

    def write_versioned(self, name: str, version: int) -> str:
        return self.write_file(name, VERSIONED_HANDLER.replace("VERSION", str(version)))

    # -- tests

    def test_deployed_function_survives_kill_9_and_resume(self):
        a = self.function("resa")
        first = self.write_config([a])
        orch = self.start(first)
        b = self.function("resb", environment={"VALUE": "deployed"})
        second = self.write_config([b], name="second.yaml")
        self.assertEqual(self.deploy_rows(self.deploy(second).stdout), {b["id"]: "added"})
        self.assertStatus(self.get(b["trigger_port"], "/env"), 200, "deployed function")

        self.kill_9(orch)
        folder = os.path.dirname(self.control_socket)
        left = sorted(name for name in os.listdir(folder) if name.endswith(f"-{orch.pid}.sock"))
        self.assertEqual(len(left), 2, f"the killed orchestrator's handler sockets: {left}")
        resumed = self.resume()
        err = resumed.stderr()
        self.assertIn("resuming the deployed state: 2 functions", err, resumed.log())
        # A killed orchestrator cannot remove its handler sockets: the next one does.
        self.assertEqual([name for name in os.listdir(folder) if name.endswith(f"-{orch.pid}.sock")], [])
        self.assertIn("removed handler sockets left by a dead orchestrator", err)
        self.assertIn(self.state_file, err)
        self.assertIn(first, err)
        self.assertIn(second, err)
        self.assertIn("last change: `aether deploy " + second + "`", err)
        self.assertEqual(set(self.listed()), {a["id"], b["id"]})
        r = self.get(a["trigger_port"], "/json")
        self.assertStatus(r, 200, "the up -c function after resuming")
        self.assertEqual(r.json()["function"], a["id"])
        r = self.get(b["trigger_port"], "/env")
        self.assertStatus(r, 200, "the deployed function after resuming")
        self.assertEqual(r.json()["value"], "deployed")
        self.assertEqual(self.status()["state_file"], self.state_file)

    def test_rm_removes_for_good(self):
        a = self.function("keep")
        b = self.function("gone")
        self.start(self.write_config([a, b]))
        [old_pid] = [i["pid"] for i in self.listed()[b["id"]]["instances"]]
        result = self.aether("rm", b["id"])
        self.assertIn(f"removed {b['id']} (port {b['trigger_port']} released)", result.stdout)
        self.assertEqual(set(self.listed()), {a["id"]})
        self.assertTrue(connect_refused(b["trigger_port"]), "the removed function's port is still taken")
        self.assertTrue(harness.wait_until(lambda: not os.path.exists(f"/proc/{old_pid}"), 10.0),
                        "the removed function's handler is still running")
        self.assertEqual([f["id"] for f in self.record()["functions"]], [a["id"]])
        self.assertStatus(self.get(a["trigger_port"], "/json"), 200, "the other function")

        again = self.aether("rm", b["id"], check=False)
        self.assertEqual(again.returncode, 1, again)
        self.assertIn(f"no function {b['id']} is deployed", again.stderr)
        unknown = self.aether("rm", "no-such-function", check=False)
        self.assertEqual(unknown.returncode, 1, unknown)
        self.assertIn("no function no-such-function is deployed", unknown.stderr)

        self.aether("down")
        self.resume()
        self.assertEqual(set(self.listed()), {a["id"]})
        self.assertTrue(connect_refused(b["trigger_port"]), "the removed function came back")
        self.assertStatus(self.get(a["trigger_port"], "/json"), 200, "after resuming")

    def test_edited_handler_is_replaced_by_deploy(self):
        handler = self.write_versioned("versioned.py", 1)
        fn = self.function("edited", "versioned.py")
        config = self.write_config([fn])
        self.start(config)
        first = self.get(fn["trigger_port"], "/").json()
        self.assertEqual(first["version"], 1)
        self.assertEqual(self.deploy_rows(self.deploy(config).stdout), {fn["id"]: "unchanged"})

        self.write_versioned("versioned.py", 2)
        result = self.deploy(config)
        self.assertEqual(self.deploy_rows(result.stdout), {fn["id"]: "replaced (handler changed)"})
        second = self.get(fn["trigger_port"], "/").json()
        self.assertEqual(second["version"], 2)
        self.assertNotEqual(second["token"], first["token"], "served by the old handler process")
        with open(handler, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        [entry] = self.record()["functions"]
        self.assertEqual(entry["handler_sha256"], digest)
        self.assertEqual(entry["handler_path"], handler)
        self.assertEqual(entry["source"], config)

        # Edited while nothing ran: `up` runs the file as it is now, and says it changed.
        self.aether("down")
        self.write_versioned("versioned.py", 3)
        resumed = self.resume()
        self.assertEqual(self.get(fn["trigger_port"], "/").json()["version"], 3)
        self.assertIn(f"the handler of function {fn['id']} changed since it was deployed", resumed.stderr())

    def test_half_broken_deploy_applies_nothing(self):
        self.write_file("broken.py", BROKEN_HANDLER)
        a = self.function("steady", environment={"VALUE": "v1"})
        self.start(self.write_config([a]))
        before_pids = {i["pid"] for i in self.listed()[a["id"]]["instances"]}
        stored = self.state_bytes()

        good = self.function("good")
        broken = self.function("broken", "broken.py")
        changed = dict(a, environment={"VALUE": "v2"})
        result = self.deploy(self.write_config([changed, good, broken], name="half.yaml"), check=False)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn("nothing was applied", result.stderr)
        self.assertIn(f"function {broken['id']} could not start", result.stderr)
        self.assertIn("deliberately broken at import", result.stderr)
        self.assertNotIn(good["id"] + " could not start", result.stderr)

        self.assertEqual(set(self.listed()), {a["id"]}, "a new function of the refused deploy is running")
        self.assertTrue(connect_refused(good["trigger_port"]), "the good new function's port is taken")
        self.assertEqual({i["pid"] for i in self.listed()[a["id"]]["instances"]}, before_pids)
        r = self.get(a["trigger_port"], "/env")
        self.assertStatus(r, 200, "the running function after the refused deploy")
        self.assertEqual(r.json()["value"], "v1")
        self.assertEqual(self.state_bytes(), stored, "the stored state changed")
        self.assertEqual(harness.state_dir_entries(self.state_dir), ["desired.yaml"])
        left = harness.wait_until(
            lambda: not [p for p in harness.processes_mentioning(self.tmp) if "broken.py" in p], 5.0, 0.1)
        self.assertTrue(left, harness.processes_mentioning(self.tmp))

        # And a deploy of the good part alone goes through.
        self.assertEqual(self.deploy_rows(self.deploy(self.write_config([good], name="good.yaml")).stdout),
                         {good["id"]: "added"})

    def test_half_broken_deploy_gives_process_handlers_their_port_back(self):
        # With eBPF a new process handler takes the trigger port when it reports READY; undoing
        # the deploy steers the port back to the one that kept running.
        self.write_file("process.py", PROCESS_HANDLER)
        self.write_file("broken.py", BROKEN_HANDLER)
        p = self.function("proca", "process.py", protocol="process", environment={"VALUE": "v1"})
        q = self.function("procb", "process.py", protocol="process", environment={"VALUE": "v1"})
        self.start(self.write_config([p, q]))
        before = self.get(p["trigger_port"], "/").json()
        result = self.deploy(self.write_config(
            [dict(p, environment={"VALUE": "v2"}), dict(q, handler_path="broken.py")], name="half.yaml"), check=False)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(f"nothing was applied: function {q['id']} could not start", result.stderr)
        self.assertIn("every running function and the stored state are unchanged", result.stderr)
        for _ in range(5):
            r = self.get(p["trigger_port"], "/")
            self.assertStatus(r, 200, "the process handler after the undo")
            self.assertEqual(r.json(), before)
        self.assertStatus(self.get(q["trigger_port"], "/"), 200, "the other process handler")

    def test_a_failed_replacement_that_stopped_the_old_one_first_restarts_it(self):
        # sdk -> process moves the port from the gateway to the handler: the old generation has to
        # stop before the new one starts. When the new one fails, the old one is started again.
        self.write_file("broken.py", BROKEN_HANDLER)
        s = self.function("switch", environment={"VALUE": "v1"})
        self.start(self.write_config([s]))
        stored = self.state_bytes()
        result = self.deploy(self.write_config(
            [dict(s, handler_path="broken.py", protocol="process")], name="switch.yaml"), check=False)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(f"nothing was applied: function {s['id']} could not start", result.stderr)
        r = self.get(s["trigger_port"], "/env")
        self.assertStatus(r, 200, "the old version, started again")
        self.assertEqual(r.json()["value"], "v1")
        self.assertEqual(self.listed()[s["id"]]["protocol"], "sdk")
        self.assertEqual(self.state_bytes(), stored)

    def test_removing_the_last_function_resumes_an_empty_orchestrator(self):
        a = self.function("last")
        self.start(self.write_config([a]))
        self.aether("rm", a["id"])
        self.assertEqual(self.record()["functions"], [])
        self.aether("down")
        resumed = self.resume()
        self.assertIn("resuming the deployed state: 0 functions", resumed.stderr())
        self.assertEqual(self.listed(), {})
        b = self.function("next")
        self.assertEqual(self.deploy_rows(self.deploy(self.write_config([b], name="b.yaml")).stdout),
                         {b["id"]: "added"})
        self.assertStatus(self.get(b["trigger_port"], "/json"), 200, "deployed into the empty orchestrator")

    def test_up_without_anything_stored_fails_clearly(self):
        orch = self.start_expect_failure(None, "--state-dir", self.state_dir)
        err = orch.stderr()
        self.assertIn(f"nothing has been deployed with the state folder {self.state_dir}", err)
        self.assertIn("aether up -c FILE", err)
        # $AETHER_STATE_DIR names the folder when --state-dir does not.
        elsewhere = os.path.join(self.tmp, "elsewhere")
        env = dict(os.environ, AETHER_STATE_DIR=elsewhere)
        result = subprocess.run([harness.aether_bin(), "up"], capture_output=True, text=True, timeout=20,
                                cwd=self.tmp, env=env)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(f"nothing has been deployed with the state folder {elsewhere}", result.stderr)

    def test_state_file_is_ours_and_written_atomically(self):
        a = self.function("atom")
        config = self.write_config([a])
        self.start(config)
        self.assertEqual(harness.state_dir_entries(self.state_dir), ["desired.yaml"])
        self.assertEqual(os.stat(self.state_file).st_mode & 0o777, 0o600)
        with open(self.state_file) as f:
            self.assertTrue(f.readline().startswith("# aetherless desired state"))
        record = self.record()
        self.assertEqual(record["change"], f"aether up -c {config}")
        # The stored configuration is one `aether validate` accepts as it is.
        validated = subprocess.run([harness.aether_bin(), "validate", self.state_file], capture_output=True,
                                   text=True, timeout=20)
        self.assertEqual(validated.returncode, 0, validated)
        self.assertIn(a["id"], validated.stdout)

        # A temporary file a killed writer left is removed; other files are never touched.
        stale = os.path.join(self.state_dir, ".desired.yaml.tmp-999999999")
        foreign = os.path.join(self.state_dir, "notes.txt")
        for path in (stale, foreign):
            with open(path, "w") as f:
                f.write("not aether's\n")
        b = self.function("atomb")
        self.deploy(self.write_config([b], name="b.yaml"))
        self.assertEqual(harness.state_dir_entries(self.state_dir), ["desired.yaml", "notes.txt"])
        with open(foreign) as f:
            self.assertEqual(f.read(), "not aether's\n")
        self.assertEqual([f["id"] for f in self.record()["functions"]], [a["id"], b["id"]])

    def test_a_foreign_file_at_the_state_name_is_neither_read_nor_replaced(self):
        os.makedirs(self.state_dir)
        with open(self.state_file, "w") as f:
            f.write("functions: []\n")
        orch = self.start_expect_failure(None, "--state-dir", self.state_dir)
        self.assertIn("was not written by aether", orch.stderr())
        a = self.function("foreign")
        orch = self.start_expect_failure(self.write_config([a]), timeout=30)
        self.assertIn("was not written by aether", orch.stderr())
        with open(self.state_file) as f:
            self.assertEqual(f.read(), "functions: []\n")

    def test_up_with_a_file_replaces_the_stored_state(self):
        a = self.function("firsta")
        first = self.write_config([a])
        self.start(first)
        b = self.function("firstb")
        self.deploy(self.write_config([b], name="b.yaml"))
        self.aether("down")
        self.start(first)
        self.assertEqual(set(self.listed()), {a["id"]})
        self.assertEqual([f["id"] for f in self.record()["functions"]], [a["id"]])
        self.aether("down")
        self.resume()
        self.assertEqual(set(self.listed()), {a["id"]})


if __name__ == "__main__":
    import unittest

    unittest.main()
