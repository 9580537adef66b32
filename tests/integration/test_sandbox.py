"""test_sandbox.py - steps are sandboxed (daemon/sandbox.c): a clean
environment (PATH, HOME, LANG, TZ, FLOWD_*, the spec's env, executor.pass_env),
only descriptors 0-2, the executor.run_as user; flowd refuses to run steps as
root unless executor.allow_root = true, and keeps its config and data
directory to itself.

The tests run as root (the harness writes allow_root = true; these override
it), since switching users needs root."""

import grp
import os
import pwd
import stat

import pytest

import flowd_harness as h
from flowd_harness import flow_spec, step, steps_by_name, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

NOBODY = pwd.getpwnam("nobody")
SANDBOXED = {"executor.run_as": "nobody", "executor.allow_root": "false",
             "executor.pass_env": "KEEP_ME"}
# What flowd's own environment holds and a step must (not) see.
FLOWD_ENV = {"PGPASSWORD": "secret", "KEEP_ME": "1", "DROP_ME": "1"}
# Variables a shell may add by itself.
SHELL_VARS = {"PWD", "OLDPWD", "SHLVL", "_"}


def sandboxed_node(cluster, overrides=SANDBOXED):
    c = cluster(1, overrides=overrides, start=False)
    node = c[0]
    node.env = dict(FLOWD_ENV)
    c.start()
    return node


def wait_logs(node, run_id, step_name):
    path = "/v1/runs/%s/steps/%s/logs" % (run_id, step_name)

    def got():
        status, body = node.get(path)
        if status == 503 and body.get("error", {}).get("code") == "not_stored_yet":
            return None
        assert status == 200, (status, body)
        return body
    return wait_for(got, 30, "the log of " + path)


def run_step(node, name, shell, env=None, workdir=None):
    """Deploy a one-step flow, run it, and return (run, its step's logs)."""
    s = step("s", shell, env=env)
    if workdir is not None:
        s["workdir"] = workdir
    node.deploy(name, flow_spec([s]))
    run_id = node.start_run(name)["id"]
    run = node.wait_run(run_id)
    return run, wait_logs(node, run_id, "s")


def sections(text):
    """`echo ---`-separated parts of a step's stdout."""
    return [part.strip("\n") for part in text.split("---\n")]


def refused(node, timeout=20):
    """Start a node that must refuse to start: returns (exit code, log)."""
    node.start(wait=False)
    rc = node.proc.wait(timeout=h.scaled(timeout))
    h._live_procs.discard(node.proc)
    return rc, node.log_text()


def test_step_sees_a_clean_environment_only_stdio_and_runs_as_run_as(cluster):
    node = sandboxed_node(cluster)
    run, logs = run_step(
        node, "probe",
        "env; echo ---; ls -l /proc/self/fd; echo ---; id -u; id -g; id -G; echo ---; pwd",
        env={"FROM_SPEC": "yes"})
    assert run["status"] == "succeeded", (run, logs)
    env_text, fds_text, id_text, cwd = sections(logs["stdout"])

    env = dict(line.split("=", 1) for line in env_text.splitlines() if "=" in line)
    assert "PGPASSWORD" not in env and "DROP_ME" not in env, env
    assert env["KEEP_ME"] == "1"
    assert env["FROM_SPEC"] == "yes"
    assert env["FLOWD_RUN_ID"] == run["id"]
    assert (env["FLOWD_FLOW"], env["FLOWD_STEP"], env["FLOWD_ATTEMPT"]) == ("probe", "s", "1")
    assert "FLOWD_TRIGGER" in env
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["HOME"] == NOBODY.pw_dir
    assert env["USER"] == env["LOGNAME"] == "nobody"
    assert env["LANG"] == os.environ.get("LANG", "C.UTF-8")
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "KEEP_ME", "FROM_SPEC"} | SHELL_VARS
    extra = {k for k in env if k not in allowed and not k.startswith("FLOWD_")}
    assert not extra, "step saw flowd's variables %s" % sorted(extra)

    # `ls` lists its own descriptors: 0-2 and the one it opened for the
    # directory it reads (3 -> /proc/<its pid>/fd). Nothing of flowd's.
    fds = {}
    for line in fds_text.splitlines():
        if " -> " in line:
            left, target = line.split(" -> ", 1)
            fds[int(left.split()[-1])] = target
    assert sorted(fds) == [0, 1, 2, 3], fds_text
    assert fds[0] == "/dev/null" and fds[1].startswith("pipe:") and fds[2].startswith("pipe:"), fds
    assert fds[3].startswith("/proc/") and fds[3].endswith("/fd"), fds

    uid, gid, groups = id_text.splitlines()
    assert int(uid) == NOBODY.pw_uid
    assert int(gid) == NOBODY.pw_gid
    assert {int(g) for g in groups.split()} == set(os.getgrouplist("nobody", NOBODY.pw_gid))
    # no workdir in the spec: nobody's home, else /
    assert cwd == (NOBODY.pw_dir if os.path.isdir(NOBODY.pw_dir) else "/")
    assert "sandbox: steps run as user=nobody uid=%d" % NOBODY.pw_uid in node.log_text()


def test_step_cannot_read_the_config_nor_write_the_data_dir(cluster):
    node = sandboxed_node(cluster)
    # the harness wrote the config 0644; flowd owns it and tightened it
    assert stat.S_IMODE(os.stat(node.config_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(node.data_dir).st_mode) == 0o700
    assert "was readable by every user (mode 0644), now 0600" in node.log_text()
    # a file nobody may read next to the config: the path itself is open
    control = os.path.join(node.dir, "control.txt")
    with open(control, "w") as f:
        f.write("control\n")
    os.chmod(control, 0o644)
    shell = ("cat %s; cat %s >/dev/null 2>&1 && echo config=read || echo config=denied; "
             "touch %s/x 2>/dev/null && echo data=written || echo data=denied; "
             "ls %s >/dev/null 2>&1 && echo data=listed || echo data=unlisted"
             % (h.sh_quote(control), h.sh_quote(node.config_path),
                h.sh_quote(node.data_dir), h.sh_quote(node.data_dir)))
    run, logs = run_step(node, "thief", shell)
    assert run["status"] == "succeeded", (run, logs)
    assert logs["stdout"].split() == ["control", "config=denied", "data=denied", "data=unlisted"], logs
    assert not os.path.exists(os.path.join(node.data_dir, "x"))


def test_a_workdir_the_run_as_user_cannot_enter_fails_the_spawn(cluster):
    node = sandboxed_node(cluster)
    run, logs = run_step(node, "cd", "pwd", workdir=node.data_dir)
    assert run["status"] == "failed", run
    a = steps_by_name(run)["s"]["attempts"][0]
    # chdir as nobody: EACCES, before exec
    assert a["reason"] == "spawn_failed: permission denied", a
    assert a["exit_code"] is None, a

    # one it can enter works
    run, logs = run_step(node, "cd2", "pwd", workdir="/tmp")
    assert run["status"] == "succeeded", run
    assert logs["stdout"] == "/tmp\n"


def test_without_sandbox_options_steps_still_get_a_clean_environment(cluster):
    """allow_root = true (the harness's default) and no run_as: the steps
    run as flowd's user, but still see no more than the sandbox's
    environment and descriptors."""
    c = cluster(1, start=False)
    node = c[0]
    node.env = dict(FLOWD_ENV)
    c.start()
    run, logs = run_step(node, "plain", "env; echo ---; ls /proc/self/fd | tr '\\n' ' '; echo; echo ---; id -u")
    assert run["status"] == "succeeded", (run, logs)
    env_text, fds, uid = sections(logs["stdout"])
    env = dict(line.split("=", 1) for line in env_text.splitlines() if "=" in line)
    assert "PGPASSWORD" not in env and "KEEP_ME" not in env and "DROP_ME" not in env, env
    assert fds.split() == ["0", "1", "2", "3"], fds
    assert int(uid) == os.geteuid()
    assert "steps run as root (executor.allow_root = true)" in node.log_text()


@pytest.mark.parametrize("overrides,message", [
    ({"executor.allow_root": "false"},
     "executor.allow_root: flowd runs as root and executor.run_as is not set"),
    ({"executor.allow_root": "false", "executor.run_as": "root"},
     "executor.allow_root: executor.run_as = \"root\" would run steps as uid 0"),
    ({"executor.allow_root": "false", "executor.run_as": "nobody:root"},
     "executor.allow_root: executor.run_as = \"nobody:root\" would run steps as gid 0"),
    ({"executor.run_as": "no-such-user-flowd"},
     "executor.run_as: no user \"no-such-user-flowd\""),
    ({"executor.run_as": "nobody:no-such-group-flowd"},
     "executor.run_as: no group \"no-such-group-flowd\""),
], ids=["root_without_run_as", "run_as_root", "run_as_group_root", "unknown_user", "unknown_group"])
def test_flowd_refuses_to_start_when_steps_would_run_as_root_or_nobody_known(cluster, overrides, message):
    node = cluster(1, overrides=overrides, start=False)[0]
    rc, log = refused(node)
    assert rc == 2, log
    assert message in log, log


def test_flowd_refuses_a_world_writable_config(cluster):
    node = cluster(1, overrides=SANDBOXED, start=False)[0]
    os.chmod(node.config_path, 0o666)
    rc, log = refused(node)
    assert rc == 2, log
    assert "writable by every user (mode 0666)" in log, log


def test_flowd_refuses_a_world_readable_config_it_does_not_own(cluster):
    node = cluster(1, overrides=SANDBOXED, start=False)[0]
    os.chown(node.config_path, NOBODY.pw_uid, grp.getgrnam("root").gr_gid)
    os.chmod(node.config_path, 0o644)
    rc, log = refused(node)
    assert rc == 2, log
    assert "readable by every user (mode 0644), and owned by uid %d" % NOBODY.pw_uid in log, log


def test_flowd_refuses_a_data_dir_owned_by_another_user(cluster):
    node = cluster(1, overrides=SANDBOXED, start=False)[0]
    os.chown(node.data_dir, NOBODY.pw_uid, NOBODY.pw_gid)
    rc, log = refused(node)
    assert rc == 2, log
    assert "node.data_dir %s: owned by uid %d" % (node.data_dir, NOBODY.pw_uid) in log, log
