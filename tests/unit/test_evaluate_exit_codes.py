"""`modelwarden evaluate` has an exit status for every verdict (a new verdict must not crash it)."""

from modelwarden.api.driftpolicy import Verdict
from modelwarden.commands.evaluate import EXIT_CODES, exit_code


def test_every_verdict_has_an_exit_status():
    assert set(EXIT_CODES) == set(Verdict)
    assert [exit_code(v) for v in (Verdict.PASS, Verdict.WARNING, Verdict.FAIL, Verdict.INSUFFICIENT_DATA, Verdict.ERROR)] == [0, 0, 1, 2, 2]
    assert exit_code(Verdict.PASS, malformed=1) == 2
