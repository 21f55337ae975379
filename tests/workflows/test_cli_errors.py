"""Mistakes get one clear line, not a traceback, and leave nothing behind (docs/cli.md).

In-process tests run `airlock.cli.run` against the session's dev server; the ones about a whole
process (its exit status, its stderr, how long it takes, signals) run the installed `airlock`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from airlock import cli, queue_check
from contracts.workspace_io import control_workflow_id
from runtime.exits import ExitStatus
from runtime.settings import EXAMPLE_POLICY
from tests.conftest import AirlockCli, policy_file

ROOT = Path(__file__).resolve().parents[2]
AIRLOCK = str(Path(sys.executable).parent / "airlock")
POLICY = str(EXAMPLE_POLICY)


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as e:
        if e.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


@pytest.fixture
def silent_port() -> Iterator[socket.socket]:
    """A loopback port where something accepts TCP connections and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_env(tmp_path: Path, address: str, **extra: str) -> dict[str, str]:
    """The environment of an `airlock` process of its own: this test's files, the given server."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "AIRLOCK_TASK_QUEUE": f"airlock-cli-{uuid.uuid4().hex[:8]}",
        "AIRLOCK_DB": str(tmp_path / "backoffice.db"),
        "AIRLOCK_CONTROL_DB": str(tmp_path / "control.db"),
        "AIRLOCK_SECRETS_KEY_FILE": str(tmp_path / "secrets.key"),
        "AIRLOCK_KEYS_DIR": str(tmp_path / "keys"),
        "AIRLOCK_UI_PORT": str(free_port()),
        **extra,
    }


def airlock(tmp_path: Path, env: dict[str, str], *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRLOCK, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# ---- unknown runs, workspaces, people, files: one line, status 2 ---------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "{run}"],
        ["undo", "{run}"],
        ["approve", "{run}", "apr-1-0-abc", "--as", "u_bob"],
        ["deny", "{run}", "apr-1-0-abc", "--as", "u_bob"],
    ],
    ids=["show", "undo", "approve", "deny"],
)
async def test_an_unknown_run_is_named_in_one_line_and_nothing_is_started(
    airlock_cli: AirlockCli, client: Client, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A run id nobody started: one line naming it and the namespace, status 2, and no undo run
    (or anything else) started for it."""
    run_id = f"wf-missing-{uuid.uuid4().hex[:6]}"
    status, out = await airlock_cli(*(a.format(run=run_id) for a in argv))
    assert status == ExitStatus.USAGE == 2
    assert stderr_lines(capsys) == [f"airlock: no run named {run_id} in namespace default"]
    assert out == ""
    assert not await exists(client, f"undo-{run_id}")


@pytest.mark.parametrize("counterfactual", [False, True], ids=["replay", "replay-policy"])
async def test_replay_of_a_history_file_that_does_not_exist_says_so(
    airlock_cli: AirlockCli, capsys: pytest.CaptureFixture[str], counterfactual: bool
) -> None:
    """`airlock replay RUN_ID` (a run id where a file belongs) names the missing file, status 2."""
    argv = ["replay", *(["--policy", POLICY] if counterfactual else []), "wf-x"]
    status, out = await airlock_cli(*argv)
    assert status == ExitStatus.USAGE
    assert stderr_lines(capsys) == [
        "airlock: no history file wf-x (a run id? `airlock show wf-x` reads a run from Temporal)"
    ]
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["workspace", "pause", "{ws}", "--by", "u_carol"],
        ["workspace", "resume", "{ws}", "--by", "u_carol"],
        ["workspace", "safe-mode-on", "{ws}", "--by", "u_carol"],
        ["workspace", "safe-mode-off", "{ws}", "--by", "u_carol"],
        ["workspace", "status", "{ws}"],
        ["workspace", "spend", "{ws}"],
        ["workspace", "limits", "{ws}"],
        ["inbox", "--as", "u_bob", "--workspace", "{ws}"],
        ["audit", "export", "--since", "2026-01-01", "--workspace", "{ws}"],
    ],
    ids=["pause", "resume", "safe-mode-on", "safe-mode-off", "status", "spend", "limits", "inbox", "audit"],
)
async def test_a_workspace_the_policy_does_not_know_is_refused_before_anything_starts(
    airlock_cli: AirlockCli, client: Client, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A workspace missing from the policy: one line naming it and the workspaces there are,
    status 2, and no control workflow started (it would fail on its first task and stay behind)."""
    name = f"ghost-{uuid.uuid4().hex[:6]}"
    status, out = await airlock_cli(*(a.format(ws=name) for a in argv))
    assert status == ExitStatus.USAGE
    assert stderr_lines(capsys) == [
        f"airlock: no workspace named {name!r} in the policy {POLICY} (its workspaces: acme, sandbox)"
    ]
    assert out == ""
    assert not await exists(client, control_workflow_id(name))


@pytest.mark.parametrize("command", ["spend", "limits"])
async def test_a_control_store_that_is_not_there_is_named_not_created(
    airlock_cli: AirlockCli,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    """`AIRLOCK_CONTROL_DB` pointing where no store is (a typo, another machine's path): one
    line naming it, status 2, and no empty store left behind that would report nothing spent."""
    missing = tmp_path / "contorl.db"
    monkeypatch.setenv("AIRLOCK_CONTROL_DB", str(missing))
    status, out = await airlock_cli("workspace", command, "acme")
    assert status == ExitStatus.USAGE
    assert stderr_lines(capsys) == [
        f"airlock: no control store at {missing} (AIRLOCK_CONTROL_DB): no worker here has used it; "
        "point AIRLOCK_CONTROL_DB at the store the workers share"
    ]
    assert out == "" and not missing.exists()


async def test_the_inbox_of_a_person_who_does_not_exist_is_refused(
    airlock_cli: AirlockCli, capsys: pytest.CaptureFixture[str]
) -> None:
    """`airlock inbox --as` someone the policy does not name: one line, status 2, not "0 approvals"."""
    status, out = await airlock_cli("inbox", "--as", "u_nobody")
    assert status == ExitStatus.USAGE
    assert stderr_lines(capsys) == [f"airlock: no person named 'u_nobody' in the policy {POLICY}"]
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [["show", "wf-nobody"], ["undo", "wf-nobody"], ["workspace", "pause", "ghost", "--by", "u_carol"]],
    ids=["show", "undo", "pause"],
)
def test_the_installed_command_prints_one_line_and_no_traceback(
    env: WorkflowEnvironment, tmp_path: Path, argv: list[str]
) -> None:
    """The whole process, as a person runs it: status 2, exactly one line on stderr, nothing on stdout."""
    proc = airlock(tmp_path, process_env(tmp_path, env.client.service_client.config.target_host), *argv)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("airlock: "), proc.stderr
    assert proc.stdout == ""


# ---- a control workflow no worker serves: one line naming the queue, status 3, at once -----------


@pytest.fixture
def orphan_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A workspace of the test's own, in the policy the CLI reads."""
    name = f"orphan-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(
        "AIRLOCK_POLICY", str(policy_file(tmp_path / "p.yaml", workspaces={name: {"max_autonomy": "auto"}}))
    )
    return name


async def history_length(client: Client, workflow_id: str) -> int:
    return len((await client.get_workflow_handle(workflow_id).fetch_history()).events)


@pytest.mark.parametrize("command", ["pause", "status"])
async def test_a_control_workflow_whose_queue_no_worker_polls_is_named_at_once(
    airlock_cli: AirlockCli, client: Client, capsys: pytest.CaptureFixture[str], orphan_policy: str, command: str
) -> None:
    """The workspace's control workflow lives on a queue whose workers are gone (a retired pool):
    the switch, which would wait for a worker for ever, is refused in one line naming the queue,
    status 3, and nothing is sent to the workflow."""
    name, queue = orphan_policy, f"retired-{uuid.uuid4().hex[:6]}"
    handle = await client.start_workflow("WorkspaceControl", name, id=control_workflow_id(name), task_queue=queue)
    try:
        before = await history_length(client, handle.id)
        started = time.monotonic()
        status, out = await airlock_cli(
            "workspace", command, name, *(["--by", "u_carol"] if command == "pause" else [])
        )
        assert time.monotonic() - started < 10
        assert status == ExitStatus.UNREACHABLE
        what = "the switch was not thrown" if command == "pause" else "nothing can answer"
        assert stderr_lines(capsys) == [
            f"airlock: no worker serves task queue {queue!r}, where workspace:{name} runs: {what}; start "
            f"`airlock worker` with AIRLOCK_TASK_QUEUE={queue!r}, or point AIRLOCK_TASK_QUEUE and "
            "AIRLOCK_CONTROL_TASK_QUEUE here at the queues your workers serve (docs/deployment.md)"
        ]
        assert out == "" and await history_length(client, handle.id) == before
    finally:
        await handle.terminate("test done")


async def test_the_status_of_a_workspace_without_a_control_workflow_says_so(
    airlock_cli: AirlockCli, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, orphan_policy: str
) -> None:
    """`status` starts nothing, so the queue a switch would start on does not matter to it."""
    monkeypatch.setenv("AIRLOCK_CONTROL_TASK_QUEUE", "airlock-contorl")
    status, _ = await airlock_cli("workspace", "status", orphan_policy)
    assert status == ExitStatus.REFUSED
    assert stderr_lines(capsys) == [
        f"airlock: workspace {orphan_policy!r} has no control workflow yet: no run has joined it and no switch "
        "was thrown (its switches are off)"
    ]


async def test_a_mistyped_control_queue_starts_nothing(
    airlock_cli: AirlockCli,
    client: Client,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    orphan_policy: str,
) -> None:
    """No control workflow yet, and `AIRLOCK_CONTROL_TASK_QUEUE` names a queue no worker serves:
    the switch is refused at once, and no control workflow is left waiting there."""
    monkeypatch.setenv("AIRLOCK_CONTROL_TASK_QUEUE", "airlock-contorl")
    status, _ = await airlock_cli("workspace", "pause", orphan_policy, "--by", "u_carol")
    assert status == ExitStatus.UNREACHABLE
    [line] = stderr_lines(capsys)
    assert line.startswith(
        f"airlock: no worker serves task queue 'airlock-contorl', where workspace:{orphan_policy} would start: "
        "the switch was not thrown;"
    )
    assert not await exists(client, control_workflow_id(orphan_policy))


async def test_a_switch_nobody_takes_ends_with_a_line_instead_of_waiting(
    airlock_cli: AirlockCli,
    client: Client,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    orphan_policy: str,
) -> None:
    """The server still lists a poller on the queue (it remembers them for minutes after a worker
    dies), but nothing takes the update: the command ends after SWITCH_WAIT_S saying so."""
    name, queue = orphan_policy, f"just-died-{uuid.uuid4().hex[:6]}"
    handle = await client.start_workflow("WorkspaceControl", name, id=control_workflow_id(name), task_queue=queue)

    async def a_poller_is_listed(client: Client, task_queue: str) -> bool:
        return True

    monkeypatch.setattr(queue_check, "served", a_poller_is_listed)
    monkeypatch.setattr(cli, "SWITCH_WAIT_S", 2.0)
    try:
        status, out = await airlock_cli("workspace", "pause", name, "--by", "u_carol")
        assert status == ExitStatus.UNREACHABLE and out == ""
        assert stderr_lines(capsys) == [
            f"airlock: workspace:{name} did not answer the switch within 2 s: no worker may serve task queue "
            f"{queue!r} any more. The switch may still take effect once one does; "
            f"`airlock workspace status {name!r}` shows the switches in force"
        ]
    finally:
        await handle.terminate("test done")


# ---- a setting that is not valid: one line naming the variable, status 2 ----------------------


@pytest.mark.parametrize(
    ("setting", "value", "problem"),
    [
        ("AIRLOCK_TASK_QUEUE", "", "a task queue name is 1 to 1000 printable characters (got '')"),
        # A byte that is not UTF-8 in the environment (it reaches Python as a surrogate).
        ("AIRLOCK_CONTROL_TASK_QUEUE", "\udcff", "a task queue name is 1 to 1000 printable characters (got '\\udcff')"),
        (
            "AIRLOCK_MAX_CONCURRENT_WORKFLOW_TASKS",
            "many",
            "Input should be a valid integer, unable to parse string as an integer (got 'many')",
        ),
    ],
)
@pytest.mark.parametrize("argv", [["workspace", "pause", "acme", "--by", "u_carol"], ["worker"]], ids=["cli", "worker"])
def test_a_setting_that_is_not_valid_is_named_in_one_line(
    tmp_path: Path, argv: list[str], setting: str, value: str, problem: str
) -> None:
    """Before anything connects: status 2, the variable and what is wrong with it, no traceback."""
    proc = airlock(tmp_path, process_env(tmp_path, "127.0.0.1:1", **{setting: value}), *argv)
    assert proc.returncode == ExitStatus.USAGE, proc.stderr
    assert proc.stderr.splitlines() == [f"airlock: setting {setting}: {problem}"]
    assert proc.stdout == ""


# ---- a Temporal address where no server answers: one line, status 3, within ~5 s ---------------


@pytest.mark.parametrize("listening", [True, False], ids=["silent-listener", "nothing-listening"])
@pytest.mark.parametrize(
    "argv", [["workspace", "status", "acme"], ["show", "wf-1"], ["worker"]], ids=["workspace", "show", "worker"]
)
def test_an_address_where_no_temporal_answers_is_named_within_seconds(
    tmp_path: Path, silent_port: socket.socket, listening: bool, argv: list[str]
) -> None:
    """Whether something holds the port and never answers, or nothing listens there: the CLI and
    the worker say so in one line naming the address, with status 3, instead of hanging."""
    port = silent_port.getsockname()[1] if listening else free_port()
    address = f"127.0.0.1:{port}"
    started = time.monotonic()
    proc = airlock(tmp_path, process_env(tmp_path, address), *argv, timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == ExitStatus.UNREACHABLE == 3, proc.stderr
    reason = "no answer within 5 s" if listening else "connection refused"
    assert proc.stderr.splitlines() == [
        f"airlock: cannot reach Temporal at {address}: {reason} "
        "(is the server running? TEMPORAL_ADDRESS sets the address)"
    ]
    # 5 s of waiting for an answer, plus starting Python and importing the SDK.
    assert elapsed < 12, elapsed


# ---- `airlock dev` with a port already taken: named with its holder, status 2 ------------------


def test_dev_names_the_process_holding_temporals_port(tmp_path: Path, silent_port: socket.socket) -> None:
    """Something that is not Temporal listens on TEMPORAL_ADDRESS's port: `airlock dev` names the
    port and its holder (this test's process) instead of waiting, and starts no server."""
    port = silent_port.getsockname()[1]
    proc = airlock(tmp_path, process_env(tmp_path, f"127.0.0.1:{port}"), "dev", "--no-demo", timeout=30)
    assert proc.returncode == ExitStatus.USAGE, proc.stderr
    name = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert proc.stderr.splitlines() == [
        f"airlock: port {port} (TEMPORAL_ADDRESS 127.0.0.1:{port}) is held by pid {os.getpid()} ({name}), "
        "which does not answer as a Temporal server: stop it, or set TEMPORAL_ADDRESS to a free port"
    ]
    assert not (tmp_path / ".airlock" / "temporal.db").exists()


def test_dev_names_the_process_holding_the_web_ui_port(tmp_path: Path, silent_port: socket.socket) -> None:
    """The Web UI's port is taken: named with its holder at once, before a dev server is started
    (which would fail on it and leave `airlock dev` waiting)."""
    ui = silent_port.getsockname()[1]
    env = process_env(tmp_path, f"127.0.0.1:{free_port()}", AIRLOCK_UI_PORT=str(ui))
    started = time.monotonic()
    proc = airlock(tmp_path, env, "dev", "--no-demo", timeout=30)
    assert proc.returncode == ExitStatus.USAGE, proc.stderr
    name = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert proc.stderr.splitlines() == [
        f"airlock: port {ui} (the Web UI's port) is held by pid {os.getpid()} ({name}): stop it, "
        "or set AIRLOCK_UI_PORT to a free port"
    ]
    assert time.monotonic() - started < 10
    assert not (tmp_path / ".airlock" / "temporal.db").exists()


# ---- a policy or tool module that does not load: the same line from `dev` and `worker` ---------


def _bad_policy(tmp_path: Path) -> tuple[dict[str, str], str]:
    bad = tmp_path / "policy.yaml"
    bad.write_text(EXAMPLE_POLICY.read_text().replace("approvals: 2", "approvals: two"))
    return {"AIRLOCK_POLICY": str(bad)}, (
        f"airlock: refusing to start, the policy does not load: {bad}:31: tiers.critical.approvals: "
        "Input should be a valid integer, unable to parse string as an integer"
    )


def _missing_module(tmp_path: Path) -> tuple[dict[str, str], str]:
    return {"AIRLOCK_TOOL_MODULES": "tools.backoffice,acme_tools"}, (
        "airlock: refusing to start, tool module 'acme_tools' (AIRLOCK_TOOL_MODULES) does not load: "
        "ModuleNotFoundError: No module named 'acme_tools'"
    )


def _broken_module(tmp_path: Path) -> tuple[dict[str, str], str]:
    (tmp_path / "broken_tools.py").write_text("from tools.base import Tool\n\nTOOLS = [Tol]\n")
    return {"AIRLOCK_TOOL_MODULES": "tools.backoffice,broken_tools", "PYTHONPATH": str(tmp_path)}, (
        "airlock: refusing to start, tool module 'broken_tools' (AIRLOCK_TOOL_MODULES) does not load: "
        "NameError: name 'Tol' is not defined"
    )


@pytest.mark.parametrize("mistake", [_bad_policy, _missing_module, _broken_module], ids=["policy", "missing", "broken"])
@pytest.mark.parametrize("argv", [["dev", "--no-demo"], ["worker"]], ids=["dev", "worker"])
def test_what_does_not_load_stops_dev_and_worker_with_the_same_line(
    tmp_path: Path, silent_port: socket.socket, mistake: object, argv: list[str]
) -> None:
    """`make demo` (`airlock dev`) and `airlock worker` name the file or module and its error in
    the same one line, status 2, before they connect anywhere or start a server (the address here
    never answers: reaching it would take 5 s and say something else)."""
    assert callable(mistake)
    extra, line = mistake(tmp_path)
    env = process_env(tmp_path, f"127.0.0.1:{silent_port.getsockname()[1]}", **extra)
    started = time.monotonic()
    proc = airlock(tmp_path, env, *argv, timeout=30)
    assert proc.returncode == ExitStatus.USAGE, proc.stderr
    assert [x for x in proc.stderr.splitlines() if not x.startswith("{")] == [line]
    assert time.monotonic() - started < 5
    assert not (tmp_path / ".airlock" / "temporal.db").exists()


# ---- Ctrl-C, and a clean exit ------------------------------------------------------------------


def test_ctrl_c_stops_a_command_with_status_130_and_no_traceback(tmp_path: Path, silent_port: socket.socket) -> None:
    """SIGINT while a command waits on Temporal: "interrupted", status 130, no traceback."""
    address = f"127.0.0.1:{silent_port.getsockname()[1]}"
    proc = subprocess.Popen(
        [AIRLOCK, "workspace", "status", "acme"],
        cwd=tmp_path,
        env=process_env(tmp_path, address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        silent_port.settimeout(20)
        connection, _ = silent_port.accept()  # the command is now waiting for Temporal's answer
        connection.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitStatus.INTERRUPTED == 130, err
    assert err.splitlines() == ["airlock: interrupted"]
    assert out == ""


def test_a_worker_stopped_by_sigint_exits_cleanly(env: WorkflowEnvironment, tmp_path: Path) -> None:
    """`python worker.py` (the image's command) and `airlock worker`, stopped by SIGINT once
    polling: each drains and exits 0. They used to abort at interpreter exit about one time in four
    ("Fatal Python error: PyGILState_Release", status 134), so four of each run side by side."""
    address = env.client.service_client.config.target_host
    commands = [[sys.executable, str(ROOT / "worker.py")]] * 4 + [[AIRLOCK, "worker"]] * 4
    procs = []
    for i, command in enumerate(commands):
        home = tmp_path / str(i)
        home.mkdir()
        log = (home / "log").open("w")
        procs.append(
            (
                home,
                subprocess.Popen(
                    command, cwd=ROOT, env=process_env(home, address), stdout=log, stderr=subprocess.STDOUT
                ),
            )
        )
        log.close()
    try:
        deadline = time.monotonic() + 90
        for home, _ in procs:
            while "worker.started" not in (home / "log").read_text():
                assert time.monotonic() < deadline, (home / "log").read_text()
                time.sleep(0.1)
        for _, proc in procs:
            proc.send_signal(signal.SIGINT)
        statuses = [proc.wait(timeout=60) for _, proc in procs]
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = [(home / "log").read_text() for home, _ in procs]
    assert statuses == [0] * len(procs), [log[-600:] for log in logs]
    assert not any("Fatal Python error" in log or "Traceback" in log for log in logs)
