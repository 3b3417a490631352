#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Models and jobs through inferctl against a real inferd: load, list, tokenize, run, chat, bench.

The model is stories260K, a small real GGUF file (a trained TinyStories
llama: 512-token vocabulary, context 128) in the shared directory
($INFERD_SHARED_DIR, else SRCDIR/../shared; see its models/README.md).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time

from harness import (INFERCTL, SRCDIR, Env, SkipTest, TestFailure, check, check_eq, run, wait_for)

NOBODY = 65534
SHARED = os.path.abspath(os.environ.get("INFERD_SHARED_DIR") or os.path.join(SRCDIR, "..", "shared"))
STORIES = os.path.join(SHARED, "models", "stories260K.gguf")
PROMPT = "Once upon a time"
JOB_PREFIX = "/org/inferd/infer1/job"


def need(path):
    if not os.path.exists(path):
        raise SkipTest(f"{path} not found (set INFERD_SHARED_DIR to the directory with models/)")
    return path


def start(e, models=(STORIES,)):
    """An inferd with a device to run on, and the given models loaded (named after their files)."""
    for m in models:
        need(m)
    n = e.node()
    n.start()
    if not any(d["active"] for d in e.ctl_json("devices")):
        raise SkipTest("no active Vulkan device (lavapipe from mesa-vulkan-drivers would be one)")
    for m in models:
        e.ctl("load", m, timeout=600)
    return n


def one_line(r, *needles):
    """A failure reads as one line on stderr that mentions every needle (case-insensitive)."""
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    check_eq(len(lines), 1, f"lines of error in {r.stderr!r}")
    for needle in needles:
        check(needle.lower() in lines[0].lower(), f"error does not mention {needle!r}: {lines[0]!r}")
    return lines[0]


def run_json(e, *args, **kw):
    r = e.ctl("run", *args, "--json", **kw)
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError as ex:
        raise TestFailure(f"inferctl run --json printed invalid JSON ({ex}): {r.stdout!r}")


def job_paths(e):
    """The Generate and Chat jobs inferd has now (it enumerates them for introspection)."""
    out = e.busctl("--list", "tree", "org.inferd.infer1", check_rc=None)
    return [p for p in out.split() if re.fullmatch(re.escape(JOB_PREFIX) + r"/[^/]+", p)]


def job_property(e, path, name):
    r = subprocess.run(["busctl", "--address=" + e.bus.address, "--json=short", "get-property",
                        "org.inferd.infer1", path, "org.inferd.infer1.Job", name],
                       capture_output=True, text=True, env=e.env, timeout=30)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)["data"]


def ctl_popen(e, *args):
    return subprocess.Popen([INFERCTL, "--bus=session", *args], env=e.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def start_queued_job(e):
    """
    A job that waits: the model's device is busy with long benchmarks (the
    longest stories260K allows, some 20 s each on lavapipe; several, for fast
    GPUs), and a run waits behind them. Returns the benchmarks' inferctl
    processes, the run's, and the job's path. stories260K's context of 128
    tokens makes every run too short to catch while it runs.
    """
    benches = [ctl_popen(e, "bench", "stories260K", "-p", "64", "-n", "63", "-r", "100") for _ in range(4)]
    time.sleep(0.3)
    for b in benches:
        if b.poll() is not None:
            raise TestFailure(f"a benchmark ended at once: {b.communicate()[1]!r}")
    p = ctl_popen(e, "run", "stories260K", PROMPT, "--temp", "0", "--max-tokens", "32")
    paths = wait_for(lambda: job_paths(e), timeout=10, what="the job's object")
    check_eq(len(paths), 1, f"job objects {paths}")
    check_eq(job_property(e, paths[0], "State"), "queued", "state of a job behind benchmarks")
    return benches, p, paths[0]


def end(p, sig=signal.SIGKILL, timeout=30):
    """Sends sig (None: none) to an inferctl process and waits for it to end; its exit status."""
    if sig is not None and p.poll() is None:
        p.send_signal(sig)
    try:
        p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise TestFailure(f"inferctl did not end {timeout}s after signal {sig}")
    return p.returncode


def test_load_and_list():
    with Env() as e:
        start(e, models=())
        # A relative path: inferctl makes it absolute, since inferd runs elsewhere.
        r = subprocess.run([INFERCTL, "--bus=session", "load", "stories260K.gguf", "--context", "64"],
                           cwd=os.path.dirname(need(STORIES)), env=e.env, capture_output=True, text=True,
                           timeout=600)
        check_eq(r.returncode, 0, f"load exit status ({r.stderr!r})")
        check(re.fullmatch(r"Loaded stories260K \(llama, [0-9.]+K params, F32, [0-9.]+[KMG]?\) on device \d+\.\n",
                           r.stdout), f"load output: {r.stdout!r}")

        models = e.ctl_json("models")
        check_eq(len(models), 1, f"models {models}")
        m = models[0]
        keys = {"name", "path", "architecture", "parameters", "quantization", "file_size", "device",
                "device_memory", "context_length", "state"}
        check_eq(set(m), keys, "keys of a model")
        check_eq(m["name"], "stories260K", "name")
        check_eq(m["path"], os.path.realpath(STORIES), "path")
        check_eq(m["architecture"], "llama", "architecture")
        # 260,032 unique; 292,800 stored, as the output matrix is a copy of the embeddings.
        check(200000 < m["parameters"] < 300000, f"parameters {m['parameters']} (260K expected)")
        check_eq(m["file_size"], os.path.getsize(STORIES), "file_size")
        check_eq(m["context_length"], 64, "context_length after --context 64")
        check_eq(m["state"], "ready", "state")
        check(m["device_memory"] > 0, "device_memory")

        table = e.ctl("models").stdout
        check(table.startswith("NAME") and "stories260K" in table and "llama" in table, f"models table:\n{table}")

        # A second name for the same file, and a name taken.
        e.ctl("load", STORIES, "--name", "second", timeout=600)
        check_eq(sorted(x["name"] for x in e.ctl_json("models")), ["second", "stories260K"], "names")
        one_line(e.ctl("load", STORIES, "--name", "second", check_rc=1), "second")


def test_tokenize_defaults_and_special():
    with Env() as e:
        start(e)
        plain = e.ctl_json("tokenize", "stories260K", PROMPT)
        check_eq(set(plain), {"tokens", "pieces"}, "keys")
        ids = plain["tokens"]
        check(ids and len(ids) == len(plain["pieces"]), f"tokens {plain}")
        check(all(0 <= t < 512 for t in ids), f"ids out of the vocabulary: {ids}")
        check(ids[0] != 1, f"BOS added without --add-special: {ids}")
        check_eq("".join(plain["pieces"]).replace("\u2581", " ").strip(), PROMPT, "pieces put together")

        special = e.ctl_json("tokenize", "stories260K", PROMPT, "--add-special")
        check_eq(special["tokens"], [1] + ids, "--add-special puts BOS (1) first")

        check(e.ctl_json("tokenize", "stories260K", "<s>" + PROMPT, "--special")["tokens"][0] == 1,
              "--special reads <s> as BOS")
        check(e.ctl_json("tokenize", "stories260K", "<s>" + PROMPT)["tokens"][0] != 1,
              "<s> read as BOS without --special")

        lines = e.ctl("tokenize", "stories260K", PROMPT).stdout.splitlines()
        check_eq(len(lines), len(ids), "lines of tokenize")
        for line, t in zip(lines, ids):
            check(line.startswith(f"{t}\t"), f"line {line!r} for token {t}")


def test_run_greedy_is_deterministic():
    with Env() as e:
        start(e)
        a = run_json(e, "stories260K", PROMPT, "--temp", "0", "--max-tokens", "20")
        b = run_json(e, "stories260K", PROMPT, "--temp", "0", "--max-tokens", "20")
        check_eq(set(a), {"text", "tokens", "prompt_tokens", "generated_tokens", "finish_reason", "timings"}, "keys")
        check_eq(set(a["timings"]), {"prompt_ms", "generate_ms", "prompt_tokens_per_sec", "generate_tokens_per_sec"},
                 "timing keys")
        check_eq(a["tokens"], b["tokens"], "greedy tokens of two runs")
        check_eq(a["text"], b["text"], "greedy text of two runs")
        check(a["finish_reason"] in ("length", "stop"), f"finish_reason {a['finish_reason']!r}")
        check(0 < len(a["tokens"]) <= 20, f"{len(a['tokens'])} tokens for --max-tokens 20")
        check_eq(a["generated_tokens"], len(a["tokens"]), "generated_tokens")
        if a["finish_reason"] == "length":
            check_eq(len(a["tokens"]), 20, "tokens when the length ran out")
        check(a["prompt_tokens"] >= 4, f"prompt_tokens {a['prompt_tokens']}")
        check(a["text"].strip(), "no text")
        check(a["timings"]["generate_tokens_per_sec"] > 0, f"timings {a['timings']}")

        # The text streamed to a pipe is the same text, and a newline.
        h = e.ctl("run", "stories260K", PROMPT, "--temp", "0", "--max-tokens", "20")
        check_eq(h.stdout, a["text"] + "\n", "streamed text")


def test_run_greedy_matches_reference():
    """llama.cpp's greedy continuation of the prompt (shared/models/README.md)."""
    with Env() as e:
        start(e)
        t = run_json(e, "stories260K", PROMPT, "--temp", "0", "--max-tokens", "40")["text"]
        check(t.startswith(", there was a little girl named Lily"), f"greedy text {t!r}")


def test_seed_makes_sampling_reproducible():
    with Env() as e:
        start(e)
        args = ("stories260K", PROMPT, "--temp", "1.0", "--top-k", "40", "--top-p", "0.95", "--seed", "1234",
                "--max-tokens", "30")
        a = run_json(e, *args)
        b = run_json(e, *args)
        check_eq(a["tokens"], b["tokens"], "tokens of two runs with --seed 1234")


def test_device_sampling_matches_host():
    """Sampling from the device's best logits (INFERD_SAMPLE_ON_DEVICE=1) and from the whole row (=0) draw the
    same tokens for the same seed: temperature with top-k, penalties above and below 1, greedy with a penalty."""
    cases = [("--temp", "1.0", "--top-k", "40", "--top-p", "0.95", "--seed", "1234"),
             ("--temp", "1.3", "--top-k", "100", "--repeat-penalty", "1.3", "--repeat-last-n", "32", "--seed", "7"),
             ("--temp", "0.8", "--top-k", "10", "--min-p", "0.1", "--repeat-penalty", "0.8", "--seed", "99"),
             ("--temp", "0", "--repeat-penalty", "1.5")]
    tokens = {}
    for on_device in ("1", "0"):
        with Env() as e:
            n = e.node()
            n.start(env_extra={"INFERD_SAMPLE_ON_DEVICE": on_device})
            if not any(d["active"] for d in e.ctl_json("devices")):
                raise SkipTest("no active Vulkan device")
            e.ctl("load", need(STORIES), timeout=600)
            tokens[on_device] = [run_json(e, "stories260K", PROMPT, *c, "--max-tokens", "40")["tokens"]
                                 for c in cases]
    for i, c in enumerate(cases):
        check(len(tokens["1"][i]) > 0, f"no tokens for {c}")
        check_eq(tokens["1"][i], tokens["0"][i], f"tokens on the device and on the host for {' '.join(c)}")


def test_stop_text():
    with Env() as e:
        start(e)
        full = run_json(e, "stories260K", PROMPT, "--temp", "0", "--max-tokens", "40")
        words = full["text"].split()
        check(len(words) >= 6, f"too little text to pick a stop word from: {full['text']!r}")
        stop = words[len(words) // 2]
        r = run_json(e, "stories260K", PROMPT, "--temp", "0", "--max-tokens", "40", "--stop", stop,
                     "--stop", "no such text at all")
        check_eq(r["finish_reason"], "stop", f"finish_reason with --stop {stop!r}")
        check(len(r["tokens"]) < len(full["tokens"]), f"--stop {stop!r} did not shorten {r}")
        check(full["text"].startswith(r["text"]), f"stopped text {r['text']!r} is not a prefix of {full['text']!r}")


def test_chat_with_piped_input():
    with Env() as e:
        start(e)
        # stories260K has no chat template of its own, and a context of 128 tokens: short turns.
        args = [INFERCTL, "--bus=session", "chat", "stories260K", "--temp", "0", "--max-tokens", "12",
                "--template", "llama2"]
        r = subprocess.run(args + ["--system", "You tell stories."],
                           input="Hello!\n\nTell me a story.\n/exit\nnot a message\n", env=e.env,
                           capture_output=True, text=True, timeout=120)
        check_eq(r.returncode, 0, f"chat exit status ({r.stderr!r})")
        check(r.stdout.strip() and r.stdout.endswith("\n"), f"chat output {r.stdout!r}")
        check(not r.stdout.startswith(">"), f"a prompt without a terminal: {r.stdout!r}")

        r = subprocess.run(args + ["--json"], input="Hello!\nTell me a story.\n", env=e.env, capture_output=True,
                           text=True, timeout=120)
        check_eq(r.returncode, 0, f"chat --json exit status ({r.stderr!r})")
        replies = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        check_eq(len(replies), 2, f"replies to two messages: {r.stdout!r}")
        for x in replies:
            check(x["finish_reason"] in ("stop", "length"), f"reply {x}")
            check(0 < x["prompt_tokens"], f"reply {x}")
        # The second turn carries the whole conversation.
        check(replies[1]["prompt_tokens"] > replies[0]["prompt_tokens"],
              f"the second prompt does not hold the first turn: {replies}")


def test_unload_then_run_fails_clearly():
    with Env() as e:
        n = start(e)
        # Jobs of an unloaded model go with it (their objects must not point at it).
        e.ctl("run", "stories260K", PROMPT, "--max-tokens", "4", "--temp", "0")
        e.ctl("unload", "stories260K")
        r = subprocess.run(["busctl", "--address=" + e.bus.address, "get-property", "org.inferd.infer1",
                            "/org/inferd/infer1/job/1", "org.inferd.infer1.Job", "Model"],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode != 0, f"the job object outlived its model: {r.stdout!r}")
        check(n.proc.poll() is None, "inferd died after unloading a model with a finished job")
        check_eq(e.ctl_json("models"), [], "models after unload")
        one_line(e.ctl("run", "stories260K", PROMPT, check_rc=1), "stories260K")
        one_line(e.ctl("unload", "stories260K", check_rc=1), "stories260K")
        one_line(e.ctl("tokenize", "nosuch", PROMPT, check_rc=1), "nosuch")


def test_bad_files_fail_clearly_and_daemon_survives():
    with Env() as e:
        n = start(e, models=())
        missing = os.path.join(e.tmp, "missing.gguf")
        one_line(e.ctl("load", missing, check_rc=1), "missing.gguf")
        # Past inferctl's own check, straight to the daemon.
        r = subprocess.run(["busctl", "--address=" + e.bus.address, "call", "org.inferd.infer1",
                            "/org/inferd/infer1", "org.inferd.infer1.Manager", "LoadModel", "ssa{sv}", missing, "",
                            "0"], capture_output=True, text=True, timeout=60)
        check(r.returncode != 0 and "missing.gguf" in r.stderr, f"LoadModel of a missing file: {r.stderr!r}")

        text = os.path.join(e.tmp, "notes.gguf")
        with open(text, "w") as f:
            f.write("This is not a model.\n" * 100)
        one_line(e.ctl("load", text, check_rc=1), "notes.gguf")

        truncated = os.path.join(e.tmp, "truncated.gguf")
        with open(need(STORIES), "rb") as src, open(truncated, "wb") as dst:
            dst.write(src.read(100000))
        one_line(e.ctl("load", truncated, check_rc=1), "truncated.gguf")

        check(n.proc.poll() is None, "inferd died on a bad file")
        check_eq(e.ctl_json("models"), [], "models after failed loads")
        e.ctl("load", STORIES, timeout=600)
        check_eq([m["name"] for m in e.ctl_json("models")], ["stories260K"], "a good file after bad ones")


def test_other_user_cannot_load_or_cancel():
    if os.geteuid() != 0:
        raise SkipTest("needs root to run inferctl as another user")
    with Env() as e:
        start(e)
        # A copy that nobody can read: the refusal must come from the daemon, not from realpath().
        copy = os.path.join(e.tmp, "copy.gguf")
        shutil.copy(STORIES, copy)
        os.chmod(copy, 0o644)
        one_line(e.ctl("load", copy, "--name", "theirs", user=NOBODY, check_rc=1), "denied")
        one_line(e.ctl("unload", "stories260K", user=NOBODY, check_rc=1), "denied")
        check_eq([m["name"] for m in e.ctl_json("models")], ["stories260K"], "models after refused calls")
        # Using a model is open to all.
        e.ctl("run", "stories260K", PROMPT, "--temp", "0", "--max-tokens", "4", user=NOBODY)

        benches, p, path = start_queued_job(e)
        try:
            p.send_signal(signal.SIGSTOP)   # not needed while queued; keeps the caller on the bus regardless
            r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                                "busctl", "--address=" + e.bus.address, "call", "org.inferd.infer1", path,
                                "org.inferd.infer1.Job", "Cancel"], capture_output=True, text=True, timeout=30)
            check(r.returncode != 0, f"another user cancelled the job: {r.stdout!r}")
            check("denied" in r.stderr.lower(), f"no access-denied message: {r.stderr!r}")
            check(job_property(e, path, "FinishReason") != "cancelled", "the job was cancelled anyway")
        finally:
            p.send_signal(signal.SIGCONT)
        # Ctrl-C: the caller cancels its own job and exits with 130.
        check_eq(end(p, signal.SIGINT), 130, "inferctl run after SIGINT")
        for b in benches:
            end(b)


def test_killed_client_cancels_its_jobs():
    """A caller that leaves the bus takes its jobs along: the one that runs, and the one that waits."""
    with Env() as e:
        n = start(e)
        benches, p, path = start_queued_job(e)
        end(p)
        for b in benches:
            end(b)
        # The benchmarks had a minute to go on lavapipe; the waiting job goes as soon as it is cancelled.
        wait_for(lambda: job_property(e, path, "Id") is None, timeout=10, what="the jobs of killed clients to go")
        check(n.proc.poll() is None, "inferd died when its clients did")
        check(run_json(e, "stories260K", PROMPT, "--temp", "0", "--max-tokens", "4")["tokens"],
              "no tokens after the killed jobs")


def test_bench_model():
    with Env() as e:
        start(e)
        b = e.ctl_json("bench", "stories260K", "-p", "16", "-n", "8", "-r", "1", timeout=600)
        for k in ("pp_tokens_per_sec", "tg_tokens_per_sec"):
            check(b.get(k, 0) > 0, f"{k} in {b}")
        check_eq((b["n_prompt"], b["n_gen"], b["repetitions"]), (16, 8, 1), "bench parameters")
        check_eq((b["model"], b["architecture"]), ("stories260K", "llama"), "model info")
        t = e.ctl("bench", "stories260K", "-p", "16", "-n", "8", "-r", "1", timeout=600).stdout
        check(t.startswith("| model") and re.search(r"\| +pp16 \|", t) and re.search(r"\| +tg8 \|", t) and "±" in t,
              f"bench table:\n{t}")
        one_line(e.ctl("bench", "nosuch", "-p", "16", "-n", "8", "-r", "1", check_rc=1), "nosuch")


def test_help_and_usage_errors():
    """No daemon needed: the client checks its arguments first."""
    with Env() as e:
        for verb in ("models", "load", "unload", "run", "chat", "tokenize", "bench"):
            r = e.ctl(verb, "--help")
            check(f"inferctl [OPTIONS] {verb}" in r.stdout, f"inferctl {verb} --help:\n{r.stdout}")
        check("--max-tokens" in e.ctl("run", "--help").stdout, "run --help lacks the sampling options")
        check("-p --n-prompt" in e.ctl("bench", "--help").stdout, "bench --help lacks -p")
        for args in (("run", "m"), ("run", "m", "p", "--temp", "hot"), ("run", "m", "p", "--temp", "-1"),
                     ("run", "m", "p", "--top-p", "1.5"), ("run", "m", "p", "--max-tokens", "0"),
                     ("run", "m", "p", "--seed", "-1"), ("run", "m", "p", "--stop", ""),
                     ("chat", "m", "--template", ""), ("tokenize", "m"), ("load",), ("load", "x", "--device", "one"),
                     ("load", "x", "--context", "0"), ("unload",), ("bench", "m", "-p", "x"), ("bench", "m", "-r", "0"),
                     ("bench", "m", "-p", "0", "-n", "0"), ("bench", "m", "--quick"), ("bench", "ops", "-p", "8")):
            r = e.ctl(*args, check_rc=2)
            one_line(r, "inferctl")
        one_line(e.ctl("load", os.path.join(e.tmp, "nothing.gguf"), check_rc=1), "nothing.gguf")


def test_ended_jobs_are_capped_for_a_connected_caller():
    """A caller that stays connected and runs job after job keeps at most 256 ended job objects."""
    client = os.environ.get("JOBS_CLIENT")
    if not client or not os.path.exists(client):
        raise SkipTest("jobs-client is not built")
    with Env() as e:
        start(e)
        r = subprocess.run([client, "stories260K", "300"], env=e.env, capture_output=True, text=True, timeout=600)
        check_eq(r.returncode, 0, f"jobs-client failed: {r.stderr}")
        nodes = int(r.stdout.strip())
        check(200 <= nodes <= 256, f"{nodes} job objects after 300 jobs from one connected caller")
        # And once the caller has gone, its ended jobs go too.
        tree = e.busctl("tree", "org.inferd.infer1")
        check("/org/inferd/infer1/job/" not in tree, f"jobs outlived their caller:\n{tree}")


def test_generated_text_reaches_only_its_caller():
    """Under the real system bus policy, another user listening for Job signals hears nothing of a job's text."""
    if os.geteuid() != 0:
        raise SkipTest("needs root: only root may own the name on the system bus")
    if not shutil.which("dbus-monitor"):
        raise SkipTest("dbus-monitor is not installed")
    need(STORIES)
    with Env(kind="system-policy") as e:
        n = e.node(bus_flag="--bus=system")
        n.start()
        if not any(d["active"] for d in e.ctl_json("devices", bus="system")):
            raise SkipTest("no active Vulkan device")
        e.ctl("load", STORIES, bus="system", timeout=600)
        mon = subprocess.Popen(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                                "dbus-monitor", "--system", "type='signal',interface='org.inferd.infer1.Job'",
                                "type='signal',interface='org.freedesktop.DBus.Properties'"],
                               env=e.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1.0)  # the monitor's match is in place
            r = e.ctl("run", "stories260K", PROMPT, "--temp", "0", "--max-tokens", "24", bus="system")
            check("little girl" in r.stdout, f"the caller did not get the text: {r.stdout!r}")
            # A control: a broadcast the monitor must hear, so silence above means something.
            e.ctl("log-level", "debug", bus="system")
            time.sleep(0.5)
        finally:
            mon.terminate()
            out = mon.communicate(timeout=10)[0]
        check("Piece" not in out and "little girl" not in out and "Finished" not in out,
              f"another user saw a job's signals:\n{out}")
        check("PropertiesChanged" in out, f"the monitor heard no broadcast either, so proves nothing:\n{out}")


if __name__ == "__main__":
    run(test_load_and_list, test_tokenize_defaults_and_special, test_run_greedy_is_deterministic,
        test_run_greedy_matches_reference, test_seed_makes_sampling_reproducible, test_device_sampling_matches_host,
        test_stop_text,
        test_chat_with_piped_input, test_unload_then_run_fails_clearly,
        test_bad_files_fail_clearly_and_daemon_survives, test_other_user_cannot_load_or_cancel,
        test_killed_client_cancels_its_jobs, test_bench_model, test_help_and_usage_errors,
        test_generated_text_reaches_only_its_caller, test_ended_jobs_are_capped_for_a_connected_caller)
