#!/usr/bin/env python3
"""Tamper tests for check_report.py (docs/REPORTS.md §4.1).

usage: test_report.py COMPLIANCE_BUNDLE.jsonl --key VERIFIER_KEY_TEXT_OR_FILE

Asserts that check_report accepts the genuine bundle, then changes one thing
at a time in the parsed row lines (the entry and node lines are left as they
are; the end line's row count follows a removed row), re-serialises the
bundle and asserts that check_report refuses it, for the reason expected.
Prints one line per case; exits 1 if any case is accepted or refused for
another reason.
"""
import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tmcommon import VerifyError, VerifierKey, load_key_arg, parse_json, jcs, Num, stored_time_micros  # noqa: E402
from check_report import check_bundle  # noqa: E402


def load(data):
    lines = [parse_json(ln) for ln in data.decode("utf-8").split("\n")[:-1]]
    return lines


def dump(lines):
    return "".join(jcs(v) + "\n" for v in lines).encode("utf-8")


def num(n):
    return Num(str(n))


def row_idx(lines):
    """Indices (in lines) of the row lines."""
    return [i for i, v in enumerate(lines) if isinstance(v, dict) and "row" in v]


def data_rows(lines):
    return [i for i in row_idx(lines) if "band" not in lines[i]["facts"]]


def cite(row, role):
    return next((c for c in row["cites"] if c["as"] == role), None)


def cite_count(lines):
    n = {}
    for i in row_idx(lines):
        for c in lines[i]["cites"]:
            s = int(c["seq"].value)
            n[s] = n.get(s, 0) + 1
    return n


def fmt_time(micros):
    import datetime
    d = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=micros)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def set_end_rows(lines, delta):
    end = lines[-1]["end"]
    end["rows"] = num(int(end["rows"].value) + delta)


def evidence(row):
    parts = []
    for role in ("assignment", "completion"):
        c = cite(row, role)
        parts.append(f"{role} #{int(c['seq'].value)}\n{c['hash']}" if c else f"{role}: none")
    return "\n".join(parts)


# Each case: (name, expected substring of the refusal, mutate(lines) -> description)

def case_status(lines):
    rows = data_rows(lines)
    bad = [i for i in rows if lines[i]["facts"]["status"] in ("overdue", "open", "late")]
    if bad:
        r = lines[bad[0]]
        old = r["facts"]["status"]
        r["facts"]["status"] = "on_time"
        r["row"]["status"] = "on time"
        return f"row {row_idx(lines).index(bad[0]) + 1}: status {old} -> on_time (fact and cell)"
    i = next(i for i in rows if lines[i]["facts"]["status"] == "on_time")
    lines[i]["facts"]["status"] = "late"
    lines[i]["row"]["status"] = "late"
    return f"row {row_idx(lines).index(i) + 1}: status on_time -> late (fact and cell)"


def case_completion(lines):
    rows = data_rows(lines)
    done = [i for i in rows if cite(lines[i], "completion")]
    # The §4.1 attack: an overdue/open row given another person's completion,
    # with the facts and cells made consistent with it (status on time).
    target = next((i for i in rows if lines[i]["facts"]["assignment_id"] is not None
                   and lines[i]["facts"]["completed_at"] is None), None)
    if target is not None:
        t = lines[target]
        donor = next(i for i in done if lines[i]["facts"]["person_id"] != t["facts"]["person_id"])
        d = lines[donor]
        dc = cite(d, "completion")
        t["cites"].append(copy.deepcopy(dc))
        t["facts"]["completed_at"] = d["facts"]["completed_at"]
        on_time = stored_time_micros(d["facts"]["completed_at"]) <= stored_time_micros(t["facts"]["due_at"])
        st = "on_time" if on_time else "late"
        t["facts"]["status"] = st
        t["row"]["status"] = st.replace("_", " ")
        t["row"]["completed_at"] = d["facts"]["completed_at"]
        if stored_time_micros(d["facts"]["completed_at"]) < stored_time_micros(t["facts"]["required_from"]):
            t["row"]["completed_at"] += "\nbefore the assignment was required"
        t["row"]["evidence"] = evidence(t)
        return (f"row {row_idx(lines).index(target) + 1} ({t['facts']['person_id']}, "
                f"{lines[target]['facts']['document_id']}): given {d['facts']['person_id']}'s completion "
                f"#{int(dc['seq'].value)}, facts and cells made {st}")
    a = done[0]
    b = next(i for i in done if lines[i]["facts"]["person_id"] != lines[a]["facts"]["person_id"])
    ca, cb = cite(lines[a], "completion"), cite(lines[b], "completion")
    ca["seq"], ca["hash"] = cb["seq"], cb["hash"]
    return f"row {row_idx(lines).index(a) + 1}: completion cite -> #{int(cb['seq'].value)} of another person"


def case_person_name(lines):
    i = next(i for i in data_rows(lines) if lines[i]["facts"]["person_name"])
    r = lines[i]
    old = r["facts"]["person_name"]
    r["facts"]["person_name"] = "Mallory Forger"
    r["row"]["person"] = f"Mallory Forger ({r['facts']['person_id']})"
    return f"row {row_idx(lines).index(i) + 1}: person name {old!r} -> 'Mallory Forger' (fact and cell)"


def case_due(lines):
    i = next(i for i in data_rows(lines) if lines[i]["facts"]["due_at"] is not None)
    r = lines[i]
    old = r["facts"]["due_at"]
    new = fmt_time(stored_time_micros(old) + 30 * 86400 * 10 ** 6)
    r["facts"]["due_at"] = new
    r["row"]["due_at"] = new
    return f"row {row_idx(lines).index(i) + 1}: due {old} -> {new} (fact and cell)"


def case_counts(lines):
    from check_report import STATUSES, counts_text
    i = next(i for i in row_idx(lines) if lines[i]["facts"].get("band") == "totals")
    f = lines[i]["facts"]
    c = {s: int(f["counts"][s].value) for s in STATUSES}
    src = next(s for s in STATUSES if c[s] > 0)
    dst = next(s for s in STATUSES if s != src)
    c[src] -= 1
    c[dst] += 1
    f["counts"] = {s: num(c[s]) for s in STATUSES}
    lines[i]["row"]["band"] = (f"Totals for {f['document_id']} v{f['version']}: {sum(c.values())} required · "
                               f"{counts_text(c)}")
    return f"row {row_idx(lines).index(i) + 1}: totals band counts: one {src} moved to {dst} (facts and text)"


def case_remove_row(lines):
    n = cite_count(lines)
    rows = data_rows(lines)
    # a row whose cited entries are all cited by other rows too, so that the
    # removal is noticed by the band counts, not by an uncited entry
    cand = [i for i in rows if all(n[int(c["seq"].value)] > 1 for c in lines[i]["cites"])]
    i = cand[0] if cand else rows[0]
    k = row_idx(lines).index(i) + 1
    who = lines[i]["facts"]["person_id"]
    del lines[i]
    set_end_rows(lines, -1)
    return f"row {k} ({who}) removed, end line's row count lowered" + ("" if cand else " (its entries become uncited)")


def case_role(lines):
    i = next(i for i in data_rows(lines) if cite(lines[i], "person"))
    cite(lines[i], "person")["as"] = "matrix"
    return f"row {row_idx(lines).index(i) + 1}: a person cite's role changed to matrix"


def case_cite_removed(lines):
    n = cite_count(lines)
    i = next(i for i in data_rows(lines) if n[int(cite(lines[i], "revision")["seq"].value)] > 1)
    lines[i]["cites"] = [c for c in lines[i]["cites"] if c["as"] != "revision"]
    return f"row {row_idx(lines).index(i) + 1}: its revision cite removed"


def case_lag(lines):
    i = next(i for i in data_rows(lines) if lines[i]["row"]["lag"])
    old = lines[i]["row"]["lag"]
    lines[i]["row"]["lag"] = "0 s" if old != "0 s" else "1 s"
    return f"row {row_idx(lines).index(i) + 1}: lag cell {old!r} -> {lines[i]['row']['lag']!r}"


def case_evidence(lines):
    i = next(i for i in data_rows(lines) if cite(lines[i], "completion"))
    j = next(j for j in data_rows(lines) if j != i and cite(lines[j], "completion"))
    r = lines[i]
    r["row"]["evidence"] = evidence(r).replace(cite(r, "completion")["hash"], cite(lines[j], "completion")["hash"])
    return f"row {row_idx(lines).index(i) + 1}: evidence cell shows another completion's hash"


def case_as_of(lines):
    for i in data_rows(lines):
        lines[i]["facts"]["as_of"] = "2026-01-01T00:00:00.000000Z"
    return "every row's as_of moved to 2026-01-01 (judged at another time than generated_at)"


def case_overall(lines):
    i = next(i for i in row_idx(lines) if lines[i]["facts"].get("band") == "overall")
    f = lines[i]["facts"]
    f["required"] = num(int(f["required"].value) + 1)
    return f"row {row_idx(lines).index(i) + 1}: overall band's required + 1"


def case_job_function(lines):
    i = data_rows(lines)[0]
    r = lines[i]
    jf = sorted(set(r["facts"]["job_functions"]) | {"qa-approver-forged"})
    r["facts"]["job_functions"] = jf
    r["row"]["job_functions"] = ", ".join(jf)
    return f"row {row_idx(lines).index(i) + 1}: job function 'qa-approver-forged' added (fact and cell)"


def case_completed_at(lines):
    i = next(i for i in data_rows(lines) if lines[i]["facts"]["completed_at"])
    r = lines[i]
    old = r["facts"]["completed_at"]
    new = fmt_time(stored_time_micros(old) - 3600 * 10 ** 6)
    r["facts"]["completed_at"] = new
    r["row"]["completed_at"] = new
    return f"row {row_idx(lines).index(i) + 1}: completed {old} -> {new} (fact and cell)"


CASES = [
    ("status changed", "fact status", case_status),
    ("completion of another person", "completion cite", case_completion),
    ("person name changed", "person_name", case_person_name),
    ("due date changed", "fact due_at", case_due),
    ("band counts changed", "counts", case_counts),
    # without a row whose entries other rows cite too, the entries it
    # leaves uncited are what gives the removal away
    ("row removed", ("fact required", "no row cites it"), case_remove_row),
    ("cite role changed", "the role needs", case_role),
    ("required cite removed", "revision cite", case_cite_removed),
    # more than the brief asked for
    ("lag cell changed", "column lag", case_lag),
    ("evidence cell changed", "column evidence", case_evidence),
    ("as_of changed", "as_of", case_as_of),
    ("overall band changed", "fact required", case_overall),
    ("job function added", "job_functions", case_job_function),
    ("completion time changed", "fact completed_at", case_completed_at),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--key", required=True)
    a = ap.parse_args()
    key = VerifierKey(load_key_arg(a.key))
    data = open(a.bundle, "rb").read()
    lines = load(data)
    if lines[0].get("type") != "compliance":
        print(f"FAILED: {a.bundle} is a {lines[0].get('type')} bundle; this test needs a compliance one")
        return 1
    bad = 0
    try:
        r = check_bundle(data, key)
        print(f"ok: genuine bundle accepted ({r['rows']} rows, {r['entries']} entries)")
    except VerifyError as e:
        print(f"FAILED: genuine bundle refused: {e.msg}")
        return 1
    if dump(lines) != data:
        print("FAILED: re-serialising the parsed bundle does not give its bytes back")
        return 1
    for name, expect, mutate in CASES:
        ls = copy.deepcopy(lines)
        try:
            what = mutate(ls)
        except (StopIteration, IndexError, KeyError) as e:
            print(f"SKIPPED: {name}: the bundle has no row to apply it to ({type(e).__name__})")
            continue
        try:
            check_bundle(dump(ls), key)
        except VerifyError as e:
            if any(x in e.msg for x in ((expect,) if isinstance(expect, str) else expect)):
                print(f"ok: refused {name} [{what}]: {e.msg}")
            else:
                bad += 1
                print(f"WRONG REASON: {name} [{what}]: refused with {e.msg!r}, expected a message with {expect!r}")
            continue
        bad += 1
        print(f"ACCEPTED (a bug): {name} [{what}]")
    print(f"{len(CASES) - bad} of {len(CASES)} cases refused as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
