"""Nothing accumulates: orphans re-parented to the orchestrator (a child subreaper) are reaped,
what a handler forked dies with its instance, restores leave no logs behind, and stale-image
cleanup only ever deletes folders the orchestrator made."""

import os
import signal
import time

try:
    from . import harness
    from .test_snapshots import SNAPSHOT_HANDLER
except ImportError:  # run from inside tests/integration
    import harness
    from test_snapshots import SNAPSHOT_HANDLER


#: A process handler that forks a child (which outlives it unless someone kills it) and serves
#: its identity (harness.IDENTITY_CODE) and the child's: its pid (in the instance's PID
#: namespace, meaningless on the host) and a marker unique to it on its command line, by which
#: the host finds it (harness.processes_with_marker).
FORKING_HANDLER = r'''
import http.server, json, os, socket, subprocess, sys
''' + harness.IDENTITY_CODE + r'''

marker = "aeit-forked-child-" + os.urandom(8).hex()
# Its own session: out of the handler's process group, as a daemonised child would be.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", marker], start_new_session=True)

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({**_identity(), "child": child.pid, "child_marker": marker}).encode()
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


def alive(pid: int) -> bool:
    """Running (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def zombie_children(pid: int) -> list[int]:
    zombies = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                try:
                    with open(f"/proc/{child}/stat") as stat:
                        if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                            zombies.append(int(child))
                except FileNotFoundError:
                    pass
    return zombies


class LeaksTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_file("forking.py", FORKING_HANDLER)

    def forked_child(self, answer: dict) -> int:
        """The host pid of the child the handler that gave `answer` forked."""
        found = harness.wait_until(lambda: harness.processes_with_marker(answer["child_marker"]), 5.0)
        self.assertTrue(found, f"no process with the marker {answer['child_marker']}")
        self.assertEqual(len(found), 1, found)
        [child] = found
        # It is that handler's child, in the instance's PID namespace.
        with open(f"/proc/{child}/status") as f:
            ppid = int([line for line in f if line.startswith("PPid:")][0].split()[1])
        self.assertEqual(ppid, harness.host_pid(answer))
        self.assertEqual(harness.ns_pids(child)[-1], answer["child"])
        return child

    def test_what_a_crashed_handler_forked_dies_and_is_reaped(self):
        fn = self.function("forker", "forking.py", protocol="process")
        orch = self.start(self.write_config([fn]))
        first = self.get(fn["trigger_port"], "/").json()
        child = self.forked_child(first)
        self.assertTrue(alive(child))
        instance = harness.instance_pid(first)
        os.kill(harness.host_pid(first), signal.SIGKILL)
        self.wait_serving(fn["id"], exclude_pids=(instance,))
        self.assertTrue(harness.wait_until(lambda: not alive(child), 5.0),
                        "the crashed instance's child survived it")
        self.assertEqual(harness.processes_with_marker(first["child_marker"]), [])
        # Its child was re-parented to the orchestrator (a subreaper) when it died: reaped too.
        self.assertTrue(harness.wait_until(lambda: not zombie_children(orch.pid), 5.0),
                        f"zombies left under the orchestrator: {zombie_children(orch.pid)}")

    def test_down_leaves_no_process_a_handler_forked(self):
        fn = self.function("forkdown", "forking.py", protocol="process")
        orch = self.start(self.write_config([fn]))
        answer = self.get(fn["trigger_port"], "/").json()
        child = self.forked_child(answer)
        self.aether("down")
        self.assertEqual(orch.wait_exit(15), 0, orch.log())
        self.assertTrue(harness.wait_until(lambda: not alive(child), 5.0), "a forked child survived aether down")
        self.assertEqual(harness.processes_with_marker(answer["child_marker"]), [])

    def test_restores_leave_no_logs_behind(self):
        self.write_file("snap.py", SNAPSHOT_HANDLER)
        images = os.path.join(self.tmp, "images")
        fn = self.function("restlog", "snap.py", snapshot=True, min_warm=0, idle_timeout_ms=200)
        self.start(self.write_config([fn], orchestrator={"snapshot_dir": images, "restore_timeout_ms": 100}))
        for _ in range(4):
            self.assertStatus(self.get(fn["trigger_port"], "/"), 200, "restored")
            self.assertTrue(harness.wait_until(lambda: self.instances(fn["id"]) == [], 5.0))
        self.assertGreaterEqual(self.stats(fn["id"])["stats"]["restores"], 4)
        [folder] = os.listdir(images)
        logs = [name for name in os.listdir(os.path.join(images, folder)) if name.startswith("restore")]
        self.assertEqual(logs, [], "restore logs pile up in the image folder")

    def test_stale_image_cleanup_only_removes_folders_it_made(self):
        self.write_common_handler()
        images = os.path.join(self.tmp, "images")
        # Shaped like an image folder of a dead orchestrator, but a user's: no marker.
        user = os.path.join(images, "999999-mine")
        os.makedirs(user)
        self.write_file("images/999999-mine/notes.txt", "keep me")
        # A real stale image folder of a dead orchestrator: marked.
        stale = os.path.join(images, "999998-fn-g1")
        os.makedirs(stale)
        open(os.path.join(stale, ".aetherless-image"), "w").close()
        fn = self.function("plain")
        self.start(self.write_config([fn], orchestrator={"snapshot_dir": images}))
        self.assertTrue(os.path.exists(os.path.join(user, "notes.txt")), "a user's folder was deleted")
        self.assertFalse(os.path.exists(stale), "a stale image folder of a dead orchestrator was kept")


class ImageRepairTest(harness.AetherTestCase):
    def test_a_corrupted_image_is_built_again_and_clients_never_see_host_details(self):
        self.write_file("snap.py", SNAPSHOT_HANDLER)
        images = os.path.join(self.tmp, "images")
        fn = self.function("repair", "snap.py", snapshot=True, min_warm=0, idle_timeout_ms=60000)
        # No warm pool: copies restored ahead of demand would come from the image before it is
        # damaged here; these restores must read the damaged one.
        self.start(self.write_config(
            [fn], orchestrator={"snapshot_dir": images, "restore_timeout_ms": 100, "warm_pool_size": 0}))
        [folder] = os.listdir(images)
        image = os.path.join(images, folder)
        pages = [name for name in os.listdir(image) if name.startswith("pages-")]
        self.assertTrue(pages, os.listdir(image))
        for name in pages:
            os.unlink(os.path.join(image, name))

        failures = []
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline:
            r = self.get(fn["trigger_port"], "/", timeout=15)
            if r.status == 200:
                answer = r
                break
            failures.append(r)
            time.sleep(0.1)
        self.assertIsNotNone(answer, f"never served after the image was corrupted: {failures[-3:]}" + self.logs_of())
        self.assertTrue(failures, "the corrupted image should have failed a restore first")
        for failure in failures:
            self.assertEqual(failure.status, 503, failure)
            body = failure.body.decode()
            self.assertIn("its snapshot could not be restored", body)
            for detail in ("/dev/shm", self.tmp, "criu", ".img", "Error"):
                self.assertNotIn(detail, body, "a client sees the orchestrator's internals")
        self.assertEqual(answer.headers.get("x-aether-cold-start"), "restore", "served by a restore of the new image")
        self.assertIn("snapshot rebuilt", self.orchestrators[0].stderr())

    def test_an_image_whose_restores_hang_is_built_again(self):
        # Truncated page files make criu hang rather than fail: a restore it never answers is a
        # failed restore (counted towards the rebuild), not a slow one.
        self.write_file("snap.py", SNAPSHOT_HANDLER)
        images = os.path.join(self.tmp, "images")
        fn = self.function("hangimg", "snap.py", snapshot=True, min_warm=0, idle_timeout_ms=60000)
        # No warm pool: copies restored ahead of demand would come from the image before it is
        # damaged here; these restores must read the damaged one.
        self.start(self.write_config(
            [fn], orchestrator={"snapshot_dir": images, "restore_timeout_ms": 100, "warm_pool_size": 0}))
        [folder] = os.listdir(images)
        image = os.path.join(images, folder)
        for name in os.listdir(image):
            if name.startswith("pages-"):
                os.truncate(os.path.join(image, name), 4096)
        failures = []
        answer = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = self.get(fn["trigger_port"], "/", timeout=30)
            if r.status == 200:
                answer = r
                break
            failures.append(r)
            time.sleep(0.1)
        self.assertIsNotNone(answer, f"never served after the image was truncated: {failures[-3:]}" + self.logs_of())
        for failure in failures:
            self.assertEqual(failure.status, 503, failure)
            body = failure.body.decode()
            # A restore over the configured budget is one (the machine is noisy); a hung criu is not.
            if "restore budget" in body:
                self.assertIn("over the 100 ms restore budget", body, "a hung criu is not a slow restore")
        self.assertEqual(answer.headers.get("x-aether-cold-start"), "restore", "served by a restore of the new image")
        self.assertIn("snapshot rebuilt", self.orchestrators[0].stderr())
