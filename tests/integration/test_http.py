#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The OpenAI-compatible HTTP API of real inferd processes.

Members of a real cluster (test_cluster.py's) each serve the API on a port of
their own; requests go to a node that does not have the model, so every
answer is routed through the cluster. Clients: Python's urllib, curl, and the
official `openai` npm package (installed for the test). The model is
stories260K from the shared directory, or a synthetic one where a long
generation is needed.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import (INFERCTL, INFERD, SRCDIR, Bus, SkipTest, TestFailure, check, check_eq, run, wait_for)  # noqa: E402
from test_cluster import Cluster, Member, free_port, make_model  # noqa: E402

BUILDDIR = os.environ.get("BUILDDIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SHARED = os.path.abspath(os.environ.get("INFERD_SHARED_DIR") or os.path.join(SRCDIR, "..", "shared"))
STORIES = os.path.join(SHARED, "models", "stories260K.gguf")
PROMPT = "Once upon a time"
STORY = [{"role": "user", "content": "Tell me a story."}]
JOB_PREFIX = "/org/inferd/infer1/job"


# ---- plumbing ----

def call(url, path, body=None, key=None, method=None, raw=None, headers=(), timeout=120):
    """One request; (status, headers, body bytes), error statuses included."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    if key is not None:
        req.add_header("Authorization", "Bearer " + key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in headers:
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def call_json(url, path, body=None, **kw):
    status, headers, data = call(url, path, body, **kw)
    try:
        return status, json.loads(data)
    except json.JSONDecodeError:
        raise TestFailure(f"{path}: status {status}, not JSON: {data[:300]!r}")


def stream(url, path, body, key):
    """A streamed answer: its events, parsed, up to [DONE] (which must come, and last)."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    events, done = [], False
    with urllib.request.urlopen(req, timeout=120) as r:
        check_eq(r.status, 200, "stream status")
        check(r.headers["Content-Type"].startswith("text/event-stream"), f"content type {r.headers['Content-Type']}")
        for line in r:
            line = line.decode().rstrip("\n")
            if not line:
                continue
            check(line.startswith("data: "), f"not an SSE data line: {line!r}")
            check(not done, "events after [DONE]")
            if line == "data: [DONE]":
                done = True
            else:
                events.append(json.loads(line[6:]))
    check(done, "the stream ends with data: [DONE]")
    return events


def expect_error(status, obj, want_status, code=None, param=None, what=""):
    check_eq(status, want_status, f"status for {what}")
    check(isinstance(obj, dict) and set(obj) == {"error"}, f"{what}: not an error object: {obj}")
    err = obj["error"]
    check_eq(set(err), {"message", "type", "param", "code"}, f"{what}: error fields")
    check(isinstance(err["message"], str) and err["message"], f"{what}: a message")
    check(isinstance(err["type"], str) and err["type"], f"{what}: a type")
    if code is not None:
        check_eq(err["code"], code, f"{what}: code ({err['message']})")
    if param is not None:
        check_eq(err["param"], param, f"{what}: param ({err['message']})")
    return err


def health(url):
    try:
        return call(url, "/health", timeout=2)[0] == 200
    except OSError:
        return False


def make_key(m, name="test"):
    r = m.ctl("apikey", "create", name)
    keys = re.findall(r"sk-inferd-[A-Za-z0-9_-]{43}", r.stdout)
    check_eq(len(keys), 1, f"one key printed by apikey create: {r.stdout!r}")
    return keys[0]


def need_stories():
    if not os.path.exists(STORIES):
        raise SkipTest(f"{STORIES} not found (set INFERD_SHARED_DIR to the directory with models/)")
    return STORIES


def need_device(m):
    if not any(d["active"] for d in m.ctl_json("devices")):
        raise SkipTest("no active Vulkan device (lavapipe from mesa-vulkan-drivers would be one)")


def metric(text, name, **labels):
    """The value of one series in a Prometheus text exposition, 0 if it is not there."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_:]+)(\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return 0.0


class HttpCluster(Cluster):
    """Members that each serve the HTTP API on a port of their own (m.url)."""

    def __init__(self, n, http_extra="", extra="", **kw):
        super().__init__(n, **kw)
        self.http_extra = http_extra
        self.extra = extra

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="inferd-http-")
        os.chmod(self.tmp, 0o755)
        self.members = []
        for name in self.names:
            port = free_port()
            # Member puts its extra text at the end of the file: new sections may follow [Cluster].
            m = Member(self.tmp, name, self.cluster_extra + f"[HTTP]\nListen=127.0.0.1:{port}\n" + self.http_extra +
                       self.extra)
            m.url = f"http://127.0.0.1:{port}"
            self.members.append(m)
            m.start()
            wait_for(lambda m=m: health(m.url), timeout=10, what=f"{m.name}'s HTTP API")
        return self


def routed_cluster(c, model_path, name):
    """Forms c (two members), loads the model on the second only, and waits for the first to know."""
    n1, n2 = c.members
    c.form()
    need_device(n2)
    n2.ctl("load", model_path, "--name", name, timeout=600)
    check_eq(n1.ctl_json("models"), [], "the first member has no model")
    wait_for(lambda: any(x["name"] == name and x["state"] == "ready" for x in n1.members()["n2"]["models"]),
             timeout=15, what="n1 to learn that n2 has the model")
    return n1, n2


def jobs_on(m):
    """{path: (state, generated)} of the jobs the member has now."""
    out = subprocess.run(["busctl", "--address=" + m.bus.address, "--list", "tree", "org.inferd.infer1"],
                         capture_output=True, text=True).stdout
    jobs = {}
    for path in out.split():
        if not re.fullmatch(re.escape(JOB_PREFIX) + r"/\d+", path):
            continue
        props = {}
        for p in ("State", "GeneratedTokens"):
            r = subprocess.run(["busctl", "--address=" + m.bus.address, "--json=short", "get-property",
                                "org.inferd.infer1", path, "org.inferd.infer1.Job", p], capture_output=True, text=True)
            if r.returncode == 0:
                props[p] = json.loads(r.stdout)["data"]
        if len(props) == 2:
            jobs[path] = (props["State"], props["GeneratedTokens"])
    return jobs


# ---- tests ----

def test_unit_files():
    if not shutil.which("systemd-analyze"):
        raise SkipTest("systemd-analyze is not installed")
    with open(os.path.join(SRCDIR, "units", "inferd.socket")) as f:
        sock = f.read()
    check("ListenStream=8080" in sock and "FileDescriptorName=http" in sock, sock)
    check("WantedBy=sockets.target" in sock, "the socket can be enabled")
    with open(os.path.join(BUILDDIR, "units", "inferd.service")) as f:
        unit = f.read()
    # The socket stays opt-in: nothing in the service pulls it in.
    check("Sockets=" not in unit and "Also=inferd.socket" not in unit, "the service does not start the socket")
    tmp = tempfile.mkdtemp(prefix="inferd-units-")
    try:
        with open(os.path.join(tmp, "inferd.service"), "w") as f:
            f.write("\n".join(("ExecStart=" + INFERD + " --bus=system") if l.startswith("ExecStart=") else l
                              for l in unit.splitlines()) + "\n")
        shutil.copy(os.path.join(SRCDIR, "units", "inferd.socket"), tmp)
        env = dict(os.environ, SYSTEMD_LOG_TARGET="console")
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", os.path.join(tmp, "inferd.socket"),
                            os.path.join(tmp, "inferd.service")], capture_output=True, text=True, env=env)
        check_eq(r.returncode, 0, f"systemd-analyze verify exit code ({r.stdout}{r.stderr})")
        check(not (r.stdout + r.stderr).strip(), f"systemd-analyze verify complained:\n{r.stdout}{r.stderr}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_keys_health_and_metrics_auth():
    with HttpCluster(1, http_extra="MetricsAuth=yes\n") as c:
        n1, = c.members
        # Open to all.
        status, body = call_json(n1.url, "/health")
        check_eq((status, body), (200, {"status": "ok"}), "health")
        # No key, a wrong one, another scheme, a key of the right shape that does not exist.
        for what, headers in [("no key", ()),
                              ("a wrong key", (("Authorization", "Bearer sk-inferd-" + "A" * 43),)),
                              ("garbage", (("Authorization", "Bearer nonsense"),)),
                              ("basic auth", (("Authorization", "Basic dXNlcjpwYXNz"),))]:
            for path in ("/v1/models", "/v1/completions", "/v1/chat/completions"):
                status, h, data = call(n1.url, path, body={"model": "m", "prompt": "x"} if "comp" in path else None,
                                       headers=headers)
                expect_error(status, json.loads(data), 401, code="invalid_api_key", what=f"{path} with {what}")
                check_eq(h["WWW-Authenticate"], "Bearer", "the challenge")
            status, body = call_json(n1.url, "/metrics", headers=headers)
            expect_error(status, body, 401, code="invalid_api_key", what=f"/metrics with {what} and MetricsAuth=yes")
        key = make_key(n1)
        status, body = call_json(n1.url, "/v1/models", key=key)
        check_eq((status, body), (200, {"object": "list", "data": []}), "models with a key, none loaded")
        status, h, text = call(n1.url, "/metrics", key=key)
        check_eq(status, 200, "metrics with a key")
        check(h["Content-Type"].startswith("text/plain; version=0.0.4"), h["Content-Type"])
        check(metric(text.decode(), "inferd_requests_total", endpoint="models", status="401") >= 4,
              "refusals are counted")
        # A revoked key stops working at once.
        kid = next(k["id"] for k in n1.ctl_json("apikey", "list") if k["name"] == "test")
        n1.ctl("apikey", "revoke", kid)
        status, body = call_json(n1.url, "/v1/models", key=key)
        expect_error(status, body, 401, what="a revoked key")
        # Unknown paths and wrong methods.
        status, body = call_json(n1.url, "/v2/nothing")
        expect_error(status, body, 404, code="not_found", what="an unknown path")
        key = make_key(n1, "second")
        status, h, data = call(n1.url, "/v1/completions", key=key)
        expect_error(status, json.loads(data), 405, code="method_not_allowed", what="GET /v1/completions")
        check_eq(h["Allow"], "POST", "Allow")
        status, h, data = call(n1.url, "/health", method="DELETE")
        expect_error(status, json.loads(data), 405, what="DELETE /health")


def test_routed_completions_and_chat():
    need_stories()
    with HttpCluster(2) as c:
        n1, n2 = routed_cluster(c, STORIES, "stories260K")
        key = make_key(n1)
        url = n1.url

        status, models = call_json(url, "/v1/models", key=key)
        check_eq(status, 200, "models")
        check_eq([m["id"] for m in models["data"]], ["stories260K"], "n1 lists the model n2 has")
        check_eq(models["data"][0]["object"], "model", "model object")
        status, one = call_json(url, "/v1/models/stories260K", key=key)
        check_eq((status, one["id"]), (200, "stories260K"), "one model")
        expect_error(*call_json(url, "/v1/models/nope", key=key), 404, code="model_not_found", what="unknown model")
        # Too long for the model's context: refused by n2, which has it, as n1 would refuse it: a 400, and
        # no other member is tried.
        expect_error(*call_json(url, "/v1/completions", {"model": "stories260K", "prompt": "the cat sat " * 200},
                                key=key), 400, code="invalid_value", what="a prompt over the remote model's context")

        # What n2 itself generates, greedily: the routed answers must be the same.
        ref_text = json.loads(n2.ctl("run", "stories260K", PROMPT, "--temp", "0", "--max-tokens", "20",
                                     "--json").stdout)
        ref = ref_text
        metrics0 = call(url, "/metrics")[2].decode()

        status, body = call_json(url, "/v1/completions", {"model": "stories260K", "prompt": PROMPT, "max_tokens": 20,
                                                         "temperature": 0}, key=key)
        check_eq(status, 200, f"completion: {body}")
        check(body["id"].startswith("cmpl-") and body["object"] == "text_completion", body)
        check_eq(body["model"], "stories260K", "model")
        check(abs(body["created"] - time.time()) < 60, "created is now")
        choice, = body["choices"]
        check_eq(choice["text"], ref["text"], "routed text = n2's own")
        check_eq((choice["index"], choice["finish_reason"]), (0, "length"), "index, finish_reason")
        check_eq(body["usage"], {"prompt_tokens": ref["prompt_tokens"], "completion_tokens": 20,
                                 "total_tokens": ref["prompt_tokens"] + 20}, "usage")

        events = stream(url, "/v1/completions", {"model": "stories260K", "prompt": PROMPT, "max_tokens": 20,
                                                 "temperature": 0, "stream": True,
                                                 "stream_options": {"include_usage": True}}, key)
        check(len(events) >= 4, f"a stream of chunks: {len(events)}")
        check_eq(len({e["id"] for e in events}), 1, "one id for the stream")
        text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
        check_eq(text, ref["text"], "streamed text")
        check_eq([e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1], "length", "last reason")
        check(all(e["choices"][0]["finish_reason"] is None for e in events[:-2]), "no reason before the end")
        check_eq(events[-1]["choices"], [], "the usage chunk has no choices")
        check_eq(events[-1]["usage"]["completion_tokens"], 20, "usage in the last chunk")
        check(all(e["usage"] is None for e in events[:-1]), "usage null in the other chunks")

        # Stop strings, as a string and as a list: the text ends before them.
        word = ref["text"].split()[2]
        for stop in (word, [word, "zzzz"]):
            status, body = call_json(url, "/v1/completions", {"model": "stories260K", "prompt": PROMPT,
                                                             "max_tokens": 20, "temperature": 0, "stop": stop}, key=key)
            check_eq(status, 200, f"stop {stop}")
            check_eq(body["choices"][0]["finish_reason"], "stop", "stopped")
            check_eq(body["choices"][0]["text"], ref["text"][:ref["text"].index(word)], "text before the stop")

        # A seed makes sampling repeatable.
        sampled = [call_json(url, "/v1/completions", {"model": "stories260K", "prompt": PROMPT, "max_tokens": 16,
                                                      "temperature": 1.0, "top_p": 0.9, "seed": 1234},
                             key=key)[1]["choices"][0]["text"] for _ in range(2)]
        check_eq(sampled[0], sampled[1], "the same seed, the same text")

        # Chat, against n2's own chat.
        ref = json.loads(subprocess.run([INFERCTL, "--bus=session", "chat", "stories260K", "--temp", "0",
                                         "--max-tokens", "12", "--json"], input=STORY[0]["content"] + "\n",
                                        capture_output=True, text=True, env=n2.env, check=True).stdout)
        status, body = call_json(url, "/v1/chat/completions", {"model": "stories260K", "messages": STORY,
                                                              "max_tokens": 12, "temperature": 0}, key=key)
        check_eq(status, 200, f"chat: {body}")
        check(body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion", body)
        choice, = body["choices"]
        check_eq(choice["message"], {"role": "assistant", "content": ref["text"]}, "routed chat = n2's own")
        check_eq(choice["finish_reason"], "length", "chat finish_reason")
        check_eq(body["usage"]["prompt_tokens"], ref["prompt_tokens"], "chat prompt tokens")

        events = stream(url, "/v1/chat/completions", {"model": "stories260K", "messages": STORY, "max_tokens": 12,
                                                      "temperature": 0, "stream": True}, key)
        check_eq(events[0]["choices"][0]["delta"], {"role": "assistant", "content": ""}, "the first chunk: the role")
        check(all(e["object"] == "chat.completion.chunk" for e in events), "chunk objects")
        check_eq("".join(e["choices"][0]["delta"].get("content", "") for e in events), ref["text"], "streamed chat")
        check_eq((events[-1]["choices"][0]["delta"], events[-1]["choices"][0]["finish_reason"]), ({}, "length"),
                 "the last chunk")
        check(all("usage" not in e for e in events), "no usage without include_usage")

        # curl, streamed and not.
        if shutil.which("curl"):
            body = json.dumps({"model": "stories260K", "prompt": PROMPT, "max_tokens": 20, "temperature": 0})
            r = subprocess.run(["curl", "-sS", "--fail-with-body", "-H", "Authorization: Bearer " + key,
                                "-H", "Content-Type: application/json", "-d", body, url + "/v1/completions"],
                               capture_output=True, text=True, timeout=120)
            check_eq(r.returncode, 0, f"curl: {r.stderr}")
            check_eq(json.loads(r.stdout)["choices"][0]["text"], ref_text["text"], "curl's text")
            body = json.dumps({"model": "stories260K", "messages": STORY, "max_tokens": 12, "temperature": 0,
                               "stream": True})
            r = subprocess.run(["curl", "-sS", "-N", "--fail-with-body", "-H", "Authorization: Bearer " + key,
                                "-d", body, url + "/v1/chat/completions"], capture_output=True, text=True, timeout=120)
            check_eq(r.returncode, 0, f"curl stream: {r.stderr}")
            lines = [l for l in r.stdout.split("\n") if l]
            check_eq(lines[-1], "data: [DONE]", "curl's stream ends")
            check_eq("".join(json.loads(l[6:])["choices"][0]["delta"].get("content", "") for l in lines[:-1]),
                     ref["text"], "curl's streamed chat")

        # The metrics counted all that.
        metrics = call(url, "/metrics")[2].decode()
        for name in ("inferd_requests_total", "inferd_request_duration_seconds_bucket",
                     "inferd_request_duration_seconds_sum", "inferd_time_to_first_token_seconds_bucket",
                     "inferd_prompt_tokens_total", "inferd_generation_tokens_total", "inferd_queue_depth",
                     "inferd_cluster_members"):
            check(re.search(r"^" + name + r"[{ ]", metrics, re.M), f"{name} in /metrics")
        for endpoint in ("completions", "chat_completions"):
            before = metric(metrics0, "inferd_requests_total", endpoint=endpoint, model="stories260K", status="200")
            after = metric(metrics, "inferd_requests_total", endpoint=endpoint, model="stories260K", status="200")
            check(after >= before + 2, f"{endpoint} requests counted: {before} -> {after}")
        before = metric(metrics0, "inferd_generation_tokens_total", model="stories260K")
        after = metric(metrics, "inferd_generation_tokens_total", model="stories260K")
        check(after >= before + 20 + 20 + 12 + 12, f"generated tokens counted: {before} -> {after}")
        check(metric(metrics, "inferd_cluster_members", state="alive") == 2, "two members alive")
        # n1 ran none of it.
        check_eq(metric(metrics, "inferd_jobs_running", model="stories260K"), 0.0, "nothing runs on n1")


def test_openai_npm_client():
    need_stories()
    if not shutil.which("node") or not shutil.which("npm"):
        raise SkipTest("node and npm are not installed (tools/deps installs them)")
    npm_dir = tempfile.mkdtemp(prefix="inferd-npm-")
    try:
        # The newest client wants a newer Node than Debian 12's 18; its 4.x series runs there.
        node_major = int(subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
                         .lstrip("v").split(".")[0] or 0)
        package = os.environ.get("INFERD_TEST_OPENAI_PACKAGE", "openai" if node_major >= 20 else "openai@4")
        r = subprocess.run(["npm", "install", "--prefix", npm_dir, "--no-audit", "--no-fund", package],
                           capture_output=True, text=True, timeout=240)
        if r.returncode != 0 or not os.path.isdir(os.path.join(npm_dir, "node_modules", "openai")):
            raise SkipTest("npm could not install the openai package (no network?): " +
                           (r.stderr.strip().splitlines() or ["?"])[-1])
        # ES modules resolve packages next to the script, not through NODE_PATH.
        script = os.path.join(npm_dir, "openai-client.mjs")
        shutil.copy(os.path.join(os.path.dirname(__file__), "openai-client.mjs"), script)
        with HttpCluster(2) as c:
            n1, n2 = routed_cluster(c, STORIES, "stories260K")
            key = make_key(n1)
            env = dict(os.environ, OPENAI_BASE_URL=n1.url + "/v1", OPENAI_API_KEY=key, MODEL="stories260K")
            r = subprocess.run(["node", script], capture_output=True, text=True, env=env, timeout=240)
            check_eq(r.returncode, 0, f"openai-client.mjs failed:\n{r.stdout}\n{r.stderr}")
            out = json.loads(r.stdout)
            ref = json.loads(n2.ctl("run", "stories260K", PROMPT, "--temp", "0", "--max-tokens", "16",
                                    "--json").stdout)
            check_eq(out["models"], ["stories260K"], "models.list()")
            check_eq(out["completion"]["text"], ref["text"], "completions.create()")
            check_eq(out["completion"]["finish_reason"], "length", "finish_reason")
            check_eq(out["completion"]["usage"]["completion_tokens"], 16, "usage")
            check_eq(out["completion_stream"]["text"], ref["text"], "completions.create({stream})")
            check_eq(out["completion_stream"]["finish_reason"], "length", "streamed finish_reason")
            check(out["completion_stream"]["chunks"] >= 3, "several chunks")
            check_eq(out["chat"]["role"], "assistant", "chat role")
            check(out["chat"]["content"], "chat content")
            check_eq(out["chat_stream"]["content"], out["chat"]["content"], "streamed chat = chat")
            check_eq(out["chat_stream"]["role"], "assistant", "streamed role")
            check_eq(out["chat_stream"]["finish_reason"], "length", "streamed chat finish_reason")
            check_eq(out["chat_stream"]["usage"], out["chat"]["usage"], "include_usage")
            check_eq(out["wrong_key"]["status"], 401, "a wrong key")
            check_eq(out["wrong_key"]["name"], "AuthenticationError", "the client's error class")
            check_eq(out["unknown_model"]["status"], 404, "an unknown model")
            check_eq(out["unknown_model"]["code"], "model_not_found", "its code")
            print(f"# openai npm client {json.load(open(os.path.join(npm_dir, 'node_modules', 'openai', 'package.json')))['version']}: ok")
    finally:
        shutil.rmtree(npm_dir, ignore_errors=True)


def test_bad_input():
    need_stories()
    limits = "[Limits]\nMaxJobs=1\nMaxTokens=1000\n"
    with HttpCluster(1, http_extra="MaxBodyBytes=4K\n", extra=limits) as c:
        n1, = c.members
        need_device(n1)
        n1.ctl("load", STORIES, timeout=600)
        syn = make_model(c.tmp)
        n1.ctl("load", syn, "--name", "syn", timeout=600)
        key = make_key(n1)
        url = n1.url
        ok = {"model": "stories260K", "prompt": PROMPT, "max_tokens": 4}
        chat = {"model": "stories260K", "messages": STORY, "max_tokens": 4}

        def post(path, body=None, raw=None):
            status, _, data = call(url, path, body=body, raw=raw, key=key)
            try:
                return status, json.loads(data)
            except json.JSONDecodeError:
                raise TestFailure(f"not JSON (status {status}): {data[:200]!r}")

        check_eq(post("/v1/completions", ok)[0], 200, "the good request")
        cases = [
            # (what, path, body or raw bytes, status, code, param)
            ("malformed JSON", "/v1/completions", b'{"model": "stories260K", "prompt": ', 400, "invalid_json", None),
            ("not an object", "/v1/completions", b'["stories260K"]', 400, "invalid_json", None),
            ("invalid UTF-8", "/v1/completions", b'{"model": "stories260K", "prompt": "\xff"}', 400, "invalid_json",
             None),
            ("an empty body", "/v1/completions", b"", 400, "invalid_json", None),
            ("no model", "/v1/completions", {"prompt": PROMPT}, 400, "missing_required_parameter", "model"),
            ("model a number", "/v1/completions", dict(ok, model=5), 400, "invalid_type", "model"),
            ("no prompt", "/v1/completions", {"model": "stories260K"}, 400, "missing_required_parameter", "prompt"),
            ("prompt tokens", "/v1/completions", dict(ok, prompt=[1, 2, 3]), 400, None, "prompt"),
            ("max_tokens a string", "/v1/completions", dict(ok, max_tokens="4"), 400, "invalid_type", "max_tokens"),
            ("max_tokens 0", "/v1/completions", dict(ok, max_tokens=0), 400, "invalid_value", "max_tokens"),
            ("temperature a string", "/v1/completions", dict(ok, temperature="hot"), 400, "invalid_type",
             "temperature"),
            ("temperature 3", "/v1/completions", dict(ok, temperature=3), 400, "invalid_value", "temperature"),
            ("top_p 2", "/v1/completions", dict(ok, top_p=2), 400, "invalid_value", "top_p"),
            ("stop a number", "/v1/completions", dict(ok, stop=7), 400, "invalid_type", "stop"),
            ("stop empty", "/v1/completions", dict(ok, stop=["x", ""]), 400, "invalid_value", "stop"),
            ("seed a string", "/v1/completions", dict(ok, seed="1"), 400, "invalid_type", "seed"),
            ("stream a string", "/v1/completions", dict(ok, stream="yes"), 400, "invalid_type", "stream"),
            ("n=2", "/v1/completions", dict(ok, n=2), 400, "invalid_value", "n"),
            ("n=2 in chat", "/v1/chat/completions", dict(chat, n=2), 400, "invalid_value", "n"),
            ("logprobs", "/v1/completions", dict(ok, logprobs=3), 400, "unsupported_parameter", "logprobs"),
            ("tools", "/v1/chat/completions", dict(chat, tools=[{"type": "function"}]), 400, "unsupported_parameter",
             "tools"),
            ("messages a string", "/v1/chat/completions", dict(chat, messages="hi"), 400, "invalid_type", "messages"),
            ("no messages", "/v1/chat/completions", dict(chat, messages=[]), 400, "invalid_value", "messages"),
            ("a tool message", "/v1/chat/completions", dict(chat, messages=[{"role": "tool", "content": "1"}]), 400,
             "invalid_value", "messages[0].role"),
            ("content a number", "/v1/chat/completions", dict(chat, messages=[{"role": "user", "content": 1}]), 400,
             "invalid_type", "messages[0].content"),
            ("an unknown model", "/v1/completions", dict(ok, model="nope"), 404, "model_not_found", "model"),
            ("an unknown chat model", "/v1/chat/completions", dict(chat, model="nope"), 404, "model_not_found",
             "model"),
            ("max_tokens over MaxTokens=", "/v1/completions", dict(ok, max_tokens=1001), 400, "invalid_value", None),
            ("a prompt over the context", "/v1/completions", dict(ok, prompt="the cat sat on the mat " * 60), 400,
             "invalid_value", None),
            ("a conversation over the context", "/v1/chat/completions",
             dict(chat, messages=[{"role": "user", "content": "the cat sat on the mat " * 60}]), 400,
             "invalid_value", None),
            ("a body over MaxBodyBytes=", "/v1/completions", dict(ok, prompt="x" * 5000), 413, "request_too_large",
             None),
        ]
        for what, path, body, status, code, param in cases:
            got = post(path, raw=body) if isinstance(body, bytes) else post(path, body)
            err = expect_error(*got, status, code=code, param=param, what=what)
            print(f"# {what}: {status} {err['code']}: {err['message'][:100]}")
        # Far over the limit, evhttp refuses before reading: still 413.
        status, _, _ = call(url, "/v1/completions", raw=b"{" + b" " * (64 * 1024) + b"}", key=key)
        check_eq(status, 413, "a body far over MaxBodyBytes=")

        # MaxJobs=1: a second request while a long one runs is told to come back (429).
        req = urllib.request.Request(url + "/v1/completions", data=json.dumps(
            {"model": "syn", "prompt": PROMPT, "max_tokens": 900, "stream": True}).encode(),
            headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as long_job:
            long_job.readline()
            status, h, data = call(url, "/v1/completions", body=ok, key=key)
            expect_error(status, json.loads(data), 429, code="server_busy", what="a second job with MaxJobs=1")
            check_eq(h["Retry-After"], "1", "Retry-After")
        wait_for(lambda: call(url, "/v1/completions", body=ok, key=key)[0] == 200, timeout=10,
                 what="the node to take jobs again once the client left")
        check(n1.node.proc.poll() is None, "inferd is still running")


def test_disconnect_cancels_the_job():
    with HttpCluster(2) as c:
        path = make_model(c.tmp)
        n1, n2 = routed_cluster(c, path, "syn")
        key = make_key(n1)
        host, port = n1.url[len("http://"):].split(":")
        metrics0 = call(n1.url, "/metrics")[2].decode()

        def open_request(body):
            s = socket.create_connection((host, int(port)), timeout=30)
            data = json.dumps(body).encode()
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() +
                      b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            return s

        def running_on_n2():
            jobs = {p: v for p, v in jobs_on(n2).items() if v[0] == "running" and v[1] >= 4}
            return jobs if jobs else None

        for streamed in (True, False):
            # syn makes some 50 tokens/s on lavapipe: 900 would take many seconds.
            s = open_request({"model": "syn", "prompt": PROMPT, "max_tokens": 900, "temperature": 0,
                              "stream": streamed})
            if streamed:
                got = b""
                while got.count(b"data: ") < 3:
                    got += s.recv(4096)
            job = wait_for(running_on_n2, timeout=30, what="the job to run on n2")
            t0 = time.time()
            s.close()
            last = list(job.values())[0]

            def gone():
                nonlocal last
                jobs = jobs_on(n2)
                if jobs:
                    last = list(jobs.values())[0]
                return not jobs
            wait_for(gone, timeout=10, what="n2 to end the job after the client left")
            elapsed = time.time() - t0
            check(last[1] < 600, f"the job stopped early ({last[1]} of 900 tokens)")
            print(f"# {'streamed' if streamed else 'whole'}: the job on n2 ended {elapsed:.2f}s after the client "
                  f"left, at {last[1]} of 900 tokens")
        metrics = call(n1.url, "/metrics")[2].decode()
        check_eq(metric(metrics, "inferd_requests_total", endpoint="completions", model="syn", status="499") -
                 metric(metrics0, "inferd_requests_total", endpoint="completions", model="syn", status="499"), 2.0,
                 "both counted as 499")
        # And nothing is left running anywhere.
        check_eq(metric(call(n2.url, "/metrics")[2].decode(), "inferd_queue_depth"), 0.0, "n2's queue is empty")
        check(n1.node.proc.poll() is None and n2.node.proc.poll() is None, "both still run")


def test_socket_activation():
    if not shutil.which("systemd-socket-activate"):
        raise SkipTest("systemd-socket-activate is not installed")
    tmp = tempfile.mkdtemp(prefix="inferd-sockact-")
    os.chmod(tmp, 0o755)
    bus = Bus(tmp)
    proc = None
    ok = False
    try:
        env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=bus.address)
        env.pop("DBUS_STARTER_ADDRESS", None)
        state = os.path.join(tmp, "state")
        os.makedirs(state)
        port, unused = free_port(), free_port()
        conf = os.path.join(tmp, "inferd.conf")
        with open(conf, "w") as f:
            # The inherited socket wins over Listen=, which must stay closed.
            f.write(f"[Daemon]\nNodeName=activated\n[HTTP]\nListen=127.0.0.1:{unused}\n")
        log_path = os.path.join(tmp, "inferd.log")
        log = open(log_path, "wb")
        # It hands the program a few variables of its own only: the bus is passed on explicitly.
        proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                                 "-E", "DBUS_SESSION_BUS_ADDRESS=" + bus.address, INFERD, "--bus=session",
                                 "--config=" + conf, "--state-dir=" + state], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        def listening():
            with open(log_path, "rb") as f:
                return b"Listening on" in f.read()
        wait_for(listening, timeout=10, what="systemd-socket-activate to listen")
        # The daemon starts on this first connection, and answers it.
        status, body = call_json(url, "/health", timeout=60)
        check_eq((status, body), (200, {"status": "ok"}), "the first request, on the inherited socket")
        with open(log_path, "rb") as f:
            text = f.read().decode(errors="replace")
        check("Serving the HTTP API on 1 socket(s) from systemd." in text, f"the log says so:\n{text}")
        try:
            socket.create_connection(("127.0.0.1", unused), timeout=1).close()
            raise TestFailure("Listen= was used besides the inherited socket")
        except ConnectionRefusedError:
            pass
        m_env = dict(env)
        r = subprocess.run([INFERCTL, "--bus=session", "apikey", "create", "act"], capture_output=True, text=True,
                           env=m_env, timeout=60)
        check_eq(r.returncode, 0, r.stderr)
        key = re.findall(r"sk-inferd-[A-Za-z0-9_-]{43}", r.stdout)[0]
        status, body = call_json(url, "/v1/models", key=key)
        check_eq((status, body["object"]), (200, "list"), "a /v1 request on the inherited socket")
        if os.path.exists(STORIES):
            r = subprocess.run([INFERCTL, "--bus=session", "load", STORIES], capture_output=True, text=True, env=m_env,
                               timeout=600)
            if r.returncode == 0:
                status, body = call_json(url, "/v1/completions", {"model": "stories260K", "prompt": PROMPT,
                                                                 "max_tokens": 8, "temperature": 0}, key=key)
                check_eq(status, 200, f"a completion on the inherited socket: {body}")
                check_eq(body["usage"]["completion_tokens"], 8, "its tokens")
        check_eq(proc.poll(), None, "inferd runs")
        ok = True
    finally:
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        bus.stop()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            sys.stderr.write(f"(test files kept in {tmp})\n")


if __name__ == "__main__":
    run(test_unit_files, test_keys_health_and_metrics_auth, test_routed_completions_and_chat, test_openai_npm_client,
        test_bad_input, test_disconnect_cancels_the_job, test_socket_activation)
