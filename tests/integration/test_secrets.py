"""Secrets and invocation auth (issue 14): `aether secret create|ls|rm` and every error they
report, `up`/`deploy` refusing a function that names a secret that is not stored, bearer-token
auth at the gateway (401 with WWW-Authenticate, 200 with the token, a redeploy picking up a
changed secret), and no secret value (or the contents of a file that is not a configuration) in
any output: `secret ls`, `list`, `stats`, logs, error messages."""

import json
import os
import stat
import subprocess

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

TOKEN = "tok-3f9a1c77e2b94d0f"
OTHER_TOKEN = "tok-other-5521"


class SecretCase(harness.AetherTestCase):
    def secret(self, *args, input: bytes | None = None, env: dict | None = None, state_dir: bool = True):
        """`aether secret ARGS --state-dir <this test's state folder>`; returns the CompletedProcess."""
        cmd = [harness.aether_bin(), "secret", *args]
        if state_dir:
            cmd += ["--state-dir", self.state_dir]
        full_env = dict(os.environ)
        full_env.pop("AETHER_STATE_DIR", None)
        full_env.update(env or {})
        return subprocess.run(
            cmd, input=input, capture_output=True, timeout=harness.CLI_TIMEOUT, cwd=self.tmp, env=full_env
        )

    def create(self, name: str, contents: bytes, *extra: str):
        path = os.path.join(self.tmp, f"secret-{name}")
        with open(path, "wb") as f:
            f.write(contents)
        result = self.secret("create", name, "--from-file", path, *extra)
        self.assertEqual(result.returncode, 0, result)
        return result

    def write_secret_config(self, functions: list[dict], name: str = "aether.yaml") -> str:
        """Like write_config; a function's `secrets` list is written as a YAML list."""
        lists = {}
        for index, function in enumerate(functions):
            if "secrets" in function:
                marker = f"__secrets_{index}__"
                lists[marker] = "[" + ", ".join(function["secrets"]) + "]"
                function["secrets"] = marker
        path = self.write_config(functions, name=name)
        with open(path) as f:
            text = f.read()
        for marker, value in lists.items():
            text = text.replace(json.dumps(marker), value)
        with open(path, "w") as f:
            f.write(text)
        return path


class SecretCommandTest(SecretCase):
    def test_create_ls_rm(self):
        created = self.create("api-token", (TOKEN + "\n").encode())
        self.assertIn(b"api-token", created.stdout)
        self.assertNotIn(TOKEN.encode(), created.stdout + created.stderr)
        piped = self.secret("create", "db.password", "--from-file", "-", input=b"hunter2-from-stdin")
        self.assertEqual(piped.returncode, 0, piped)

        folder = os.path.join(self.state_dir, "secrets")
        self.assertEqual(stat.S_IMODE(os.stat(folder).st_mode), 0o700)
        for name, contents in (("api-token", TOKEN + "\n"), ("db.password", "hunter2-from-stdin")):
            path = os.path.join(folder, name)
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
            self.assertEqual(os.stat(path).st_uid, 0)
            with open(path) as f:
                self.assertEqual(f.read(), contents)

        listed = self.secret("ls")
        self.assertEqual(listed.returncode, 0, listed)
        out = listed.stdout.decode()
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "BYTES", "MODIFIED", "(UTC)"])
        self.assertEqual(lines[1].split()[:2], ["api-token", str(len(TOKEN) + 1)])
        self.assertEqual(lines[2].split()[:2], ["db.password", "18"])
        self.assertNotIn(TOKEN, out)
        self.assertNotIn("hunter2", out)

        # $AETHER_STATE_DIR names the folder when --state-dir does not.
        via_env = self.secret("ls", env={"AETHER_STATE_DIR": self.state_dir}, state_dir=False)
        self.assertEqual(via_env.stdout, listed.stdout)

        # --replace swaps the contents in one step.
        self.create("api-token", OTHER_TOKEN.encode(), "--replace")
        with open(os.path.join(folder, "api-token")) as f:
            self.assertEqual(f.read(), OTHER_TOKEN)

        removed = self.secret("rm", "db.password")
        self.assertEqual(removed.returncode, 0, removed)
        self.assertFalse(os.path.exists(os.path.join(folder, "db.password")))
        self.assertEqual(len(self.secret("ls").stdout.decode().splitlines()), 2)
        self.assertEqual(sorted(os.listdir(folder)), ["api-token"], "no temporary file is left")

    def test_every_error_exits_one_and_names_the_problem(self):
        self.create("taken", b"first")
        empty = self.write_file("empty", "")
        newline = self.write_file("newline", "\n")
        big = os.path.join(self.tmp, "big")
        with open(big, "wb") as f:
            f.write(b"x" * (1024 * 1024 + 1))
        just_fits = os.path.join(self.tmp, "fits")
        with open(just_fits, "wb") as f:
            f.write(b"y" * (1024 * 1024))
        good = self.write_file("good", "value-that-must-not-leak")
        cases = [
            (("create", ".hidden", "--from-file", good), "invalid secret name \".hidden\""),
            (("create", "a/b", "--from-file", good), "invalid secret name \"a/b\""),
            (("create", "x" * 65, "--from-file", good), "invalid secret name"),
            (("create", "ok", "--from-file", os.path.join(self.tmp, "missing")), "No such file or directory"),
            (("create", "ok", "--from-file", self.tmp), "it is a directory"),
            (("create", "ok", "--from-file", empty), "is empty"),
            (("create", "ok", "--from-file", newline), "is empty"),
            (("create", "ok", "--from-file", big), "over the 1048576-byte limit"),
            (("create", "taken", "--from-file", good), "secret taken already exists"),
            (("rm", "nope"), "no secret nope is stored"),
            (("rm", "Bad Name"), "invalid secret name"),
        ]
        for args, message in cases:
            with self.subTest(args=args[:2]):
                result = self.secret(*args)
                self.assertEqual(result.returncode, 1, result)
                err = result.stderr.decode()
                self.assertIn(message, err)
                self.assertTrue(err.startswith(f"aether secret {args[0]}: "), err)
                self.assertNotIn("value-that-must-not-leak", err)
        self.assertEqual(self.secret("create", "ok", "--from-file", just_fits).returncode, 0, "1 MiB exactly is fine")
        names = [line.split()[0] for line in self.secret("ls").stdout.decode().splitlines()[1:]]
        self.assertEqual(names, ["ok", "taken"], "no failed create stored anything")


class SecretDeployTest(SecretCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()

    def test_up_fails_naming_the_function_and_the_unknown_secret(self):
        self.create("present", b"here")
        fn = self.function("fn", secrets=["present", "absent"])
        guarded = self.function("guarded", auth={"secret": "no-such-token"})
        config = self.write_secret_config([fn, guarded])
        orch = self.start_expect_failure(config)
        err = orch.stderr()
        self.assertIn(f"function {fn['id']} names secret absent, which is not stored", err)
        self.assertIn(f"function {guarded['id']} names secret no-such-token, which is not stored", err)
        self.assertIn(os.path.join(self.state_dir, "secrets"), err)
        self.assertNotIn("present,", err)

    def test_deploy_fails_on_an_unknown_secret_and_the_running_version_stays(self):
        fn = self.function("fn", environment={"VALUE": "one"})
        self.start(self.write_config([fn]))
        self.assertEqual(self.get(fn["trigger_port"], "/env").json()["value"], "one")
        changed = dict(fn, environment={"VALUE": "two"}, secrets=["missing-secret"])
        result = self.aether("deploy", self.write_secret_config([changed], name="two.yaml"), check=False)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(f"function {fn['id']} names secret missing-secret, which is not stored", result.stderr)
        self.assertEqual(self.get(fn["trigger_port"], "/env").json()["value"], "one")
        # Once the secret exists the same file deploys.
        self.create("missing-secret", b"now-stored")
        self.aether("deploy", os.path.join(self.tmp, "two.yaml"))
        self.assertEqual(self.get(fn["trigger_port"], "/env").json()["value"], "two")

    def test_bearer_auth_at_the_gateway(self):
        # A token written by `echo` (one trailing newline) is compared without it.
        self.create("api-token", (TOKEN + "\n").encode())
        fn = self.function("guarded", auth={"secret": "api-token", "type": "bearer"})
        open_fn = self.function("open")
        orch = self.start(self.write_config([fn, open_fn]))
        port = fn["trigger_port"]
        realm = f'Bearer realm="{fn["id"]}"'

        missing = self.get(port, "/json")
        self.assertStatus(missing, 401, "no Authorization header")
        self.assertEqual(missing.headers["www-authenticate"], realm)
        self.assertIn("requires `Authorization: Bearer <token>`", missing.json()["error"])

        wrong = self.get(port, "/json", headers={"Authorization": "Bearer " + TOKEN[:-1] + "0"})
        self.assertStatus(wrong, 401, "wrong token")
        self.assertEqual(wrong.headers["www-authenticate"], realm + ', error="invalid_token"')
        self.assertIn("error", wrong.json())

        for name, value in (
            ("longer", "Bearer " + TOKEN + "x"),
            ("shorter", "Bearer " + TOKEN[:5]),
            ("with the newline", "Bearer " + TOKEN + "\\n"),
            ("empty", "Bearer "),
        ):
            with self.subTest(token=name):
                self.assertStatus(self.get(port, "/json", headers={"Authorization": value}), 401, name)

        scheme = self.get(port, "/json", headers={"Authorization": "Basic " + TOKEN})
        self.assertStatus(scheme, 401, "another scheme")
        self.assertEqual(scheme.headers["www-authenticate"], realm)

        # A body is refused before it is read.
        posted = harness.http_request(port, "POST", "/echo", body=b"x" * 1000)
        self.assertStatus(posted, 401, "POST without a token")

        ok = self.get(port, "/json", headers={"Authorization": "Bearer " + TOKEN})
        self.assertStatus(ok, 200, "the right token")
        self.assertEqual(ok.json()["function"], fn["id"])
        lower = self.get(port, "/headers", headers={"authorization": "bearer " + TOKEN})
        self.assertStatus(lower, 200, "the scheme is case-insensitive")
        self.assertIn("authorization", lower.json()["names"], "the header reaches the handler")
        echoed = harness.http_request(
            port, "POST", "/echo", body=b"payload", headers={"Authorization": "Bearer " + TOKEN}
        )
        self.assertEqual(echoed.body, b"payload")

        # Functions without auth: are not affected.
        self.assertStatus(self.get(open_fn["trigger_port"], "/json"), 200, "no auth")

        stats = self.stats(fn["id"])["stats"]
        self.assertEqual(stats["unauthorized"], 8, stats)
        self.assertEqual(stats["errors"], 0, stats)
        outputs = [
            self.aether("list").stdout,
            self.aether("list", "--json").stdout,
            self.aether("stats").stdout,
            self.aether("stats", fn["id"], "--json").stdout,
            self.aether("logs", fn["id"]).stdout,
            orch.stderr(),
            orch.stdout(),
        ]
        self.assertIn("401", outputs[2])
        for text in outputs:
            self.assertNotIn(TOKEN, text)
        with open(os.path.join(self.state_dir, "desired.yaml")) as f:
            self.assertNotIn(TOKEN, f.read())

    def test_a_redeploy_picks_up_a_changed_token(self):
        self.create("api-token", TOKEN.encode())
        fn = self.function("guarded", auth={"secret": "api-token"})
        config = self.write_config([fn])
        self.start(config)
        port = fn["trigger_port"]
        self.assertStatus(self.get(port, headers={"Authorization": "Bearer " + TOKEN}), 200, "first token")
        pid = self.wait_serving(fn["id"])["pid"]

        self.create("api-token", OTHER_TOKEN.encode(), "--replace")
        # Not before the deploy: the token is read at up and deploy.
        self.assertStatus(self.get(port, headers={"Authorization": "Bearer " + TOKEN}), 200, "before the deploy")
        deployed = self.aether("deploy", config)
        self.assertIn("unchanged", deployed.stdout)
        self.assertStatus(self.get(port, headers={"Authorization": "Bearer " + TOKEN}), 401, "the old token")
        self.assertStatus(self.get(port, headers={"Authorization": "Bearer " + OTHER_TOKEN}), 200, "the new token")
        self.assertEqual(self.wait_serving(fn["id"])["pid"], pid, "an unchanged function keeps running")

        # Removing the secret makes the next deploy fail; the running function keeps its token.
        self.assertEqual(self.secret("rm", "api-token").returncode, 0)
        failed = self.aether("deploy", config, check=False)
        self.assertEqual(failed.returncode, 1, failed)
        self.assertIn("names secret api-token, which is not stored", failed.stderr)
        self.assertStatus(self.get(port, headers={"Authorization": "Bearer " + OTHER_TOKEN}), 200, "kept")

    def test_a_restarted_orchestrator_still_requires_the_token(self):
        self.create("api-token", TOKEN.encode())
        fn = self.function("guarded", auth={"secret": "api-token"})
        old = self.start(self.write_config([fn]))
        port = fn["trigger_port"]
        self.assertStatus(self.get(port), 401, "before the restart")
        restarted = self.aether("restart", timeout=120)
        self.assertIn(f"orchestrator {old.pid} handed over to", restarted.stdout)
        self.assertEqual(old.wait_exit(40), 0, old.log())
        successor = self.status()["pid"]
        self.assertNotEqual(successor, old.pid)
        self.assertStatus(self.get(port), 401, "after the restart, without a token")
        self.assertStatus(self.get(port, headers={"Authorization": "Bearer " + TOKEN}), 200, "with the token")
        # The successor is not one of the test's own `aether up`s: stop it here.
        self.aether("down")
        self.assertTrue(harness.wait_until(lambda: not harness._pid_alive(successor), 20.0))


class DeployEchoTest(SecretCase):
    """`aether deploy` of a file that is not a configuration never prints what is in it."""

    SECRET_TEXT = "sk-live-DO-NOT-PRINT-8c1e"

    def setUp(self):
        super().setUp()
        self.write_common_handler()
        fn = self.function("fn")
        self.start(self.write_config([fn]))

    def test_files_that_are_not_configurations(self):
        secret = self.SECRET_TEXT
        files = {
            # libyaml reads a shadow line as a one-key mapping: any reason will do.
            "shadow": (f"root:{secret}:19000:0:99999:7:::\n", ""),
            "env": (f"API_KEY={secret}\nOTHER=1\n", "not a YAML mapping"),
            "list": (f"- {secret}\n- two\n", "not a YAML mapping"),
            "malformed": (f"key: [{secret}\n", "not well-formed YAML"),
            "duplicate": (f"{secret}: 1\n{secret}: 2\n", "not well-formed YAML"),
            "json": (json.dumps({secret: secret, "client_email": secret}), "a mapping without a `functions` list"),
            "binary": (f"\x00{secret}", "not UTF-8 text"),
            "empty": ("# " + secret + "\n", "an empty document"),
        }
        for name, (text, reason) in files.items():
            with self.subTest(file=name):
                path = self.write_file(name + ".txt", text)
                result = self.aether("deploy", path, check=False)
                self.assertEqual(result.returncode, 1, result)
                self.assertNotIn(secret, result.stdout + result.stderr)
                self.assertNotIn(secret[:20], result.stdout + result.stderr)
                self.assertIn("not an aetherless configuration: " + reason, result.stderr)
                self.assertIn("its contents are not shown", result.stderr)
        for orch in self.orchestrators:
            self.assertNotIn(secret, orch.stderr())

    def test_a_configuration_with_mistakes_is_still_reported_in_full(self):
        fn = self.function("bad", memory_limit_mb=99999)
        result = self.aether("deploy", self.write_config([fn], name="bad.yaml"), check=False)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn("memory_limit_mb: expected an integer in 1...16384 MiB, found 99999", result.stderr)


if __name__ == "__main__":
    import unittest

    unittest.main()
