"""test_cron_croniter.py - flowd's cron engine against an independent one.

Thousands of random expressions (every field form: *, */S, N, A-B, A-B/S,
lists, month and weekday names, 5 and 6 fields) in UTC and in fixed-offset
zones (Etc/GMT+N), from random instants between 2000 and 2040: the next
five fire times must equal those of Debian's python3-croniter.

Forms where the two disagree by design are not generated: croniter treats
a day-of-month or day-of-week field such as "*/2" as restricted (OR rule)
where Vixie cron, and flowd, treat any field starting with "*" as
unrestricted (AND rule); croniter also reads a restricted day field that names every value
("0-6", "sun,1-6") as "*", Vixie does not; croniter puts seconds last, flowd first (the
expression is rewritten for croniter).
"""

import os
import random
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

croniter = pytest.importorskip("croniter").croniter
CroniterBadDateError = pytest.importorskip("croniter").CroniterBadDateError

CRON_DUMP = os.environ.get("CRON_DUMP") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "tests", "cron_dump")

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def item(rng, lo, hi, names, star_step):
    kind = rng.random()
    if kind < 0.15:
        return "*"
    if kind < 0.3 and star_step:
        return "*/%d" % rng.randint(1, max(1, (hi - lo) // 2))
    a = rng.randint(lo, hi)
    if kind < 0.55:
        if names and rng.random() < 0.3:
            return names[a - lo]
        return str(a)
    b = rng.randint(a, hi)
    if kind < 0.8:
        return "%d-%d" % (a, b)
    return "%d-%d/%d" % (a, b, rng.randint(1, max(1, hi - lo)))


def field(rng, lo, hi, names=None, star_step=True):
    n = 1 if rng.random() < 0.7 else rng.randint(2, 3)
    items = [item(rng, lo, hi, names, star_step) for _ in range(n)]
    if "*" in items and n > 1:
        items = [i for i in items if i != "*"] or ["*"]
    return ",".join(items)


def covers(text, lo, hi, names=None):
    """The set of values a field names."""
    out = set()
    for part in text.split(","):
        rng_, _, step = part.partition("/")
        if rng_ == "*":
            a, b = lo, hi
        elif "-" in rng_:
            a, b = (int(x) for x in rng_.split("-"))
        else:
            a = names.index(rng_) + lo if names and rng_ in names else int(rng_)
            b = a
        out.update(range(a, b + 1, int(step) if step else 1))
    return out


def full_but_not_star(f):
    """croniter reads a day field that names every value as "*" (AND rule);
    Vixie cron and flowd look at the first character only (OR rule)."""
    dom, dow = f[2], f[4]
    return ((not dom.startswith("*") and covers(dom, 1, 31) == set(range(1, 32))) or
            (not dow.startswith("*") and covers(dow, 0, 6, DAYS) == set(range(0, 7))))


def expression(rng):
    f = [field(rng, 0, 59), field(rng, 0, 23),
         field(rng, 1, 31, star_step=False), field(rng, 1, 12, MONTHS),
         field(rng, 0, 6, DAYS, star_step=False)]
    while full_but_not_star(f):
        f[4] = field(rng, 0, 6, DAYS, star_step=False)
        f[2] = field(rng, 1, 31, star_step=False)
    if rng.random() < 0.3:
        sec = field(rng, 0, 59)
        return sec + " " + " ".join(f), " ".join(f) + " " + sec
    return " ".join(f), " ".join(f)


def test_random_expressions_match_croniter():
    if not os.path.exists(CRON_DUMP):
        pytest.fail("no %s (run make)" % CRON_DUMP)
    rng = random.Random(20261126)
    cases = []
    for _ in range(3000):
        ours, theirs = expression(rng)
        hours = rng.choice([0, 0, 5, -3, 12, -11])
        zone = "UTC" if hours == 0 else "Etc/GMT%+d" % -hours
        start = rng.randint(946684800, 2208988800)
        cases.append((ours, theirs, zone, hours, start))
    text = "".join("%s\t%s\t%d\t5\n" % (o, z, s) for o, _, z, _, s in cases)
    out = subprocess.run([CRON_DUMP], input=text, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == len(cases)
    compared = 0
    mismatches = []
    for (ours, theirs, zone, hours, start), line in zip(cases, out):
        if line.startswith("ERROR"):
            # Only a never-matching day of month may be refused.
            assert "never matches" in line, (ours, line)
            continue
        got = [int(x) for x in line.split()]
        tzinfo = timezone(timedelta(hours=hours))
        it = croniter(theirs, datetime.fromtimestamp(start, tzinfo))
        try:
            want = [int(it.get_next(float)) for _ in range(len(got))]
        except CroniterBadDateError:
            continue    # croniter gives up on rare dates (its search limit)
        compared += 1
        if got != want:
            mismatches.append((ours, zone, start, got, want))
    assert not mismatches, "%d of %d differ, first: %r" % (len(mismatches), compared,
                                                           mismatches[:3])
    assert compared > 2500
