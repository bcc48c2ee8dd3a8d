"""The closing line of a deploy names every rig that failed, unreachable ones included."""

from types import SimpleNamespace

from pyinfra.api.state import StateStage

from tasks.summary import summary_line


def state(stage, activated, failed):
    hosts = {name: SimpleNamespace(name=name) for name in {*activated, *failed}}
    return SimpleNamespace(current_stage=stage, activated_hosts=[hosts[n] for n in activated],
                           failed_hosts=[hosts[n] for n in failed])


def test_unreachable_and_failed_rigs_are_named_apart():
    line = summary_line(state(StateStage.Disconnect, ["r1", "r2", "r3"], ["ghost", "r2"]))
    assert line == ("--> llamarig: 2 rig(s) deployed (r1, r3); ghost FAILED: unreachable (could not connect); "
                    "r2 FAILED: an operation failed (its error is above)")


def test_a_run_that_did_not_execute_says_nothing_unless_a_rig_was_lost():
    assert summary_line(state(StateStage.Prepare, ["r1"], [])) is None  # --dry, or refused before any change
    assert summary_line(state(StateStage.Prepare, ["r1"], ["ghost"])) == \
        "--> llamarig: 1 rig(s) reached (r1); ghost FAILED: unreachable (could not connect)"
    assert summary_line(state(StateStage.Disconnect, ["r1"], [])) == "--> llamarig: 1 rig(s) deployed (r1)"
