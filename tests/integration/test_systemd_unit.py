"""test_systemd_unit.py - the shipped systemd unit (systemd/flowd.service):
`systemd-analyze security --offline=true` rates it 2.0 or below; it names the
directives docs/deploy.md relies on (user, directories, reload, kill mode,
the sandbox steps live in); `systemd-analyze verify` accepts it; the
sysusers.d entry creates the user it runs as; and the "Steps as another
user" drop-in of docs/deploy.md rates what that page says it does.

Needs only systemd-analyze (systemd >= 250 for --offline); no flowd process,
no PostgreSQL. Skipped, saying why, where systemd-analyze is missing."""

import os
import re
import shutil
import subprocess

import pytest

import flowd_harness as h

UNIT = os.path.join(h.REPO, "systemd", "flowd.service")
SYSUSERS = os.path.join(h.REPO, "systemd", "flowd.sysusers.conf")
DEPLOY_MD = os.path.join(h.REPO, "docs", "deploy.md")
MAX_EXPOSURE = 2.0


def analyze():
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return path


def security(unit_path):
    """The overall exposure level `systemd-analyze security --offline=true`
    gives the unit file (drop-ins in UNIT.d/ next to it included)."""
    r = subprocess.run([analyze(), "security", "--offline=true", "--no-pager", unit_path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=60)
    if "--offline" in r.stdout and ("unrecognized" in r.stdout or "unknown" in r.stdout):
        pytest.skip("this systemd-analyze has no --offline (systemd < 250): %s"
                    % r.stdout.strip().splitlines()[0])
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    assert m, "no exposure level in the output (rc %d):\n%s" % (r.returncode, r.stdout)
    return float(m.group(1)), r.stdout


def directives(path):
    """{key: [values in order]} of a unit file's [Service] and [Unit]
    sections (comments and continuation lines need no care here)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[":
                continue
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def one(d, key):
    assert key in d, "the unit does not set %s=" % key
    assert len(d[key]) == 1, "%s= is set %d times" % (key, len(d[key]))
    return d[key][0]


def test_exposure_at_most_2():
    level, out = security(UNIT)
    failed = "\n".join(line for line in out.splitlines() if line.startswith("\u2717"))
    assert level <= MAX_EXPOSURE, (
        "systemd-analyze security rates systemd/flowd.service %.1f (> %.1f); "
        "the directives it counts against the unit:\n%s" % (level, MAX_EXPOSURE, failed))


def test_directives_deploy_md_relies_on():
    d = directives(UNIT)
    # Who flowd and its steps are, and where they may write.
    assert one(d, "User") == "flowd" and one(d, "Group") == "flowd"
    assert "DynamicUser" not in d  # files in /etc/flowd are owned by flowd
    assert one(d, "StateDirectory").split() == ["flowd", "flowd-work"]
    assert one(d, "StateDirectoryMode") == "0700"
    assert one(d, "WorkingDirectory") == "/var/lib/flowd-work"
    assert one(d, "Environment") == "PGPASSFILE=/etc/flowd/pgpass"
    exec_start = one(d, "ExecStart").split()
    assert exec_start[0].endswith("/bin/flowd")
    assert exec_start[1:] == ["--config", "/etc/flowd/flowd.conf",
                              "--node.data_dir=/var/lib/flowd"]
    # Lifecycle: notify + watchdog, reload = SIGHUP (certificates), stop =
    # SIGTERM to flowd alone, which stops its steps itself.
    assert one(d, "Type") == "notify"
    assert one(d, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(d, "KillMode") == "mixed"
    assert one(d, "Restart") == "on-failure"
    assert one(d, "Nice") == "-10"
    assert one(d, "LimitNOFILE") == "65536"
    # The sandbox "What steps can do" describes.
    expected = {
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "ProtectProc": "invisible", "UMask": "0077",
        "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes",
        "SystemCallFilter": "@system-service", "SystemCallErrorNumber": "EPERM",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert one(d, key) == value, "%s=%s, docs/deploy.md says %s" % (key, one(d, key), value)
    assert sorted(one(d, "RestrictAddressFamilies").split()) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    # Left out on purpose (docs/deploy.md says why): steps need them.
    for key in ("MemoryDenyWriteExecute", "ProcSubset", "PrivateUsers", "PrivateNetwork",
                "IPAddressAllow", "IPAddressDeny", "ReadWritePaths"):
        assert key not in d, "%s= is set; docs/deploy.md says the unit leaves it out" % key


def test_sysusers_creates_the_units_user():
    d = directives(UNIT)
    with open(SYSUSERS) as f:
        lines = [l.split() for l in f if l.strip() and not l.startswith("#")]
    users = [l for l in lines if l[0] == "u"]
    assert len(users) == 1, lines
    name, home = users[0][1], users[0][-1]
    assert name == one(d, "User")
    assert home == one(d, "WorkingDirectory")  # steps' HOME is their directory


def test_verify(tmp_path):
    """systemd-analyze verify, with ExecStart pointed at a binary that exists
    (the shipped path is where `make install` puts it; verify only checks
    that it is executable)."""
    tool = analyze()
    binary = shutil.which("true") or "/bin/true"
    with open(UNIT) as f:
        text = f.read().replace("/usr/local/bin/flowd", binary)
    unit = tmp_path / "flowd.service"
    unit.write_text(text)
    r = subprocess.run([tool, "verify", str(unit)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 0, r.stdout
    assert "flowd.service" not in r.stdout, r.stdout


def test_run_as_drop_in_rates_what_deploy_md_says(tmp_path):
    """The drop-in under "Steps as another user" (flowd as root with
    CAP_SETUID, CAP_SETGID, CAP_KILL) rates the number given there."""
    with open(DEPLOY_MD) as f:
        md = f.read()
    section = md.split("## Steps as another user", 1)
    assert len(section) == 2, "docs/deploy.md has no 'Steps as another user' section"
    section = section[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```ini\n(.*?)```", section, re.S)
    assert len(blocks) == 1 and "CAP_SETUID" in blocks[0], blocks
    claimed = re.search(r"rates the unit with this drop-in (\d+\.\d)", section)
    assert claimed, "docs/deploy.md does not say what the drop-in rates"
    shutil.copy(UNIT, tmp_path / "flowd.service")
    (tmp_path / "flowd.service.d").mkdir()
    (tmp_path / "flowd.service.d" / "run-as.conf").write_text(blocks[0])
    level, out = security(str(tmp_path / "flowd.service"))
    assert "CAP_SET(UID|GID|PCAP)" in out  # the drop-in was read
    assert "%.1f" % level == claimed.group(1), (
        "docs/deploy.md says %s, systemd-analyze says %.1f" % (claimed.group(1), level))


def test_shipped_level_is_what_the_docs_say():
    level, _ = security(UNIT)
    with open(DEPLOY_MD) as f:
        md = f.read()
    m = re.search(r"systemd-analyze security --offline=true systemd/flowd.service` rates it "
                  r"(\d+\.\d)", md)
    assert m, "docs/deploy.md does not give the unit's rating"
    assert "%.1f" % level == m.group(1), (
        "docs/deploy.md says %s, systemd-analyze says %.1f" % (m.group(1), level))
    with open(UNIT) as f:
        assert "rates this unit %.1f" % level in re.sub(r"\s*#\s*", " ", f.read()), \
            "the unit's header comment gives another rating"
