"""Pure pipeline: outcomes per record, rejection reasons, anomaly records; hypothesis on bytes."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_model import TinyModel

from detector.model import Detector
from worker.anomaly_record import RECORD_FIELDS
from worker.model_loading import load_model
from worker.outcomes import Flagged, Normal, RawRecord, Rejected
from worker.output_guard import fit_anomaly
from worker.pipeline import score_batch
from worker.typed_decode import TypedDecoder


@pytest.fixture(scope="module")
def detector(tiny_model: TinyModel) -> Detector:
    return Detector.load(tiny_model.path)


def _record(value: bytes | None, offset: int = 0, key: bytes | None = None) -> RawRecord:
    return RawRecord("events", 1, offset, 1_700_000_000_000, key, value)


def _score(detector: Detector, values: list[bytes | None], limit: int = 65536) -> list[Any]:
    records = [_record(v, i) for i, v in enumerate(values)]
    return score_batch(records, detector, max_value_bytes=limit, now_s=1_800_000_000.0).outcomes()


def test_outcomes_match_the_detector_in_input_order(detector: Detector, tiny_model: TinyModel) -> None:
    events = tiny_model.normal_events[:200] + tiny_model.attack_events[:200]
    outcomes = _score(detector, [orjson.dumps(e) for e in events])
    expected = detector.score_records(events)
    assert [o.record.offset for o in outcomes] == list(range(len(events)))
    for outcome, flagged, score in zip(outcomes, expected.flagged, expected.scores, strict=True):
        assert isinstance(outcome, Flagged if flagged else Normal)
        assert outcome.score == pytest.approx(score, abs=1e-4)


def test_flagged_outcome_carries_the_contract_record(detector: Detector, tiny_model: TinyModel) -> None:
    outcomes = _score(detector, [orjson.dumps(e) for e in tiny_model.attack_events[:300]])
    flagged = [o for o in outcomes if isinstance(o, Flagged)]
    assert flagged
    record = flagged[0].anomaly
    assert tuple(record) == RECORD_FIELDS
    assert record["event_id"] == flagged[0].event_id == record["event"]["event_id"]
    assert record["score"] > record["threshold"] == detector.threshold
    assert record["margin"] is None  # one normal class
    assert record["detected_at"] == "2027-01-15T08:00:00.000+00:00"
    assert record["event_timestamp"].startswith("2023-11-14T")
    assert [f["field"] for f in record["explanation"]["fields"]] and "vs class 'normal'" in record["explanation"][
        "text"
    ]
    orjson.dumps(record)  # JSON-serialisable


def test_event_id_falls_back_to_coordinates(detector: Detector, tiny_model: TinyModel) -> None:
    events = [{k: v for k, v in e.items() if k != "event_id"} for e in tiny_model.attack_events[:300]]
    flagged = [o for o in _score(detector, [orjson.dumps(e) for e in events]) if isinstance(o, Flagged)]
    assert flagged and all(o.event_id == f"events:1:{o.record.offset}" for o in flagged)


def test_an_integer_id_beyond_64_bits_is_kept_exactly(detector: Detector, tiny_model: TinyModel) -> None:
    """Found in review: orjson read a 128-bit integer id as the float 8.396e+37, so the record's
    ``event_id`` (and its Kafka key) fell back to ``topic:partition:offset`` and ``event`` lost it."""
    big = 83962606556023347568268327321612582954
    events = [{**e, "event_id": big + i} for i, e in enumerate(tiny_model.attack_events[:300])]
    flagged = [
        o for o in _score(detector, [orjson.dumps({**e, "event_id": 0}) for e in events]) if isinstance(o, Flagged)
    ]
    assert flagged  # the same events with a small id: some are flagged
    values = [
        orjson.dumps({**e, "event_id": 0}).replace(b'"event_id":0', b'"event_id":%d' % e["event_id"]) for e in events
    ]
    outcomes = _score(detector, values)
    for o in outcomes:
        if isinstance(o, Flagged):
            published = json.loads(fit_anomaly("anomalies", o, "v1", 1_000_000).value or b"")
            assert o.event_id == str(big + o.record.offset) == str(published["event"]["event_id"])
    assert sum(isinstance(o, Flagged) for o in outcomes) == len(flagged)


def _attack_with(tiny_model: TinyModel, field: str, literal: bytes, extra: bytes = b"") -> bytes:
    """An attack event whose ``field`` holds the JSON ``literal`` (and ``extra`` members)."""
    event = {**tiny_model.attack_events[0], "src_bytes": 10**9, field: 0}
    return (
        orjson.dumps(event).replace(b'"%s":0' % field.encode(), b'"%s":%s' % (field.encode(), literal))[:-1]
        + extra
        + b"}"
    )


@pytest.mark.parametrize("big", [2**64 + 1, 83962606556023347568268327321612582954, -(2**63) - 1, -(10**30)])
def test_an_integer_id_beyond_64_bits_is_published_exactly(detector: Detector, tiny_model: TinyModel, big: int) -> None:
    """Found in review: such an id was published with ``"event": null`` (orjson cannot write the
    exact integer back), and one below -2**63 fell back to ``topic:partition:offset``."""
    [outcome] = _score(detector, [_attack_with(tiny_model, "event_id", str(big).encode())])
    assert isinstance(outcome, Flagged) and outcome.event_id == str(big)
    out = fit_anomaly("anomalies", outcome, "v1", 1_000_000)
    published = json.loads(out.value or b"")  # the standard library: integers of any size
    assert published["event_id"] == str(big) and published["event"]["event_id"] == big and out.key == str(big).encode()
    assert dict(out.headers).keys() == {"model_version"}


def test_a_numeric_field_beyond_64_bits_is_scored_and_published(detector: Detector, tiny_model: TinyModel) -> None:
    """Found in review: a byte count of 2**64 (a finite JSON number) went into the explanation as an
    exact integer the encoder refuses, and the TypeError crash-looped every replica."""
    [outcome] = _score(detector, [_attack_with(tiny_model, "src_bytes", b"%d" % 2**64)])
    assert isinstance(outcome, Flagged)
    assert "src_bytes" in [f["field"] for f in outcome.anomaly["explanation"]["fields"]]
    out = fit_anomaly("anomalies", outcome, "v1", 1_000_000)
    assert json.loads(out.value or b"")["event"]["src_bytes"] == 2**64


def test_a_deeply_nested_event_with_a_huge_number_is_scored(detector: Detector, tiny_model: TinyModel) -> None:
    """Found in review: a wide number made the pipeline re-read the event with the standard
    library, whose recursion limit (about 1,000) is below orjson's 1,024 levels: a RecursionError
    escaped ``score_batch``."""
    value = _attack_with(tiny_model, "event_id", b"1e20", b',"extra":' + b"[" * 1020 + b"]" * 1020)
    [outcome] = _score(detector, [value])
    assert isinstance(outcome, Flagged) and outcome.event_id == "events:1:0"  # a float id: coordinates
    out = fit_anomaly("anomalies", outcome, "v1", 1_000_000)
    # Left out, not carried as received: a record around it would be deeper than orjson reads.
    assert orjson.loads(out.value or b"")["event"] is None
    assert dict(out.headers)["kestrel.event_dropped"] == b"unencodable"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"\xff\xfe", "not_utf8"),
        (b"{oops", "invalid_json"),
        (b'{"duration": NaN}', "invalid_json"),
        (b'{"duration": 1e400}', "invalid_json"),
        (b"[1]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"x" * 101, "too_large"),
    ],
)
def test_rejects_before_parsing(detector: Detector, value: bytes | None, reason: str) -> None:
    (outcome,) = _score(detector, [value], limit=100)
    assert isinstance(outcome, Rejected)
    assert (outcome.reason, outcome.error_type) == (reason, "InvalidEventError")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"src_bytes": "abc"}, "wrong_type"),
        ({"src_bytes": True}, "wrong_type"),
        ({"protocol_type": {"a": 1}}, "wrong_type"),
        ({"src_bytes": "NaN"}, "not_finite"),
        ({"dst_bytes": "-inf"}, "not_finite"),
        ({"service": None}, "missing_field"),
    ],
)
def test_featurizer_rejections_keep_the_rest_of_the_batch(
    detector: Detector, tiny_model: TinyModel, change: dict[str, Any], reason: str
) -> None:
    good = tiny_model.normal_events[:3]
    bad = {**good[0], **change}
    outcomes = _score(detector, [orjson.dumps(good[1]), orjson.dumps(bad), orjson.dumps(good[2])])
    assert isinstance(outcomes[1], Rejected) and outcomes[1].reason == reason
    assert not isinstance(outcomes[0], Rejected) and not isinstance(outcomes[2], Rejected)


def test_unknown_category_is_scored_not_rejected(detector: Detector, tiny_model: TinyModel) -> None:
    event = {**tiny_model.normal_events[0], "service": "never-seen-before"}
    (outcome,) = _score(detector, [orjson.dumps(event)])
    assert isinstance(outcome, Normal | Flagged)


def test_event_times_are_the_events_own_or_nan(detector: Detector, tiny_model: TinyModel) -> None:
    with_ms = {**tiny_model.normal_events[0], "ts": 1_700_000_000_500}
    iso = {**tiny_model.normal_events[1], "ts": "2023-11-14T22:13:20Z"}
    missing = {k: v for k, v in tiny_model.normal_events[2].items() if k != "ts"}
    records = [_record(orjson.dumps(e), i) for i, e in enumerate([with_ms, iso, missing])] + [_record(b"{x", 3)]
    result = score_batch(records, detector, max_value_bytes=65536, now_s=0.0)
    assert result.event_times_s.tolist()[:2] == pytest.approx([1_700_000_000.5, 1_700_000_000.0])
    assert np.isnan(result.event_times_s[2:]).all()  # no own time: the Kafka timestamp is not used here


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=300), st.text(max_size=80).map(str.encode)), max_size=20))
def test_arbitrary_bytes_never_raise(detector: Detector, values: list[bytes | None]) -> None:
    outcomes = _score(detector, values, limit=200)
    assert len(outcomes) == len(values)
    assert [o.record.offset for o in outcomes] == list(range(len(values)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_events_always_get_an_outcome(detector: Detector, tiny_model: TinyModel, data: st.DataObject) -> None:
    event = dict(tiny_model.normal_events[data.draw(st.integers(0, 50))])
    field = data.draw(st.sampled_from(sorted(event)))
    event[field] = data.draw(json_values)
    (outcome,) = _score(detector, [orjson.dumps(event)])
    assert isinstance(outcome, Normal | Flagged | Rejected)


@pytest.mark.parametrize("ts", [1.7e15, "1e300", "0001-01-01T00:00:00+05:00", -5, "not a time", True])
def test_unusable_event_times_never_break_scoring(detector: Detector, tiny_model: TinyModel, ts: Any) -> None:
    events = [dict(e, ts=ts) for e in tiny_model.attack_events[:300]]
    result = score_batch(
        [_record(orjson.dumps(e), i) for i, e in enumerate(events)], detector, max_value_bytes=65536, now_s=1.8e9
    )
    flagged = [o for o in result.outcomes() if isinstance(o, Flagged)]
    assert flagged  # anomaly records are built for events whose time cannot be represented...
    assert all(o.anomaly["event_timestamp"] is None for o in flagged)  # ...without a timestamp
    assert np.isnan(result.event_times_s).all()  # no usable own time


def test_mixed_batch_keeps_every_record_in_input_order(detector: Detector, tiny_model: TinyModel) -> None:
    good, attack = tiny_model.normal_events[:2], tiny_model.attack_events[:200]
    values = [
        orjson.dumps(good[0]),
        b"{oops",
        orjson.dumps({**good[1], "src_bytes": "abc"}),
        *[orjson.dumps(e) for e in attack],
        None,
    ]
    result = score_batch([_record(v, i) for i, v in enumerate(values)], detector, max_value_bytes=65536, now_s=0.0)
    assert [(r.record.offset, r.reason) for r in result.rejected] == [
        (1, "invalid_json"),
        (2, "wrong_type"),
        (len(values) - 1, "empty"),
    ]
    assert result.scored.tolist() == [0, *range(3, len(values) - 1)]
    assert result.n_normal + len(result.flagged) + len(result.rejected) == len(values)
    assert [f.record.offset for f in result.flagged] == sorted(f.record.offset for f in result.flagged)
    outcomes = result.outcomes()
    assert [o.record.offset for o in outcomes] == list(range(len(values)))
    expected = detector.score_records([good[0], *attack])
    assert [isinstance(o, Flagged) for o in outcomes if not isinstance(o, Rejected)] == expected.flagged.tolist()
    assert result.scores == pytest.approx(expected.scores, abs=1e-4)


def test_the_same_record_object_twice_gets_two_outcomes(detector: Detector, tiny_model: TinyModel) -> None:
    bad, good = _record(None, 0), _record(orjson.dumps(tiny_model.normal_events[0]), 1)
    result = score_batch([bad, good, bad], detector, max_value_bytes=65536, now_s=0.0)
    first, middle, last = result.outcomes()
    assert first is result.rejected[0] and last is result.rejected[1]
    assert isinstance(middle, Normal | Flagged) and middle.record is good
    assert len(result.rejected) == 2 and result.scored.tolist() == [1]


def _refusing_decoder(detector: Detector, monkeypatch: pytest.MonkeyPatch) -> TypedDecoder:
    """A decoder that refuses every value: the whole batch takes the exact path."""
    decoder = TypedDecoder(detector.spec)

    def refuse(value: bytes) -> None:
        raise msgspec.ValidationError("refused")

    monkeypatch.setattr(decoder, "_decode", refuse)
    return decoder


def _same_outcomes(a: Any, b: Any) -> None:
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.scored, b.scored)
    np.testing.assert_array_equal(a.flagged_at, b.flagged_at)
    np.testing.assert_array_equal(a.event_times_s, b.event_times_s)
    assert [f.anomaly for f in a.flagged] == [f.anomaly for f in b.flagged]
    assert [(r.record.offset, r.reason, r.message) for r in a.rejected] == [
        (r.record.offset, r.reason, r.message) for r in b.rejected
    ]


def test_clean_batches_take_the_typed_fast_path_with_the_exact_paths_results(
    detector: Detector, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = tiny_model.normal_events[:100] + tiny_model.attack_events[:100]
    records = [_record(orjson.dumps(e), i) for i, e in enumerate(events)]
    decoder = TypedDecoder(detector.spec)
    assert decoder.decode_batch([r.value for r in records]).failed == []
    fast = score_batch(records, detector, max_value_bytes=65536, now_s=1_800_000_000.0, decoder=decoder)
    refusing = _refusing_decoder(detector, monkeypatch)
    exact = score_batch(records, detector, max_value_bytes=65536, now_s=1_800_000_000.0, decoder=refusing)
    assert fast.flagged and len(fast.flagged) < len(events)
    _same_outcomes(fast, exact)


def test_hostile_values_get_the_same_outcome_on_both_paths(
    detector: Detector, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    attack, normal = tiny_model.attack_events[0], tiny_model.normal_events[0]
    base = [orjson.dumps(attack), orjson.dumps(normal)]
    junk = [
        b',"junk":"\xff"', b',"junk":2e308', b',"j\xff":1', b',"junk":[1e99999]', b',"ts2":1' + b"0" * 400,
        b',"deep":' + b"[" * 1100 + b"]" * 1100, b',"junk":"\\ud800"', b',"label":"normal"',
    ]  # fmt: skip
    values = [v[:-1] + j + b"}" for v in base for j in junk]
    values += [v.replace(b'"ts":', b'"ts":1' + b"0" * 400 + b',"was":') for v in base]
    values += [v.replace(b'"src_bytes":', b'"src_bytes":"1",' + b'"was":') for v in base]
    values += [*base, b"", None, b"{oops", b"[1]"]  # type: ignore[list-item]
    records = [_record(v, i) for i, v in enumerate(values)]
    fast = score_batch(records, detector, max_value_bytes=65536, now_s=1_800_000_000.0)
    exact = score_batch(
        records,
        detector,
        max_value_bytes=65536,
        now_s=1_800_000_000.0,
        decoder=_refusing_decoder(detector, monkeypatch),
    )
    _same_outcomes(fast, exact)
    assert len(fast.rejected) > 4 and len(fast.scores) > 2


def test_values_the_typed_decoder_refuses_are_scored_on_the_exact_path(
    detector: Detector, tiny_model: TinyModel
) -> None:
    events = tiny_model.normal_events[:50] + tiny_model.attack_events[:50]
    clean = [orjson.dumps(e) for e in events]
    odd = list(clean)
    odd[3] = orjson.dumps({**events[3], "src_bytes": str(events[3]["src_bytes"])})  # numeric string: valid
    odd[60] = orjson.dumps({**events[60], "protocol_type": 7})  # integer category code: valid (unknown)
    odd[70] = b"{oops"
    assert TypedDecoder(detector.spec).decode_batch(odd).failed == [3, 60, 70]
    base = score_batch([_record(v, i) for i, v in enumerate(clean)], detector, max_value_bytes=65536, now_s=0.0)
    mixed = score_batch([_record(v, i) for i, v in enumerate(odd)], detector, max_value_bytes=65536, now_s=0.0)
    assert [r.record.offset for r in mixed.rejected] == [70]
    assert mixed.scored.tolist() == [i for i in range(100) if i != 70]
    same = [i for i in range(100) if i not in (60, 70)]
    # 99 rows against 100 in the float32 matrix products: equal to the bit on some CPUs' BLAS
    # kernels, within float32 rounding (measured 1e-7) on others.
    np.testing.assert_allclose(mixed.scores[[p for p in range(99) if p != 60]], base.scores[same], rtol=1e-6)
    np.testing.assert_array_equal(mixed.flagged_at, [f.record.offset for f in mixed.flagged])


def test_empty_and_all_rejected_batches(detector: Detector) -> None:
    assert score_batch([], detector, max_value_bytes=65536, now_s=0.0).outcomes() == []
    result = score_batch([_record(None, 0), _record(b"{", 1)], detector, max_value_bytes=65536, now_s=0.0)
    assert [r.reason for r in result.rejected] == ["empty", "invalid_json"] and len(result.scores) == 0


def test_junk_in_an_extra_field_does_not_multiply_a_batchs_memory(tiny_model: TinyModel) -> None:
    """Found in review: an event may carry fields the spec does not name; 20,000 empty objects in
    one (64 KiB) sent every such record down the exact path, whose parsed dicts (~25x the bytes)
    were all alive at once: 740 MB for a batch of 500. Parsed a chunk at a time now."""
    model = load_model(tiny_model.path)
    head = orjson.dumps(tiny_model.normal_events[0])[:-1] + b',"x":['
    value = head + b",".join([b"{}"] * ((65_000 - len(head)) // 3)) + b"]}"
    records = [RawRecord("t", 0, i, 0, None, value) for i in range(500)]
    tracemalloc.start()
    try:
        result = score_batch(records, model.detector, max_value_bytes=65536, now_s=0.0, decoder=model.decoder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result.scores) == 500 and not result.rejected  # valid events: the extra field is allowed
    assert peak < 3 * 500 * len(value)  # 24x before
