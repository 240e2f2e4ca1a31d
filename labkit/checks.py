"""Steps that check themselves: a check after a step, green or red with a hint, the solution to reveal or run,
and every result recorded in the learner's progress file.

A lesson's exercise is data (:data:`EXERCISES`): a question, a hint, the solution as code, and a verifier. A
notebook cell only calls it::

    my_pod = ...                                   # the learner's answer
    checks.check("03", "restarted-pod", my_pod, lab=lab)

The answer shows ✓ or ✗ with a hint, and the solution under a collapsed "Show solution" (plain HTML
``<details>``: it works in JupyterLab and in exported pages, no JavaScript). In a live kernel a wrong answer also
shows a "Solve it" button (:func:`solve_button`) that runs the solution; ``checks.solve("03", "restarted-pod",
lab=lab)`` does the same from code, so a stuck learner catches up. With ``LABKIT_SOLVE=1`` in the kernel's
environment (what the headless ``labkit tour`` sets), an unanswered check runs its solution instead.

Every result is appended to a JSON-lines file (lesson, step, ok, attempt, time): ``$LABKIT_PROGRESS``, or
``~/.labkit/progress.jsonl``. ``labkit progress`` prints it as a table. When ``LABKIT_ROOM`` (or ``labkit join``)
names an instructor's room (``http://host:port/JOINCODE``), each result is also posted there in the background
(:mod:`labkit.report`); an unreachable room changes nothing for the learner.
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import bookinfo, report

if TYPE_CHECKING:
    from .lab import Lab

__all__ = [
    "EXERCISES",
    "VERDICTS",
    "Check",
    "Exercise",
    "Result",
    "check",
    "check_process",
    "check_release",
    "check_restarts",
    "check_selector",
    "check_service_selector",
    "check_share",
    "check_verdict",
    "progress_path",
    "progress_table",
    "read_results",
    "record",
    "solve",
    "solve_button",
]


@dataclass
class Check:
    """The answer to an exercise: right or not, why, a hint when not, and the solution to reveal.

    Shows as ✓ or ✗ in a notebook; true when right. The solution is under a collapsed "Show solution" (a plain
    HTML ``<details>``, so a saved notebook and an exported page keep it with no script). An exercise's wrong
    answer shown in a live kernel also gets a "Solve it" button (:func:`solve_button`) that runs the solution.
    """

    ok: bool
    message: str
    hint: str = ""
    solution: str = ""
    solved: bool = False
    lesson: str = ""
    step: str = ""
    lab: Any = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        text = f"{'✓' if self.ok else '✗'} {self.message}"
        if self.solved:
            text += " (solved by the solution)"
        return text + (f"\n  Hint: {self.hint}" if self.hint and not self.ok else "")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        color = "#2e7d32" if self.ok else "#c62828"
        hint = (f"<div style='margin-left:1.4em;color:#555'><b>Hint:</b> {html.escape(self.hint)}</div>"
                if self.hint and not self.ok else "")
        solution = ""
        if self.solution:
            solution = ("<details class='labkit-solution' style='margin-left:1.4em'><summary>Show solution"
                        f"</summary><pre><code>{html.escape(self.solution)}</code></pre></details>")
        solved = " <i>(solved by the solution)</i>" if self.solved else ""
        return (f"<div class='labkit-check' style='font-family:sans-serif'><b style='color:{color}'>"
                f"{'✓' if self.ok else '✗'}</b> {html.escape(self.message)}{solved}{hint}{solution}</div>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": str(self), "text/html": self._repr_html_()}
        if not self.ok and self.lesson and _in_kernel():
            try:
                bundle.update({k: v for k, v in solve_button(self)._repr_mimebundle_().items()
                               if k != "text/plain"})
            except Exception:  # no widgets: the HTML above still shows the solution
                pass
        return bundle


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def solve_button(result: Check) -> Any:
    """The check as a widget with a "Solve it" button that runs the exercise's solution
    (:func:`solve`) and shows its check in place: for a learner who is stuck and wants to catch up.

    Returns an ``ipywidgets.VBox``: the check's HTML, then the button (hidden once solved).

    Example:
        >>> box = checks.solve_button(checks.check("04", "waiting-status", ...))
        >>> box.children[1].click()
    """
    import ipywidgets

    if not result.lesson:
        raise ValueError("only an exercise's check (checks.check) has a solution to run")
    shown = ipywidgets.HTML(result._repr_html_())
    button = ipywidgets.Button(description="Solve it", icon="magic", button_style="warning",
                               tooltip=f"run the solution of {result.lesson}/{result.step}")
    button.add_class("labkit-solve")

    def on_click(_button: Any) -> None:
        button.disabled = True
        try:
            solved = solve(result.lesson, result.step, lab=result.lab)
        except Exception as exc:  # shown, not raised: a click has no cell to raise in
            shown.value = result._repr_html_() + (f"<div style='color:#c62828'>the solution failed: "
                                                  f"{html.escape(str(exc))}</div>")
            button.disabled = False
            return
        shown.value = solved._repr_html_()
        button.layout.display = "none"

    button.on_click(on_click)
    return ipywidgets.VBox([shown, button])


def _integer(answer: Any) -> int | None:
    """The answer as an int (``int(answer)``), or None when it is not one."""
    try:
        return int(answer)
    except (TypeError, ValueError):
        return None


def unanswered(answer: Any) -> bool:
    """The placeholder of an exercise (``...``, None, an empty string)."""
    return answer is None or answer is Ellipsis or (isinstance(answer, str) and answer.strip() in ("", "...", "?"))


# ------------------------------------------------------------------------------------------------ verifiers
# Lesson 6's checks: plain verifiers returning a Check, not recorded; checks.check records them as exercises.


def check_selector(lab: Lab, answer: Any, *, app: str = "details") -> Check:
    """Exercise: the label selector for the ``app`` pods. Checked against the cluster: it must match exactly them.

    Example:
        >>> checks.check_selector(lab, "app=details")
        ✓ 'app=details' matches the 3 details pods and nothing else.
    """
    from .errors import LabkitError

    hint = ("pods carry the label app=<service>; look at the app column of lab.pods(). A selector is "
            "'key=value', e.g. 'app=ratings' for the ratings pods.")
    if unanswered(answer):
        return Check(False, "not answered yet: replace the placeholder with a selector string.", hint)
    if not isinstance(answer, str | dict):
        return Check(False, f"a selector is a string like 'app=ratings', not {type(answer).__name__}.", hint)
    expected = set(lab.pod_names(f"app={app}"))
    try:
        got = set(lab.pod_names(answer))
    except LabkitError as exc:
        return Check(False, f"the API server cannot use {answer!r}: {exc}", hint)
    if got == expected and got:
        return Check(True, f"{answer!r} matches the {len(got)} {app} pods and nothing else.")
    if not got:
        return Check(False, f"{answer!r} matches no pod at all.", hint)
    extra, missing = sorted(got - expected), sorted(expected - got)
    if extra:
        return Check(False, f"{answer!r} matches {len(got)} pods, including ones that are not {app}: "
                            f"{', '.join(extra[:3])}.", hint)
    return Check(False, f"{answer!r} misses {len(missing)} of the {app} pods: {', '.join(missing[:3])}.", hint)


def check_process(app: str, answer: Any) -> Check:
    """Exercise: the process ``pkill`` must name to crash the ``app`` container."""
    expected = bookinfo.PROCESSES.get(app)
    if expected is None:
        raise ValueError(f"no exercise for app {app!r}; apps: {', '.join(bookinfo.PROCESSES)}")
    hint = (f"{app} is written in {bookinfo.LANGUAGES[app]}; pkill matches the process name, which is the interpreter "
            "or server that runs the code. details runs as 'ruby'.")
    if unanswered(answer):
        return Check(False, "not answered yet: replace the placeholder with a process name.", hint)
    if str(answer).strip() == expected:
        return Check(True, f"`pkill {expected}` stops the main process of the {app} container, so the container "
                           "exits and the kubelet restarts it.")
    return Check(False, f"{answer!r} is not the main process of the {app} container.", hint)


_VERDICT_QUESTIONS: dict[str, tuple[str, str, str]] = {
    # question: (expected verdict, why, hint)
    "ratings-down": ("healthy", "reviews v1 never calls ratings, so the page cannot tell ratings is down",
                     "which service calls ratings, and does version v1 of it do so?"),
    "reviews-down": ("gradual degradation", "productpage catches the failed reviews call: the page still answers "
                     "200 with the book and its details, and only the reviews half shows an error",
                     "does productpage answer at all when one of its calls fails? Look back at lesson 4."),
    "details-down": ("gradual degradation", "the page still answers 200 with the reviews; only the details "
                     "half shows an error", "lesson 4 shows exactly this page."),
    "productpage-down": ("cascading failure", "productpage is the page: with every productpage pod down no "
                         "request gets an answer, whatever the other services do",
                         "who answers the browser's request when every productpage pod is down?"),
}
VERDICTS = ("healthy", "gradual degradation", "cascading failure")


def check_verdict(question: str, answer: Any) -> Check:
    """Exercise: predict what traffic would show. ``question``: ratings-down, reviews-down, details-down or
    productpage-down; ``answer``: "healthy", "gradual degradation" or "cascading failure"."""
    if question not in _VERDICT_QUESTIONS:
        raise ValueError(f"no question {question!r}; questions: {', '.join(_VERDICT_QUESTIONS)}")
    expected, why, hint = _VERDICT_QUESTIONS[question]
    if unanswered(answer):
        return Check(False, f"not answered yet: write one of {', '.join(repr(v) for v in VERDICTS)}.", hint)
    given = re.sub(r"[\s_-]+", " ", str(answer)).strip().lower()
    if given not in VERDICTS:
        return Check(False, f"{answer!r} is not one of {', '.join(repr(v) for v in VERDICTS)}.", hint)
    if given == expected:
        return Check(True, f"{expected}: {why}.")
    return Check(False, f"not {given}.", hint)


def check_restarts(lab: Lab, answer: Any, *, selector: str = "app=details", index: int = 0) -> Check:
    """Exercise: how many times has the ``index``-th pod of ``selector`` (kubectl's order) restarted? Checked live."""
    pods = lab.pods(selector)
    if len(pods) <= index:
        raise lab.no_match(selector)
    name, restarts = str(pods["name"].iloc[index]), int(pods["restarts"].iloc[index])
    hint = f"lab.pods({selector!r}) has a restarts column; kubectl's first pod is the first by name."
    if unanswered(answer):
        return Check(False, "not answered yet: write a number.", hint)
    if (given := _integer(answer)) is None:
        return Check(False, f"{answer!r} is not a number.", hint)
    if given == restarts:
        return Check(True, f"{name} has restarted {restarts} time{'s' if restarts != 1 else ''}.")
    return Check(False, f"{name} has not restarted {given} times.", hint)



# ------------------------------------------------------------------------------------------------ exercises

Verify = Callable[["Lab | None", Any], "tuple[bool, str] | Check"]


@dataclass(frozen=True)
class Exercise:
    """One checked step of a lesson.

    Attributes:
        lesson: ``"03"``.
        step: a short id, unique in the lesson (``"restarted-pod"``).
        question: what the learner is asked.
        hint: shown with a wrong answer.
        solution: Python code whose value is the answer; it may use ``lab`` and ``json``.
        verify: ``(lab, answer) -> (ok, message)`` or a :class:`Check` (its hint wins), given an answer.
    """

    lesson: str
    step: str
    question: str
    hint: str
    solution: str
    verify: Verify

    def solve(self, lab: Lab | None) -> Any:
        """The solution's value (its code run with ``lab``)."""
        return eval(compile(self.solution, f"<solution {self.lesson}/{self.step}>", "eval"),
                    {"lab": lab, "json": json})


def _need(lab: Lab | None) -> Lab:
    if lab is None:
        raise ValueError("this check reads the cluster: call it with lab=lab")
    return lab


def _restarted_pod(lab: Lab | None, answer: Any) -> tuple[bool, str]:
    lab = _need(lab)
    pods = lab.pods("app=details")
    restarted = {str(n) for n, r in zip(pods["name"], pods["restarts"], strict=True) if int(r) > 0}
    if not restarted:
        return False, "no details pod has restarted yet: run step 3 first."
    if str(answer) in restarted:
        return True, f"{answer} restarted: the kubelet restarted its container after the kill."
    if str(answer) in set(pods["name"]):
        return False, f"{answer} is a details pod, but it never restarted."
    return False, f"{answer!r} is not a details pod."


def _waiting_status(_lab: Lab | None, answer: Any) -> tuple[bool, str]:
    given = str(answer).strip()
    if given == "CrashLoopBackOff":
        return True, "CrashLoopBackOff: the container crashed again, and the kubelet waits longer before each restart."
    if given.lower() == "crashloopbackoff":
        return False, f"{given!r}: almost; kubectl writes it CrashLoopBackOff, with capitals."
    return False, f"{given!r} is not what kubectl shows while the kubelet waits to restart a crashed container."


def _ready_count(lab: Lab | None, answer: Any) -> tuple[bool, str]:
    lab = _need(lab)
    pods = lab.pods("app=details")
    ready = int(sum(1 for r in pods["ready"] if str(r).split("/")[0] == str(r).split("/")[-1]))
    if (given := _integer(answer)) is None:
        return False, f"{answer!r} is not a number."
    if given == ready:
        return True, f"{ready} of the {len(pods)} details pods are Ready now."
    return False, f"not {given}: count the pods whose READY column reads 1/1."


EXERCISES: dict[tuple[str, str], Exercise] = {
    (e.lesson, e.step): e for e in (
        Exercise("03", "restarted-pod", "Which details pod restarted?",
                 "lab.pods('app=details') has a restarts column: the pod you killed is the one above 0.",
                 'lab.pods("app=details").query("restarts > 0")["name"].iloc[0]', _restarted_pod),
        Exercise("03", "ready-count", "How many details pods are Ready now?",
                 "lab.pods('app=details') has a ready column: 1/1 is Ready.",
                 'int((lab.pods("app=details")["ready"] == "1/1").sum())', _ready_count),
        Exercise("04", "waiting-status", "What status does kubectl show while the kubelet waits to restart a "
                 "container that keeps crashing?",
                 "look at the STATUS column in step 8: it names the crash loop and the back-off.",
                 '"CrashLoopBackOff"', _waiting_status),
        Exercise("06", "selector", "The label selector of the details pods.",
                 "pods carry the label app=<service>; look at the app column of lab.pods().",
                 '"app=details"', lambda lab, answer: check_selector(_need(lab), answer)),
        Exercise("06", "process", "The process pkill must name to crash the reviews container.",
                 "reviews is written in Java.", '"java"', lambda _lab, answer: check_process("reviews", answer)),
        Exercise("06", "verdict", "What would traffic show with every productpage pod down?",
                 "who answers the browser's request when every productpage pod is down?", '"cascading failure"',
                 lambda _lab, answer: check_verdict("productpage-down", answer)),
        Exercise("06", "restarts", "How many times has the first details pod restarted?",
                 "lab.pods('app=details') has a restarts column.", 'int(lab.pods("app=details")["restarts"].iloc[0])',
                 lambda lab, answer: check_restarts(_need(lab), answer)),
    )
}


# Lessons 8-12 (Istio's Bookinfo tasks): their verifiers and exercises, kept together and added to the table.


def _number_of(answer: Any) -> float | None:
    text = str(answer).strip().lower().removesuffix("s").removesuffix("seconds").strip() if isinstance(answer, str) \
        else answer
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _about(expected: float, low: float, high: float, unit: str, why: str) -> Verify:
    def verify(_lab: Lab | None, answer: Any) -> tuple[bool, str]:
        given = _number_of(answer)
        if given is None:
            return False, f"{answer!r} is not a number."
        if low <= given <= high:
            return True, f"about {expected:g} {unit}: {why}."
        return False, f"not {given:g} {unit}."
    return verify


def _word_is(expected: str, why: str, *, near: tuple[str, ...] = ()) -> Verify:
    def verify(_lab: Lab | None, answer: Any) -> tuple[bool, str]:
        given = str(answer).strip()
        if given == expected:
            return True, f"{expected}: {why}."
        if given.lower() in (expected.lower(), *near):
            return False, f"{given!r}: almost; write it exactly {expected}."
        return False, f"not {given!r}."
    return verify


def _meshed_pods(lab: Lab | None, answer: Any) -> tuple[bool, str]:
    pods = _need(lab).pods()
    meshed = int((pods["ready"] == "2/2").sum())
    given = _number_of(answer)
    if given is None:
        return False, f"{answer!r} is not a number."
    if int(given) == meshed:
        return True, f"{meshed} of the {len(pods)} pods are 2/2: the application container and istio-proxy, both Ready."
    return False, f"not {given:g}: count the rows of lab.pods() whose ready column reads 2/2."


def _canary_weights(_lab: Lab | None, answer: Any) -> tuple[bool, str]:
    if not isinstance(answer, Mapping):
        return False, "write a dict of version to percent, like {'v1': 50, 'v3': 50}."
    got = {str(k): _number_of(v) for k, v in answer.items()}
    if any(v is None for v in got.values()):
        return False, f"{dict(answer)}: every weight is a number of percent."
    if {k: v for k, v in got.items() if v} == {"v1": 90.0, "v3": 10.0}:
        return True, "v1 90 and v3 10: one request in ten goes to v3, whatever the pod counts."
    if {k: v for k, v in got.items() if v} == {"v1": 0.9, "v3": 0.1}:
        return False, "weights are percentages: 90 and 10, not 0.9 and 0.1."
    return False, f"{dict(answer)} is not 90 % on v1 and 10 % on v3."


_MESH_EXERCISES = (
    Exercise("08", "sidecar", "The name of the container Istio adds to each pod.",
             "look at the containers of a pod: kubectl get pod NAME -o jsonpath='{.spec.containers[*].name}'.",
             '"istio-proxy"', _word_is("istio-proxy", "Envoy, started by pilot-agent; kubectl logs POD -c istio-proxy "
                                       "shows its access log", near=("istio proxy", "istio_proxy", "envoy"))),
    Exercise("08", "meshed-pods", "How many pods are 2/2 now?",
             "lab.pods() has a ready column: a meshed, Ready pod reads 2/2.",
             'int((lab.pods()["ready"] == "2/2").sum())', _meshed_pods),
    Exercise("09", "header", "The request header the rule matches to find jason's requests.",
             "look at the match of virtual-service-reviews-test-v2.yaml in step 5, or lab.rules().",
             '"end-user"', _word_is("end-user", "productpage adds it to its calls while a user is signed in, and "
                                    "the rule matches its value exactly", near=("end_user", "enduser"))),
    Exercise("09", "jason-version", "Which reviews version served jason?",
             "black stars: which version draws them? Step 8 measured it.",
             '"v2"', _word_is("v2", "the first route matched end-user: jason and sent it to subset v2 (black stars)")),
    Exercise("10", "page-seconds", "How many seconds did jason's page take with the 7 s delay?",
             "productpage waits 3 s for reviews, and tries twice.", "6",
             _about(6, 5.5, 6.9, "seconds", "productpage gave up on reviews after 3 s, twice, before the 7 s "
                    "delay was over")),
    Exercise("10", "abort-status", "The HTTP status of the injected abort.",
             "httpStatus in virtual-service-ratings-test-abort.yaml; the code column of step 14's log.", "500",
             _word_is("500", "the sidecar answered it with the flag FI, and ratings never saw the call")),
    Exercise("11", "red-pages", "About how many of 200 page loads show red stars under the 50/50 rule?",
             "the weight of v3 is 50 (percent).", "100",
             _about(100, 100, 100, "page loads", "half of 200; a run's count varies by about ±14 (two standard "
                    "deviations)")),
    Exercise("11", "canary-weights", "The weights of a 90/10 canary of v3.",
             "a dict like WEIGHTS: version to percent, adding up to 100.", '{"v1": 90, "v3": 10}', _canary_weights),
    Exercise("12", "timeout-seconds", "How many seconds does the page take with a 0.5 s timeout on reviews?",
             "each reviews call is cut at 0.5 s, and productpage calls reviews twice.", "1",
             _about(1, 0.9, 1.3, "second", "two reviews calls of 0.5 s each, both cut by the sidecar with a 504")),
    Exercise("12", "retry-seconds", "How many seconds with retries: attempts 3, perTryTimeout 0.25s?",
             "tries per call = 1 + attempts; each try lasts the per-try timeout; productpage calls reviews twice.",
             "2", _about(2, 1.9, 2.3, "seconds", "(1 + 3) tries x 0.25 s = 1 s per call, and productpage calls "
                         "twice")),
)
EXERCISES.update({(e.lesson, e.step): e for e in _MESH_EXERCISES})


def exercise(lesson: str, step: str) -> Exercise:
    """The exercise ``lesson``/``step``; an unknown one raises, naming the known ones."""
    found = EXERCISES.get((lesson, step))
    if found is None:
        known = ", ".join(f"{a}/{b}" for a, b in EXERCISES)
        raise KeyError(f"no exercise {lesson}/{step}; exercises: {known}")
    return found


def check(lesson: str, step: str, answer: Any, *, lab: Lab | None = None) -> Check:
    """Check the learner's answer to an exercise, record the result, and show ✓ or ✗ with a hint.

    With ``LABKIT_SOLVE=1`` (the headless tour), an unanswered exercise runs its solution instead.

    Example:
        >>> checks.check("04", "waiting-status", "CrashLoopBackOff")
        ✓ CrashLoopBackOff: ...
    """
    ex = exercise(lesson, step)
    if unanswered(answer) and os.environ.get("LABKIT_SOLVE") == "1":
        return solve(lesson, step, lab=lab)
    if unanswered(answer):
        result = Check(False, "not answered yet: replace the ... with your answer.", ex.hint, ex.solution,
                       lesson=lesson, step=step, lab=lab)
    else:
        result = _verdict(ex, lab, answer)
    record(lesson, step, result)
    return result


def _verdict(ex: Exercise, lab: Lab | None, answer: Any, solved: bool = False) -> Check:
    got = ex.verify(lab, answer)
    ok, message, hint = (got.ok, got.message, got.hint) if isinstance(got, Check) else (*got, "")
    return Check(ok, message, "" if ok else hint or ex.hint, ex.solution, solved=solved, lesson=ex.lesson,
                 step=ex.step, lab=lab)


def solve(lesson: str, step: str, *, lab: Lab | None = None) -> Check:
    """Run the exercise's solution ("solve it") and check its answer; recorded as solved."""
    ex = exercise(lesson, step)
    result = _verdict(ex, lab, ex.solve(lab), solved=True)
    record(lesson, step, result)
    return result


# ------------------------------------------------------------------------------------------------ lessons 1, 2, 5, 7
# The steps that check themselves in lessons 1, 2, 5 and 7: verifiers, then their exercises (added to EXERCISES).


def check_service_selector(lab: Lab, answer: Any, *, service: str = "reviews") -> Check:
    """Exercise: the labels a pod must carry for ``service`` to send it traffic, checked against the Service's
    own selector in the cluster (``kubectl get svc reviews -o jsonpath='{.spec.selector}'``).

    Example:
        >>> lessons.check_service_selector(lab, "app=reviews")
        ✓ the reviews Service selects app=reviews: ...
    """
    from .client import selector_text
    from .errors import LabkitError

    hint = (f"a Service sends traffic to the ready pods whose labels match its selector; look at it with "
            f"`kubectl get svc {service} -o wide` (the SELECTOR column). Write it like 'key=value'.")
    if unanswered(answer):
        return Check(False, "not answered yet: replace the placeholder with a selector like 'key=value'.", hint)
    if not isinstance(answer, str | dict):
        return Check(False, f"a selector is a string like 'app=ratings', not {type(answer).__name__}.", hint)
    try:
        doc = lab.core.read_namespaced_service(service, lab.namespace)
    except Exception as exc:
        return Check(False, f"cannot read the {service} Service: {exc}", hint)
    want = dict(doc.spec.selector or {})
    try:
        given = dict(part.split("=", 1) for part in selector_text(answer).replace("==", "=").split(",") if part)
    except (ValueError, LabkitError):
        return Check(False, f"{answer!r} is not written like 'key=value'.", hint)
    given = {k.strip(): v.strip() for k, v in given.items()}
    text = ",".join(f"{k}={v}" for k, v in sorted(want.items()))
    if given == want:
        return Check(True, f"the {service} Service selects {text}: a pod with these labels gets traffic, whatever "
                           "its other labels (version=v2 included); one without them gets none, even if it runs.")
    if set(given.items()) > set(want.items()):
        return Check(False, f"{answer!r} asks for more than the Service does: the extra labels do not matter to it.",
                     hint)
    return Check(False, f"{answer!r} is not what the {service} Service selects.", hint)


def _number(answer: Any) -> float | None:
    text = str(answer).strip().rstrip("%").strip()
    try:
        value = float(text)
    except ValueError:
        return None
    percent = str(answer).strip().endswith("%") or value > 1
    return value / 100 if percent else value


def check_share(answer: Any, *, new: int, old: int, version: str = "v2") -> Check:
    """Exercise: the share of page loads that ``new`` pods of a new version get beside ``old`` pods of the old
    one, all behind one Service (kube-proxy picks an endpoint per connection). A fraction or a percentage.

    Example:
        >>> lessons.check_share(0.5, new=3, old=3)
    """
    if new < 0 or old < 0 or new + old == 0:
        raise ValueError(f"new and old are pod counts, at least one of them above 0, not {new} and {old}")
    expected = new / (new + old)
    hint = ("the Service spreads connections over its ready endpoints evenly, whatever version runs in them: "
            "count the pods behind it.")
    if unanswered(answer):
        return Check(False, "not answered yet: write a fraction like 0.3 or a percentage like '30%'.", hint)
    value = _number(answer)
    if value is None or not 0 <= value <= 1:
        return Check(False, f"{answer!r} is not a share: write a fraction between 0 and 1 or a percentage.", hint)
    if abs(value - expected) <= 0.03:
        return Check(True, f"{new} of {new + old} endpoints run {version}: about {expected:.0%} of the page loads "
                           "(each run measures a little more or less: every request is its own draw).")
    return Check(False, f"not {value:.0%}.", hint)


_RELEASE_CHOICES = ("the replicaset", "the deployment", "the garbage collector", "nobody")


def check_release(answer: Any) -> Check:
    """Exercise: after ``kubectl label pods -l version=v2 app=reviews --overwrite`` and ``kubectl delete
    deployment reviews-v2``, who deletes the relabelled pod? One of "the ReplicaSet", "the Deployment",
    "the garbage collector" or "nobody"."""
    hint = ("relabelling took the pod out of its ReplicaSet's selector: look at `kubectl get pods -l version=v2 "
            "-o custom-columns=NAME:.metadata.name,OWNER:.metadata.ownerReferences[0].name` (lab.owners).")
    if unanswered(answer):
        return Check(False, f"not answered yet: write one of {', '.join(repr(c) for c in _RELEASE_CHOICES)}.",
                     hint)
    given = " ".join(str(answer).strip().lower().split())
    given = {"replicaset": "the replicaset", "deployment": "the deployment",
             "garbage collector": "the garbage collector", "gc": "the garbage collector",
             "no one": "nobody", "none": "nobody"}.get(given, given)
    if given not in _RELEASE_CHOICES:
        return Check(False, f"{answer!r} is not one of {', '.join(repr(c) for c in _RELEASE_CHOICES)}.", hint)
    if given == "nobody":
        return Check(True, "nobody: the ReplicaSet released the pod (it dropped its ownerReference), so deleting "
                           "the Deployment leaves it running. That is why istio.io's rollback also runs "
                           "`kubectl delete pod -l app=reviews,version=v2`.")
    return Check(False, f"not {given}: it no longer owns that pod.", hint)


def _pod_count(lab: Lab | None, answer: Any) -> tuple[bool, str]:
    pods = _need(lab).pods()
    if (given := _integer(answer)) is None:
        return False, f"{answer!r} is not a number."
    if given == len(pods):
        return True, f"{len(pods)} pods: three for each of the four services, and the tester pod."
    return False, f"not {given}: count the rows of the pods' table."


def _tester_name(lab: Lab | None, answer: Any) -> tuple[bool, str]:
    lab = _need(lab)
    tester = lab.tester_pod()
    given = str(getattr(answer, "name", answer)).strip()
    if given == tester:
        return True, f"{tester} is the tester pod: the first Ready pod labelled app=sleep."
    if given in set(lab.pod_names()):
        return False, f"{given} is a pod of the application, not the tester."
    return False, f"{given!r} is not a pod in namespace {lab.namespace}."


def _page_builder(_lab: Lab | None, answer: Any) -> tuple[bool, str]:
    given = str(answer).strip().lower()
    if given == "productpage":
        return True, "productpage builds the page from the answers of details and reviews."
    if given in bookinfo.PROCESSES:
        return False, f"{given} answers one part of the page; another service puts the parts together."
    return False, f"{answer!r} is not one of Bookinfo's services: {', '.join(bookinfo.PROCESSES)}."


def _json_of(answer: Any) -> Any:
    text = getattr(answer, "stdout", answer)
    return json.loads(text) if isinstance(text, str) else text


def _stars(lab: Lab | None, answer: Any) -> tuple[bool, str]:
    live = json.loads(_need(lab).request("http://ratings:9080/ratings/7", check=True).stdout)
    stars = int(live["ratings"]["Reviewer2"])
    if (given := _integer(answer)) is None:
        return False, f"{answer!r} is not a number of stars."
    if given == stars:
        return True, f"Reviewer2 gave book 7 {stars} stars, as ratings answers now."
    return False, f"not {given}: read Reviewer2 in ratings' answer."


def _details_request(_lab: Lab | None, answer: Any) -> tuple[bool, str]:
    if not hasattr(answer, "returncode"):
        return False, f"this wants the result of lab.request(...), not {type(answer).__name__}."
    if answer.returncode != 0:
        return False, f"the request failed with curl exit code {answer.returncode}: {answer.stderr.strip()}"
    try:
        doc = _json_of(answer)
    except ValueError:
        return False, "the answer is not JSON: did you ask the details service (port 9080, path /details/7)?"
    if not isinstance(doc, dict) or "isbn-10" not in {str(k).lower() for k in doc}:
        return False, "that answer did not come from details: its answers carry the book's ISBN-10."
    if doc.get("id") != 7:
        return False, f"details answered for book {doc.get('id')}; ask for book 7: /details/7."
    return True, f"details answered for book 7 from inside the cluster (pod {answer.pod} sent it)."


def _exit_code(expected: int, meaning: str) -> Verify:
    def verify(_lab: Lab | None, answer: Any) -> tuple[bool, str]:
        if (given := _integer(answer)) is None:
            return False, f"{answer!r} is not an exit code (a number)."
        if given == expected:
            return True, f"curl exits with {expected} when {meaning}."
        return False, f"curl exits with {given} for something else."
    return verify


_MORE_EXERCISES = (
    Exercise("01", "pod-count", "How many pods run in the lab namespace?",
             "the table of the pods has one row per pod; len() of a DataFrame counts its rows.", "len(lab.pods())",
             _pod_count),
    Exercise("01", "selector", "The label selector of the reviews pods.",
             "the step before selects the details pods with app=details; a selector is 'key=value'.", '"app=reviews"',
             lambda lab, answer: check_selector(_need(lab), answer, app="reviews")),
    Exercise("01", "tester-pod", "The name of the tester pod.",
             "lab.tester_pod() returns it; it is the pod whose name starts with sleep-.", "lab.tester_pod()",
             _tester_name),
    Exercise("01", "page-builder", "Which service builds the page the customer sees?",
             "look at the map of Bookinfo: the browser calls one service, which calls the others.",
             '"productpage"', _page_builder),
    Exercise("02", "stars", "How many stars did Reviewer2 give book 7?",
             "ratings' answer is JSON: ratings, then Reviewer1 and Reviewer2.",
             'json.loads(lab.request("http://ratings:9080/ratings/7").stdout)["ratings"]["Reviewer2"]',
             _stars),
    Exercise("02", "details-request", "Ask details for book 7 from the tester pod (the result of lab.request).",
             "lab.request(url) with the details service's URL, as in the step before, for book 7 instead of 0.",
             'lab.request("http://details:9080/details/7")', _details_request),
    Exercise("02", "all-pods-down", "Which curl exit code does a request get when every pod of the service is "
             "down?", "nothing accepts the connection, as when nothing listens on the port (the step before).", "7",
             _exit_code(7, "nothing accepts the connection: no pod is there to answer")),
    Exercise("05", "details-verdict", "The verdict while details was down in every pod.",
             "read the plot: did the page line stay at 100 % while the details line dipped?",
             '"gradual degradation"', lambda _lab, answer: check_verdict("details-down", answer)),
    Exercise("05", "reviews-process", "The process pkill must name to crash reviews.",
             "reviews is written in Java; the process is named after what runs the code.", '"java"',
             lambda _lab, answer: check_process("reviews", answer)),
    Exercise("05", "ratings-verdict", "The verdict while ratings was down in every pod.",
             "the run above prints it. Does reviews v1 call ratings?", '"healthy"',
             lambda _lab, answer: check_verdict("ratings-down", answer)),
    Exercise("07", "service-selector", "The labels a pod must carry for the reviews Service to send it traffic.",
             "`kubectl get svc reviews -o wide` shows the Service's SELECTOR.", '"app=reviews"',
             lambda lab, answer: check_service_selector(_need(lab), answer)),
    Exercise("07", "share", "The share of page loads with black stars: one v2 pod beside three v1 pods.",
             "the Service spreads connections over its ready endpoints evenly: count the pods behind it.", "0.25",
             lambda _lab, answer: check_share(answer, new=1, old=3)),
    Exercise("07", "release", "After the relabel, who deletes the released pod when the Deployment is deleted?",
             "relabelling took the pod out of its ReplicaSet's selector: look at its owner (lab.owners).",
             '"nobody"', lambda _lab, answer: check_release(answer)),
)
EXERCISES.update({(e.lesson, e.step): e for e in _MORE_EXERCISES})


# ------------------------------------------------------------------------------------------------ progress


@dataclass(frozen=True)
class Result:
    """One recorded check: a line of the progress file."""

    lesson: str
    step: str
    ok: bool
    attempt: int
    time: str
    message: str = ""
    solved: bool = False
    learner: str = ""


def progress_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The progress file: ``path``, ``$LABKIT_PROGRESS``, or ``~/.labkit/progress.jsonl``."""
    chosen = path or os.environ.get("LABKIT_PROGRESS") or Path.home() / ".labkit" / "progress.jsonl"
    return Path(chosen).expanduser()


def read_results(path: str | os.PathLike[str] | None = None) -> list[Result]:
    """Every recorded check, oldest first (a line that is not a result is skipped)."""
    file = progress_path(path)
    if not file.exists():
        return []
    out = []
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            doc = json.loads(line)
            out.append(Result(str(doc["lesson"]), str(doc["step"]), bool(doc["ok"]), int(doc["attempt"]),
                              str(doc["time"]), str(doc.get("message", "")), bool(doc.get("solved", False)),
                              str(doc.get("learner", ""))))
        except (ValueError, KeyError, TypeError):
            continue
    return out


_lock = threading.Lock()
learner_name = report.learner_name  # who the results are from (see labkit.report)
_flush_posts = report.flush  # wait for results still on their way to the room


def record(lesson: str, step: str, result: Check, *, path: str | os.PathLike[str] | None = None,
           room: str | None = None, learner: str | None = None) -> Result:
    """Append a check's result to the progress file, and post it to the room (``room``, ``$LABKIT_ROOM`` or the
    room ``labkit join`` kept) in the background."""
    file = progress_path(path)
    with _lock:
        attempt = 1 + sum(1 for r in read_results(file) if (r.lesson, r.step) == (lesson, step))
        entry = Result(lesson, step, result.ok, attempt, datetime.now(UTC).isoformat(timespec="seconds"),
                       result.message, result.solved, learner or learner_name())
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with file.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(entry)) + "\n")
        except OSError:
            pass  # a read-only home must not break the lesson
    report.post("results", asdict(entry), room=room)
    return entry


def progress_table(results: Iterable[Result]) -> str:
    """One row per lesson step: its last result, attempts, when, and whether the solution was used."""
    last: dict[tuple[str, str], Result] = {}
    for r in results:
        last[(r.lesson, r.step)] = r
    rows = [("LESSON", "STEP", "RESULT", "ATTEMPTS", "TIME", "SOLVED")]
    rows += [(r.lesson, r.step, "pass" if r.ok else "fail", str(r.attempt), r.time, "yes" if r.solved else "")
             for _, r in sorted(last.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def summary(results: Iterable[Result]) -> Mapping[str, int]:
    """Steps passed and failed (by their last result)."""
    last: dict[tuple[str, str], Result] = {}
    for r in results:
        last[(r.lesson, r.step)] = r
    return {"passed": sum(r.ok for r in last.values()), "failed": sum(not r.ok for r in last.values())}
