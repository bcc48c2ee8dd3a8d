"""The rig before and after a tune: it runs the inventory's unit, and it is put back as it was found."""

from __future__ import annotations


def runs_the_release(run, unit) -> str | None:
    """None when the rig's unit file is the release's, byte for byte; else why a tune would be of another one."""
    import hashlib
    status, out, err = run(f"sha256sum {unit.path}", 30)
    if status is None:
        return f"could not read {unit.path}: {err.strip()[-200:]}"
    have = out.split()[0] if status == 0 and out.split() else None
    if have != hashlib.sha256(unit.text.encode()).hexdigest():
        return (f"{unit.path} on the rig is not the unit the inventory declares ({'missing' if have is None else 'it differs'})"
                f": deploy first, then tune what is declared")
    return None


def restore_problems(facts: dict, end: dict) -> list[str]:
    problems = []
    if not end.get("ok"):
        return [f"the rig was not put back: {end.get('error')}"]
    if end.get("unit_sha256") != facts.get("unit_sha256"):
        problems.append("the declared unit file differs from before the tune")
    if facts.get("was_active") and (end.get("active") != "active" or end.get("health") != 200):
        problems.append(f"the declared service is {end.get('active')}, /health {end.get('health')}")
    if end.get("left_units"):
        problems.append(f"units left: {', '.join(end['left_units'])}")
    before = {g: v["limit"] for g, v in (facts.get("power") or {}).items()}
    after = {g: v["limit"] for g, v in (end.get("power") or {}).items()}
    if before != after:
        problems.append(f"power limits {after} differ from before the tune {before}")
    return problems
