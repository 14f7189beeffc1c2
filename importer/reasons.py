"""What a person reads beside a row: one sentence that says what is wrong and what to do.

Pure. The journal keeps each outcome as it happened (the platform's code, msg, sub_code,
sub_msg and the transport's words); the report shows, in its ``error`` column, that outcome
explained: a row the platform declined gets the platform's words and the sub_code's advice
(it had an empty ``error`` before), a row not sent says why (the deadline, the stop, the
interrupt) and that a rerun sends it, a failed row after retries says to run it again later.
"""

from __future__ import annotations

from dataclasses import replace

from importer.advice import sub_code_advice
from importer.i18n import N_, _, shown
from importer.rows import Outcome, Status
from importer.steps import StopReason

_RERUN = N_("run the sheet again: the journal sends only the rows not yet done")
_WHY_NOT_SENT = {
    StopReason.NONE: N_("the run ended before this row was sent"),
    StopReason.DEADLINE: N_("the run stopped at its --deadline / --max-runtime before this row"),
    StopReason.INTERRUPTED: N_("the run was interrupted (Ctrl-C or a signal) before this row"),
    StopReason.FATAL: N_("the platform refused the app's calls, so the run stopped (see summary)"),
    StopReason.BAN_TOO_LONG: N_(
        "the app was throttled for longer than --max-ban, so the run stopped"
    ),
    StopReason.CANARY: N_("too many of the first rows failed, so the run stopped (the canary)"),
    StopReason.FAILURE_RATE: N_(
        "too many rows were failing, so the run stopped (--max-failure-rate)"
    ),
    StopReason.UNREACHABLE: N_("the gateway could not be reached, so the run stopped"),
}


def explain(outcome: Outcome, stopped: StopReason = StopReason.NONE) -> Outcome:
    """``outcome`` with its ``error`` made the sentence a person reads (``stopped``: why the
    run ended early, for the rows it never sent), in the run's language."""
    error = reason(outcome, stopped)
    return outcome if error == outcome.error else replace(outcome, error=error)


def reason(outcome: Outcome, stopped: StopReason = StopReason.NONE) -> str:
    status, error = outcome.status, outcome.error
    if status is Status.NOT_SENT:
        default = _WHY_NOT_SENT.get(stopped, _WHY_NOT_SENT[StopReason.NONE])
        why = shown(error) if error else _(default)
        return _("not sent: {why}; {rerun}").format(why=why, rerun=_(_RERUN))
    if status is Status.FAILED:
        return _failed(outcome)
    return shown(error)


def _failed(outcome: Outcome) -> str:
    """A failed row: the platform's words and what to do, or the transport's after retries."""
    if not outcome.code and not outcome.sub_code:
        if not outcome.error:
            return _(_RERUN)
        return _then(shown(outcome.error), _(_RERUN))
    said = outcome.sub_msg or outcome.msg
    code = outcome.sub_code or _("code {code}").format(code=outcome.code)
    if said:
        text = _("the platform answered {said} ({code})").format(said=said, code=code)
    else:
        text = _("the platform answered {code}").format(code=code)
    if outcome.error and outcome.error not in text:
        text = _then(text, shown(outcome.error))
    advice = sub_code_advice(outcome.sub_code) if outcome.sub_code else ""
    advice = advice or _("fix the row as the message says, then run the sheet again")
    return _then(text, advice)


def _then(first: str, then: str) -> str:
    """Two parts of one sentence: what happened, then what else or what to do."""
    return _("{first}; {then}").format(first=first, then=then)
