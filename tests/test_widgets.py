"""labkit.widgets: the chaos panel's buttons clicked against the real sandbox, and what they did."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import ipywidgets
import pytest
from helpers import eventually, never

import labkit
from labkit import observe, widgets


def table_restarts(panel: widgets.ChaosPanel, pod: str) -> int | None:
    match = re.search(rf'data-pod="{re.escape(pod)}" data-restarts="(\d+)"', panel.table.value)
    return int(match.group(1)) if match else None


@pytest.fixture()
def panel(lab: labkit.Lab) -> Iterator[widgets.ChaosPanel]:
    p = widgets.chaos_panel(lab)
    try:
        yield p
    finally:
        p.close()


def test_the_panel_is_a_widget_with_the_lessons_controls(panel: widgets.ChaosPanel, lab: labkit.Lab) -> None:
    assert isinstance(panel, ipywidgets.VBox)
    assert list(panel.app.options) == ["details", "ratings", "reviews", "productpage"]  # no tester pod
    assert panel.app.value == "details" and panel.process.value == "ruby"
    for app, process in (("ratings", "node"), ("reviews", "java"), ("productpage", "gunicorn"), ("details", "ruby")):
        panel.app.value = app
        assert panel.process.value == process
    for button in (panel.kill_one, panel.kill_all, panel.delete_one):
        assert isinstance(button, ipywidgets.Button) and not button.disabled
    assert isinstance(panel.confirm, ipywidgets.Checkbox) and panel.confirm.value is False
    assert isinstance(panel.dry_run, ipywidgets.Checkbox) and panel.dry_run.value is False
    assert isinstance(panel.plot, ipywidgets.Output)
    # the table is kubectl get pods of the namespace; the plot holds a PNG
    for name in lab.pod_names():
        assert table_restarts(panel, name) == 0
    assert panel.plot.outputs and panel.plot.outputs[0]["data"]["image/png"]
    assert panel.actions == []


def test_kill_one_restarts_the_first_details_pod_and_the_table_follows(panel: widgets.ChaosPanel,
                                                                       lab: labkit.Lab) -> None:
    first = lab.pod_names("app=details")[0]  # the lesson's .items[0]
    before = int(lab.pods("app=details").set_index("name").loc[first, "restarts"])
    panel.kill_one.click()
    assert len(panel.actions) == 1
    action = panel.actions[0]
    assert action.action == "kill" and action.process == "ruby" and action.pods == [first]
    assert action.ok and not action.dry_run
    assert first in panel.status.value and "pkill" in panel.status.value
    # the container restarts in place: same pod, RESTARTS + 1, seen by the API and then by the panel
    assert panel.recorder is not None
    panel.recorder.wait_restarts(first, before + 1, timeout=30)
    assert int(lab.pods("app=details").set_index("name").loc[first, "restarts"]) == before + 1
    eventually(lambda: table_restarts(panel, first) == before + 1, what=f"the table to show {first} restarted")
    eventually(lambda: "restarted: RESTARTS" in panel.status.value, what="the status to report the restart")
    # the chaos mark landed on the panel's own recorder, so its timeline can be plotted with the kill
    assert panel.recorder.actions == [action]
    observe.wait_ready(lab, progress=False, timeout=60)


def test_kill_all_without_confirm_does_nothing_and_says_why(panel: widgets.ChaosPanel, lab: labkit.Lab) -> None:
    before = lab.pods("app=details").set_index("name")["restarts"].to_dict()
    panel.kill_all.click()
    assert panel.actions == []
    assert "Not done" in panel.status.value and "Tick" in panel.status.value
    # absence, watched: a kill would show as a details pod not Ready (at once) and a restart (at this time scale,
    # within the second)
    never(lambda: lab.pods("app=details").set_index("name")["restarts"].to_dict() != before
          or not lab.pods("app=details")["ready"].eq("1/1").all(), during=1.0, what="a details pod went down")
    assert panel.recorder is not None and panel.recorder.actions == []


def test_kill_all_with_confirm_hits_every_details_pod_and_unticks_the_box(panel: widgets.ChaosPanel,
                                                                          lab: labkit.Lab) -> None:
    pods = lab.pod_names("app=details")
    before = lab.pods("app=details").set_index("name")["restarts"].to_dict()
    panel.confirm.value = True
    panel.kill_all.click()
    action = panel.actions[-1]
    assert action.mode == "all" and action.pods == pods and action.ok
    assert panel.confirm.value is False  # the next "all" needs a new tick
    assert panel.recorder is not None
    for pod in pods:
        panel.recorder.wait_restarts(pod, before[pod] + 1, timeout=30)
    eventually(lambda: all(table_restarts(panel, p) == before[p] + 1 for p in pods),
               what="the table to show every details pod restarted")
    observe.wait_ready(lab, progress=False, timeout=60)


def test_dry_run_restarts_nothing(panel: widgets.ChaosPanel, lab: labkit.Lab) -> None:
    before = lab.pods().set_index("name")["restarts"].to_dict()
    panel.dry_run.value = True
    panel.kill_one.click()
    panel.kill_all.click()  # a dry run of "all" needs no confirm: it only shows which pods
    panel.delete_one.click()
    assert [a.dry_run for a in panel.actions] == [True, True, True]
    assert panel.actions[1].pods == lab.pod_names("app=details")
    assert "Dry run" in panel.status.value and "Nothing was done" in panel.status.value
    # absence, watched: same pods (nothing deleted), same restarts, all Ready, for a second
    never(lambda: lab.pods().set_index("name")["restarts"].to_dict() != before
          or not lab.pods()["ready"].eq("1/1").all(), during=1.0, what="a pod was hit by a dry run")
    assert panel.recorder is not None and panel.recorder.actions == []  # dry runs are not marked


def test_delete_one_replaces_the_pod(panel: widgets.ChaosPanel, lab: labkit.Lab) -> None:
    panel.app.value = "ratings"
    first = lab.pod_names("app=ratings")[0]
    panel.delete_one.click()
    action = panel.actions[-1]
    assert action.action == "delete" and action.pods == [first]
    eventually(lambda: "was deleted" in panel.status.value, what="the status to report the deletion")
    observe.wait_ready(lab, "app=ratings", progress=False, timeout=60)
    eventually(lambda: first not in lab.pod_names("app=ratings"), what=f"{first} to be gone")
    assert len(lab.pod_names("app=ratings")) == 3
    eventually(lambda: table_restarts(panel, first) is None, what="the table to drop the deleted pod")


def test_errors_are_shown_in_the_status_not_raised(panel: widgets.ChaosPanel, lab: labkit.Lab) -> None:
    panel.process.value = "not a process"
    panel.kill_one.click()
    assert panel.actions == []
    assert "Not done" in panel.status.value and "process must be one process name" in panel.status.value
    panel.process.value = "nosuchprocess"
    panel.kill_one.click()  # pkill finds nothing: reported per pod, nothing restarts
    assert panel.actions[-1].ok is False
    assert "no process named" in panel.status.value


def test_the_tester_pod_is_never_offered(lab: labkit.Lab) -> None:
    with pytest.raises(labkit.LabkitError, match=r"the tester pod \(sleep\) is never a chaos target"):
        widgets.chaos_panel(lab, apps=["details", "sleep"])
    p = widgets.chaos_panel(lab, apps=["ratings"], live=False)
    assert list(p.app.options) == ["ratings"] and p.process.value == "node" and p.recorder is None
    p.close()


def test_stop_saves_the_last_drawing_even_when_the_watch_thread_drew_it_first(
        ready_sandbox: object, tmp_path: Path) -> None:
    """A redraw from the watch's thread never reaches nbclient's saved widget state; ``stop()`` in a later cell
    must send the final drawing even though the kernel-side value is already the same (no change to send)."""
    import os

    import nbformat

    from labkit import lessons

    cells = [
        "import labkit\nfrom labkit import widgets\nlab = labkit.connect()\n"
        "rec = lab.record('app=details')\nlive = lab.live_pods(recorder=rec)\n"
        "panel = widgets.chaos_panel(lab)\nlive",
        # The change, drawn by the watch's thread while nbclient is not listening: as after a cell ended, before
        # the next one started (ipykernel sends a thread's messages with the last cell's parent, and nbclient
        # keeps only the running cell's). The kernel-side values are final, the saved ones are not.
        "import contextvars, time\n"
        "kernel = get_ipython().kernel\nshell = kernel._shell_context\n"
        "ended = contextvars.Context()\n"
        "ended.run(kernel._shell_parent.set, {'header': {'msg_id': 'a-cell-that-ended'}})\n"
        "kernel._shell_context = ended\n"
        "try:\n"
        "    hit = lab.delete_pods('app=details', mode='one')\n"
        "    rec.wait_recovered(hit, progress=False)\n"
        "    gone = hit.landed[0].pod\n    new = sorted(set(rec.current()['pod']))\n"
        "    deadline = time.monotonic() + 30\n"
        "    while (gone in live.value or any(p not in live.value for p in new) or gone in panel.table.value)"
        " and time.monotonic() < deadline:\n        time.sleep(0.05)\n"
        "finally:\n    kernel._shell_context = shell\n"
        "assert gone not in live.value and gone not in panel.table.value",
        "live.stop()\npanel.stop()\nrec.stop()\nprint(gone, *new)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    path = tmp_path / "stop.ipynb"
    nbformat.write(nb, path)
    env = {**os.environ, "LABKIT_SANDBOX_DIR": str(ready_sandbox.dir)}  # type: ignore[attr-defined]
    env.pop("LABKIT_KUBECONFIG", None)
    run = lessons.run_notebook(path, env=env, timeout=120, progress=None)
    assert run.ok, str(run.failure)
    gone, *new = run.nb.cells[2].outputs[0]["text"].split()
    state = run.nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    live_id = run.nb.cells[0].outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    saved = state[live_id]["state"]["value"]
    assert gone not in saved and all(p in saved for p in new), saved
    tables = [m["state"]["value"] for k, m in state.items()
              if k != live_id and "data-pod=" in str(m["state"].get("value", ""))]
    assert tables and all(gone not in t for t in tables), tables
