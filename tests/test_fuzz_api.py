"""The API fuzzer, bounded: schemathesis over the served OpenAPI and hypothesis strategies, about a minute.

It asserts what issue 8 asks of every answer (no 5xx, every 4xx a Status, every 400/422 naming its field,
nothing stored that cannot be read back, every request answered), then that the lesson still works: every
pod Ready, ratings answers the tester pod, and a killed container restarts. ``benchmarks/fuzz.py`` runs the same
fuzzer for ten minutes with random seeds.
"""

from __future__ import annotations

import time

import pytest
from conftest import wait_all_ready
from fuzzapi import Fuzzer, dumps, summary
from helpers import eventually

import labkit
from labkit.sandbox import Sandbox


@pytest.mark.timeout(600)
def test_the_api_survives_its_fuzzer_and_the_lesson_still_works(ready_sandbox: Sandbox) -> None:
    started = time.monotonic()
    fuzzer = Fuzzer(ready_sandbox, budget=45.0)
    try:
        fuzzer.run(examples=700)  # derandomized: the same requests on every run
        fuzzer.clean_up()
    finally:
        fuzzer.close()
    report = summary(fuzzer, time.monotonic() - started)
    assert not fuzzer.findings, dumps({**report, "first findings": fuzzer.findings[:15]})
    assert fuzzer.requests >= 200, report
    assert report["codes"].get(201, 0) > 0 and report["codes"].get(422, 0) > 0, report  # deep and shallow both

    wait_all_ready(ready_sandbox, timeout=120)
    lab = labkit.connect(sandbox_dir=ready_sandbox.dir)
    try:
        answer = lab.request("http://ratings:9080/ratings/7")
        assert answer.returncode == 0 and '"id":7' in answer.stdout.replace(" ", ""), answer
        pod = lab.pods("app=details")["name"].iloc[0]
        before = int(lab.pods("app=details").set_index("name").loc[pod, "restarts"])
        assert lab.exec(pod, ["pkill", "ruby"]).returncode == 0
        eventually(lambda: int(lab.pods("app=details").set_index("name").loc[pod, "restarts"]) == before + 1,
                   what=f"{pod} to restart once")
        lab.wait_ready("app=details", timeout=60, progress=False)
    finally:
        lab.close()
