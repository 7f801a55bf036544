"""What GitOps tools and `kubectl get` read from a ModelDeployment's status: kstatus conditions
(Ready, Reconciling, Stalled), the step as N/M and the worst verdict about what serves. Pure plan()."""

from tests.unit.test_plan import ALL_READY, MIN, T0, applied, condition, md, ready, step, verdict


def kstatus(status):
    return {t: (condition(status, t)["status"], condition(status, t)["reason"]) for t in ("Ready", "Reconciling", "Stalled")}


def test_a_stepping_canary_is_reconciling_and_shows_its_step():
    result, current = step(md())
    assert result.status["step"] == "1/2"
    assert kstatus(result.status)["Reconciling"] == ("True", "CanaryStep")
    advanced, _ = step(applied(current), ALL_READY, [verdict(at=T0 + 5 * MIN)], now=T0 + 11 * MIN)
    assert advanced.status["step"] == "2/2"


def test_a_stable_model_or_a_fixed_split_is_reconciled():
    result, _ = step(md(canary=None), {"stable": ready("7", 3)})
    assert kstatus(result.status) == {"Ready": ("True", "TracksReady"), "Reconciling": ("False", "Reconciled"),
                                      "Stalled": ("False", "Progressing")}
    assert "step" not in result.status
    split, _ = step(md(canary={"version": "8", "modelUri": "s3://models/8", "weight": 20}), ALL_READY)
    assert split.status["phase"] == "Progressing" and kstatus(split.status)["Reconciling"] == ("False", "Reconciled")
    waiting, _ = step(md(canary=None))  # nothing ready yet
    assert kstatus(waiting.status)["Reconciling"] == ("True", "TracksNotReady")


def test_a_rolled_back_canary_the_spec_still_names_is_not_ready_and_stalled():
    _, current = step(md())
    breach = verdict(result="Fail", at=T0 + MIN, failures=3)
    aborted, after = step(current, ALL_READY, [breach], now=T0 + 2 * MIN)
    assert aborted.status["phase"] == "RolledBack"
    assert kstatus(aborted.status) == {"Ready": ("False", "RolledBack"), "Reconciling": ("False", "Reconciled"),
                                       "Stalled": ("True", "RolledBack")}
    assert "canary 8 rolled back" in condition(aborted.status, "Ready")["message"]
    # Git drops the canary: what it asks for serves again.
    dropped = md(status=after.status.to_wire(), canary=None)
    result, _ = step(dropped, {"stable": ready("7", 3)}, now=T0 + 3 * MIN)
    assert kstatus(result.status)["Ready"] == ("True", "TracksReady") and kstatus(result.status)["Stalled"][0] == "False"


def revert_stable():
    """7 serves, the spec moves stable to 9, 9 breaches and is reverted to 7: (the plan, the object after it, the breach)."""
    _, current = step(md(canary=None), {"stable": ready("7", 3)})
    moved = md(status=current.status.to_wire(), canary=None, stable={"version": "9", "modelUri": "s3://models/9", "replicas": 3})
    _, serving9 = step(moved, {"stable": ready("9", 3)}, now=T0 + MIN)
    breach = verdict(track="stable", result="Fail", at=T0 + 2 * MIN, failures=3, version="9")
    return (*step(serving9, {"stable": ready("9", 3)}, [breach], now=T0 + 3 * MIN), breach)


def test_a_reverted_stable_is_not_ready_while_the_spec_names_it():
    reverted, _, _ = revert_stable()
    assert reverted.status["stable"]["version"] == "7" and reverted.status["rollback"]["track"] == "stable"
    assert kstatus(reverted.status)["Ready"] == ("False", "RolledBack") and kstatus(reverted.status)["Stalled"] == ("True", "RolledBack")


def test_the_verdict_is_the_worst_about_a_version_served_now():
    _, current = step(md())
    current = applied(current)
    stable_pass = verdict(track="stable", result="Pass", at=T0 + MIN, name="quality", version="7")
    old_canary_fail = verdict(result="Fail", at=T0 + MIN, failures=1, version="6")  # about an earlier canary
    insufficient = verdict(result="InsufficientData", at=T0 + MIN, name="drift", version="8")
    assert step(current, ALL_READY, [stable_pass], now=T0 + 2 * MIN)[0].status["verdict"] == "Pass"
    assert step(current, ALL_READY, [stable_pass, old_canary_fail], now=T0 + 2 * MIN)[0].status["verdict"] == "Pass"
    assert step(current, ALL_READY, [stable_pass, insufficient], now=T0 + 2 * MIN)[0].status["verdict"] == "InsufficientData"
    failing = verdict(result="Fail", at=T0 + MIN, failures=1, version="8")
    assert step(current, ALL_READY, [stable_pass, insufficient, failing], now=T0 + 2 * MIN)[0].status["verdict"] == "Fail"
    assert "verdict" not in step(current, ALL_READY, [], now=T0 + 2 * MIN)[0].status


def test_a_rolled_back_canary_version_the_spec_then_serves_as_stable_is_ready():
    _, current = step(md())
    _, after = step(current, ALL_READY, [verdict(result="Fail", at=T0 + MIN, failures=3)], now=T0 + 2 * MIN)
    adopted = md(status=after.status.to_wire(), canary=None, stable={"version": "8", "modelUri": "s3://models/8", "replicas": 3})
    result, _ = step(adopted, {"stable": ready("8", 3)}, now=T0 + 3 * MIN)
    assert result.status["stable"]["version"] == "8"
    assert kstatus(result.status)["Ready"] == ("True", "TracksReady") and kstatus(result.status)["Stalled"][0] == "False"
