"""A bounded fuzz campaign: seeded mutations of every shipped model (and of their manifests), opened
through the commands' own loaders, never crash the process that opens them. (Issues 7, 17.)

The machinery lives in `tfdefakeq.runtime.fuzz`; `benchmarks/reliability.py` runs it larger.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tfdefakeq.runtime.fuzz import (
    ALL_CLASSES,
    ENTRY_POINTS,
    FAILURES,
    MANIFEST_MODES,
    MODELS,
    MUTATIONS,
    OUTCOMES,
    SHIPPED,
    cases,
    run_campaign,
    tally,
)


def test_mutations_are_deterministic():
    first = [(c.note, c.data, c.entry, c.manifest_mode) for c in cases(68)]
    assert [(c.note, c.data, c.entry, c.manifest_mode) for c in cases(68)] == first
    assert len(first) == 68 and len({d for _, d, _, _ in first}) > 40  # nearly all distinct


def test_the_campaign_covers_every_shipped_model_class_and_loader():
    shipped = {p.stem for p in SHIPPED.glob("*.tflite")}
    assert set(MODELS) == shipped  # the INT2 / GATHER adaptive models included
    planned = list(cases())
    assert len(planned) >= 500
    assert {c.model for c in planned} == shipped and {c.kind for c in planned} == set(ALL_CLASSES)
    assert {(c.entry, c.manifest_mode) for c in planned} == {(e, m) for e in ENTRY_POINTS for m in MANIFEST_MODES}
    notes = " ".join(c.note for c in planned if c.kind == "scale")
    assert all(f"{category} scale" in notes for category in ("huge", "tiny", "zero", "negative", "nan", "inf"))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    start = time.perf_counter()
    outcomes = run_campaign(cases(MUTATIONS), tmp_path_factory.mktemp("fuzz"))
    return outcomes, time.perf_counter() - start


def test_fuzzed_models_never_crash_the_harness(campaign):
    outcomes, seconds = campaign
    assert len(outcomes) >= 500
    counts = Counter(o.outcome for o in outcomes)
    print(f"\n{len(outcomes)} mutations in {seconds:.1f} s: {dict(counts)}")
    for (model, kind), c in sorted(tally(outcomes).items()):
        print(f"  {model:28s} {kind:21s} {dict(c)}")
    assert set(counts) <= set(OUTCOMES)
    failures = [(o.case.name, o.case.entry, o.case.manifest_mode, o.case.note, o.message)
                for o in outcomes if o.outcome in FAILURES]
    assert not failures, failures  # no worker died, hung or showed a traceback
    for o in outcomes:  # every failure is one line naming the file or its manifest
        if o.outcome != "ran":
            assert "\n" not in o.message and o.message.startswith(str(o.path.with_suffix(""))), o.message
    assert counts["rejected"] > len(outcomes) / 2  # the validator catches most damage before any interpreter
    assert counts["ran"] > 0 and counts["error"] > 0 and counts["manifest_rejected"] > 0


def test_every_scale_or_zero_point_damage_is_caught_or_harmless(campaign):
    outcomes, _ = campaign
    by_class = tally(outcomes, key=lambda o: o.case.kind)
    for kind in ("scale", "zero_point"):
        assert by_class[kind]["rejected"] > 0 and not set(by_class[kind]) & set(FAILURES), by_class[kind]
    for o in outcomes:
        if o.case.kind == "scale" and o.case.note.split()[0] in ("zero", "negative", "nan", "inf"):
            assert o.outcome == "rejected", (o.case.note, o.outcome, o.message)


def test_truncated_and_misaddressed_files_never_reach_the_interpreter(campaign):
    outcomes, _ = campaign
    for o in outcomes:
        if o.case.kind in ("truncate", "header"):
            assert o.outcome == "rejected", (o.case.note, o.outcome, o.message)


def test_manifest_tampering_is_refused_or_probed(campaign):
    outcomes, _ = campaign
    for o in outcomes:
        if o.case.kind == "manifest_input_shape":
            assert o.outcome == "manifest_rejected", (o.case.note, o.outcome, o.message)
        if o.case.kind == "manifest_hash":  # the bytes are the shipped ones: probed, then they run
            assert o.outcome == "ran", (o.case.note, o.outcome, o.message)
